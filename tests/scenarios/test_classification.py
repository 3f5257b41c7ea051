"""The experiment framework end to end: composed configs, each scenario, results.json, loggers."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from deltapatch import DeltaNetwork, create_backbone, load_patch
from deltapatch.scenarios import run
from deltapatch.training.base_model import base_cache_key


def read_results(cfg) -> dict:
    from pathlib import Path

    return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())


def test_single_delta_results(make_cfg):
    cfg = make_cfg()
    res = run(cfg)
    assert read_results(cfg) == json.loads(json.dumps(res, default=str))
    for key in ("method", "backbone", "scenario", "n_deltas", "seed", "base_acc_before", "base_acc_after",
                "tasks", "hmean", "trainable_params", "patch_files", "train_seconds"):
        assert key in res, key
    assert (res["method"], res["backbone"], res["scenario"], res["n_deltas"]) == ("delta", "resnet18", "single", 1)
    assert res["base_acc_before"] == res["base_acc_after"] and res["base_model_unchanged"]
    assert 0 <= res["tasks"]["patch"] <= 100
    assert res["hmean"] == pytest.approx(2 / (1 / res["base_acc_after"] + 1 / res["tasks"]["patch"]))
    assert res["trainable_params"]["patch"] == 444291 + 512 * 5 + 5  # ∆(1) on resnet18 + 5-class head
    # the patch file loads onto the cached base and reproduces the run's model
    pf = res["patch_files"]["patch"]
    assert pf["bytes"] < 2_000_000
    from pathlib import Path

    base_path = Path(cfg.paths.cache_dir) / "base" / f"resnet18-{base_cache_key(cfg)}.safetensors"
    net = DeltaNetwork(create_backbone("resnet18", num_classes=5, pretrained=str(base_path)))
    assert load_patch(net, pf["path"]) == "patch"
    assert net.specs["patch"].class_names == ["5", "6", "7", "8", "9"]
    # CSV logger got the callback's metrics
    rows = list(csv.DictReader(open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv")))
    assert any(r.get("val/hmean") for r in rows) and any(r.get("test/patch/acc") for r in rows)
    # a finished task's last.ckpt gives way to its snapshot (tests/training/test_resume.py)
    assert (Path(cfg.paths.output_dir) / "state" / "patch.safetensors").exists()
    assert not (Path(cfg.paths.output_dir) / "checkpoints" / "patch" / "last.ckpt").exists()
    # mean λ of the patch on its test split, for the λ heatmaps: ∆(1) on resnet18 has 3 skips
    lam = read_results(cfg)["lambdas"]["patch"]
    assert list(lam) == ["3"] and len(lam["3"]) == 3 and all(0 < v < 1 for v in lam["3"])


def test_sequential_keeps_earlier_tasks(make_cfg):
    res = run(make_cfg("scenario=sequential", "n_deltas=2"))
    assert list(res["tasks"]) == ["t56", "t78", "t9"]
    assert res["tasks_when_trained"] == res["tasks"]  # nothing moved after later tasks trained
    assert res["base_acc_before"] == res["base_acc_after"]
    assert res["mean"] == pytest.approx(sum([res["base_acc_after"], *res["tasks"].values()]) / 4)
    assert "hmean" not in res
    assert set(res["patch_files"]) == {"t56", "t78", "t9"}
    assert set(res["lambdas"]) == {"t56", "t78", "t9"} and set(res["lambdas"]["t9"]) == {2, 3}


def test_joint_one_head_over_union(make_cfg):
    res = run(make_cfg("scenario=joint"))
    assert list(res["tasks"]) == ["t56", "t78", "t9"]  # each part scored with the union head
    assert res["trainable_params"]["joint"] == 444291 + 512 * 5 + 5
    assert len(res["class_names"]["joint"]) == 5
    assert list(res["lambdas"]) == ["joint"]
    assert res["hmean"] == pytest.approx(
        len(res["tasks"]) + 1 and  # harmonic mean of base and every part
        (len(res["tasks"]) + 1) / sum(1 / v for v in [res["base_acc_after"], *res["tasks"].values()]))


@pytest.mark.parametrize("method", ["fc", "finetune"])
def test_baseline_methods(make_cfg, method):
    res = run(make_cfg(f"method={method}"))
    if method == "fc":
        assert res["base_acc_before"] == res["base_acc_after"]
        assert res["trainable_params"]["patch"] == 512 * 5 + 5
        assert res["patch_files"] == {}
        assert "lambdas" not in res  # no skip weights to report
    else:
        assert res["trainable_params"]["patch"] > 11_000_000


def test_base_is_cached(make_cfg, tmp_path):
    cfg = make_cfg()
    path = __import__("pathlib").Path(cfg.paths.cache_dir) / "base" / f"resnet18-{base_cache_key(cfg)}.safetensors"
    run(cfg)
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    r1 = run(make_cfg("seed=1", f"paths.output_dir={tmp_path / 'seed1'}"))  # another seed patches the same base
    assert path.stat().st_mtime_ns == mtime
    assert base_cache_key(make_cfg("seed=1")) == base_cache_key(cfg)
    assert base_cache_key(make_cfg("base.epochs=2")) != base_cache_key(cfg)
    assert r1["seed"] == 1


def test_wandb_offline_logger(make_cfg, tmp_path):
    pytest.importorskip("wandb")
    import os

    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    cfg = make_cfg("logger=wandb")
    res = run(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and res["hmean"] is not None
    assert cfg.logger.wandb.offline is True
    assert "method:delta" in list(cfg.logger.wandb.tags)


def test_cache_features_gives_same_training(make_cfg, tmp_path):
    """Training from cached frozen-prefix features matches training from images (float tolerance)."""
    plain = run(make_cfg("trainer.max_epochs=2", "n_deltas=2"))
    cached = run(make_cfg("trainer.max_epochs=2", "n_deltas=2", "cache_features=true",
                          f"paths.output_dir={tmp_path / 'cached'}"))
    assert cached["tasks"]["patch"] == pytest.approx(plain["tasks"]["patch"], abs=1.2)  # ≤ 2 of 174 images
    assert cached["val"]["patch"] == pytest.approx(plain["val"]["patch"], abs=1.5)
    assert cached["base_acc_after"] == plain["base_acc_after"]


def test_compile_option_traces_and_trains_alike(make_cfg, tmp_path):
    """compile=<backend> runs the task's forward through torch.compile (dynamo captures graphs) and
    trains to the same model as eager mode; the `eager` backend keeps the test fast."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    plain = run(make_cfg("trainer.max_epochs=1"))
    compiled = run(make_cfg("trainer.max_epochs=1", "compile=eager", f"paths.output_dir={tmp_path / 'c'}"))
    assert counters["stats"]["unique_graphs"] > 0
    assert compiled["tasks"]["patch"] == pytest.approx(plain["tasks"]["patch"], abs=1.2)
    assert compiled["base_acc_after"] == plain["base_acc_after"]
    torch._dynamo.reset()
