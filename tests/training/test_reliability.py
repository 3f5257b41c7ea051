"""Reliability: determinism, safe loading, one-line errors for bad input. Resume after a kill is in
tests/training/test_resume.py, the checks before a run in tests/scenarios/test_preflight.py."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FAST, ROOT, cli_env

from deltapatch import CheckpointError, DeltaNetwork, create_backbone, save_patch
from deltapatch.checkpoint import read_state_dict
from deltapatch.scenarios import run

METRICS = ("base_acc_before", "base_acc_after", "tasks", "hmean", "mean", "val", "tasks_when_trained",
           "trainable_params")


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def metrics(res: dict) -> dict:
    return {k: res.get(k) for k in METRICS}


# ---------------------------------------------------------------- determinism
def test_same_seed_same_numbers(make_cfg, tmp_path):
    a = run(make_cfg())
    b = run(make_cfg("paths.output_dir=" + str(tmp_path / "second")))
    assert metrics(a) == metrics(b)
    c = run(make_cfg("seed=3", "paths.output_dir=" + str(tmp_path / "third")))
    assert c["tasks"] != a["tasks"] or c["val"] != a["val"]  # the seed does matter


# ---------------------------------------------------------------- safe loading
class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"w": _Evil(marker)}, f)
    with pytest.raises(CheckpointError, match="pickled objects, which are never loaded"):
        read_state_dict(evil)
    assert not marker.exists()
    # and through the command line, as a base checkpoint
    p = cli("-m", "deltapatch.train", f"hydra.run.dir={tmp_path / 'run'}", "base=checkpoint",
            f"base.path={evil}", "base.num_classes=5", "trainer.enable_progress_bar=false")
    assert p.returncode == 2 and "never loaded" in p.stderr
    assert not marker.exists()
    assert not (tmp_path / "run" / "results.json").exists()


# ---------------------------------------------------------------- one-line errors
def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def test_missing_data_dir(tmp_path):
    run_dir = tmp_path / "run"
    p = cli("-m", "deltapatch.train", f"hydra.run.dir={run_dir}", "dataset=fashion_mnist",
            f"dataset.data_dir={tmp_path / 'nowhere'}", "trainer.enable_progress_bar=false")
    assert_one_line_error(p, "fashion_mnist", str(tmp_path / "nowhere"))
    assert not (run_dir / "results.json").exists()


def test_corrupt_image(tmp_path, base_cache):
    from PIL import Image

    root = tmp_path / "folder"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / c / f"{i}.png")
    (root / "train" / "b" / "9.png").write_bytes(b"")  # an empty file among good ones
    p = cli("-m", "deltapatch.train", f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={base_cache}",
            "dataset=image_folder", f"dataset.data_dir={root}", "base.classes=[0]",
            "scenario.tasks.patch.classes=[1]", *FAST)
    assert_one_line_error(p, "cannot read image", "9.png")
    assert not (tmp_path / "run" / "results.json").exists()


def test_truncated_checkpoint(tmp_path):
    from safetensors.torch import save_file

    good = tmp_path / "w.safetensors"
    model = create_backbone("resnet18", num_classes=5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, good)
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    p = cli("-m", "deltapatch.train", f"hydra.run.dir={tmp_path / 'run'}", "base=checkpoint",
            f"base.path={bad}", "base.num_classes=5", "trainer.enable_progress_bar=false")
    assert_one_line_error(p, "truncated.safetensors", "corrupt or truncated")


@pytest.fixture(scope="module")
def trained_patch(tmp_path_factory):
    """A real default run (tiny), its cache and patch file."""
    tmp = tmp_path_factory.mktemp("patchrun")
    p = cli("-m", "deltapatch.train", f"hydra.run.dir={tmp / 'run'}", f"paths.cache_dir={tmp / 'cache'}", *FAST)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp / "run" / "results.json").read_text())
    return tmp, res


def test_results_and_base_record_what_computed_them(trained_patch):
    """results.json and the cached base's sidecar name the package versions and the source commit."""
    from deltapatch.provenance import git_commit, software

    tmp, res = trained_patch
    (sidecar,) = (tmp / "cache" / "base").glob("*.json")
    for recorded in (res["software"], json.loads(sidecar.read_text())["software"]):
        assert recorded == {**software(), "git": recorded["git"]}  # the run's own process, same packages
        assert recorded["git"] == git_commit()  # this checkout's commit (and whether it was dirty)


def test_results_name_the_base_they_patched(trained_patch):
    """results.json's base_fingerprint is the cached base's: its sidecar's tensors_sha256 and the
    fingerprint of the weights in its safetensors file, so runs on a rebuilt base can be told apart."""
    from safetensors.torch import load_file

    from deltapatch.checkpoint import tensors_sha256

    tmp, res = trained_patch
    (weights,) = (tmp / "cache" / "base").glob("*.safetensors")
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert len(res["base_fingerprint"]) == 64
    assert res["base_fingerprint"] == sidecar["tensors_sha256"] == tensors_sha256(load_file(weights))


def test_evaluate_reproduces_run(trained_patch):
    tmp, res = trained_patch
    p = cli("-m", "deltapatch.evaluate", f"patch={res['patch_files']['patch']['path']}",
            f"paths.cache_dir={tmp / 'cache'}", *[o for o in FAST if o.startswith(("base.", "dataset."))])
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["task_acc"] == res["tasks"]["patch"] and out["base_acc"] == res["base_acc_after"]


@pytest.mark.parametrize("case", ["other_base", "other_backbone", "class_count", "truncated"])
def test_bad_patches(trained_patch, tmp_path, case):
    tmp, res = trained_patch
    patch = Path(res["patch_files"]["patch"]["path"])
    args = [f"paths.cache_dir={tmp / 'cache'}", *[o for o in FAST if o.startswith(("base.", "dataset."))]]
    if case == "other_base":  # same architecture, different weights
        net = DeltaNetwork(create_backbone("resnet18", num_classes=5))
        net.add_task("patch", 5)
        patch = save_patch(net, "patch", tmp_path / "foreign.safetensors")
        needles = ["another base model"]
    elif case == "other_backbone":
        args.append("backbone=timm_resnet18")
        needles = ["made for backbone 'torchvision/resnet18'"]
    elif case == "class_count":
        args.append("scenario.tasks.patch.classes=[5,6,7]")
        needles = ["has 5 classes", "has 3"]
    else:
        cut = tmp_path / "cut.safetensors"
        cut.write_bytes(patch.read_bytes()[:4000])
        patch, needles = cut, ["corrupt or truncated"]
    p = cli("-m", "deltapatch.evaluate", f"patch={patch}", *args)
    assert_one_line_error(p, *needles)


def test_out_of_memory_becomes_batch_size_advice(make_cfg, monkeypatch):
    import pytorch_lightning as pl

    from deltapatch.training.module import TaskModule

    real_fit = pl.Trainer.fit

    def oom(self, model, *a, **k):  # the task's training runs out of memory (the base trains as usual)
        if isinstance(model, TaskModule):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_fit(self, model, *a, **k)

    monkeypatch.setattr(pl.Trainer, "fit", oom)
    from deltapatch.errors import ResourceError

    with pytest.raises(ResourceError, match=r"batch size 32; retry with dataset.batch_size=16"):
        run(make_cfg())


def test_results_and_patches_written_atomically(make_cfg, monkeypatch):
    """A crash while writing leaves no file under the final name."""
    from deltapatch import checkpoint

    cfg = make_cfg()
    real_dump = json.dump

    def crash(*a, **k):
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr(checkpoint.json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_json(Path(cfg.paths.output_dir) / "results.json", {"a": 1})
    monkeypatch.setattr(checkpoint.json, "dump", real_dump)
    out = Path(cfg.paths.output_dir)
    assert not (out / "results.json").exists() and not list(out.glob(".results.json.*"))
