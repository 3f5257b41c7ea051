#!/usr/bin/env python
"""Build the base models of the real twins (``experiment=real/...``) and nothing else: each
backbone trained on all ten CIFAR-10 classes with ``base=cifar10``'s recipe, cached by its config
hash exactly where every real twin looks for it (a base already in the cache is only loaded and
scored; a build stopped part-way continues from its last finished epoch). Prints each base's
validation and test accuracy and the wall and CPU time.

    make base-cifar10                                   # resnet18 and convnext_tiny
    .venv/bin/python scripts/build_base.py --backbones resnet18 base.epochs=2   # (another key)
    DELTAPATCH_CACHE=/shared/cache .venv/bin/python scripts/build_base.py   # another cache

Extra arguments are Hydra overrides of the run config (``base.*``, ``paths.*``, ``trainer.*``);
the same overrides on a twin's command line give the same cache key.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

DEFAULT_BACKBONES = ("resnet18", "convnext_tiny")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES),
                   help="comma-separated real-twin backbones (conf/experiment/real/backbone/*.yaml: "
                        "each a backbone and its base recipe)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. base.epochs=2")
    return p.parse_args(argv)


def compose_config(backbone: str, overrides: list[str], progress: bool = True):
    """The run config of one base build: the real twins' base (``experiment=real/common``) for
    ``backbone`` (``experiment/real/backbone=<backbone>``), with validation every epoch (the twins
    turn it off for patch runs; it does not enter the cache key)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from deltapatch.cli import CONF_DIR
    from deltapatch.errors import ConfigError

    extra = [f"trainer.enable_progress_bar={str(progress).lower()}", "trainer.limit_val_batches=null",
             "paths.output_dir=${paths.root_dir}/outputs/base_build"]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["experiment=real/common", f"experiment/real/backbone={backbone}",
                                               *extra, *overrides])
    except (HydraException, OmegaConfBaseException) as e:  # a typo: one line, not a traceback
        raise ConfigError(" ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())[:400]) from None
    if cfg.base.source != "train":
        raise ConfigError(f"base.source={cfg.base.source}: only a base trained here (base.source=train) is built "
                          f"and cached")
    return cfg


def build(cfg) -> dict:
    """Train (or load) ``cfg``'s base and score it on its validation and test splits, in the same
    evaluation loop every run uses; returns the numbers and times."""
    from deltapatch.methods import create_method
    from deltapatch.training.base_model import base_cache_key, base_cache_path, obtain_base, partial_dir
    from deltapatch.training.checkpointing import LAST
    from deltapatch.training.evaluation import BASE_KEY, EvalSet, LightningScorer
    from deltapatch.training.trainer import eval_trainer

    from deltapatch.training.loggers import AppendingCSVLogger

    cached = any(Path(cfg.base.cache_dir).glob(f"*-{base_cache_key(cfg)}.safetensors"))
    continued = not cached and (partial_dir(base_cache_path(cfg)) / LAST).exists()
    # per-epoch validation accuracy and the training loss of a base trained now (a continued
    # build appends to the log of the epochs it kept)
    logger = AppendingCSVLogger(save_dir=cfg.paths.output_dir, name=cfg.backbone.name, version=base_cache_key(cfg))
    t0, c0 = time.perf_counter(), time.process_time()
    base = obtain_base(cfg, [logger])
    train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    evalset = EvalSet()
    evalset.add(BASE_KEY, None, base.num_classes, base.datamodule)
    method = create_method("fc", base.model)  # frozen base; the base task is scored with its own head
    accs = LightningScorer(lambda: eval_trainer(cfg), method, evalset).score_splits(("val", "test"))
    return {"backbone": cfg.backbone.name, "path": str(base.cache_path), "split": base.datamodule.split_info,
            "val": accs["val"][BASE_KEY], "test": accs["test"][BASE_KEY], "epochs": cfg.base.epochs,
            "wall_s": train_wall, "cpu_s": train_cpu, "from_cache": cached, "continued": continued,
            "log": None if cached else logger.log_dir,
            "total_wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from deltapatch.cli import guarded

    console = Console()
    start = time.perf_counter()
    rows = []
    for name in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        cfg = guarded(compose_config, name, args.overrides, not args.no_progress)
        console.print(f"[bold]base {cfg.backbone.name}[/]: {cfg.base.epochs} epochs on {cfg.base.dataset.name} "
                      f"-> {cfg.base.cache_dir}")
        row = guarded(build, cfg)
        rows.append(row)
        how = ("loaded from cache" if row["from_cache"] else
               "trained, continuing a stopped build," if row["continued"] else "trained")
        console.print(f"{row['backbone']}: val {row['val']:.2f} %, test {row['test']:.2f} % "
                      f"({how} in {row['wall_s'] / 60:.1f} min wall, {row['cpu_s'] / 60:.1f} min CPU) -> {row['path']}"
                      + (f"; per-epoch log: {row['log']}/metrics.csv" if row["log"] else ""))
    table = Table(title="base models (CIFAR-10, all classes)")
    for col in ("backbone", "epochs", "train/val/test images", "val %", "test %", "wall min", "CPU min", "cache file"):
        table.add_column(col)
    for r in rows:
        s = r["split"]
        table.add_row(r["backbone"], str(r["epochs"]), f"{s['train']}/{s['val']}/{s['test']}", f"{r['val']:.2f}",
                      f"{r['test']:.2f}", f"{r['wall_s'] / 60:.1f}", f"{r['cpu_s'] / 60:.1f}", Path(r["path"]).name)
    console.print(table)
    console.print(f"wall time: {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
