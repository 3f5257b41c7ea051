"""Every experiment preset (full and offline twin) composes, and the cluster launchers take their
settings from the config. (Kept beside the report tests they came with; they check conf/.)"""
from __future__ import annotations

from itertools import islice

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import OmegaConf

import deltapatch.cli  # noqa: F401  (numeric group choices such as n_deltas=2)

from helpers import CONF


def _compose(*overrides: str, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides),
                       return_hydra_config=return_hydra_config)


def _preset_files() -> list[str]:
    folder = CONF / "experiment"
    names = [p.relative_to(folder).with_suffix("").as_posix() for p in folder.glob("table*.yaml")]
    names += [p.relative_to(folder).with_suffix("").as_posix() for p in (folder / "mini").glob("*.yaml")]
    return sorted(names)


def _sweep_values(key: str, value: str) -> list[str]:
    """The values Hydra's basic sweeper would give ``key`` (``a,b`` -> ``['a', 'b']``)."""
    (override,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    return list(override.sweep_string_iterator())


def test_there_is_a_preset_per_table():
    presets = set(_preset_files())
    tables = {f"table{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8)} | {"table10_11", "table12_13"}
    assert tables <= presets
    assert {f"mini/{t}" for t in tables} <= presets


@pytest.mark.parametrize("preset", _preset_files())
def test_preset_composes(preset, tmp_path):
    """The preset and every value of every swept parameter (one at a time) compose, resolve, and
    name importable classes; full presets are GPU runs on ImageNet weights for the paper's 50
    epochs, twins CPU runs on a base trained here."""
    fixed = [f"experiment={preset}", f"paths.output_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # one init for every compose
        _check_preset(preset, fixed)


def _check_preset(preset: str, fixed: list[str]) -> None:
    cfg = compose("config", overrides=fixed, return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params or {})
    assert params, f"{preset} sweeps nothing"
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.experiment_name == preset.replace("/", "_")  # the W&B group and the report's table name
    grid = {k: _sweep_values(k, str(v)) for k, v in params.items()}
    first = [f"{k}={vals[0]}" for k, vals in grid.items()]
    if preset.startswith("mini/"):  # run here: every value of every swept key, one at a time
        variants = [first] + [[f"{k}={v}" if k == key else o for o, k in zip(first, grid)]
                              for key, vals in grid.items() for v in islice(vals, 1, None)]
    else:  # GPU grids: the first and last job, and every swept group option exists
        variants = [first, [f"{k}={vals[-1]}" for k, vals in grid.items()]]
        for key, vals in grid.items():
            if (CONF / key).is_dir():
                missing = [v for v in vals if not (CONF / key / f"{v}.yaml").is_file()]
                assert not missing, f"{preset}: {key} has no option {missing}"
    for overrides in variants:
        job = compose("config", overrides=[*fixed, *overrides])
        OmegaConf.resolve(job)  # every interpolation resolves (no ${num_workers} left dangling)
        get_object(job.method.module._target_)
        get_object(job.dataset._target_)
        for t in (job.scenario.get("tasks") or {}).values():
            if t and t.get("dataset") is not None:
                get_object(t.dataset._target_)
        if preset.startswith("mini/"):
            assert job.trainer.accelerator == "cpu" and job.base.source in ("train", "scratch")
            assert job.trainer.max_epochs <= 5
        else:
            assert job.trainer.accelerator == "gpu" and job.trainer.max_epochs == 50
            assert job.base.source in ("pretrained", "scratch")
            assert job.logger.wandb.group == job.experiment_name
        if job.scenario.name in ("joint", "sequential"):
            assert len(job.scenario.tasks) == 3 and "t56" not in job.scenario.tasks  # the set replaced them


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launchers(launcher):
    """submitit launchers compose, take cluster settings from the config, and SLURM starts one
    task per GPU (what Lightning's DDP expects there)."""
    cfg = _compose(f"hydra/launcher={launcher}", "experiment=table2", "trainer=ddp", "cluster.timeout_min=99",
                   return_hydra_config=True)
    la = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert la["gpus_per_node"] == cfg.trainer.devices == 4
    assert la["timeout_min"] == 99
    assert la["_target_"].endswith("SlurmLauncher" if launcher == "slurm" else "LocalLauncher")
    if launcher == "slurm":
        assert la["tasks_per_node"] == 4 and la["partition"]
    plain = _compose(f"hydra/launcher={launcher}", return_hydra_config=True)  # no preset: defaults
    assert OmegaConf.to_container(plain.hydra.launcher, resolve=True)["timeout_min"] == 720
