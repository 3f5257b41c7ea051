"""Feature cache: run the frozen prefix of a ∆-Network once, then train every epoch from it.

With a frozen base and deterministic training transforms, the stages before a task's first
patched stage give the same features every epoch. :class:`FeatureCache` computes them once (one
pass over a non-shuffled loader) and hands back a :class:`FeatureDataset` of ``(features, label)``
that a training loop shuffles as usual, feeding ``net.forward_from(features, task)``.

Storage: features are kept as float16 by default (``dtype``; a ResNet-50 ∆(1) row at 224 px is
1024×14×14, 400 KB in fp16, 3.2 GB for Stanford Cars' 8,144 images) and handed out as float32
batches. The runner stores float16 only when training itself runs in 16-bit precision (then the
rounding is below what autocast does anyway) and exact features for 32-bit runs
(:func:`storage_dtype`). In memory when they fit under ``max_memory_bytes``; otherwise (or with ``persist=True``)
on disk under ``cache_dir`` as numpy ``.npy`` files (:mod:`deltapatch.data.array_store`: numpy's
own header, checksums in a manifest, written to a temp folder and renamed), memory-mapped so the
OS pages rows in and out. The entry is keyed by a hash of (base fingerprint, stage, dataset
identity, dtype), so a later run on the same base and data reuses it; a truncated or corrupt
entry is detected and recomputed. Batches are gathered with their indices sorted, so a batch
reads the mapped file in ascending order rather than jumping between random rows.

On a GPU, :meth:`FeatureCache.keep_on` holds the rows in the GPU's memory instead: a batch is then
one gather there, with no host-side gather, fp16-to-fp32 cast or host-to-device copy (which made
a cached ∆(1) epoch on an H200 wait 79 % of its time for data). :func:`fits_on_device` is the
runner's test for it.

:func:`auto_feature_cache` is the runner's ``cache_features=auto`` decision, with the size
estimate of :func:`feature_cache_bytes`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .backbones import get_adapter
from .data.array_store import EntryError, EntryWriter, discard, open_entry
from .delta.network import DeltaNetwork
from .errors import ConfigError, ResourceError
from .patch import base_fingerprint

log = logging.getLogger(__name__)

FORMAT = "deltapatch-features/2"  # /1 was a hand-made binary file; /2 is numpy .npy in a folder
DEFAULT_MAX_MEMORY_BYTES = 1 << 30
DEFAULT_DTYPE = torch.float16
DEVICE_SHARE = 0.25  # of a GPU's free memory that resident features may take: training needs the rest


def cache_key(fingerprint: str, stage: int, dataset_id: str, dtype: str = "float16") -> str:
    """SHA-256 naming one cache entry: same base weights, stage, data and dtype -> same key."""
    blob = json.dumps({"format": FORMAT, "base": fingerprint, "stage": int(stage), "dataset": dataset_id,
                       "dtype": dtype}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _storage_dtype(computed: torch.dtype, wanted: torch.dtype | None) -> torch.dtype:
    """What the rows are stored as: ``wanted``, else as computed (bfloat16, which .npy cannot
    hold, as float32)."""
    if wanted is not None:
        return wanted
    return torch.float32 if computed == torch.bfloat16 else computed


class FeatureDataset(Dataset):
    """``(features[i], labels[i])`` over a cached feature tensor (in memory or memory-mapped).

    ``dataset[i]`` gives one sample; ``dataset[list_of_indices]`` gives a whole batch with one
    gather, in ascending index order (sequential reads from a mapped file), put back into the
    order asked for. Rows are handed out as ``dtype`` (default float32, whatever the storage), on
    the device the features are on (a GPU-resident cache gathers and casts there, unsorted).
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None = torch.float32):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.features, self.labels, self.dtype = features, labels, dtype

    def __len__(self) -> int:
        return len(self.labels)

    def _out(self, f: torch.Tensor) -> torch.Tensor:
        return f if self.dtype is None or f.dtype == self.dtype else f.to(self.dtype)

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, (list, tuple, torch.Tensor, np.ndarray)):
            idx = torch.as_tensor(index, dtype=torch.long, device=self.features.device)
            if self.features.device.type != "cpu":  # no file to read in order: one gather
                return self._out(self.features[idx]), self.labels[idx]
            order = torch.argsort(idx)
            rows = self.features[idx[order]]
            out = torch.empty_like(rows)
            out[order] = rows
            return self._out(out), self.labels[idx]
        return self._out(self.features[index]), self.labels[index]


class FeatureCache:
    """Frozen-prefix features of a whole dataset, computed once.

    Args:
        net: a :class:`DeltaNetwork` with a frozen base (``freeze_base=True``), or a method whose
            ``feature_stage`` is not None (anything with ``base`` and ``base_features(x, upto)``).
        stage: cache the features *entering* this stage (``net.base_features(x, upto=stage)``);
            for a task, ``net.tasks[task].first_stage`` (see :meth:`for_task`).
        loader: the training data, **not shuffled**, with **deterministic** transforms
            (``datamodule.deterministic_train_transform``); batches are ``(images, labels, ...)``.
        dataset_id: a string that identifies the data and its transforms (dataset name, split,
            class subset, image size, normalisation...). Required for an on-disk cache: it is part
            of the key, so two datasets must never share one.
        cache_dir: where on-disk caches live (e.g. ``outputs/cache/features``). ``None``: memory only.
        max_memory_bytes: above this size the features go to memory-mapped files in ``cache_dir``.
        persist: also write caches that fit in memory to disk, so later runs reuse them.
        verify: check the SHA-256 of a reused entry (one sequential read) before trusting it.
        device: where to run the prefix; default: the device of the base model's parameters.
        dtype: how rows are stored (default float16: half the bytes; ``None``: as computed,
            exact). A prefix whose values overflow float16 is stored as float32 instead.

    Attributes: ``features`` ``[N, C, H, W]`` and ``labels`` ``[N]`` (CPU, or the device of
    :meth:`keep_on`), ``dataset``, ``source_loader``, ``path`` (the entry folder, or ``None``),
    ``memmapped``, ``computed`` (False when reused from disk).
    """

    def __init__(
        self,
        net: DeltaNetwork,
        stage: int,
        loader: DataLoader,
        dataset_id: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
        persist: bool = False,
        verify: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = DEFAULT_DTYPE,
    ):
        if getattr(net, "freeze_base", True) is False:
            raise ConfigError("feature caching needs a frozen base (freeze_base=True): "
                              "an unfrozen prefix changes every step")
        n_stages = len(get_adapter(net.base).stages())
        if not 0 <= stage <= n_stages:
            raise ConfigError(f"cache stage {stage} out of range 0..{n_stages}")
        if isinstance(loader.sampler, RandomSampler):
            raise ConfigError("FeatureCache needs a loader without shuffle: rows must follow the dataset's order "
                              "so a reused file matches it; shuffle the cached dataset instead")
        if cache_dir is not None and not dataset_id:
            raise ConfigError("an on-disk feature cache needs dataset_id (it keys the file)")
        try:
            self.n = len(loader.dataset)
        except TypeError:
            raise ConfigError("FeatureCache needs a loader over a sized (map-style) dataset") from None
        self.net, self.stage, self.source_loader = net, stage, loader
        self.dataset_id, self.dtype = dataset_id, dtype
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_memory_bytes, self.persist, self.verify = int(max_memory_bytes), persist, verify
        self.device = torch.device(device) if device is not None else next(net.base.parameters()).device
        self.path: Path | None = None
        self.memmapped = False
        self.computed = False
        self.key: str | None = None
        if self.cache_dir is not None:
            self.key = cache_key(base_fingerprint(net.base), stage, dataset_id, str(dtype).removeprefix("torch."))
            self.path = self.cache_dir / self.key
            if self._try_load():
                self.dataset = FeatureDataset(self.features, self.labels)
                return
        self._compute()
        self.dataset = FeatureDataset(self.features, self.labels)

    @classmethod
    def for_task(cls, net: DeltaNetwork, task: str, loader: DataLoader, **kwargs: Any) -> "FeatureCache":
        """A cache at ``task``'s first patched stage: what ``net.forward_from(h, task)`` takes."""
        return cls(net, net.tasks[task].first_stage, loader, **kwargs)

    # ------------------------------------------------------------------ public
    @property
    def nbytes(self) -> int:
        """Bytes of the feature tensor (labels not counted)."""
        return self.features.numel() * self.features.element_size()

    def __len__(self) -> int:
        return self.n

    def keep_on(self, device: torch.device | str) -> "FeatureCache":
        """Hold the features and labels in ``device``'s memory from now on (a memory-mapped cache
        is read in whole once); :attr:`dataset` then gathers batches there. Returns ``self``."""
        device = torch.device(device)
        try:
            features = self.features.to(device)
            labels = self.labels.to(device)
        except torch.cuda.OutOfMemoryError:
            raise ResourceError(f"the cached features ({human_bytes(self.nbytes)}) do not fit in {device}'s "
                                f"memory: set cache_features_on_device=false to keep them in host memory") from None
        if self.memmapped and device.type == "cpu":
            features, labels = features.clone(), labels.clone()  # read the mapping in once
        self.features, self.labels, self.memmapped = features, labels, False
        self.dataset = FeatureDataset(self.features, self.labels)
        return self

    def loader(
        self,
        batch_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> DataLoader:
        """Batches of ``(features, labels)``, reshuffled every epoch when ``shuffle``.

        Given the same ``generator`` seed, the batches hold exactly the samples that
        ``DataLoader(image_dataset, batch_size, shuffle=True, generator=g)`` would give, in the
        same order (the generator is also handed to the DataLoader, which draws its base seed
        from it first, as the image loader does). One gather per batch, no per-sample collate.
        """
        sampler = RandomSampler(self.dataset, generator=generator) if shuffle else SequentialSampler(self.dataset)
        return DataLoader(
            self.dataset,
            sampler=BatchSampler(sampler, batch_size, drop_last),
            batch_size=None,  # the sampler yields whole index lists; FeatureDataset gathers them at once
            generator=generator,
            pin_memory=pin_memory and self.features.device.type == "cpu",  # resident rows need no copy
        )

    # ------------------------------------------------------------------ compute
    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Features and labels per batch of the loader, on CPU."""
        non_blocking = self.device.type == "cuda"
        with torch.no_grad():
            for batch in self.source_loader:
                x, y = batch[0], batch[1]
                f = self.net.base_features(x.to(self.device, non_blocking=non_blocking), upto=self.stage)
                yield f.cpu(), torch.as_tensor(y, dtype=torch.long).cpu()

    def _stored(self, f: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``f`` as stored; float16 that would overflow raises :class:`_Overflow`."""
        out = f.to(dtype)
        if dtype == torch.float16 and not bool(torch.isfinite(out).all()) and bool(torch.isfinite(f).all()):
            raise _Overflow
        return out

    def _compute(self) -> None:
        """One pass of the prefix over the loader, into memory or straight into files."""
        self.computed = True
        try:
            self._compute_as(self.dtype)
        except _Overflow:
            log.warning("feature cache: prefix values overflow float16; storing float32 instead")
            self._compute_as(torch.float32)

    def _compute_as(self, wanted: torch.dtype | None) -> None:
        batches = self._batches()
        try:
            f0, y0 = next(batches)
        except StopIteration:
            raise ConfigError("FeatureCache: the loader is empty") from None
        dtype = _storage_dtype(f0.dtype, wanted)
        total = f0[0].numel() * torch.empty((), dtype=dtype).element_size() * self.n
        to_disk = self.cache_dir is not None and (self.persist or total > self.max_memory_bytes)
        if self.cache_dir is None and total > self.max_memory_bytes:
            log.warning("feature cache of %.1f MB exceeds max_memory_bytes but no cache_dir was given: "
                        "keeping it in memory", total / 1e6)
        if to_disk:
            self._write(f0, y0, batches, dtype)
            if not self._try_load(check_hash=False):  # just written: its checksums are known to match
                raise RuntimeError(f"feature cache {self.path} unreadable right after writing it")
            return
        # preallocate: no second full-size copy from concatenating a list of batches
        features = torch.empty((self.n, *f0.shape[1:]), dtype=dtype)
        labels = torch.empty(self.n, dtype=torch.long)
        i = 0
        for f, y in _chain(f0, y0, batches):
            if i + len(f) > self.n:
                raise ConfigError(f"the loader gave more than len(dataset)={self.n} samples")
            features[i:i + len(f)] = self._stored(f, dtype)
            labels[i:i + len(f)] = y
            i += len(f)
        if i != self.n:
            raise ConfigError(f"the loader gave {i} samples but len(dataset)={self.n} (drop_last?)")
        self.features, self.labels = features, labels

    def _write(self, f0: torch.Tensor, y0: torch.Tensor, batches: Iterator, dtype: torch.dtype) -> None:
        """Stream features and labels into a new entry; it becomes visible only when complete."""
        assert self.cache_dir is not None and self.key is not None
        meta = {"format": FORMAT, "dataset_id": self.dataset_id, "stage": self.stage, "n": self.n,
                "dtype": str(dtype).removeprefix("torch.")}
        n = 0
        with EntryWriter(self.cache_dir, self.key, meta) as w:
            w.create("features", (self.n, *f0.shape[1:]), torch.empty((), dtype=dtype).numpy().dtype)
            w.create("labels", (self.n,), np.int64)
            for f, y in _chain(f0, y0, batches):
                if n + len(f) > self.n:
                    raise ConfigError(f"the loader gave more than len(dataset)={self.n} samples")
                w.append("features", self._stored(f, dtype).numpy())
                w.append("labels", y.numpy())
                n += len(f)
            if n != self.n:
                raise ConfigError(f"the loader gave {n} samples but len(dataset)={self.n} (drop_last?)")
            w.commit()

    # ------------------------------------------------------------------ load
    def _try_load(self, check_hash: bool | None = None) -> bool:
        """Open ``self.path`` if it is a complete cache for this key and data; else False."""
        assert self.cache_dir is not None and self.key is not None
        verify = self.verify if check_hash is None else check_hash
        try:
            # copy-on-write mapping: torch wants a writable array; nothing is ever written back
            arrays, _ = open_entry(self.cache_dir, self.key, {"format": FORMAT, "n": self.n}, verify, mode="c")
            features, labels = torch.from_numpy(arrays["features"]), torch.from_numpy(arrays["labels"])
        except EntryError as e:
            if str(e) != "absent":
                log.warning("feature cache %s is unusable (%s): recomputing it", self.path, e)
                discard(self.cache_dir, self.key)
            return False
        if features.numel() * features.element_size() <= self.max_memory_bytes:
            features, labels = features.clone(), labels.clone()  # fits: read it in once, drop the mapping
        else:
            self.memmapped = True
        self.features, self.labels = features, labels
        return True


class _Overflow(Exception):
    """Prefix values beyond float16's range."""


def _chain(f0: torch.Tensor, y0: torch.Tensor, rest: Iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield f0, y0
    yield from rest


# ---------------------------------------------------------------------- cache_features=auto
def storage_dtype(trainer: Mapping[str, Any] | None) -> torch.dtype | None:
    """The cache's ``dtype`` for a run with these Trainer settings: float16 under 16-bit precision
    (``bf16-mixed``, ``16-mixed``...), else ``None`` (as computed: exact for 32-bit training)."""
    precision = str((trainer or {}).get("precision", "32-true"))
    return torch.float16 if precision.startswith(("16", "bf16")) else None


def feature_cache_bytes(net: DeltaNetwork, stage: int, n: int, example: torch.Tensor,
                        dtype: torch.dtype = DEFAULT_DTYPE) -> int:
    """Bytes a feature cache of ``n`` samples would take (features and labels): one ``example``
    input (``[C, H, W]``, as the loader gives it) through the prefix gives the row shape."""
    p = next(net.base.parameters())
    with torch.no_grad():
        row = net.base_features(example.unsqueeze(0).to(p.device, p.dtype), upto=stage)[0]
    return n * (row.numel() * torch.empty((), dtype=dtype).element_size() + 8)


def fits_on_device(nbytes: int, device: torch.device | str, share: float = DEVICE_SHARE) -> bool:
    """Whether ``nbytes`` of features take at most ``share`` of a CUDA ``device``'s free memory
    now (False for any other device: host memory is where the cache already is)."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free


def planned_passes(trainer: Mapping[str, Any] | None, n_batches: int) -> float:
    """How many times a run with these Trainer settings goes over the whole training set
    (``max_epochs`` × the share of ``limit_train_batches``; ``max_steps`` when it stops sooner)."""
    trainer = trainer or {}
    epochs = trainer.get("max_epochs")
    epochs = math.inf if epochs is None or epochs < 0 else float(epochs)
    limit = trainer.get("limit_train_batches")
    if limit is None:
        share = 1.0
    elif isinstance(limit, float):
        share = min(max(limit, 0.0), 1.0)
    else:  # an int is a number of batches (Lightning's rule)
        share = min(int(limit), n_batches) / max(n_batches, 1)
    passes = epochs * share
    steps = trainer.get("max_steps")
    if steps is not None and steps >= 0:
        passes = min(passes, steps / max(n_batches, 1))
    return passes


def human_bytes(n: float) -> str:
    """``n`` bytes as a short figure for logs (``"3.21 GB"``, ``"412.0 MB"``)."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:  # the cache folder may not exist yet
        folder = folder.parent
    return shutil.disk_usage(folder).free


def auto_feature_cache(net: DeltaNetwork, stage: int, datamodule: Any, cache_dir: str | os.PathLike,
                       trainer: Mapping[str, Any] | None = None,
                       max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES) -> bool:
    """``cache_features=auto``: train from cached features when it pays, and say so in the log.

    Yes when all hold: the training transforms are deterministic; the run goes over the training
    set at least twice (building the cache costs about one pass of the prefix, and each pass from
    the cache saves one); and the cache fits: in memory up to ``max_memory_bytes``, else on disk
    using at most half of the free space under ``cache_dir``.
    """
    name = getattr(datamodule, "name", "dataset")
    if not datamodule.deterministic_train_transform:
        log.info("cache_features=auto: %s has random training transforms: training from images", name)
        return False
    train = datamodule.splits["train"]
    n = len(train)
    batches = max(math.ceil(n / datamodule.batch_size), 1)
    passes = planned_passes(trainer, batches)
    if passes < 2:
        log.info("cache_features=auto: the run goes over %s's training set %.2f times; a cache pays off "
                 "from 2: training from images", name, passes)
        return False
    size = feature_cache_bytes(net, stage, n, train[0][0], storage_dtype(trainer) or torch.float32)
    where = "in memory"
    if size > max_memory_bytes:
        free = _free_bytes(Path(cache_dir))
        if size > free / 2:
            log.info("cache_features=auto: the cache would take %s, more than half of the %s free under %s: "
                     "training from images", human_bytes(size), human_bytes(free), cache_dir)
            return False
        where = f"on disk under {cache_dir}"
    log.info("cache_features=auto: training from cached stage-%d features of %s (%d samples, %s %s)",
             stage, name, n, human_bytes(size), where)
    return True
