"""The real twins (experiment=real/...): every job of every grid composes (no training) and patches
the one CIFAR-10 base that `make base-cifar10` builds; scripts/build_base.py builds that base at a
tiny size from a fixture pack in the real pack's format, where the twins look for it."""
from __future__ import annotations

import importlib.util
import itertools
import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import OmegaConf

from deltapatch.scenarios.common import dataset_names
from deltapatch.training.base_model import base_cache_key

from fixtures_datasets import tar_folder, write_image_folder
from helpers import CONF, ROOT

REAL = CONF / "experiment" / "real"
PRESETS = sorted(p.stem for p in REAL.glob("table*.yaml") if p.stem != "table6")  # real/table6 (ZSDA) has no base: tests/scenarios/test_adda.py
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _axes(cfg) -> dict[str, list[str]]:
    """The values Hydra's basic sweeper gives each swept key (its jobs are their product)."""
    parser = OverridesParser.create()
    axes = {}
    for key, value in cfg.hydra.sweeper.params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        axes[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() \
            else [override.get_value_element_as_str()]
    return axes


def _jobs(axes: dict[str, list[str]]) -> list[list[str]]:
    """Every job of the grid up to the seed (a plain value: the product over the other keys at the
    first seed, plus one job per other seed), as override lists."""
    seeds = axes.get("seed", [])
    rest = {k: v for k, v in axes.items() if k != "seed"}
    jobs = [[f"{k}={v}" for k, v in zip(rest, combo)] for combo in itertools.product(*rest.values())]
    if seeds:
        jobs = [[*job, f"seed={seeds[0]}"] for job in jobs] + [[*jobs[-1], f"seed={s}"] for s in seeds[1:]]
    return jobs


def test_every_table_has_a_real_twin():
    assert {"table2", "table3", "table4", "table8", "table10_11"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_of_a_real_preset_composes(preset, tmp_path):
    """Each job (every combination of the swept groups; every seed) resolves, names importable classes, runs three seeds on 32-px data with its patch
    tasks' training capped as the preset says, and patches the CIFAR-10 base (all ten classes,
    32-px stem) under the one cache key that build_base.py builds for its backbone."""
    fixed = [f"experiment=real/{preset}", f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=fixed, return_hydra_config=True)
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        assert cfg.experiment_name == f"real_{preset}"
        axes = _axes(cfg)
        assert axes["seed"] == ["0", "1", "2"]
        jobs = _jobs(axes)
        built: dict[str, str] = {}  # backbone name -> the key of the base build_base.py trains
        for job in jobs:
            run = compose("config", overrides=[*fixed, *job])
            # every interpolation resolves (to_container: the dp.data_config resolver returns lists)
            OmegaConf.to_container(run, resolve=True)
            get_object(run.method.module._target_)
            assert run.base.source == "train" and run.base.dataset.name == "cifar10_pack"
            assert run.base.classes is None and run.base.dataset.seed == run.base.seed
            assert run.backbone.model.small_input is True
            tasks = [t.get("dataset") or run.dataset for t in run.scenario.tasks.values()]
            for task, spec in zip(tasks, run.scenario.tasks.values()):
                get_object(task._target_)
                assert task.image_size == 32 and not task.get("augment")  # ∆ rows: exact feature cache
                cap = spec.get("max_train_samples", task.get("max_train_samples"))
                assert cap == run.real.train_images
            name = run.backbone.name
            if name not in built:
                base = compose("config", overrides=[*fixed[1:], "experiment=real/common",
                                                    f"experiment/real/backbone={run.backbone.model.name}"])
                built[name] = base_cache_key(base)
            assert base_cache_key(run) == built[name], f"{job}: not the base build_base.py builds"


def test_results_name_the_data_sets_the_tasks_come_from():
    """results.json's ``dataset`` for a task set (Tables 3/4) names the task set's data sets, not the
    preset's top-level dataset that no task uses (run summaries said "gtsrb_pack" for Omniglot →
    USPS → Fashion-MNIST); a run on one data set keeps its name."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        t4 = compose("config", overrides=["experiment=real/table4", "experiment/tasks=real_omniglot_usps_fashion"])
        assert t4.dataset.name == "gtsrb_pack"
        assert dataset_names(t4) == "omniglot_pack+usps_pack+fashion_mnist"
        t3 = compose("config", overrides=["experiment=real/table3"])
        assert dataset_names(t3) == "gtsrb_pack+mnist_pack+fashion_mnist"
        assert dataset_names(compose("config", overrides=["scenario=sequential"])) == "digits"
        assert dataset_names(compose("config", overrides=["experiment=real/table2", "dataset=usps_pack"])) == "usps_pack"


def _build_base_module():
    spec = importlib.util.spec_from_file_location("build_base", ROOT / "scripts" / "build_base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cifar_pack(tmp_path):
    """A CIFAR-10 JPEG pack in the real one's format (cifar10/{train,test}/<class>/*.jpg, .tar.gz)."""
    write_image_folder(tmp_path / "src", CIFAR10, n_train=5, n_test=2)
    packs = tmp_path / "packs"
    tar_folder(tmp_path / "src", packs / "cifar10-jpg.tar.gz", "cifar10")
    return packs


def test_build_base_trains_the_twins_base_once(cifar_pack, tmp_path, capsys):
    """The script trains the base where every real twin looks for it, prints its accuracy and
    times, and a second call only loads it."""
    build_base = _build_base_module()
    cache = tmp_path / "cache"
    overrides = [f"paths.packs_dir={cifar_pack}", f"paths.cache_dir={cache}", f"paths.output_dir={tmp_path / 'out'}",
                 "base.epochs=1", "base.dataset.batch_size=16"]
    assert build_base.main(["--backbones", "resnet18", "--no-progress", *overrides]) == 0
    first = capsys.readouterr().out
    assert "trained in" in first and "test" in first and "wall time" in first
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        twin = compose("config", overrides=["experiment=real/table2", "experiment/real/backbone=resnet18", *overrides])
    path = cache / "base" / f"resnet18_small_input-{base_cache_key(twin)}.safetensors"
    assert path.is_file()
    assert (cache / "data" / "cifar10_pack" / "cifar10" / "train" / "airplane").is_dir()  # extracted once, here
    mtime = os.stat(path).st_mtime_ns
    assert build_base.main(["--backbones", "resnet18", "--no-progress", *overrides]) == 0
    assert "loaded from cache" in capsys.readouterr().out
    assert os.stat(path).st_mtime_ns == mtime


def test_build_base_refuses_an_unknown_backbone_in_one_line(tmp_path, capsys):
    build_base = _build_base_module()
    with pytest.raises(SystemExit) as exit_info:
        build_base.main(["--backbones", "no_such_net", f"paths.cache_dir={tmp_path}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no_such_net" in err and len(err.splitlines()) == 1


def test_recipe_options_keep_the_keys_of_existing_bases(tmp_path):
    """base.* recipe options at their defaults leave a base's cache key as it was before they
    existed (the options absent); any other value makes a new key."""
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.cache_dir={tmp_path}"])
    key = base_cache_key(cfg)
    legacy = cfg.copy()
    with open_dict(legacy.base):
        for name in ("optimizer", "momentum", "nesterov", "label_smoothing", "pct_start"):
            del legacy.base[name]
    assert base_cache_key(legacy) == key
    for name, value in (("optimizer", "sgd"), ("label_smoothing", 0.1), ("pct_start", 0.25), ("nesterov", True)):
        changed = cfg.copy()
        changed.base[name] = value
        assert base_cache_key(changed) != key, name


def test_base_module_recipe_options():
    import torch
    from torch import nn

    from deltapatch.errors import ConfigError
    from deltapatch.training.module import BaseModule

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    module = BaseModule(model, 3, lr=0.1, weight_decay=5e-4, optimizer="sgd", nesterov=True, label_smoothing=0.1)
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()  # what configure_optimizers reads
    opt = module.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["weight_decay"] == 5e-4
    assert module.loss.label_smoothing == 0.1
    default = BaseModule(model, 3)
    default.trainer = module.trainer
    assert isinstance(default.configure_optimizers()["optimizer"], torch.optim.AdamW)
    assert default.loss.label_smoothing == 0.0
    with pytest.raises(ConfigError, match="base.optimizer"):
        BaseModule(model, 3, optimizer="lamb")
