"""The models and cases of the synthetic workload (``scripts/bench.py``, see bench_synthetic.py):
one :class:`Setup` with every model built once, the train/inference/epoch/breakdown cases, the
peak-memory children and the file-size figures."""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import bench_common  # noqa: F401  (puts the checkout on sys.path)
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deltapatch import DeltaNetwork, create_backbone, save_patch
from deltapatch.cache import FeatureCache

MEM_MODES = ("idle", "finetune", "fc", "delta1", "delta1_cached")

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
    base_cmd = [sys.executable, str(Path(__file__).resolve().with_name("bench.py")), *argv]

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
