"""Every full paper preset (``experiment=table1 … table12_13``) rehearsed on this machine, as a
user would launch it on a cluster, before anyone pays for GPU hours.

Each preset runs through the real command line (``python -m deltapatch.train -m experiment=tableN
debug=fast trainer=cpu ...``, Hydra's basic launcher: the jobs of a sweep in one process) on
fixture datasets in their real on-disk formats under a temporary ``paths.data_dir`` (ImageNet as
clusters keep it: ``imagenet/val/<wnid>/*.JPEG`` and no train folder) with local weights files as
the pretrained source (``backbone.model.pretrained=<file>``: no hub, no network). The sweeps are
narrowed on the command line to one job of every row and every column kind of each grid (not
every cell). Every job must finish with results.json, and ``deltapatch.report`` must write each
table with every run's cell filled, PAINT's α tables included (the validation column that chose α
too). The invocations of the selected presets run two at a time, one thread each.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from deltapatch import create_backbone
from deltapatch.backbones import get_adapter
from deltapatch.report import main as report_main

import fixtures_datasets as fx
from helpers import ROOT, cli_env

R18, R34, R50, CNX = "ResNet-18", "ResNet-34", "ResNet-50", "ConvNeXt-Tiny"
PAINT, D1, D2, D4 = "PAINT", "∆-Networks (1)", "∆-Networks (2)", "∆-Networks (4)"
BACKBONES = {R18: "resnet18", R34: "resnet34", R50: "resnet50", CNX: "convnext_tiny"}
# the base task (ImageNet val-only fixture) evaluated small: 2 images a batch at 32 px, 4 of the
# 12 images held out for model selection (the YAML's 10,000 of 50,000)
N_IMAGES = 6  # per class of every fixture dataset (ImageNet: 2 classes, val folder only)
IMAGENET_BASE = ["base.dataset.val_from_test=4", "base.dataset.batch_size=2", "base.dataset.image_size=32"]
TABLE2_COLUMNS = ["stl10", "resisc45", "gtsrb", "flowers102", "stanford_cars", "fgvc_aircraft"]


@dataclass
class Sweep:
    """One ``-m`` invocation: its overrides, and the table rows (architecture, method) and columns
    its jobs fill; ``jobs`` defaults to rows × columns (a grid)."""

    overrides: list[str]
    rows: list[tuple[str, str]]
    columns: list[str]
    jobs: int | None = None
    scenario: str | None = None  # the report table (per scenario) its runs land in

    @property
    def n_jobs(self) -> int:
        return self.jobs if self.jobs is not None else len(self.rows) * len(self.columns)


@dataclass
class Preset:
    scenario: str
    sweeps: list[Sweep]
    imagenet_base: bool = True      # base.dataset is ImageNet (its val folder scores the base)

    @property
    def backbones(self) -> set[str]:
        return {BACKBONES[a] for s in self.sweeps for a, _ in s.rows}


def rows(arch: str, *methods: str) -> list[tuple[str, str]]:
    return [(arch, m) for m in methods]


TABLE8_METHODS = ["fc", "learnable_skip", "all_skips_learnable_nobn", "all_skips_learnable", "all_skips_nobn",
                  "all_skips", "random_lambda", "delta"]
# the ablations with skips on all four stages are labelled with their n_deltas, as ∆-Networks are
TABLE8_LABELS = ["FC", "Learnable Skip connections", "All Skips (Learnable) (4)", "All Skips (Learnable) + BN (4)",
                 "All Skips (4)", "All Skips + BN (4)", "All Skips + BN + Random (4)", D4]
SCRATCH = ", from scratch"

PRESETS: dict[str, Preset] = {
    "table1": Preset("single", [
        Sweep(["dataset.task=ucf101", "method=paint,parallel_adapter,series_adapter,bn_adapt,delta"],
              rows(R50, PAINT, "Parallel Adapters", "Series Adapters", "BatchNormAdapt", D4), ["decathlon_ucf101"]),
        # Decathlon tasks without annotation files (bare class folders)
        Sweep(["dataset.task=daimlerpedcls", "method=delta"], rows(R50, D4), ["decathlon_daimlerpedcls"]),
    ]),
    "table2": Preset("single", [
        # FGVC-Aircraft: official val split holding both fixture classes (PAINT's α check below)
        Sweep(["backbone=resnet18", "dataset=fgvc_aircraft", "experiment/row=paint,delta1,delta2,delta4"],
              rows(R18, PAINT, D1, D2, D4), ["fgvc_aircraft"]),
        Sweep(["backbone=resnet18", "dataset=stl10,resisc45,gtsrb,flowers102,stanford_cars",
               "experiment/row=delta1"], rows(R18, D1), [c for c in TABLE2_COLUMNS if c != "fgvc_aircraft"]),
    ]),
    "table3": Preset("joint", [
        Sweep(["backbone=resnet18", "experiment/tasks=aircraft_flowers_stl10",
               "experiment/row=paint,delta1,delta2,delta4"], rows(R18, PAINT, D1, D2, D4), ["aircraft-flowers-stl10"]),
        Sweep(["backbone=resnet18", "experiment/tasks=gtsrb_cars_flowers,stl10_cars_gtsrb", "experiment/row=delta1"],
              rows(R18, D1), ["gtsrb-cars-flowers", "stl10-cars-gtsrb"]),
    ]),
    "table4": Preset("sequential", [
        Sweep(["backbone=resnet18", "experiment/tasks=aircraft_flowers_stl10",
               "experiment/row=paint,delta1,delta2,delta4"], rows(R18, PAINT, D1, D2, D4), ["aircraft-flowers-stl10"]),
        Sweep(["backbone=convnext_tiny", "experiment/tasks=gtsrb_cars_flowers,stl10_cars_gtsrb",
               "experiment/row=delta1"], rows(CNX, D1), ["gtsrb-cars-flowers", "stl10-cars-gtsrb"]),
    ]),
    "table5": Preset("transfer", [
        Sweep(["dataset=fgvc_aircraft", "scenario.sample_rate=0.5,1.0", "method=finetune,finetune_delta"],
              rows(R50, "Fine-tuning", "Fine-tuning + ∆-Networks (4)"), ["fgvc_aircraft 50%", "fgvc_aircraft 100%"]),
        Sweep(["dataset=stanford_cars", "scenario.sample_rate=0.5", "method=finetune"],
              rows(R50, "Fine-tuning"), ["stanford_cars 50%"]),
    ], imagenet_base=False),
    "table6": Preset("zsda", [
        # each run also reports its starting model (its own row); one seed, every row kind, every pair
        Sweep(["experiment/pair=mnist_usps,usps_mnist,svhn_mnist", "experiment/row=zsda_vanilla", "seed=0"],
              rows(R18, "Vanilla", "Vanilla + " + D4), ["mnist→usps", "usps→mnist", "svhn→mnist"], jobs=3),
        Sweep(["experiment/pair=mnist_usps", "seed=0",
               "experiment/row=zsda_uniform_prior,zsda_adda,zsda_adda_uniform_prior,zsda_target_only"],
              rows(R18, "Vanilla + Uniform prior", "Vanilla + Uniform prior + " + D4, "ADDA", "ADDA + " + D4,
                   "ADDA + Uniform prior", "ADDA + Uniform prior + " + D4, "Target only"), ["mnist→usps"], jobs=4),
    ], imagenet_base=False),
    "table7": Preset("detection", [
        Sweep(["experiment/dense=detection_resnet18", "method=fc,delta"], rows(R18, "FC", D4), ["voc_detection"],
              scenario="detection"),
        Sweep(["experiment/dense=detection_resnet34", "method=delta"], rows(R34, D4), ["voc_detection"],
              scenario="detection"),
        Sweep(["experiment/dense=segmentation_resnet50", "method=fc,delta"], rows(R50, "FC", D4),
              ["voc_segmentation"], scenario="segmentation"),
    ], imagenet_base=False),
    "table8": Preset("single", [
        Sweep(["backbone=resnet18", "dataset=fgvc_aircraft", "method=" + ",".join(TABLE8_METHODS)],
              rows(R18, *TABLE8_LABELS), ["fgvc_aircraft"]),
        Sweep(["backbone=resnet18", "dataset=stanford_cars", "method=delta"], rows(R18, D4), ["stanford_cars"]),
    ]),
    "table10_11": Preset("single", [
        Sweep(["backbone=resnet18,convnext_tiny", "dataset=stl10", "experiment/row=paint,delta1"],
              rows(R18, PAINT, D1) + rows(CNX, PAINT, D1), ["stl10"], jobs=4),
        Sweep(["backbone=resnet18", "dataset=resisc45,gtsrb,flowers102,stanford_cars,fgvc_aircraft",
               "experiment/row=delta1"], rows(R18, D1), [c for c in TABLE2_COLUMNS if c != "stl10"]),
    ]),
    "table12_13": Preset("transfer", [
        Sweep(["backbone=resnet18", "dataset=fgvc_aircraft", "method=finetune,finetune_delta"],
              rows(R18, "Fine-tuning" + SCRATCH, "Fine-tuning + ∆-Networks (4)" + SCRATCH), ["fgvc_aircraft 100%"]),
        Sweep(["backbone=resnet18", "dataset=stanford_cars,cifar10,cifar100", "method=finetune"],
              rows(R18, "Fine-tuning" + SCRATCH), ["stanford_cars 100%", "cifar10 100%", "cifar100 100%"]),
    ], imagenet_base=False),
}


# ---------------------------------------------------------------- running the presets
def write_weights(path: Path, name: str) -> None:
    """A randomly initialised ImageNet-shaped model of backbone ``name`` as a safetensors file.
    Its head always answers class 0 (the first ImageNet wnid of the fixture), so the base task
    has a non-zero accuracy to choose PAINT's α with; everything else is random."""
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=1000)
    with torch.no_grad():
        head = get_adapter(model).classifier()
        head.bias.fill_(-10.0)
        head.bias[0] = 10.0
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def command(preset: str, sweep: Sweep, root: Path, out: Path) -> list[str]:
    p = PRESETS[preset]
    return [sys.executable, "-m", "deltapatch.train", "-m", f"experiment={preset}", "debug=fast",
            "trainer=cpu",              # the presets ask for a GPU
            "num_workers=0",            # loader workers: 8 in the presets
            "dataset.image_size=32",    # smaller still than debug=fast's 64 px
            f"paths.root_dir={root}", f"paths.data_dir={root / 'data'}", f"paths.cache_dir={root / 'cache'}",
            f"backbone.model.pretrained={root / 'weights'}/${{backbone.model.name}}.safetensors",
            *(IMAGENET_BASE if p.imagenet_base else []), *sweep.overrides,
            f"hydra.sweep.dir={out}"]


def run_sweep(cmd: list[str], out: Path) -> dict:
    """Run one ``-m`` command; afterwards drop the weights files the jobs wrote (Lightning's
    last.ckpt, the per-task resume snapshots, patches: 0.1-0.4 GB a job even at these sizes)."""
    env = cli_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true",
                  PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    (out.parent / f"{out.name}.log").write_text(p.stdout + p.stderr)
    for pattern in ("*/checkpoints/*/*.ckpt", "*/state/*.safetensors", "*/patches/*.safetensors"):
        for f in out.glob(pattern):
            f.unlink()
    return {"rc": p.returncode, "tail": (p.stdout + p.stderr)[-3000:], "seconds": time.perf_counter() - t0,
            "cmd": " ".join(cmd[2:])}


def selected_presets(request) -> list[str]:
    """The presets whose test this session runs (``-k table2`` rehearses Table 2 only)."""
    chosen = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec is not None and "preset" in callspec.params:
            chosen.append(callspec.params["preset"])
    return list(dict.fromkeys(chosen)) or list(PRESETS)


@pytest.fixture(scope="module")
def rehearsal(request, tmp_path_factory) -> Iterator[Path]:
    """Fixture data, weights, and every sweep of the selected presets run (two at a time); the
    folder holds ``runs/<preset>/<n>/`` (Hydra sweep dirs), ``<n>.status.json`` and ``<n>.log``
    per sweep, and ``cpu_seconds`` (all sweeps together)."""
    root = tmp_path_factory.mktemp("rehearsal")
    fx.write_preset_data(root / "data", n=N_IMAGES)
    presets = selected_presets(request)
    (root / "weights").mkdir()
    for name in sorted({b for p in presets for b in PRESETS[p].backbones}):
        write_weights(root / "weights" / f"{name}.safetensors", name)
    todo = []
    for preset in presets:
        for i, sweep in enumerate(PRESETS[preset].sweeps):
            out = root / "runs" / preset / str(i)
            out.parent.mkdir(parents=True, exist_ok=True)
            todo.append((preset, i, sweep.n_jobs, command(preset, sweep, root, out), out))
    todo.sort(key=lambda t: -t[2])  # the longest first, so that both lanes finish about together
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        statuses = list(pool.map(lambda t: run_sweep(t[3], t[4]), todo))
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    (root / "cpu_seconds").write_text(f"{cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime:.0f}\n")
    for (preset, i, *_), status in zip(todo, statuses):
        (root / "runs" / preset / f"{i}.status.json").write_text(json.dumps(status))
    yield root
    for heavy in ("weights", "cache"):  # 0.5 GB; pytest keeps the last three temp dirs
        shutil.rmtree(root / heavy, ignore_errors=True)


# ---------------------------------------------------------------- checks
def results_of(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]


def table(out: Path, key: str) -> pd.DataFrame:
    path = out / f"{key}.csv"
    assert path.is_file(), f"the report wrote no {path.name}: {sorted(p.name for p in out.glob('*.csv'))}"
    return pd.read_csv(path)


def filled(frame: pd.DataFrame, arch: str | None, method: str, column: str) -> bool:
    mask = frame["Method"] == method
    if arch is not None and "Architecture" in frame:
        mask &= frame["Architecture"] == arch
    return bool(mask.any()) and bool((frame.loc[mask, f"{column} n"] > 0).all())


def check_imagenet_paint(res: dict) -> None:
    """PAINT's α was chosen on a non-empty held-out part of ImageNet's val folder (the only
    folder there), with the base scored at every α."""
    split = res["base_split"]
    assert split["val_from"] == "test" and split["val"] == 4 and split["train"] == 0, split
    assert split["val"] + split["test"] == 2 * N_IMAGES  # the fixture's images, split without overlap
    sweep = res["alpha_sweep"]
    assert len(sweep) == 11 and res["alpha"] in [row["alpha"] for row in sweep]
    assert all(row["val"].get("base") is not None for row in sweep), "an α row without a base validation accuracy"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_rehearsal(preset, rehearsal):
    """Every job of the narrowed grid finishes with results.json, and the report fills a cell for
    each of them (main table, per-task table, PAINT α tables)."""
    p = PRESETS[preset]
    folder = rehearsal / "runs" / preset
    for i, sweep in enumerate(p.sweeps):
        status = json.loads((folder / f"{i}.status.json").read_text())
        assert status["rc"] == 0, f"{status['cmd']}\n  exit {status['rc']}:\n{status['tail']}"
        jobs = [d for d in (folder / str(i)).iterdir() if (d / ".hydra").is_dir()]
        missing = [d.name for d in jobs if not (d / "results.json").is_file()]
        assert len(jobs) == sweep.n_jobs and not missing, f"{preset} sweep {i}: {len(jobs)} jobs, no results: {missing}"

    out = rehearsal / "report" / preset
    assert report_main([str(folder), "--out", str(out), "--quiet"]) == 0
    markdown = (out / "report.md").read_text()
    runs = results_of(folder)
    assert {r["experiment"] for r in runs} == {preset}
    if preset in ("table3", "table4"):  # a task set's runs name its three data sets, not the top-level one
        assert all(r["dataset"].count("+") == 2 for r in runs), sorted({r["dataset"] for r in runs})
    for sweep in p.sweeps:
        scenario = sweep.scenario or p.scenario
        main = table(out, f"{preset}_{scenario}")
        for arch, method in sweep.rows:
            for column in sweep.columns:
                assert filled(main, arch, method, column), f"{preset}: no value for {arch} {method} in {column}"
            assert method in markdown
        if scenario in ("single", "joint", "sequential"):  # the base was measured on ImageNet's val folder
            per_task = table(out, f"{preset}_{scenario}_per_task")
            base_cols = [c for c in per_task.columns if c.endswith(" · base n")]
            assert base_cols and (per_task[base_cols].sum(axis=1) > 0).all(), f"{preset}: a row without base accuracy"

    paint_runs = [r for r in runs if r["method"] == "paint"]
    for r in paint_runs:
        check_imagenet_paint(r)
        col = r["dataset"] if r["scenario"] == "single" else "-".join(r["task_order"])
        alpha = table(out, f"{preset}_{r['scenario']}_alpha_{r['backbone']}_{col}")
        paint_rows = alpha[alpha["Method"] == "PAINT"]
        n_cols = [c for c in alpha.columns if c.endswith(" n")]
        assert len(paint_rows) == 11 and any(c.startswith("val ") for c in n_cols)
        empty = [c for c in n_cols if (paint_rows[c] == 0).any()]
        assert not empty, f"{preset}: empty PAINT α columns {empty} in the α table of {r['backbone']}/{col}"
        assert any(str(a).endswith("*") for a in paint_rows["α"]), "no α marked as chosen"
    if preset == "table2":
        (aircraft,) = [r for r in paint_runs if r["dataset"] == "fgvc_aircraft"]
        best = max(row["val"]["hmean"] for row in aircraft["alpha_sweep"])
        assert best > 0, "every α has validation hmean 0: α was chosen on nothing"


def test_base_pretrained_takes_a_local_weights_file(tmp_path, make_cfg):
    """``base=pretrained backbone.model.pretrained=<file>``: the preset's path, no hub: the base
    is exactly the file's weights."""
    from deltapatch.training.base_model import obtain_base

    write_weights(tmp_path / "w.safetensors", "resnet18")
    cfg = make_cfg("base=pretrained", f"backbone.model.pretrained={tmp_path / 'w.safetensors'}", fast=False)
    base = obtain_base(cfg)
    from safetensors.torch import load_file

    want = load_file(str(tmp_path / "w.safetensors"))
    got = base.model.state_dict()
    assert base.num_classes == 1000 and set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_debug_fast_reaches_the_dense_datasets(tmp_path):
    """``debug=fast``'s ``dataset.image_size`` on Table 7's VOC settings scales the task (it crashed
    their constructors before), and a last training batch of one image is dropped (DeepLabV3's
    pooling BatchNorm refuses it)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from deltapatch.data import ShapesSegmentationDataModule

    from helpers import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        det, seg = (compose("config", overrides=["experiment=table7", "debug=fast", f"experiment/dense={d}",
                                                 f"paths.data_dir={tmp_path}"]).dataset
                    for d in ("detection_resnet18", "segmentation_resnet50"))
    assert instantiate(det).model_hints["min_size"] == 64
    seg = instantiate(seg)
    assert (seg.base_size, seg.crop_size, seg.batch_size) == (64, 64, 2)
    shapes = ShapesSegmentationDataModule(n_train=3, n_val=1, n_test=1, image_size=16, batch_size=2)
    assert [len(x) for x, _ in shapes.train_dataloader()] == [2]
