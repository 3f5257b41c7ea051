"""The synthetic workload of ``scripts/bench.py`` (the default): what ∆-Patching costs against full
fine-tuning and FC-only, side by side in one process, on tensors already in memory.

Every case runs on the same synthetic input, interleaved round by round (epochs: batch by batch),
so a burst of load from elsewhere hits all cases alike; after warm-up, the figure kept is the
median over rounds, and the ratios of medians decide pass/miss against the issue's targets.
Beside them the JSON gives the same ratios as the median of per-round ratios, from the fastest
round, and from process CPU time: on a CPU shared with other work (load average above the core
count) the wall-clock medians are inflated and noisy, and these say whether a miss is real.
Prints a table, then ONE final JSON line (machine-readable; ``tail -n1``).

    .venv/bin/python scripts/bench.py                  # resnet18, 64 px, batch 64, 2 CPU threads
    .venv/bin/python scripts/bench.py --device cuda --channels-last --bf16
    .venv/bin/python scripts/bench.py --quick          # smoke run: tiny sizes, one round

Modes: ``finetune`` = whole backbone + new head trainable (train mode, BN statistics updating);
``fc`` = frozen backbone (features under no_grad), only a new head; ``delta1`` = ∆-Networks(1),
frozen prefix under no_grad, backward through the last stage, its ∆-module and the head;
``delta1_cached`` = the same from FeatureCache features (no prefix at all).
Weights are random (no pretrained weights offline): speed does not depend on their values.
Peak memory: on CPU, the peak RSS of a child process per mode (``ru_maxrss``), next to an ``idle``
child that builds the same model and batch but never steps; on GPU, ``max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bench_common import emit_json, load_warning, median, render_tables, target_entry, time_cases, time_epochs
from bench_synthetic_setup import MEM_MODES, Setup, breakdown_cases, epoch_cases, file_sizes, measure_memory, mem_child

import torch  # noqa: E402

from deltapatch.provenance import cpu_model  # noqa: E402

# (name, ratio key, limit): the targets; "<=" all of them
TARGETS = [
    ("delta1_step_vs_finetune", "train_step_ratio_delta1_vs_finetune", 0.50),
    ("delta1_step_vs_fc", "train_step_ratio_delta1_vs_fc", 1.50),
    ("cached_epoch_vs_uncached", "epoch_ratio_cached_vs_uncached", 0.50),
    ("cached_epoch_vs_finetune_epoch", "epoch_ratio_cached_vs_finetune", 0.25),
    ("patched_infer_vs_base", "infer_ratio_patched_vs_base", 1.10),
    ("4tasks_shared_vs_separate", "infer_ratio_4tasks_shared_vs_separate", 0.50),
    ("patch_file_bytes", "patch_bytes_resnet18_delta1", 2_000_000),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=10, help="classes of every new head")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when present)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per case before timing")
    p.add_argument("--repeats", type=int, default=11, help="timed rounds; the median is reported")
    p.add_argument("--epoch-samples", type=int, default=512, help="size of the synthetic epoch dataset")
    p.add_argument("--epoch-repeats", type=int, default=None, help="timed epoch rounds (default: repeats, at most 5)")
    p.add_argument("--n-tasks", type=int, default=4, help="tasks in the shared-prefix inference case")
    p.add_argument("--mem-steps", type=int, default=3, help="train steps per memory child")
    p.add_argument("--mem-jobs", type=int, default=1, help="memory children run at once")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    p.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for every forward")
    p.add_argument("--compile", action="store_true", help="torch.compile every forward")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler op tables")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke mode: 32 px, batch 8, 1 round, tiny epoch")
    p.add_argument("--json", "--json-out", dest="json_out", default=None,
                   help="also write the JSON result to this file")
    p.add_argument("--plain", action="store_true", help="plain-text table even when rich is installed")
    p.add_argument("--mem-child", choices=MEM_MODES, default=None, help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.batch_size = 32, 8
        args.warmup, args.repeats, args.epoch_samples, args.mem_steps = 1, 1, 16, 1
        args.mem_jobs = max(args.mem_jobs, len(MEM_MODES))  # timing is not the point of a smoke run
    if args.epoch_repeats is None:
        args.epoch_repeats = min(args.repeats, 5)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


# ---------------------------------------------------------------------------- report
def ratio_defs(k: int) -> dict[str, tuple[str, str]]:
    """Each reported ratio as (numerator case, denominator case)."""
    return {
        "train_step_ratio_delta1_vs_finetune": ("step_delta1", "step_finetune"),
        "train_step_ratio_delta1_vs_fc": ("step_delta1", "step_fc"),
        "train_step_ratio_delta1_cached_vs_finetune": ("step_delta1_cached", "step_finetune"),
        "epoch_ratio_cached_vs_uncached": ("epoch_delta1_cached", "epoch_delta1_uncached"),
        "epoch_ratio_cached_memmap_vs_uncached": ("epoch_delta1_cached_memmap", "epoch_delta1_uncached"),
        "epoch_ratio_cached_vs_finetune": ("epoch_delta1_cached", "epoch_finetune"),
        "epoch_ratio_uncached_vs_finetune": ("epoch_delta1_uncached", "epoch_finetune"),
        "infer_ratio_patched_vs_base": ("infer_patched_delta1", "infer_base"),
        "infer_ratio_4tasks_shared_vs_separate": (f"infer_{k}tasks_shared", f"infer_{k}tasks_separate"),
    }


def ratios(t: dict[str, float], k: int) -> dict[str, float]:
    """The ratios from one figure per case (medians, minima or CPU times)."""
    return {name: t[a] / t[b] for name, (a, b) in ratio_defs(k).items()}


def paired_ratios(samples: dict[str, list[float]], k: int) -> dict[str, float]:
    """Median over rounds of the ratio within each round: both cases ran back to back, so a
    change of load between rounds cancels out."""
    return {name: median([x / y for x, y in zip(samples[a], samples[b])]) for name, (a, b) in ratio_defs(k).items()}


def print_table(result: dict, plain: bool) -> None:
    cpu_ms = result.get("cpu_ms", {})
    rows_ms = [(k, f"{v:.1f}", f"{min(result['ms_samples'][k]):.1f}",
                f"{cpu_ms[k]:.1f}" if k in cpu_ms else "-", str(len(result["ms_samples"][k])))
               for k, v in result["ms"].items()]
    rows_t = []
    for name, key, _ in TARGETS:
        t = result["targets"][name]
        v = f"{t['value']:,}" if isinstance(t["value"], int) else f"{t['value']:.3f}"
        miss = "" if t["status"] == "pass" else f"+{t['over_by_pct']}%"
        alt = [result.get(r, {}).get(key) for r in ("ratios_paired_median", "ratios_from_min", "ratios_from_cpu_time")]
        alt = ["-" if a is None else f"{a:.3f}" for a in alt]
        rows_t.append((key, v, *alt, t["limit"], t["status"].upper(), miss))
    rows_m = [(mode, f"{m['peak_rss_mb']:.0f}", f"{m['peak_rss_above_idle_mb']:.0f}",
               f"{m['cuda_peak_mb']:.0f}" if "cuda_peak_mb" in m else "-")
              for mode, m in result.get("peak_memory", {}).items()]
    tables = [
        ("time per call (ms): wall-clock median and min, process CPU time median",
         ("case", "median", "min", "cpu", "n"), rows_ms),
        ("targets (value: ratio of wall-clock medians, which decides pass/miss; also the median of "
         "per-round ratios, the ratio of fastest rounds, and the ratio of CPU times)",
         ("ratio / size", "value", "paired", "from min", "from cpu", "target", "status", "missed by"), rows_t),
        ("peak memory per train mode (MB)", ("mode", "peak RSS", "above idle", "CUDA peak"), rows_m),
    ]
    render_tables(tables, plain)
    load_warning(result)
    be = result["cache_breakeven_epochs"]
    print(f"sizes: patch {result['patch_bytes_resnet18_delta1']:,} B, model {result['model_bytes_resnet18']:,} B; "
          f"cache build {result['cache_build_ms']:.0f} ms (pays off after "
          f"{'never' if be is None else f'{be:.2f}'} epochs)")


def run_profile(setup: Setup) -> None:
    """Op tables for one ∆(1) step and one patched inference (why a target is missed)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    for name, fn in [("delta1 train step", setup.delta1_step), ("finetune train step", setup.finetune_step),
                     ("patched inference", setup.infer(setup.task_names[0]))]:
        fn()
        with profile(activities=acts) as prof:
            fn()
        print(f"\n=== profile: {name} ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.mem_child:
        print(json.dumps(mem_child(args)))
        return None

    load_start = os.getloadavg()
    # memory children first: they must not overlap with the timed rounds below
    mem = {} if args.no_memory else measure_memory(args, [a for a in argv if a != "--profile"])
    setup = Setup(args)
    sizes = file_sizes(setup)

    train = {
        "step_finetune": setup.finetune_step,
        "step_fc": setup.fc_step,
        "step_delta1": setup.delta1_step,
        "step_delta1_cached": setup.delta1_cached_step,
    }
    infer = {
        "infer_base": setup.infer(None),
        "infer_patched_delta1": setup.infer(setup.task_names[0]),
        f"infer_{args.n_tasks}tasks_shared": setup.infer_shared,
        f"infer_{args.n_tasks}tasks_separate": setup.infer_separate,
    }
    cpu: dict[str, list[float]] = {}
    samples = time_cases(train, setup.sync, args.warmup, args.repeats, cpu)
    samples.update(time_cases(infer, setup.sync, args.warmup, args.repeats, cpu))
    samples.update(time_cases(breakdown_cases(setup), setup.sync, args.warmup, args.repeats, cpu))
    epochs, extra = epoch_cases(setup)
    samples.update(time_epochs(epochs, setup.sync, min(args.warmup, 1), args.epoch_repeats, cpu))
    ms = {k: median(v) for k, v in samples.items()}
    if args.profile:
        run_profile(setup)

    k = args.n_tasks
    result: dict[str, Any] = {
        **ratios(ms, k),
        "patch_bytes_resnet18_delta1": sizes["patch"],
        "model_bytes_resnet18": sizes["model"],
        "patch_params_delta1": sizes["patch_params"],
        "cache_build_ms": extra["cache_build_ms"],
        "cache_bytes": extra["cache_bytes"],
        # epochs after which building the cache has paid for itself (None: it never does)
        "cache_breakeven_epochs": extra["cache_build_ms"] / (ms["epoch_delta1_uncached"] - ms["epoch_delta1_cached"])
        if ms["epoch_delta1_uncached"] > ms["epoch_delta1_cached"] else None,
        "ms": ms,
        "ms_min": {name: min(v) for name, v in samples.items()},
        "ms_samples": {name: [round(v, 3) for v in vs] for name, vs in samples.items()},
    }
    if args.backbone != "resnet18":  # the key names say resnet18; keep them honest
        result["note_backbone"] = f"sizes are for {args.backbone}, not resnet18"
    if mem:
        idle = mem["idle"]["maxrss_kb"]
        result["peak_memory"] = {}
        for mode, m in mem.items():
            entry = {"peak_rss_mb": m["maxrss_kb"] / 1024, "peak_rss_above_idle_mb": (m["maxrss_kb"] - idle) / 1024}
            if "cuda_peak_bytes" in m:
                entry["cuda_peak_mb"] = m["cuda_peak_bytes"] / 2**20
                entry["cuda_peak_above_start_mb"] = m["cuda_peak_above_start_bytes"] / 2**20
            result["peak_memory"][mode] = entry
        for mode in MEM_MODES[1:]:
            result[f"peak_mem_above_idle_mb_{mode}"] = result["peak_memory"][mode]["peak_rss_above_idle_mb"]
    # the same ratios from the fastest round of each case: on a machine shared with other work,
    # the minimum is the least disturbed estimate of the compute cost (the medians stay official)
    result["ratios_from_min"] = ratios(result["ms_min"], k)
    result["ratios_paired_median"] = paired_ratios(samples, k)
    if setup.device.type == "cpu":  # CPU time says nothing about GPU work
        result["cpu_ms"] = {name: median(v) for name, v in cpu.items()}
        result["ratios_from_cpu_time"] = ratios(result["cpu_ms"], k)
    result["targets"] = {name: target_entry(result[key], limit) for name, key, limit in TARGETS}
    result["targets_missed"] = [name for name, t in result["targets"].items() if t["status"] == "miss"]
    result["config"] = {
        "backbone": args.backbone, "image_size": args.image_size, "batch_size": args.batch_size,
        "threads": args.threads, "device": str(setup.device), "channels_last": args.channels_last,
        "bf16": args.bf16, "compile": args.compile, "repeats": args.repeats, "epoch_repeats": args.epoch_repeats,
        "warmup": args.warmup, "epoch_samples": args.epoch_samples, "n_tasks": args.n_tasks, "quick": args.quick,
        "weights": "random init", "input": "synthetic",
        "torch": torch.__version__, "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else None,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
    }
    print_table(result, args.plain)
    emit_json(result, args.json_out)
    return result
