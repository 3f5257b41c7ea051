#!/usr/bin/env python
"""Measure what ∆-Patching costs against full fine-tuning and FC-only, side by side in one process.

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
import contextlib
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from deltapatch import DeltaNetwork, create_backbone, save_patch  # noqa: E402
from deltapatch.cache import FeatureCache  # noqa: E402

MEM_MODES = ("idle", "finetune", "fc", "delta1", "delta1_cached")

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
    p.add_argument("--json-out", default=None, help="also write the JSON result to this file")
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


# ---------------------------------------------------------------------------- setup
class Setup:
    """The models, optimizers and data every case uses, built once."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device(args.device)
        self.fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        torch.manual_seed(args.seed)
        g = torch.Generator().manual_seed(args.seed)
        b, s = args.batch_size, args.image_size
        self.x = torch.randn(b, 3, s, s, generator=g).to(self.device, memory_format=self.fmt)
        self.y = torch.randint(0, args.num_classes, (b,), generator=g).to(self.device)
        base = create_backbone(args.backbone, num_classes=args.num_classes)
        self.base_cpu = base  # pristine copy for the file-size figures
        base = copy.deepcopy(base).to(self.device, memory_format=self.fmt)

        # finetune: its own copy of the whole model, everything trainable, BN in train mode
        self.ft = copy.deepcopy(base).train()
        self.ft.requires_grad_(True)
        self.ft_opt = torch.optim.SGD(self.ft.parameters(), lr=1e-3, momentum=0.9)

        # ∆(1) for training; FC-only reuses its frozen base with a head of its own
        self.net = DeltaNetwork(base, n_deltas=1)
        self.net.add_task("t", args.num_classes)
        self.net.to(self.device, memory_format=self.fmt).train()
        self.delta_opt = torch.optim.SGD(self.net.trainable_parameters("t"), lr=1e-3, momentum=0.9)
        self.first = self.net.tasks["t"].first_stage
        self.fc_head = nn.Linear(self.net.adapter.num_features, args.num_classes).to(self.device)
        self.fc_opt = torch.optim.SGD(self.fc_head.parameters(), lr=1e-3, momentum=0.9)

        # inference: a second DeltaNetwork over the same frozen base (eval mode), n_tasks ∆(1) tasks
        self.inet = DeltaNetwork(base, n_deltas=1)
        self.task_names = [f"task{k}" for k in range(args.n_tasks)]
        for name in self.task_names:
            self.inet.add_task(name, args.num_classes)
        self.inet.to(self.device, memory_format=self.fmt).eval()

        self.h = self.net.base_features(self.x, upto=self.first)  # one batch of cached features
        self._compiled: dict[str, Callable] = {}

    # ------------------------------------------------------------ helpers
    def autocast(self):
        if not self.args.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def fwd(self, name: str, fn: Callable) -> Callable:
        """``fn`` compiled once per case when ``--compile``, else as is."""
        if not self.args.compile:
            return fn
        if name not in self._compiled:
            self._compiled[name] = torch.compile(fn)
        return self._compiled[name]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def to_dev(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4:
            return t.to(self.device, memory_format=self.fmt, non_blocking=True)
        return t.to(self.device, non_blocking=True)

    # ------------------------------------------------------------ one train step per mode
    def _step(self, opt: torch.optim.Optimizer, logits_fn: Callable, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = nn.functional.cross_entropy(logits_fn(), y)
        loss.backward()
        opt.step()

    def finetune_step(self, x=None, y=None) -> None:
        x, y = (self.x, self.y) if x is None else (x, y)
        f = self.fwd("finetune", self.ft)
        self._step(self.ft_opt, lambda: f(x), y)

    def fc_step(self, x=None, y=None) -> None:
        x, y = (self.x, self.y) if x is None else (x, y)
        net = self.net
        feats = self.fwd("fc", lambda x: net.adapter.pre_logits(net.base_features(x, upto=net.n_stages)))

        def logits():
            with torch.no_grad():  # frozen backbone: no graph at all, only the head learns
                f = feats(x)
            return self.fc_head(f.float() if f.dtype != self.fc_head.weight.dtype else f)
        self._step(self.fc_opt, logits, y)

    def delta1_step(self, x=None, y=None) -> None:
        x, y = (self.x, self.y) if x is None else (x, y)
        f = self.fwd("delta1", lambda x: self.net(x, task="t"))
        self._step(self.delta_opt, lambda: f(x), y)

    def delta1_cached_step(self, h=None, y=None) -> None:
        h, y = (self.h, self.y) if h is None else (h, y)
        f = self.fwd("delta1_cached", lambda h: self.net.forward_from(h, "t"))
        self._step(self.delta_opt, lambda: f(h), y)

    # ------------------------------------------------------------ inference
    def infer(self, task: str | None) -> Callable[[], Any]:
        f = self.fwd(f"infer_{task}", lambda x: self.inet(x, task=task))

        def run():
            with torch.inference_mode(), self.autocast():
                return f(self.x)
        return run

    def _shared(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.inet(x, tasks=self.task_names)  # one prefix pass, then each task's last stage

    def infer_shared(self) -> Any:
        f = self.fwd("infer_shared", self._shared)
        with torch.inference_mode(), self.autocast():
            return f(self.x)

    def infer_separate(self) -> Any:
        f = {t: self.fwd(f"infer_{t}", lambda x, t=t: self.inet(x, task=t)) for t in self.task_names}
        with torch.inference_mode(), self.autocast():
            return [f[t](self.x) for t in self.task_names]


# ---------------------------------------------------------------------------- timing
def time_cases(cases: dict[str, Callable[[], Any]], setup: Setup, warmup: int, repeats: int,
               cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Wall-clock ms per call of each case: warm-up, then ``repeats`` interleaved rounds.

    ``cpu``, when given, receives the process CPU time (all threads) of the same calls: on a
    machine shared with other work, time spent descheduled inflates wall-clock but not CPU time.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    setup.sync()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            setup.sync()
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            setup.sync()
            t1, c1 = time.perf_counter(), time.process_time()
            samples[name].append((t1 - t0) * 1e3)
            if cpu is not None:
                cpu.setdefault(name, []).append((c1 - c0) * 1e3)
    return samples


def time_epochs(cases: dict[str, Callable[[], Iterator[None]]], setup: Setup, warmup: int, repeats: int,
                cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """ms per whole epoch of each case, the cases interleaved *batch by batch* within a round.

    Each case still runs its own full epoch (its loader, its reshuffle, every batch); only the
    order of execution is interleaved. An epoch lasts seconds, long enough for the load from other
    work on a shared machine to change in between: interleaving makes every case see the same load.
    """
    for fn in cases.values():
        for _ in range(warmup):
            for _ in fn():
                pass
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        live = {name: fn() for name, fn in cases.items()}
        wall = dict.fromkeys(cases, 0.0)
        proc = dict.fromkeys(cases, 0.0)
        while live:
            for name in list(live):
                setup.sync()
                c0, t0 = time.process_time(), time.perf_counter()
                try:
                    next(live[name])
                except StopIteration:
                    del live[name]
                setup.sync()
                wall[name] += time.perf_counter() - t0
                proc[name] += time.process_time() - c0
        for name in cases:
            samples[name].append(wall[name] * 1e3)
            if cpu is not None:
                cpu.setdefault(name, []).append(proc[name] * 1e3)
    return samples


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# ---------------------------------------------------------------------------- peak memory
def mem_child(args: argparse.Namespace) -> dict:
    """Run in a fresh process: build one mode, step it, report this process's peak memory."""
    s = Setup(args)
    mode = args.mem_child
    step = {"finetune": s.finetune_step, "fc": s.fc_step, "delta1": s.delta1_step,
            "delta1_cached": s.delta1_cached_step}.get(mode)
    if s.device.type == "cuda":
        s.sync()
        torch.cuda.reset_peak_memory_stats(s.device)
    before = torch.cuda.memory_allocated(s.device) if s.device.type == "cuda" else 0
    for _ in range(args.mem_steps if step else 0):
        step()
    s.sync()
    out = {"mode": mode, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    if s.device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(s.device)
        out["cuda_peak_above_start_bytes"] = out["cuda_peak_bytes"] - before
    return out


def measure_memory(args: argparse.Namespace, argv: list[str]) -> dict[str, dict]:
    """One child per mode (peak RSS is per process: measuring in one process would only give
    the maximum over all modes)."""
    base_cmd = [sys.executable, str(Path(__file__).resolve()), *argv]

    def run(mode: str) -> dict:
        proc = subprocess.run([*base_cmd, "--mem-child", mode], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child '{mode}' failed:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=max(1, args.mem_jobs)) as pool:
        results = list(pool.map(run, MEM_MODES))
    return {r["mode"]: r for r in results}


# ---------------------------------------------------------------------------- file sizes
def file_sizes(setup: Setup) -> dict[str, int]:
    """A real patch file of ∆(1) with its head, and a real safetensors copy of the whole model."""
    from safetensors.torch import save_file

    net = DeltaNetwork(copy.deepcopy(setup.base_cpu), n_deltas=1)
    net.add_task("t", setup.args.num_classes)
    with tempfile.TemporaryDirectory() as d:
        patch = save_patch(net, "t", Path(d) / "t.patch.safetensors")
        model = Path(d) / "model.safetensors"
        save_file({k: v.detach().contiguous() for k, v in setup.base_cpu.state_dict().items()}, str(model))
        return {"patch": patch.stat().st_size, "model": model.stat().st_size,
                "patch_params": sum(p.numel() for p in net.tasks["t"].parameters())}


# ---------------------------------------------------------------------------- epochs
def epoch_cases(setup: Setup) -> tuple[dict[str, Callable[[], Iterator[None]]], dict[str, float]]:
    """∆(1) epochs over a synthetic dataset from images and from the FeatureCache (in memory and
    memory-mapped), plus a full fine-tuning epoch; and the one-off cost of building the cache."""
    args = setup.args
    g = torch.Generator().manual_seed(args.seed + 1)
    n, s = args.epoch_samples, args.image_size
    ds = TensorDataset(torch.randn(n, 3, s, s, generator=g), torch.randint(0, args.num_classes, (n,), generator=g))
    plain = DataLoader(ds, batch_size=args.batch_size, shuffle=False)
    extra: dict[str, float] = {}
    with setup.autocast():
        t0 = time.perf_counter()
        cache = FeatureCache.for_task(setup.net, "t", plain, device=setup.device)
        setup.sync()
        extra["cache_build_ms"] = (time.perf_counter() - t0) * 1e3
        tmp = tempfile.TemporaryDirectory(prefix="deltapatch-bench-")
        setup._tmp = tmp  # removed when setup goes away
        mm = FeatureCache.for_task(setup.net, "t", plain, device=setup.device, dataset_id=f"bench-{n}-{s}",
                                   cache_dir=tmp.name, max_memory_bytes=0)
    assert mm.memmapped
    extra["cache_bytes"] = cache.nbytes
    images = DataLoader(ds, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    cached = cache.loader(args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    mmapped = mm.loader(args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))

    # each epoch is a generator that yields after every batch, so time_epochs can interleave the
    # cases batch by batch (fetching the batch from its loader is inside the timed part)
    def run_images(step):
        def epoch():
            for x, y in images:
                step(setup.to_dev(x), setup.to_dev(y))
                yield
        return epoch

    def run_cached(loader):
        def epoch():
            for h, y in loader:
                setup.delta1_cached_step(setup.to_dev(h), setup.to_dev(y))
                yield
        return epoch

    cases = {
        "epoch_delta1_uncached": run_images(setup.delta1_step),
        "epoch_delta1_cached": run_cached(cached),
        "epoch_delta1_cached_memmap": run_cached(mmapped),
        "epoch_finetune": run_images(setup.finetune_step),
    }
    return cases, extra


# ---------------------------------------------------------------------------- breakdown
def breakdown_cases(setup: Setup) -> dict[str, Callable[[], Any]]:
    """Forward pieces (inference mode) of the patched path, to see where time goes."""
    net, x, first = setup.inet, setup.x, setup.first
    t = setup.task_names[0]
    patch = net.tasks[t].stages[str(first)]
    h = net.base_features(x, upto=first)

    def wrap(fn):
        def run():
            with torch.inference_mode(), setup.autocast():
                return fn()
        return run

    return {
        "fwd_prefix": wrap(lambda: net.base_features(x, upto=first)),
        "fwd_base_last_stage": wrap(lambda: net.adapter.head(net._run_stage(first, h))),
        "fwd_patched_last_stage": wrap(lambda: net.forward_from(h, t)),
        "fwd_delta_module": wrap(lambda: patch.gate(h)),
    }


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


def target_entry(value: float, limit: float) -> dict:
    ok = value <= limit
    entry: dict[str, Any] = {"value": value, "limit": f"<= {limit:g}", "status": "pass" if ok else "miss"}
    if not ok:
        entry["over_by"] = value - limit
        entry["over_by_pct"] = round(100 * (value / limit - 1), 1)
    return entry


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
    try:
        if plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table

        # piped output (tee, CI logs): rich would fall back to 80 columns and squash the names
        console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 180)
        for title, cols, rows in tables:
            if not rows:
                continue
            tab = Table(title=title)
            for c in cols:
                tab.add_column(c, justify="left" if c in ("case", "mode", "ratio / size") else "right")
            for r in rows:
                tab.add_row(*r)
            console.print(tab)
    except ImportError:
        for title, cols, rows in tables:
            if not rows:
                continue
            widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(cols)]
            print(f"\n{title}")
            print("  ".join(str(c).ljust(w) for c, w in zip(cols, widths)))
            for r in rows:
                print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    load = result["config"]["loadavg_start"][0]
    if result["config"]["device"] == "cpu" and load > (os.cpu_count() or 1):
        print(f"WARNING: load average {load:.1f} on {os.cpu_count()} CPUs at start: other work shares these "
              f"cores, so wall-clock figures are inflated and noisy; compare the min and CPU-time ratios")
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
    samples = time_cases(train, setup, args.warmup, args.repeats, cpu)
    samples.update(time_cases(infer, setup, args.warmup, args.repeats, cpu))
    samples.update(time_cases(breakdown_cases(setup), setup, args.warmup, args.repeats, cpu))
    epochs, extra = epoch_cases(setup)
    samples.update(time_epochs(epochs, setup, min(args.warmup, 1), args.epoch_repeats, cpu))
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
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else None,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
    }
    print_table(result, args.plain)
    line = json.dumps(result, separators=(",", ":"))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(line + "\n")
    print(line, flush=True)
    return result


if __name__ == "__main__":
    main()
