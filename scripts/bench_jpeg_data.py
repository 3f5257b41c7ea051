"""Data and models of the JPEG workload (bench_jpeg.py): the generated Cars-like JPEG folder and
the train steps every case runs."""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import bench_common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
import torch
from PIL import Image
from torch import nn

from deltapatch import DeltaNetwork, create_backbone

# Stanford Cars' training images: about 700×480 on average, widths spread roughly ±25 %, aspect
# ratios from square to very wide (the "about 700×480"; the bench draws from these)
CARS_WIDTH, CARS_WIDTH_SD, CARS_ASPECT, CARS_ASPECT_SD = 700, 180, 1.46, 0.2


def _one_jpeg(job: tuple[Path, int, int, float]) -> tuple[int, int]:
    """Write image ``i`` (its size and content drawn from a generator seeded by (seed, i))."""
    path, seed, i, scale = job
    rng = np.random.default_rng([seed, i])
    w = int(np.clip(rng.normal(CARS_WIDTH, CARS_WIDTH_SD), 200, 1600) * scale)
    h = int(w / np.clip(rng.normal(CARS_ASPECT, CARS_ASPECT_SD), 1.0, 2.4))
    w, h = max(w, 8), max(h, 8)
    # smooth structure plus grain: JPEG decoding does photo-like work, not a flat field
    coarse = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
    return w, h


def ensure_jpegs(cache_dir: Path, n: int, classes: int, seed: int, scale: float) -> tuple[Path, bool]:
    """The folder of ``n`` training JPEGs (and one test image per class) as an ImageFolder tree;
    generated once (in parallel, into a temp folder renamed when complete). Returns (folder,
    whether it was generated now)."""
    root = cache_dir / f"jpegs-cars-n{n}-c{classes}-s{seed}-x{scale:g}"
    if root.is_dir():
        return root, False
    tmp = cache_dir / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    jobs = [(tmp / "train" / f"c{i % classes:03d}" / f"{i:05d}.jpg", seed, i, scale) for i in range(n)]
    jobs += [(tmp / "test" / f"c{c:03d}" / "0.jpg", seed + 1, c, scale) for c in range(classes)]
    try:
        with ProcessPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 16))) as pool:
            list(pool.map(_one_jpeg, jobs, chunksize=16))
        tmp.rename(root)
    except OSError:
        if not root.is_dir():  # not a concurrent run that finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root, True


def cache_entries(folder: Path) -> set[str]:
    """Names of the finished cache entries in ``folder`` (temp folders start with a dot)."""
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()


class Models:
    """One backbone's ∆(1) network, FC-only head and fine-tuning copy, with their optimizers."""

    def __init__(self, backbone: str, args):
        self.args, self.device = args, torch.device(args.device)
        self.fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        torch.manual_seed(args.seed)
        base = create_backbone(backbone, num_classes=1000).to(self.device, memory_format=self.fmt)
        self.net = DeltaNetwork(base, n_deltas=1)
        self.net.add_task("t", args.classes)
        self.net.to(self.device, memory_format=self.fmt).train()
        self.stage = self.net.tasks["t"].first_stage
        self.delta_opt = torch.optim.SGD(self.net.trainable_parameters("t"), lr=1e-3, momentum=0.9)
        self.head = nn.Linear(self.net.adapter.num_features, args.classes).to(self.device)
        self.fc_opt = torch.optim.SGD(self.head.parameters(), lr=1e-3, momentum=0.9)
        self.ft = copy.deepcopy(base).train().requires_grad_(True)
        self.ft_opt = torch.optim.SGD(self.ft.parameters(), lr=1e-3, momentum=0.9)

    def autocast(self):
        if not self.args.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _dev(self, x: torch.Tensor, y: torch.Tensor):
        return (x.to(self.device, non_blocking=True, memory_format=self.fmt) if x.dim() == 4 else
                x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)

    def _step(self, opt, logits_fn, y) -> None:
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = nn.functional.cross_entropy(logits_fn(), y)
        loss.backward()
        opt.step()

    def touch(self, x, y) -> None:
        """No model: the batch only reaches the device (decode / cache read alone)."""
        self._dev(x, y)

    def delta1(self, x, y) -> None:
        x, y = self._dev(x, y)
        self._step(self.delta_opt, lambda: self.net(x, task="t"), y)

    def delta1_from(self, h, y) -> None:
        h, y = self._dev(h, y)
        self._step(self.delta_opt, lambda: self.net.forward_from(h, "t"), y)

    def fc(self, x, y) -> None:
        x, y = self._dev(x, y)

        def logits():
            with torch.no_grad():  # frozen backbone: only the head learns
                f = self.net.adapter.pre_logits(self.net.base_features(x, upto=self.net.n_stages))
            return self.head(f.float())
        self._step(self.fc_opt, logits, y)

    def finetune(self, x, y) -> None:
        x, y = self._dev(x, y)
        self._step(self.ft_opt, lambda: self.ft(x), y)
