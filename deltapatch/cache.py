"""Feature cache: run the frozen prefix of a ∆-Network once, then train every epoch from it.

With a frozen base and deterministic training transforms, the stages before a task's first
patched stage give the same features every epoch. :class:`FeatureCache` computes them once (one
pass over a non-shuffled loader) and hands back a :class:`FeatureDataset` of ``(features, label)``
that a training loop shuffles as usual, feeding ``net.forward_from(features, task)``.

Storage: in memory when the features fit under ``max_memory_bytes``; otherwise (or with
``persist=True``) a tensor file under ``cache_dir``, memory-mapped so the OS pages it in and out.
The file name is a hash of (base fingerprint, stage, dataset identity), so a second run on the same
base and data reuses it; a truncated or corrupt file is detected and recomputed. Files are written
to a temp name and renamed, so a killed writer never leaves a half file under the final name.

File layout (native byte order): a 4096-byte header (magic, then JSON padded with spaces), the
labels ``[N]`` as int64, then the features ``[N, *shape]`` as raw bytes (labels first, so both
sections start 8-byte aligned whatever the feature dtype).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .backbones import get_adapter
from .checkpoint import atomic_path
from .delta.network import DeltaNetwork
from .errors import ConfigError
from .patch import base_fingerprint

log = logging.getLogger(__name__)

FORMAT = "deltapatch-features/1"
MAGIC = b"DPFEAT01"
HEADER_BYTES = 4096  # fixed, so the data starts page-aligned and the header can be rewritten in place
DEFAULT_MAX_MEMORY_BYTES = 1 << 30
SUFFIX = ".dpfeat"


def cache_key(fingerprint: str, stage: int, dataset_id: str) -> str:
    """SHA-256 naming one cache file: same base weights, same stage, same data -> same key."""
    blob = json.dumps({"format": FORMAT, "base": fingerprint, "stage": int(stage), "dataset": dataset_id},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype '{name}'")
    return dtype


def _as_bytes(t: torch.Tensor) -> memoryview:
    """Raw bytes of a CPU tensor; through uint8 so dtypes numpy lacks (bfloat16) work too."""
    return memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())


class FeatureDataset(Dataset):
    """``(features[i], labels[i])`` over a cached feature tensor (in memory or memory-mapped).

    ``dataset[i]`` gives one sample; ``dataset[list_of_indices]`` gives a whole batch with one
    gather, which :meth:`FeatureCache.loader` uses to avoid per-sample indexing and re-stacking.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, (list, tuple, torch.Tensor, np.ndarray)):
            idx = torch.as_tensor(index, dtype=torch.long)
            return self.features[idx], self.labels[idx]
        return self.features[index], self.labels[index]


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
            of the file key, so two datasets must never share one.
        cache_dir: where on-disk caches live (e.g. ``outputs/feature_cache``). ``None``: memory only.
        max_memory_bytes: above this size the features go to a memory-mapped file in ``cache_dir``.
        persist: also write caches that fit in memory to disk, so later runs reuse them.
        verify: check the SHA-256 of a reused file's data (one sequential read) before trusting it.
        device: where to run the prefix; default: the device of the base model's parameters.

    Attributes: ``features`` ``[N, C, H, W]`` and ``labels`` ``[N]`` (CPU), ``dataset``, ``source_loader``,
    ``path`` (the file, or ``None``), ``memmapped``, ``computed`` (False when reused from disk).
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
        self.dataset_id = dataset_id
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_memory_bytes, self.persist, self.verify = int(max_memory_bytes), persist, verify
        self.device = torch.device(device) if device is not None else next(net.base.parameters()).device
        self.path: Path | None = None
        self.memmapped = False
        self.computed = False
        self.key: str | None = None
        if self.cache_dir is not None:
            self.key = cache_key(base_fingerprint(net.base), stage, dataset_id)
            self.path = self.cache_dir / f"{self.key}{SUFFIX}"
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
            pin_memory=pin_memory,
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

    def _compute(self) -> None:
        """One pass of the prefix over the loader, into memory or straight into a file."""
        self.computed = True
        batches = self._batches()
        try:
            f0, y0 = next(batches)
        except StopIteration:
            raise ConfigError("FeatureCache: the loader is empty") from None
        row_bytes = f0[0].numel() * f0.element_size()
        total = row_bytes * self.n
        to_disk = self.cache_dir is not None and (self.persist or total > self.max_memory_bytes)
        if self.cache_dir is None and total > self.max_memory_bytes:
            log.warning("feature cache of %.1f MB exceeds max_memory_bytes but no cache_dir was given: "
                        "keeping it in memory", total / 1e6)
        if to_disk:
            self._write(f0, y0, batches)
            if not self._try_load(check_hash=False):  # just written: its hash is known to match
                raise RuntimeError(f"feature cache {self.path} unreadable right after writing it")
            return
        # preallocate: no second full-size copy from concatenating a list of batches
        features = torch.empty((self.n, *f0.shape[1:]), dtype=f0.dtype)
        labels = torch.empty(self.n, dtype=torch.long)
        i = 0
        for f, y in self._chain(f0, y0, batches):
            if i + len(f) > self.n:
                raise ConfigError(f"the loader gave more than len(dataset)={self.n} samples")
            features[i:i + len(f)] = f
            labels[i:i + len(f)] = y
            i += len(f)
        if i != self.n:
            raise ConfigError(f"the loader gave {i} samples but len(dataset)={self.n} (drop_last?)")
        self.features, self.labels = features, labels

    @staticmethod
    def _chain(f0: torch.Tensor, y0: torch.Tensor, rest: Iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield f0, y0
        yield from rest

    def _write(self, f0: torch.Tensor, y0: torch.Tensor, batches: Iterator) -> None:
        """Stream features into a temp file, then fill in labels and header; rename into place."""
        assert self.path is not None
        feature_digest = hashlib.sha256()
        labels: list[torch.Tensor] = []
        n = 0
        label_bytes = self.n * 8
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                # placeholders for header and labels: both are final only once every batch is seen
                fh.write(b"\0" * (HEADER_BYTES + label_bytes))
                for f, y in self._chain(f0, y0, batches):
                    if n + len(f) > self.n:
                        raise ConfigError(f"the loader gave more than len(dataset)={self.n} samples")
                    data = _as_bytes(f)
                    fh.write(data)
                    feature_digest.update(data)
                    labels.append(y)
                    n += len(f)
                if n != self.n:
                    raise ConfigError(f"the loader gave {n} samples but len(dataset)={self.n} (drop_last?)")
                label_data = _as_bytes(torch.cat(labels))
                header = {
                    "format": FORMAT,
                    "key": self.key,
                    "dataset_id": self.dataset_id,
                    "stage": self.stage,
                    "n": n,
                    "shape": list(f0.shape[1:]),
                    "dtype": _dtype_name(f0.dtype),
                    "feature_bytes": n * f0[0].numel() * f0.element_size(),
                    "label_bytes": label_bytes,
                    "sha256_features": feature_digest.hexdigest(),
                    "sha256_labels": hashlib.sha256(label_data).hexdigest(),
                }
                fh.seek(0)
                fh.write(self._header_bytes(header))
                fh.write(label_data)
                fh.flush()
                os.fsync(fh.fileno())  # the data must be on disk before the rename makes it visible

    @staticmethod
    def _header_bytes(header: dict) -> bytes:
        blob = MAGIC + json.dumps(header, sort_keys=True).encode()
        if len(blob) > HEADER_BYTES:
            raise ConfigError("feature cache header too long (dataset_id over ~3.5 kB?)")
        return blob.ljust(HEADER_BYTES, b" ")

    # ------------------------------------------------------------------ load
    def _read_header(self) -> dict:
        assert self.path is not None
        with open(self.path, "rb") as fh:
            raw = fh.read(HEADER_BYTES)
        if len(raw) < HEADER_BYTES or not raw.startswith(MAGIC):
            raise ValueError("missing or foreign header")
        header = json.loads(raw[len(MAGIC):].decode())
        if header.get("format") != FORMAT or header.get("key") != self.key:
            raise ValueError(f"format/key mismatch ({header.get('format')!r})")
        return header

    def _try_load(self, check_hash: bool | None = None) -> bool:
        """Open ``self.path`` if it is a complete cache for this key and data; else False."""
        assert self.path is not None
        if not self.path.is_file():
            return False
        try:
            header = self._read_header()
            n, shape, dtype = int(header["n"]), [int(s) for s in header["shape"]], _dtype_from_name(header["dtype"])
            fbytes, lbytes = int(header["feature_bytes"]), int(header["label_bytes"])
            elem = torch.empty((), dtype=dtype).element_size()
            if n != self.n:
                raise ValueError(f"{n} rows but the dataset has {self.n} samples")
            if fbytes != n * int(np.prod(shape)) * elem or lbytes != n * 8:
                raise ValueError("inconsistent sizes in header")
            size = self.path.stat().st_size
            if size != HEADER_BYTES + fbytes + lbytes:
                raise ValueError(f"file is {size} bytes, header says {HEADER_BYTES + fbytes + lbytes} (truncated?)")
            # copy-on-write: torch wants a writable array; nothing is ever written back to the file
            raw = np.memmap(self.path, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=(lbytes + fbytes,))
            if self.verify if check_hash is None else check_hash:
                if (hashlib.sha256(raw[lbytes:]).hexdigest() != header["sha256_features"]
                        or hashlib.sha256(raw[:lbytes]).hexdigest() != header["sha256_labels"]):
                    raise ValueError("checksum mismatch (corrupt file)")
            data = torch.from_numpy(raw)
            labels = data[:lbytes].view(torch.long)
            features = data[lbytes:].view(dtype).view(n, *shape)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            log.warning("feature cache %s is unusable (%s): recomputing it", self.path, e)
            return False
        if fbytes <= self.max_memory_bytes:
            features, labels = features.clone(), labels.clone()  # fits: read it in once, drop the mapping
        else:
            self.memmapped = True
        self.features, self.labels = features, labels
        return True
