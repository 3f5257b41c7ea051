"""Run folders do not execute code (item 6): a ``_target_`` read from disk is instantiated only
when it is on the allow-list (deltapatch, torch optimizers, torchvision/timm models, Lightning
loggers/callbacks/Trainer, or named by the user)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import CONF, ROOT, cli_env
from omegaconf import OmegaConf

from deltapatch.allowlist import ENV_VAR, check_targets, targets, why_refused
from deltapatch.errors import UnsafeTargetError


def test_every_shipped_target_is_allowed():
    found = {name for path in CONF.rglob("*.yaml") for _, name in targets(OmegaConf.to_container(OmegaConf.load(path)))}
    assert len(found) > 30
    assert {n: why_refused(n) for n in sorted(found) if why_refused(n)} == {}


@pytest.mark.parametrize("name,reason", [
    ("shutil.copyfile", "outside the allow-list"),
    ("builtins.exec", "outside the allow-list"),
    ("deltapatch.checkpoint.os.system", "resolves to posix.system"),       # a re-export, not deltapatch's own
    ("deltapatch.checkpoint.torch.load", "resolves to torch.serialization.load"),
    ("timm.models.load_checkpoint", "resolves to timm.models._helpers.load_checkpoint"),  # unpickles a file
    ("torch.optim.__builtins__", "private or malformed"),
    ("deltapatch.nothing_here", "does not exist"),
])
def test_refused(name, reason):
    assert reason in why_refused(name)


def test_user_allow_list(monkeypatch):
    assert why_refused("collections.OrderedDict") is not None
    monkeypatch.setenv(ENV_VAR, "collections.OrderedDict, my.Other")
    assert why_refused("collections.OrderedDict") is None
    check_targets({"x": [{"_target_": "collections.OrderedDict"}]}, "cfg.yaml")


def test_nested_targets_are_found():
    cfg = {"a": {"_target_": "torch.optim.AdamW", "b": [{"c": {"_target_": "os.system", "command": "true"}}]}}
    with pytest.raises(UnsafeTargetError, match=r"cfg.yaml: refusing to instantiate a.b\[0\].c._target_='os.system'"):
        check_targets(cfg, "cfg.yaml")


def test_a_run_folder_that_copies_a_file_is_refused(tmp_path, make_cfg):
    """``scripts/plots.py RUNS --lambdas rebuild`` on a folder whose config names
    ``shutil.copyfile``: nothing is written, one error line, exit 2."""
    run_dir = tmp_path / "runs" / "evil"
    (run_dir / ".hydra").mkdir(parents=True)
    secret, stolen = tmp_path / "secret.txt", tmp_path / "stolen.txt"
    secret.write_text("s3cret")
    cfg = OmegaConf.to_container(make_cfg(), resolve=False)
    cfg["backbone"]["model"] = {"_target_": "shutil.copyfile", "src": str(secret), "dst": str(stolen)}
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    (run_dir / "results.json").write_text(json.dumps({
        "method": "delta", "backbone": "resnet18", "dataset": "digits", "scenario": "single", "n_deltas": 1,
        "seed": 0, "tasks": {"patch": 80.0}, "base_acc_after": 90.0, "hmean": 84.7, "trainable_params": {"patch": 1}}))
    out = tmp_path / "plots"
    p = subprocess.run([sys.executable, "scripts/plots.py", str(tmp_path / "runs"), "--lambdas", "rebuild",
                        "--out", str(out)], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "refusing to instantiate backbone.model._target_='shutil.copyfile'" in lines[0]
    assert not stolen.exists() and not out.exists()
