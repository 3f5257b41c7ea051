"""The JPEG workload of ``scripts/bench.py``: the data path of real runs, measured side by side.

A folder of seeded JPEGs with Stanford Cars' size distribution (about 700×480, spread in size and
aspect; generated once into ``--cache-dir``) is read through the project's own
``ImageFolderDataModule`` at 224 px, for each backbone (random weights) and each ``num_workers``:

- decode + transform alone (images/s), and reading the image cache alone;
- ∆(1) epochs from JPEGs, from the image cache (``image_cache=true``), from the feature cache
  (fp16, memory-mapped: what ``cache_features`` does at paper scale) and from the same features
  held in the training device's memory (``cache_features_on_device``: GPU memory on a GPU, host
  RAM on a CPU run);
- FC-only epochs (JPEGs, image cache) and full fine-tuning epochs (JPEGs).

Cases of one (backbone, workers) group alternate batch by batch (``num_workers=0``) or epoch by
epoch (with workers, whose background decoding would otherwise overlap another case's steps);
medians over rounds; ratios side by side. Also: each case's share of time spent waiting for data,
GPU utilisation (``nvidia-smi``, on a GPU), peak RSS, cache build times, sizes and break-even
epochs, and the targets of issue 17 as PASS/MISS lines.

    .venv/bin/python scripts/bench.py --workload jpeg              # 2,000 images, resnet18+50, workers 0,2
    .venv/bin/python scripts/bench.py --workload jpeg --quick      # smoke run: 8 tiny images, 64 px, resnet18
    python3 scripts/bench.py --workload jpeg --device cuda --bf16 --backbones resnet50 --workers 15
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench_common import (GpuUtilization, emit_json, load_warning, median, peak_rss_mb, print_target_lines,
                          render_tables, target_entry, target_rows, time_epochs)
from bench_jpeg_data import Models, cache_entries, ensure_jpegs

import torch  # noqa: E402

from deltapatch.cache import FeatureCache  # noqa: E402
from deltapatch.data import ImageFolderDataModule  # noqa: E402
from deltapatch.data import image_cache as ic  # noqa: E402
from deltapatch.provenance import cpu_model  # noqa: E402

CASES = ("decode_jpeg", "read_imgcache", "delta1_jpeg", "delta1_imgcache", "delta1_featcache",
         "delta1_featcache_resident", "fc_jpeg", "fc_imgcache", "finetune_jpeg")
RATIOS = {  # name: (numerator case, denominator case)
    "imgcache_vs_jpeg_delta1": ("delta1_imgcache", "delta1_jpeg"),
    "featcache_vs_jpeg_delta1": ("delta1_featcache", "delta1_jpeg"),
    "featcache_resident_vs_jpeg_delta1": ("delta1_featcache_resident", "delta1_jpeg"),
    "decode_share_of_jpeg_delta1": ("decode_jpeg", "delta1_jpeg"),
    "fc_vs_delta1_jpeg": ("fc_jpeg", "delta1_jpeg"),
    "finetune_vs_delta1_jpeg": ("finetune_jpeg", "delta1_jpeg"),
    "delta1_vs_fc_imgcache": ("delta1_imgcache", "fc_imgcache"),
}
# (target, backbone, ratio or measure, limit, only on a GPU); checked for every workers setting
TARGETS = [
    ("imgcache_epoch_vs_jpeg", "resnet18", "imgcache_vs_jpeg_delta1", 0.7, False),
    ("featcache_epoch_vs_jpeg", "resnet50", "featcache_vs_jpeg_delta1", 0.25, False),
    ("featcache_resident_epoch_vs_jpeg", "resnet50", "featcache_resident_vs_jpeg_delta1", 0.25, False),
    ("gpu_delta1_vs_fc_imgcache", "resnet50", "delta1_vs_fc_imgcache", 1.3, True),
    ("gpu_data_wait_share_delta1_imgcache", "resnet50", "wait:delta1_imgcache", 0.10, True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbones", default=None, help="comma-separated (default resnet18,resnet50; --quick: resnet18)")
    p.add_argument("--workers", default="0,2", help="num_workers settings, comma-separated")
    p.add_argument("--images", type=int, default=2000, help="generated training JPEGs (the epoch)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--scale", type=float, default=1.0, help="scale of the generated JPEGs (1: Cars-sized)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per case first")
    p.add_argument("--interleave", choices=("auto", "batch", "epoch"), default="auto",
                   help="auto: batch by batch without workers, epoch by epoch with them")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cache-dir", default="outputs/cache/bench", help="generated JPEGs and caches (reused)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 8 tiny images at 64 px, 1 round")
    p.add_argument("--json", "--json-out", dest="json_out", default=None, help="also write the JSON here")
    p.add_argument("--plain", action="store_true", help="plain-text tables even when rich is installed")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.classes, args.image_size, args.batch_size, args.scale = 8, 2, 64, 4, 0.1
        args.repeats, args.warmup = 1, 0
    args.backbones = args.backbones or ("resnet18" if args.quick else "resnet18,resnet50")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.backbones = [b for b in args.backbones.split(",") if b]
    args.workers = [int(w) for w in str(args.workers).split(",") if w != ""]
    return args


def datamodule(args: argparse.Namespace, root: Path, workers: int, cached: bool) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(data_dir=root, image_size=args.image_size, batch_size=args.batch_size,
                               num_workers=workers, pin_memory=args.device.startswith("cuda"), seed=args.seed,
                               val_fraction=0.0, image_cache=cached, image_cache_dir=Path(args.cache_dir) / "images")
    dm.setup()
    return dm


def epoch(loader, step, wait: dict, name: str):
    """A case: a generator that runs one epoch of ``step`` over ``loader``, yielding per batch
    and appending the epoch's time spent waiting for batches to ``wait[name]`` (one entry an epoch)."""
    def run():
        it = iter(loader)
        waits = wait.setdefault(name, [])
        waits.append(0.0)
        while True:
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                return
            waits[-1] += time.perf_counter() - t0
            step(x, y)
            yield
    return run


def wait_shares(wait: dict[str, list[float]], samples: dict[str, list[float]], repeats: int) -> dict[str, float]:
    """Each case's share of its timed epochs (``samples``, ms) spent waiting for batches
    (``wait``, s an epoch). The warm-up epochs are left out, like the epoch times: counting their
    wait (workers starting, a cold page cache) made a 2-round GPU run report 1.98 for read_imgcache."""
    return {k: sum(wait[k][-repeats:]) / (sum(samples[k]) / 1e3) for k in samples}


def run_group(args, models: Models, jpeg, cached, feats, resident, util: GpuUtilization, w: int) -> dict[str, Any]:
    """Every case of one (backbone, workers) group, interleaved; medians and ratios."""
    m = models
    loaders = {"jpeg": jpeg.train_dataloader(), "imgcache": cached.train_dataloader(),
               "featcache": feats.loader(args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                                         pin_memory=args.device.startswith("cuda")),
               "resident": resident.loader(args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))}
    if m.device.type == "cuda":
        loaders["imgcache"].device = m.device  # crop/flip/normalise on the GPU, as in training there
    wait: dict[str, list[float]] = {}
    steps = {"decode_jpeg": ("jpeg", m.touch), "read_imgcache": ("imgcache", m.touch),
             "delta1_jpeg": ("jpeg", m.delta1), "delta1_imgcache": ("imgcache", m.delta1),
             "delta1_featcache": ("featcache", m.delta1_from),
             "delta1_featcache_resident": ("resident", m.delta1_from), "fc_jpeg": ("jpeg", m.fc),
             "fc_imgcache": ("imgcache", m.fc), "finetune_jpeg": ("jpeg", m.finetune)}
    cases = {name: epoch(loaders[src], fn, wait, name) for name, (src, fn) in steps.items()}
    by = args.interleave if args.interleave != "auto" else ("epoch" if w > 0 else "batch")
    windows: dict = {}
    samples = time_epochs(cases, m.sync, args.warmup, args.repeats, by=by, windows=windows)
    ms = {k: median(v) for k, v in samples.items()}
    n = len(jpeg.splits["train"])
    return {
        "interleave": by, "ms": ms, "ms_samples": {k: [round(v, 3) for v in vs] for k, vs in samples.items()},
        "images_per_s": {k: n / (v / 1e3) for k, v in ms.items()},
        "ratios": {r: ms[a] / ms[b] for r, (a, b) in RATIOS.items()},
        "data_wait_share": wait_shares(wait, samples, args.repeats),
        "gpu_util_pct": {k: util.mean(windows.get(k, [])) for k in cases} if util.proc else None,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    load_start = os.getloadavg()
    cache_dir = Path(args.cache_dir)
    t0 = time.perf_counter()
    root, generated = ensure_jpegs(cache_dir, args.images, args.classes, args.seed, args.scale)
    gen_s = time.perf_counter() - t0
    most = max(args.workers)
    # the image cache: built once (with the most workers), reused by every group
    before = cache_entries(cache_dir / "images")
    t0 = time.perf_counter()
    build_dm = datamodule(args, root, most, cached=True)
    ic.cached_split(build_dm, "train")
    image_cache = {"built": cache_entries(cache_dir / "images") != before, "seconds": time.perf_counter() - t0,
                   "bytes": (ic.cached_split(build_dm, "train").path.stat().st_size)}
    util = GpuUtilization().start() if args.device.startswith("cuda") else GpuUtilization()
    groups, caches = {}, {}
    try:
        for bb in args.backbones:
            models = Models(bb, args)
            jpeg_plain = datamodule(args, root, most, cached=False)
            source = torch.utils.data.DataLoader(jpeg_plain.splits["train"], batch_size=args.batch_size,
                                                 num_workers=most)
            t0 = time.perf_counter()
            with models.autocast():
                feats = FeatureCache(models.net, models.stage, source, dataset_id=f"bench-jpeg:{root.name}:"
                                     f"{args.image_size}", cache_dir=cache_dir / "features", max_memory_bytes=0,
                                     device=models.device)
            models.sync()
            caches[bb] = {"built": feats.computed, "seconds": time.perf_counter() - t0,
                          "bytes": sum(p.stat().st_size for p in feats.path.iterdir()), "memmapped": feats.memmapped}
            # the same entry read in whole and held where training runs (what cache_features_on_device does)
            t0 = time.perf_counter()
            resident = FeatureCache(models.net, models.stage, source, dataset_id=feats.dataset_id,
                                    cache_dir=cache_dir / "features", max_memory_bytes=0, verify=False,
                                    device=models.device).keep_on(models.device)
            models.sync()
            caches[bb]["resident_seconds"] = time.perf_counter() - t0
            for w in args.workers:
                group = run_group(args, models, datamodule(args, root, w, False), datamodule(args, root, w, True),
                                  feats, resident, util, w)
                ms = group["ms"]
                group["breakeven_epochs"] = {
                    "image_cache": breakeven(image_cache["seconds"], ms["delta1_jpeg"], ms["delta1_imgcache"]),
                    "feature_cache": breakeven(caches[bb]["seconds"], ms["delta1_jpeg"], ms["delta1_featcache"]),
                    "feature_cache_resident": breakeven(caches[bb]["seconds"] + caches[bb]["resident_seconds"],
                                                        ms["delta1_jpeg"], ms["delta1_featcache_resident"]),
                }
                groups[f"{bb}_w{w}"] = group
            del models, feats, resident
    finally:
        util.stop()
    result = {"groups": groups, "image_cache": image_cache, "feature_cache": caches,
              "jpegs": {"root": str(root), "images": args.images, "generated": generated, "seconds": gen_s},
              "peak_rss_mb": peak_rss_mb()}
    result["decode_images_per_s"] = {g: v["images_per_s"]["decode_jpeg"] for g, v in groups.items()}
    result["targets"] = targets(groups, args)
    result["targets_missed"] = [k for k, t in result["targets"].items() if t["status"] == "miss"]
    result["config"] = {
        "workload": "jpeg", "backbones": args.backbones, "workers": args.workers, "images": args.images,
        "image_size": args.image_size, "batch_size": args.batch_size, "scale": args.scale, "repeats": args.repeats,
        "warmup": args.warmup, "threads": args.threads, "device": args.device, "bf16": args.bf16,
        "channels_last": args.channels_last, "quick": args.quick, "weights": "random init",
        "torch": torch.__version__, "cpu": cpu_model(), "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
    }
    report(result, args.plain)
    emit_json(result, args.json_out)
    return result


def breakeven(build_s: float, jpeg_ms: float, cached_ms: float) -> float | None:
    """Epochs after which building a cache has paid for itself (None: a cached epoch is no faster)."""
    saved = (jpeg_ms - cached_ms) / 1e3
    return build_s / saved if saved > 0 else None


def targets(groups: dict, args: argparse.Namespace) -> dict[str, dict]:
    out = {}
    for name, bb, what, limit, gpu_only in TARGETS:
        if gpu_only and not args.device.startswith("cuda"):
            continue
        for w in args.workers:
            g = groups.get(f"{bb}_w{w}")
            if g is None:
                value = None
            elif what.startswith("wait:"):
                value = g["data_wait_share"][what.split(":", 1)[1]]
            else:
                value = g["ratios"][what]
            out[f"{name}_{bb}_w{w}"] = target_entry(value, limit)
    return out


def report(result: dict, plain: bool) -> None:
    tables = []
    for g, v in result["groups"].items():
        util = v["gpu_util_pct"] or {}
        rows = [(k, f"{v['ms'][k]:.0f}", f"{v['images_per_s'][k]:.0f}", f"{v['data_wait_share'][k]:.2f}",
                 "-" if util.get(k) is None else f"{util[k]:.0f}") for k in CASES]
        tables.append((f"{g}: one epoch of {result['config']['images']} images ({v['interleave']} interleave)",
                       ("case", "ms/epoch", "images/s", "data wait", "GPU util %"), rows))
    names = list(result["groups"])
    tables.append(("ratios of medians, side by side", ("ratio", *names),
                   [(r, *(f"{result['groups'][g]['ratios'][r]:.3f}" for g in names)) for r in RATIOS]))
    rows = [("image cache", "built" if result["image_cache"]["built"] else "reused",
             f"{result['image_cache']['seconds']:.1f}", f"{result['image_cache']['bytes'] / 1e6:.1f}",
             " / ".join(f"{g}: {fmt(v['breakeven_epochs']['image_cache'])}" for g, v in result["groups"].items()))]
    for bb, c in result["feature_cache"].items():
        rows.append((f"feature cache {bb}", "built" if c["built"] else "reused", f"{c['seconds']:.1f}",
                     f"{c['bytes'] / 1e6:.1f}", " / ".join(f"{g}: {fmt(v['breakeven_epochs']['feature_cache'])}"
                                                           for g, v in result["groups"].items() if g.startswith(bb))))
        rows.append((f"  held in training memory", "read in", f"{c['resident_seconds']:.1f}", "-",
                     " / ".join(f"{g}: {fmt(v['breakeven_epochs']['feature_cache_resident'])}"
                                for g, v in result["groups"].items() if g.startswith(bb))))
    tables.append(("caches (build time includes the checksum of a reused file)",
                   ("cache", "state", "seconds", "MB on disk", "break-even epochs"), rows))
    tables.append(("targets (issue 17)", ("target", "value", "limit", "status", "missed by"),
                   target_rows(result["targets"])))
    render_tables(tables, plain)
    rss = result["peak_rss_mb"]
    print(f"peak RSS: {rss['self']:.0f} MB (largest loader worker {rss['children']:.0f} MB)")
    load_warning(result)
    print_target_lines(result["targets"])


def fmt(v: float | None) -> str:
    return "never" if v is None else f"{v:.2f}"
