"""The commands' front door: Hydra's own flags on every command, numeric config groups, errors
Hydra reports itself (and the one it cannot), evaluate's early refusals, every command README shows,
the console scripts. (The console of a run: test_console.py; the wheel: test_packaging.py.)"""
from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object

from deltapatch.cli import CONF_DIR

from helpers import CHEAP_RUN, ROOT, cli, run_main

ENTRIES = {"train": "config", "evaluate": "evaluate", "summary": "summary"}
# a key only the composed job config of each command has
JOB_KEY = {"train": "method", "evaluate": "patch", "summary": "num_classes"}


# ---------------------------------------------------------------- Hydra's own flags
def _yaml(text: str) -> dict:
    return yaml.safe_load(text) or {}


FLAG_CHECKS = {
    "--help": lambda e, out: "== Configuration groups ==" in out and "n_deltas: 1, 2, 3, 4" in out
    and f"deltapatch-{e}" in out,
    "--hydra-help": lambda e, out: "== Flags ==" in out and "--cfg" in out and "--multirun" in out,
    "--cfg job": lambda e, out: JOB_KEY[e] in _yaml(out) and "hydra" not in _yaml(out),
    "-c job": lambda e, out: JOB_KEY[e] in _yaml(out) and "hydra" not in _yaml(out),
    "--cfg hydra": lambda e, out: "run" in _yaml(out)["hydra"] and JOB_KEY[e] not in _yaml(out),
    "--cfg all": lambda e, out: JOB_KEY[e] in _yaml(out) and "job_logging" in _yaml(out)["hydra"],
    "--cfg job --resolve": lambda e, out: JOB_KEY[e] in _yaml(out) and "${" not in out,
    "--info": lambda e, out: "Config search path" in out and "Defaults List" in out,
    "--info defaults": lambda e, out: "Defaults List" in out and "backbone/resnet18" in out
    and "Config search path" not in out,
}  # -m: real multiruns below (train, summary); Hydra refuses it beside --cfg/--info


@pytest.mark.parametrize("flags", list(FLAG_CHECKS))
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_hydra_flags(entry, flags, capsys):
    code = run_main(entry, *flags.split())
    out = capsys.readouterr().out
    assert code == 0, out[-2000:]
    assert FLAG_CHECKS[flags](entry, out), out[:3000]


def test_summary_json_flag_is_an_override(capsys):
    assert run_main("summary", "--json", "--cfg", "job") == 0
    assert _yaml(capsys.readouterr().out)["json"] is True


def test_flags_through_python_dash_m():
    """The two reproductions of issue 14, as a user types them."""
    p = cli("-m", "deltapatch.evaluate", "--help")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "patch=" in p.stdout and "== Configuration groups ==" in p.stdout
    p = cli("-m", "deltapatch.train", "--cfg", "job", "n_deltas=4")
    assert p.returncode == 0, p.stderr[-2000:]
    cfg = _yaml(p.stdout)
    assert cfg["n_deltas"] == 4 and cfg["method"]["name"] == "delta"


# ---------------------------------------------------------------- n_deltas, a numeric config group
def test_numeric_group_unquoted():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["n_deltas=4"], return_hydra_config=True)
        assert cfg.n_deltas == 4 and cfg.hydra.runtime.choices.n_deltas == "4"
        assert compose("config", overrides=["+experiment/row=delta2"]).n_deltas == 2  # a preset row picks it too
        assert compose("summary", overrides=["n_deltas=3"]).n_deltas == 3


def test_numeric_group_in_a_train_sweep():
    """What each job of ``deltapatch-train -m n_deltas=1,2 debug=fast`` is composed from."""
    overrides = OverridesParser.create().parse_overrides(["n_deltas=1,2", "debug=fast"])
    jobs = BasicSweeper.split_arguments(overrides, None)[0]
    assert [j[0] for j in jobs] == ["n_deltas=1", "n_deltas=2"]  # the sweeper hands them on unquoted
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert [compose("config", overrides=j).n_deltas for j in jobs] == [1, 2]


def test_numeric_group_in_a_real_multirun(tmp_path):
    """A real Hydra multirun over n_deltas (summary: nothing trained, a JSON line per job)."""
    p = cli("-m", "deltapatch.summary", "-m", "n_deltas=1,2,4", "methods=false", "--json",
            f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert p.returncode == 0, p.stderr[-3000:]
    found = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert [(s["n_deltas"], s["stages"][-1]["patched"], s["stages"][0]["patched"]) for s in found] == \
        [(1, True, False), (2, True, False), (4, True, True)]


@pytest.mark.slow
def test_train_multirun_over_n_deltas(tmp_path, base_cache):
    sweep = tmp_path / "sweep"
    p = cli("-m", "deltapatch.train", "-m", "n_deltas=1,2", *CHEAP_RUN, f"hydra.sweep.dir={sweep}",
            f"paths.cache_dir={base_cache}")
    assert p.returncode == 0, p.stderr[-3000:]
    found = sorted(json.loads(f.read_text())["n_deltas"] for f in sweep.glob("*/results.json"))
    assert found == [1, 2]


# ---------------------------------------------------------------- errors: Hydra's own, and ours
@pytest.mark.parametrize("override,needles", [
    ("backbone=resnet19", ["Could not find 'backbone/resnet19'", "Available options in 'backbone'", "resnet18"]),
    ("dataset=imagenet21k", ["Could not find 'dataset/imagenet21k'", "digits"]),
    ("method=magic", ["Could not find 'method/magic'", "delta"]),
    ("scenario=parallel", ["Could not find 'scenario/parallel'", "sequential"]),
    ("n_deltas=5", ["Could not find 'n_deltas/5'", "Available options in 'n_deltas'"]),
    ("trainer.max_epoch=2", ["Could not override 'trainer.max_epoch'"]),
])
def test_bad_names_get_hydras_message(tmp_path, capsys, override, needles):
    run_dir = tmp_path / "run"
    code = run_main("train", f"hydra.run.dir={run_dir}", override)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err, err[-2000:]
    for n in needles:
        assert n in err, err
    assert not run_dir.exists()  # nothing written


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_non_writable_output_dir(capsys, key):
    """The one command-line check Hydra cannot make: it would create the dir halfway in and fail
    with a traceback. Checked only when something runs (``--cfg`` writes nothing)."""
    args = [f"{key}=/proc/deltapatch/out", *(["-m"] if key == "hydra.sweep.dir" else [])]
    if key == "hydra.run.dir":  # (Hydra takes no --cfg beside -m)
        assert run_main("train", *args, "--cfg", "job") == 0
        capsys.readouterr()
    code = run_main("train", *args)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "not writable" in err[0] and key in err[0]


# ---------------------------------------------------------------- evaluate refuses a mismatch at once
def _patch_file(tmp_path: Path, arch: str = "resnet18") -> Path:
    from deltapatch import DeltaNetwork, create_backbone, save_patch

    net = DeltaNetwork(create_backbone(arch, num_classes=5))
    net.add_task("patch", 5)
    return save_patch(net, "patch", tmp_path / "made_elsewhere.patch.safetensors")


def _assert_refused(p: subprocess.CompletedProcess, *needles: str) -> None:
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    for n in needles:
        assert n in err[0], err[0]


def test_evaluate_refuses_other_backbone_without_training(tmp_path):
    patch = _patch_file(tmp_path)  # made for torchvision/resnet18
    cache = tmp_path / "cache"
    p = cli("-m", "deltapatch.evaluate", f"patch={patch}", "backbone=timm_resnet18", f"paths.cache_dir={cache}")
    _assert_refused(p, "made for backbone 'torchvision/resnet18'", "backbone=timm_resnet18", "timm/resnet18")
    assert not cache.exists()  # no base model was trained (or cached) to find that out


def test_evaluate_refuses_when_cached_base_is_missing(tmp_path):
    patch = _patch_file(tmp_path)
    cache = tmp_path / "cache"
    p = cli("-m", "deltapatch.evaluate", f"patch={patch}", f"paths.cache_dir={cache}")
    _assert_refused(p, "no cached base model at", str(cache / "base"))
    assert not cache.exists()


def test_evaluate_compares_fingerprints_before_loading_data(tmp_path):
    from safetensors.torch import save_file

    from deltapatch import create_backbone
    from deltapatch.training.base_model import base_cache_path as cached_base_path

    patch = _patch_file(tmp_path)
    # the task data does not exist: loading it would fail with another message
    args = [f"paths.cache_dir={tmp_path / 'cache'}", "dataset=fashion_mnist", f"dataset.data_dir={tmp_path / 'none'}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cached = cached_base_path(compose("evaluate", overrides=[*args, f"patch={patch}"]))
    other = create_backbone("resnet18", num_classes=5)  # a base with other weights than the patch's
    cached.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(cached))
    p = cli("-m", "deltapatch.evaluate", f"patch={patch}", *args)
    _assert_refused(p, "made for another base model", cached.name)


# ---------------------------------------------------------------- every command README shows
COMMAND = re.compile(r"(?:^|[\s/])(?:python -m deltapatch\.(\w+)|deltapatch-(\w+))(?=\s|$)")
# Lines composed only, not run: what each needs that a test run has not (all others are run too).
NOT_RUN = {
    "hydra/launcher=slurm": "a SLURM cluster (sbatch)",
    "base=pretrained": "ImageNet weights in the hub cache",
    "deltapatch.evaluate": "a patch from an earlier run (evaluate runs for real in training/test_reliability)",
    "deltapatch.train": "minutes of training: train's front door is run in test_console_of_a_run",
}


def readme_commands() -> list[tuple[str, list[str]]]:
    """(entry point, argv) of each deltapatch command README shows: the lines of its ```bash blocks
    and its inline `code` spans."""
    text = (ROOT / "README.md").read_text()
    lines = [ln for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for ln in re.sub(r"\\\n\s*", " ", block).splitlines()]
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    found = []
    for line in lines:
        m = COMMAND.search(line)
        if m:
            cmd = (m.group(1) or m.group(2), shlex.split(line[m.end():], comments=True))
            if cmd not in found and not any("<" in a for a in cmd[1]):  # `experiment=mini/<name>`: a pattern
                found.append(cmd)
    return found


def covering_jobs(config_name: str, args: list[str]) -> list[list[str]]:
    """Override lists of a sweep's jobs (the command line's and its preset's ``hydra.sweeper.params``)
    such that every swept value appears in at least one; a plain run is one job."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        primary = compose(config_name, overrides=[a for a in args if "," not in a], return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (primary.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *args])
    jobs, seen = [], set()
    for job in BasicSweeper.split_arguments(overrides, None)[0]:
        if not set(job) <= seen:
            jobs.append(job)
            seen |= set(job)
    return jobs


def test_readme_lists_each_command():
    entries = {e for e, _ in readme_commands()}
    assert {"train", "summary", "evaluate"} <= entries, entries


@pytest.mark.parametrize("entry,argv", readme_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_readme_command(entry, argv, capsys):
    if entry not in ENTRIES:  # deltapatch-report: its own argument parser
        pytest.importorskip(f"deltapatch.{entry}")
        assert run_main(entry, "--help") == 0
        return
    hydra_args = [a for a in argv if a not in ("-m", "--multirun", "--json", "--cfg", "-c", "job", "--resolve")]
    swept = {o.input_line for o in OverridesParser.create().parse_overrides(hydra_args) if o.is_sweep_override()}
    # `--cfg job` appended (Hydra shows no sweep: each job of one is composed below)
    shown = [a for a in argv if a not in ("-m", "--multirun") and a not in swept]
    assert run_main(entry, *shown, *([] if "--cfg" in argv or "-c" in argv else ["--cfg", "job"])) == 0
    assert JOB_KEY[entry] in _yaml(capsys.readouterr().out)
    for job in covering_jobs(ENTRIES[entry], hydra_args):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(ENTRIES[entry], overrides=job)
        if entry == "train":
            get_object(cfg.method.module._target_)
            get_object(cfg.dataset._target_)
    line = f"deltapatch.{entry} " + " ".join(argv)
    if not any(key in line for key in NOT_RUN):
        # cheap: run it. (methods=false: the per-method counts are summary's own tests' business)
        assert run_main(entry, *argv, *(["methods=false"] if entry == "summary" else [])) == 0
        out = capsys.readouterr().out
        if "--json" in argv:
            s = json.loads(out.strip().splitlines()[-1])
            given = dict(a.split("=", 1) for a in argv if "=" in a)
            assert s["delta_params"] > 0 and all(str(s[k]) == v for k, v in given.items() if k in s)


def test_console_scripts_are_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {f"deltapatch-{e}" for e in ("train", "evaluate", "summary", "report")} == set(scripts)
    for script, target in scripts.items():
        module, func = target.split(":")
        if script == "deltapatch-report" and importlib.util.find_spec(module) is None:
            continue  # deltapatch/report.py arrives with the reporting work
        assert callable(getattr(importlib.import_module(module), func)), script
