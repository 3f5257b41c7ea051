"""The methods workload of ``scripts/bench.py``: one Table 2 cell, every method through the project's
own training path, as images/s and peak memory.

For each method (``fc``, ∆(1), ∆(4), ``finetune``, ``paint``) the config is composed from ``conf/``
(``method=…``, ``n_deltas=…``, ``backbone=…``), the method instantiated on a random-weight base,
and its :class:`~deltapatch.training.module.TaskModule` fitted by a Lightning Trainer for
``--steps`` steps on synthetic images already in memory (the data path is the JPEG workload's
subject). Images/s is timed over the steps after ``--warmup-steps``; peak GPU memory is
``torch.cuda.max_memory_allocated`` from a reset before the fit. PAINT also times its α sweep
(11 interpolations, each scored on two batches of base and task). ``--variants fp32,bf16-cl``
measures ``--variant-methods`` again in other precisions / memory formats (``-cl``: channels_last),
so whether bf16 and channels_last help is measured rather than assumed.

    python3 scripts/bench.py --workload methods --device cuda --bf16        # resnet50, 224 px, batch 64
    .venv/bin/python scripts/bench.py --workload methods --quick            # CPU smoke run
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import tempfile
import time

from bench_common import ROOT, emit_json, peak_rss_mb, render_tables

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler, TensorDataset  # noqa: E402

import deltapatch.cli  # noqa: E402,F401  (numeric group choices: n_deltas=4)
from deltapatch.provenance import cpu_model  # noqa: E402
from deltapatch.training.module import TaskModule, make_task_module  # noqa: E402

import pytorch_lightning as pl  # noqa: E402

METHODS = {"fc": ("fc", 1), "delta1": ("delta", 1), "delta4": ("delta", 4), "finetune": ("finetune", 1),
           "paint": ("paint", 1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--classes", type=int, default=196, help="classes of the new head (Stanford Cars: 196)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup-steps", type=int, default=5, help="steps before timing starts")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--bf16", action="store_true", help="precision=bf16-mixed (trainer=gpu's default)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--variants", default="", help="extra runs: fp32, bf16, fp32-cl, bf16-cl (comma-separated)")
    p.add_argument("--variant-methods", default="delta1,finetune", help="the methods the variants run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: resnet18, 32 px, batch 4, 3 steps")
    p.add_argument("--json", "--json-out", dest="json_out", default=None)
    p.add_argument("--plain", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.backbone, args.image_size, args.batch_size, args.classes = "resnet18", 32, 4, 5
        args.steps, args.warmup_steps = 3, 1
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.methods = [m for m in args.methods.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    args.variant_methods = [m for m in args.variant_methods.split(",") if m]
    bad = [v for v in args.variants if v not in ("fp32", "bf16", "fp32-cl", "bf16-cl")]
    if bad:
        raise SystemExit(f"bench methods: unknown variants {bad}; choose from fp32, bf16, fp32-cl, bf16-cl")
    unknown = [m for m in args.methods + args.variant_methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"bench methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    return args


class StepTimer(pl.Callback):
    """Wall-clock time of the training steps after the first ``warmup`` (GPU work included)."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.timed = warmup, None, None, 0

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(module)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self._sync(module)
            self.t1, self.timed = time.perf_counter(), batch_idx - self.warmup + 1


def compose_cfg(args: argparse.Namespace, method: str, n: int, out: str):
    overrides = [f"backbone={args.backbone}", f"method={method}", f"n_deltas={n}", f"paths.output_dir={out}",
                 f"channels_last={str(args.channels_last).lower()}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def measure(args: argparse.Namespace, name: str, data: TensorDataset, out: str) -> dict:
    """Fit one method for ``args.steps`` steps; its images/s and peak memory."""
    method_name, n = METHODS[name]
    cfg = compose_cfg(args, method_name, n, out)
    torch.manual_seed(args.seed)
    base = instantiate(cfg.backbone.model, pretrained=False, num_classes=1000)
    method = instantiate(cfg.method.module, base=base)
    method.add_task("t", args.classes)
    module = make_task_module(cfg, method, "t", args.classes)
    cuda = args.device.startswith("cuda")
    loader = DataLoader(data, batch_size=args.batch_size, pin_memory=cuda,
                        sampler=RandomSampler(data, replacement=True, num_samples=args.steps * args.batch_size))
    timer = StepTimer(args.warmup_steps)
    trainer = pl.Trainer(max_steps=args.steps, accelerator="gpu" if cuda else "cpu", devices=1,
                         precision="bf16-mixed" if args.bf16 else "32-true", logger=False, callbacks=[timer],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=out)
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=loader)
    row = {"method": name, "trainable_params": method.num_trainable("t"), "steps_timed": timer.timed,
           "seconds": (timer.t1 - timer.t0) if timer.t0 is not None else None}
    row["images_per_s"] = timer.timed * args.batch_size / row["seconds"] if row["seconds"] else None
    if cuda:
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if name == "paint":
        row["alpha_sweep_s"] = alpha_sweep_seconds(method, data, args)
    del trainer, module, method, base
    return row


def alpha_sweep_seconds(method, data: TensorDataset, args: argparse.Namespace) -> float:
    """Seconds of PAINT's α sweep, each α scored on two batches of the base task and the task."""
    device = torch.device(args.device)
    method.to(device).eval()
    x = data.tensors[0][: 2 * args.batch_size].to(device)

    def evaluate(m):
        out = {}
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            for task in (None, "t"):
                out["base" if task is None else task] = float(m(x, task).float().mean())
        return out
    class Scorer:  # the α sweep's model changes and scoring, without Lightning's loop overhead
        def score(self, split):
            return evaluate(method)

        def sweep(self, split, variants):
            out = []
            for apply in variants:
                apply()
                out.append(evaluate(method))
            return out

    t0 = time.perf_counter()
    method.end_task("t", Scorer())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def variant_name(bf16: bool, channels_last: bool) -> str:
    return ("bf16" if bf16 else "fp32") + ("-cl" if channels_last else "")


def guarded(args: argparse.Namespace, name: str, data: TensorDataset, out: str) -> dict:
    """:func:`measure`, with running out of GPU memory reported as a row rather than a crash."""
    try:
        row = measure(args, name, data, out)
    except torch.cuda.OutOfMemoryError:
        row = {"method": name, "error": f"out of GPU memory at batch {args.batch_size}"}
    gc.collect()
    return {**row, "variant": variant_name(args.bf16, args.channels_last)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric"):  # no banner per fit
        logging.getLogger(name).setLevel(logging.WARNING)
    g = torch.Generator().manual_seed(args.seed)
    s = args.image_size
    # one batch worth of images, drawn with replacement every step: no data path at all
    data = TensorDataset(torch.randn(args.batch_size, 3, s, s, generator=g),
                         torch.randint(0, args.classes, (args.batch_size,), generator=g))
    rows, variants = [], {}
    main_variant = variant_name(args.bf16, args.channels_last)
    with tempfile.TemporaryDirectory(prefix="deltapatch-bench-methods-") as out:
        for name in args.methods:
            rows.append(guarded(args, name, data, out))
        for v in args.variants:
            if v == main_variant:
                continue
            vargs = argparse.Namespace(**{**vars(args), "bf16": v.startswith("bf16"),
                                          "channels_last": v.endswith("-cl")})
            for name in args.variant_methods:
                variants.setdefault(name, {})[v] = guarded(vargs, name, data, out)
    result = {"methods": {r["method"]: r for r in rows}, "variants": variants, "peak_rss_mb": peak_rss_mb()}
    for name, vs in variants.items():  # speed of each variant relative to the main run of that method
        ref = result["methods"].get(name, {}).get("images_per_s")
        for r in vs.values():
            r["speed_vs_main"] = r["images_per_s"] / ref if ref and r.get("images_per_s") else None
    ft = result["methods"].get("finetune", {}).get("images_per_s")
    for r in rows:  # speed relative to full fine-tuning, the usual yardstick
        r["speed_vs_finetune"] = r["images_per_s"] / ft if ft and r.get("images_per_s") else None
    result["config"] = {
        "workload": "methods", "backbone": args.backbone, "image_size": args.image_size,
        "batch_size": args.batch_size, "classes": args.classes, "steps": args.steps,
        "warmup_steps": args.warmup_steps, "device": args.device, "bf16": args.bf16,
        "channels_last": args.channels_last, "variants": args.variants, "quick": args.quick, "weights": "random init",
        "input": "synthetic, in memory", "torch": torch.__version__,
        "cpu": cpu_model(), "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }
    table = [(r["method"], f"{r['images_per_s']:.1f}" if r.get("images_per_s") else r.get("error", "-"),
              f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else "-", f"{r.get('trainable_params', 0):,}",
              f"{r['speed_vs_finetune']:.2f}" if r.get("speed_vs_finetune") else "-",
              f"{r['alpha_sweep_s']:.2f}" if "alpha_sweep_s" in r else "")
             for r in rows]
    vrows = [(name, v, f"{r['images_per_s']:.1f}" if r.get("images_per_s") else r.get("error", "-"),
              f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else "-",
              f"{r['speed_vs_main']:.2f}" if r.get("speed_vs_main") else "-")
             for name, vs in variants.items() for v, r in vs.items()]
    render_tables([(f"{args.backbone} at {s} px, batch {args.batch_size}, {main_variant} "
                    f"on {result['config']['gpu'] or 'CPU'}",
                    ("method", "images/s", "peak GPU MB", "trainable", "× finetune", "α sweep s"), table),
                   (f"other precisions / memory formats (× the {main_variant} run)",
                    ("method", "variant", "images/s", "peak GPU MB", f"× {main_variant}"), vrows)], args.plain)
    emit_json(result, args.json_out)
    return result
