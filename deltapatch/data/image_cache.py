"""Image cache: decode and resize every image once into a uint8 array on disk, then train from it.

A JPEG dataset at 224 px spends most of an epoch's CPU time decoding and resizing with PIL. With
``image_cache=true`` a :class:`~deltapatch.data.base.ClassificationDataModule` runs the
deterministic part of its own transform (decode, RGB, resize, any fixed shift) once per split,
stores the uint8 results ``[N, 3, S, S]`` as a numpy ``.npy`` file (see :mod:`.array_store`:
atomic, checksummed, memory-mapped) and serves batches from it. What stays per batch runs on the
batch, on whatever device it is on (the GPU when training there): the random crop and flip of
``augment=true`` (:class:`BatchCropFlip`, per sample, one gather), then the dataset's own
``ToDtype``/``Normalize``.

The rule for ``S`` (``image_cache_size``): by default the eval size, ``image_size``, because this
project's transforms resize whole images to ``image_size`` × ``image_size``; the cache then holds
exactly the pixels the JPEG path computes, so every batch equals the JPEG path's (for random
transforms, in distribution: the same crop and flip ops on the same pixels). A larger ``S`` (e.g.
256 for 224-px training, the torchvision recipe) stores ``S`` × ``S`` and crops ``image_size``:
random crops (centre crops without ``augment``) in training, centre crops for val/test; that is
a different preprocessing from the JPEG path, chosen on purpose.

Key: a hash of the dataset's class and settings (everything but loader and normalisation
settings), split, class subset, the chosen samples (indices, and file paths for file datasets)
and the cached transform. Files edited in place under the same paths are not noticed: delete
``<image_cache_dir>`` after changing images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2 as T

from ..errors import ConfigError
from .array_store import EntryError, EntryWriter, discard, entry_bytes, open_entry

log = logging.getLogger(__name__)

FORMAT = "deltapatch-images/1"
# settings that change how batches are served, not which pixels are cached
NOT_KEYED = {"batch_size", "eval_batch_size", "num_workers", "pin_memory", "persistent_workers", "prefetch_factor",
             "augment", "mean", "std", "image_cache", "image_cache_dir", "download", "prepare_data_per_node",
             "allow_zero_length_dataloader_with_multiple_devices"}
AUG_SALT = 7919  # the crop/flip stream differs from the sampler's, which uses the same seed and epoch


class BatchCropFlip:
    """Per-sample crops and horizontal flips of a uint8 batch ``[B, C, H, W]`` in one gather.

    ``random=True`` does to each image what torchvision's ``RandomCrop(size, padding)`` (constant
    padding with ``fill``) followed by ``RandomHorizontalFlip(flip_p)`` does; ``random=False`` is
    ``CenterCrop(size)`` (same rounding). Parameters are drawn on the CPU from ``generator``, so a
    seed gives the same crops on any device; the gather runs where the batch is.
    """

    def __init__(self, size: int, padding: Sequence[int] = (0, 0, 0, 0), fill: int = 0, flip_p: float = 0.0,
                 random: bool = True):
        self.size, self.padding, self.fill = int(size), [int(p) for p in padding], int(fill)
        self.flip_p, self.random = float(flip_p), random

    def params(self, b: int, h: int, w: int, generator: torch.Generator | None = None):
        """Top, left (in the padded image) and flip flag of each sample, on the CPU."""
        s = self.size
        if h < s or w < s:
            raise ConfigError(f"image cache: a {s}-px crop of {h}×{w} images (image_cache_size below image_size?)")
        if self.random:
            top = torch.randint(0, h - s + 1, (b,), generator=generator)
            left = torch.randint(0, w - s + 1, (b,), generator=generator)
        else:
            top = torch.full((b,), int(round((h - s) / 2.0)))
            left = torch.full((b,), int(round((w - s) / 2.0)))
        flip = torch.rand(b, generator=generator) < self.flip_p if self.flip_p > 0 else torch.zeros(b, dtype=torch.bool)
        return top, left, flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, params=None) -> torch.Tensor:
        if any(self.padding):
            left_pad, top_pad, right_pad, bottom_pad = self.padding
            x = torch.nn.functional.pad(x, (left_pad, right_pad, top_pad, bottom_pad), value=self.fill)
        b, _, h, w = x.shape
        top, left, flip = params if params is not None else self.params(b, h, w, generator)
        if not self.random and not bool(flip.any()) and h == w == self.size:
            return x
        ar = torch.arange(self.size)
        rows = top[:, None] + ar  # [B, S]
        cols = torch.where(flip[:, None], left[:, None] + self.size - 1 - ar, left[:, None] + ar)  # a flip reverses
        dev = x.device
        out = x[torch.arange(b, device=dev)[:, None, None], :, rows.to(dev)[:, :, None], cols.to(dev)[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()  # advanced indices first: [B, S, S, C] -> [B, C, S, S]


def _describe(ops: Sequence[Any]) -> list[str]:
    return [repr(op) for op in ops]


@dataclass
class CachePlan:
    """How a datamodule's transform splits into the cached part and the per-batch part."""

    pixel: T.Compose  # sample -> uint8 [C, S, S], run once when the cache is built
    size: int  # S
    train_crop: BatchCropFlip | None  # per batch in training (None: nothing to do)
    eval_crop: BatchCropFlip | None  # per batch for val/test
    tensor: T.Compose  # uint8 batch -> the model's input (ToDtype, Normalize)

    @property
    def description(self) -> list[str]:
        return _describe(self.pixel.transforms)


def _split_at_dtype(ops: list, what: str) -> int:
    k = next((i for i, op in enumerate(ops) if isinstance(op, T.ToDtype)), None)
    if k is None or k == 0 or not isinstance(ops[k - 1], (T.ToImage, T.PILToTensor)):
        raise ConfigError(f"image_cache: the {what} transform has no uint8 stage (ToImage then ToDtype) to cache; "
                          f"set image_cache=false for this dataset")
    return k


def plan_for(dm: Any) -> CachePlan:
    """The :class:`CachePlan` of datamodule ``dm`` (its ``transform(train)`` and cache size).

    The training transform must be the eval transform plus random crops and flips placed just
    before ``ToImage``; anything else cannot be applied to cached pixels and is refused.
    """
    eval_ops, train_ops = list(dm.transform(False).transforms), list(dm.transform(True).transforms)
    ke, kt = _split_at_dtype(eval_ops, "eval"), _split_at_dtype(train_ops, "training")
    pixel, tensor = eval_ops[:ke], eval_ops[ke:]
    random = [op for op in train_ops[:kt] if isinstance(op, (T.RandomCrop, T.RandomHorizontalFlip))]
    fixed = [op for op in train_ops[:kt] if op not in random]
    first_random = min((train_ops.index(op) for op in random), default=kt - 1)
    if (_describe(fixed) != _describe(pixel) or _describe(train_ops[kt:]) != _describe(tensor)
            or any(op not in random for op in train_ops[first_random:kt - 1])):
        raise ConfigError(f"image_cache: {dm.name}'s training transform is not its eval transform plus random "
                          f"crops/flips before ToImage ({_describe(train_ops)}); set image_cache=false")
    crop = next((op for op in random if isinstance(op, T.RandomCrop)), None)
    flip = next((op for op in random if isinstance(op, T.RandomHorizontalFlip)), None)
    if crop is not None and (crop.padding_mode != "constant" or crop.pad_if_needed or not isinstance(crop.fill, int)):
        raise ConfigError("image_cache: only RandomCrop with constant padding and one integer fill is supported")
    out = int(dm.image_size)
    size = int(dm.image_cache_size or out)
    if size != out:  # store S x S, crop image_size per batch (the documented rule)
        resize = [i for i, op in enumerate(pixel) if isinstance(op, T.Resize)]
        if not resize:
            raise ConfigError(f"image_cache: {dm.name}'s transform has no Resize to set image_cache_size on")
        old = pixel[resize[-1]]
        pixel = pixel[:resize[-1]] + [T.Resize((size, size), interpolation=old.interpolation,
                                               antialias=old.antialias)] + pixel[resize[-1] + 1:]
        train_crop = BatchCropFlip(out, random=crop is not None, flip_p=flip.p if flip else 0.0)
        eval_crop = BatchCropFlip(out, random=False)
    else:
        pad = crop.padding if crop is not None else (0, 0, 0, 0)
        train_crop = (BatchCropFlip(out, pad, crop.fill if crop else 0, flip.p if flip else 0.0,
                                    random=crop is not None) if random else None)
        eval_crop = None
    return CachePlan(T.Compose(pixel), size, train_crop, eval_crop, T.Compose(tensor))


class CachedImages(Dataset):
    """``(uint8 image [C, S, S], label)`` from a cached ``images.npy``, opened lazily in each
    process (a DataLoader worker maps the file itself instead of receiving a pickled copy).
    A list of indices is read in ascending order, so a batch reads the file front to back."""

    def __init__(self, path: Path, labels: Sequence[int]):
        self.path, self.labels = Path(path), np.asarray(labels, dtype=np.int64)
        self._images: np.ndarray | None = None

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[i])), int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        rows = torch.from_numpy(self.images[idx[order]])  # one sorted gather
        out: list = [None] * len(idx)
        for pos, row in zip(order.tolist(), rows):
            out[pos] = (row, int(self.labels[idx[pos]]))
        return out


def _fingerprint(dm: Any, split: str, data: Any, plan: CachePlan) -> dict:
    settings = {}
    for k, v in sorted(vars(dm).items()):
        if k.startswith("_") or k in NOT_KEYED:
            continue
        if isinstance(v, Path):
            v = str(v)
        if v is None or isinstance(v, (str, int, float, bool)) or (
                isinstance(v, (list, tuple)) and all(isinstance(e, (str, int, float)) for e in v)):
            settings[k] = v
    paths = getattr(data.samples, "paths", None)
    chosen = "\n".join(paths[i] for i in data.indices) if paths is not None else \
        f"{type(data.samples).__name__}:{len(data.samples)}"
    return {"format": FORMAT, "datamodule": f"{type(dm).__module__}.{type(dm).__qualname__}", "settings": settings,
            "split": split, "classes": list(dm.class_ids), "n": len(data),
            "indices": hashlib.sha256(np.asarray(data.indices, dtype=np.int64).tobytes()).hexdigest(),
            "samples": hashlib.sha256(chosen.encode()).hexdigest(), "transform": plan.description, "size": plan.size}


def _build(root: Path, key: str, meta: dict, data: Any, plan: CachePlan, workers: int) -> None:
    from .base import TaskDataset, worker_context

    source = TaskDataset(data.samples, data.labels, data.indices, data.label_map, plan.pixel)
    loader = DataLoader(source, batch_size=64, shuffle=False, num_workers=workers,
                        multiprocessing_context=worker_context(workers))
    t0 = time.perf_counter()
    with EntryWriter(root, key, meta) as w:
        for x, _ in loader:
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ConfigError(f"image_cache: the cached transform gives {x.dtype} {tuple(x.shape[1:])}, "
                                  f"not uint8 CHW")
            if "images" not in w.arrays:
                w.create("images", (len(source), *x.shape[1:]), np.uint8)
            w.append("images", x.numpy())
        w.commit()
    log.info("image cache: %d %s images at %d px in %.1f s, %.1f MB at %s", len(source), meta["split"], plan.size,
             time.perf_counter() - t0, entry_bytes(root, key) / 1e6, root / key)


def plan_of(dm: Any) -> CachePlan:
    """:func:`plan_for` ``dm``, or for joint tasks (``parts``) the one plan all parts share."""
    parts = list(getattr(dm, "parts", None) or {})
    if not parts:
        return plan_for(dm)
    plans = [plan_for(p) for p in dm.parts.values()]
    shapes = {(p.size, repr(vars(p.train_crop)) if p.train_crop else None, repr(vars(p.eval_crop)) if p.eval_crop
               else None, tuple(_describe(p.tensor.transforms))) for p in plans}
    if len(shapes) > 1:
        raise ConfigError(f"image_cache: the joint tasks {parts} differ in image size, augmentation or normalisation")
    return plans[0]


def cached_split(dm: Any, split: str, verify: bool = True) -> Dataset:
    """The cached images of ``dm``'s ``split`` (built now when absent, rebuilt when corrupt).

    A datamodule with ``parts`` (joint tasks) gives the concatenation of its parts' caches."""
    if getattr(dm, "parts", None):
        from .joint import OffsetLabels

        return ConcatDataset([OffsetLabels(cached_split(p, split, verify), dm.offsets[k]) for k, p in dm.parts.items()])
    data, plan = dm.splits[split], plan_for(dm)
    meta = _fingerprint(dm, split, data, plan)
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    root = Path(dm.image_cache_dir)
    opened = dm.__dict__.setdefault("_image_cache_opened", {})  # checked once per process, not per loader
    if opened.get(split) == key and (root / key).is_dir():
        return CachedImages(root / key / "images.npy", data.targets())
    try:
        open_entry(root, key, {"format": FORMAT, "n": len(data)}, verify=verify)
    except EntryError as e:
        if str(e) != "absent":
            log.warning("image cache %s is unusable (%s): rebuilding it", root / key, e)
            discard(root, key)
        _build(root, key, {"format": FORMAT, "name": dm.name, "split": split, "n": len(data)}, data, plan,
               dm.num_workers)
    opened[split] = key
    return CachedImages(root / key / "images.npy", data.targets())


def finish_batch(x: torch.Tensor, plan: CachePlan, train: bool, generator: torch.Generator | None = None,
                 device: torch.device | None = None) -> torch.Tensor:
    """A uint8 batch from the cache -> the model's input: moved to ``device`` (if given), cropped
    and flipped (training) or centre-cropped (when the cache is larger), then the dataset's own
    ``ToDtype``/``Normalize``; on whatever device the batch is on."""
    if device is not None:
        x = x.to(device, non_blocking=True)
    crop = plan.train_crop if train else plan.eval_crop
    if crop is not None:
        x = crop(x, generator)
    return plan.tensor(tv_tensors.Image(x)).as_subclass(torch.Tensor)


class ImageCacheLoader(DataLoader):
    """A DataLoader over cached uint8 images whose batches come out finished (:func:`finish_batch`).

    ``device``: where the per-batch work runs (the training GPU); ``None`` leaves batches where
    the loader puts them (CPU). Crops and flips draw from a generator seeded by (``seed``, the
    sampler's epoch), so a resumed run sees the same augmentation.
    """

    def __init__(self, dataset: Dataset, *args: Any, plan: CachePlan, train: bool = False, seed: int = 0,
                 device: torch.device | None = None, **kwargs: Any):
        super().__init__(dataset, *args, **kwargs)
        self.plan, self.train, self.seed, self.device = plan, train, seed, device

    def __iter__(self):
        epoch = getattr(self.sampler, "epoch", 0)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch + AUG_SALT)
        for x, y, *rest in super().__iter__():
            yield (finish_batch(x, self.plan, self.train, g, self.device), y, *rest)


def batch_device(dm: Any) -> torch.device | None:
    """The GPU of the Trainer ``dm`` is attached to, if any: where per-batch work should run."""
    trainer = getattr(dm, "trainer", None)
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    return device if device is not None and device.type == "cuda" else None
