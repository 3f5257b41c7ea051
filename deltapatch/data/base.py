"""The one base class every dataset shares: splits, class subsets, transforms, loaders.

A dataset subclass only says how to read its files: :meth:`ClassificationDataModule.load_split`
returns the samples and labels of one official split and sets ``self.all_class_names``.
"""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from ..errors import ConfigError

# DataModule settings that change how images are served, never which images or what they look
# like: caches keyed by a dataset's config (the trained base, the zsda vanilla model) leave them out
LOADER_ONLY_KEYS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "eval_batch_size",
                    "image_cache", "image_cache_dir")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetNotFoundError(ConfigError):
    """A dataset's files are not where the config says, and download is off."""


def in_process_group() -> bool:
    """Whether this process is a rank of an initialised torch.distributed group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process in torch.distributed (``(0, 1)`` outside DDP)."""
    if in_process_group():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def worker_context(num_workers: int) -> multiprocessing.context.BaseContext | None:
    """How a DataLoader with ``num_workers`` starts its workers (its ``multiprocessing_context``).

    Outside torch.distributed: ``None``, torch's default (fork on Linux). In a DDP rank:
    ``forkserver``. A rank has threads (gloo's, W&B's, Lightning's) and a child forked while one of
    them holds a C-library lock hangs before it runs a line: rank 1 of ``trainer=ddp`` once hung
    so on CI, its worker stuck in ``Popen._launch``. The server is a fresh interpreter that imports
    torch and deltapatch.data once; each worker is forked from it, single-threaded.
    """
    if num_workers <= 0 or not in_process_group():
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "deltapatch.data"])  # read when the server starts, once a process
    return ctx


class EpochSampler(torch.utils.data.Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch), sharded across DDP ranks.

    Lightning calls ``set_epoch`` each epoch, also after resuming from a checkpoint, so a resumed
    run sees exactly the batches an uninterrupted run would have seen. Under DDP (the process
    group exists when Lightning asks for the loader) rank r takes every world-th index of the same
    order, so the union of the ranks' k-th batches of size B/world is the single-process run's k-th
    batch of size B. Every rank gets as many indices: with ``drop_tail`` (the loader drops its
    last partial batch) the order is cut to a multiple of world, so each rank has as many full
    batches as the single run (⌊⌊n/w⌋/(B/w)⌋ = ⌊n/B⌋); without it the order is padded by wrapping
    around. Runs turn Lightning's own sampler replacement off (``use_distributed_sampler=False``):
    the sharding is done here.
    """

    def __init__(self, data_source: Sequence, seed: int = 0, rank: int | None = None, world: int | None = None,
                 drop_tail: bool = False):
        r, w = process_rank()
        self.rank, self.world = (r if rank is None else rank), (w if world is None else world)
        self.n, self.seed, self.epoch = len(data_source), seed, 0
        self.drop_tail = drop_tail and self.n >= self.world
        self.per_rank = self.n // self.world if self.drop_tail else -(-self.n // self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if self.world > 1:
            order = order[: self.per_rank * self.world] if self.drop_tail else \
                order + order[: self.per_rank * self.world - self.n]
            order = order[self.rank::self.world]
        return iter(order)


def training_sampler(data: Sequence, batch_size: int, seed: int) -> tuple[EpochSampler, bool]:
    """The :class:`EpochSampler` of a training loader with per-rank ``batch_size``, and its
    ``drop_last``: a last batch of a few images gives BatchNorm nonsense statistics (and a
    misleading last loss), so it is dropped unless that would leave no batch at all (one global
    batch is ``batch_size · world`` images)."""
    drop_last = len(data) >= batch_size * process_rank()[1]
    return EpochSampler(data, seed, drop_tail=drop_last), drop_last


class ShardSampler(torch.utils.data.Sampler[int]):
    """Evaluation order, sharded across DDP ranks without repeats (rank r: indices r, r+w, ...),
    so metrics synchronised across ranks count every sample exactly once."""

    def __init__(self, data_source: Sequence, rank: int | None = None, world: int | None = None):
        r, w = process_rank()
        self.rank, self.world = (r if rank is None else rank), (w if world is None else world)
        self.n = len(data_source)

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))


class EpochBatchSampler(torch.utils.data.BatchSampler):
    """A BatchSampler that passes ``set_epoch`` on to its :class:`EpochSampler` (Lightning only
    calls it on a loader's ``sampler``/``batch_sampler.sampler``)."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


class TaskDataset(Dataset):
    """``samples[indices]`` with labels remapped to 0..n-1 and a transform applied."""

    def __init__(self, samples: Sequence, labels: Sequence[int], indices: Sequence[int],
                 label_map: dict[int, int], transform=None):
        self.samples, self.labels, self.indices = samples, labels, list(indices)
        self.label_map, self.transform = label_map, transform

    def __len__(self) -> int:
        return len(self.indices)

    def targets(self) -> list[int]:
        return [self.label_map[self.labels[i]] for i in self.indices]

    def __getitem__(self, k: int):
        i = self.indices[k]
        item = self.samples[i]
        image = item[0] if isinstance(item, tuple) else item
        if self.transform is not None:
            image = self.transform(image)
        return image, self.label_map[self.labels[i]]


def to_rgb_pil(image: Any) -> Image.Image:
    """Anything image-like (PIL, uint8/float array, tensor) -> RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.numpy()
    import numpy as np

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


class SplitLoaders:
    """Lightning's three dataloader hooks from one ``_loader(split, shuffle)``: training batches
    shuffled, evaluation batches in order."""

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class ClassificationDataModule(SplitLoaders, pl.LightningDataModule):
    """Base DataModule: one dataset, optionally restricted to a subset of its classes.

    Splits: the dataset's own ``train``/``test`` (and ``val`` when ``has_val``); otherwise a
    seeded ``val_fraction`` of train is held out for model selection. A dataset without a
    training split (ImageNet as clusters keep it: only ``val/``) holds out ``val_from_test``
    images (a count, or a fraction when below 1) of its test split instead, seeded by
    ``split_seed`` and disjoint from the rest, which stays the test split. ``sample_rate`` keeps a
    class-balanced, seeded fraction of the training split (transfer-learning tables).
    :attr:`split_info` says how the splits were made (results.json records it).

    Loaders: ``num_workers``, ``pin_memory``, ``persistent_workers`` (default: when there are
    workers) and ``prefetch_factor`` (default: torch's) go to every DataLoader. ``image_cache``:
    serve every split from images decoded and resized once into ``image_cache_dir`` (see
    :mod:`deltapatch.data.image_cache`, which also states the rule for ``image_cache_size``).
    """

    name: str = "dataset"
    has_val: bool = False

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        classes: Sequence[int] | None = None,
        image_size: int = 32,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_fraction: float = 0.1,
        sample_rate: float = 1.0,
        seed: int = 0,
        download: bool = False,
        augment: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        max_train_samples: int | None = None,
        val_from_test: float | None = None,
        split_seed: int = 0,
        name: str | None = None,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = None,
        image_cache: bool = False,
        image_cache_dir: str | os.PathLike = "outputs/cache/images",
        image_cache_size: int | None = None,
    ):
        super().__init__()
        if name is not None:
            self.name = name
        self.data_dir = Path(os.path.expanduser(str(data_dir)))
        self.classes = list(classes) if classes is not None else None
        self.image_size, self.batch_size = image_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.val_fraction, self.sample_rate, self.seed = val_fraction, sample_rate, seed
        self.download, self.augment = download, augment
        self.mean, self.std = tuple(mean), tuple(std)
        self.max_train_samples = max_train_samples
        self.val_from_test, self.split_seed = val_from_test, split_seed
        self.split_info: dict[str, Any] = {}
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self.image_cache, self.image_cache_size = bool(image_cache), image_cache_size
        self.image_cache_dir = Path(os.path.expanduser(str(image_cache_dir)))
        self.all_class_names: list[str] = []
        self.splits: dict[str, TaskDataset] = {}

    # ------------------------------------------------------------ subclass API
    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        """Samples (items are images, or tuples whose first element is the image) and integer
        labels of official split ``split``. Set ``self.all_class_names``. Raise
        :class:`DatasetNotFoundError` when files are missing."""
        raise NotImplementedError

    def missing(self, where: Path | str, how: str) -> DatasetNotFoundError:
        """The one-line error for absent files."""
        return DatasetNotFoundError(f"{self.name}: no data at {where}; {how}")

    # ------------------------------------------------------------ transforms
    def transform(self, train: bool) -> T.Compose:
        ops: list = [T.Lambda(to_rgb_pil), T.Resize((self.image_size, self.image_size), antialias=True)]
        if train and self.augment:
            ops += [T.RandomCrop(self.image_size, padding=self.image_size // 8), T.RandomHorizontalFlip()]
        ops += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)]
        return T.Compose(ops)

    @property
    def deterministic_train_transform(self) -> bool:
        """True when every epoch sees the same training tensors (so features can be cached)."""
        return not self.augment

    # ------------------------------------------------------------ splits
    @property
    def num_classes(self) -> int:
        self._ensure_labels()
        return len(self.class_ids)

    @property
    def class_names(self) -> list[str]:
        self._ensure_labels()
        return [str(self.all_class_names[c]) for c in self.class_ids]

    def _ensure_labels(self) -> None:
        if not self.splits:
            self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        g = torch.Generator().manual_seed(self.seed)
        train_samples, train_labels = self.load_split("train")
        if not self.all_class_names and not len(train_labels):
            raise DatasetNotFoundError(f"{self.name}: no classes found under {self.data_dir} (no class folders "
                                       f"or training images); put the data there or set dataset.data_dir")
        n_all = len(self.all_class_names) or (max(train_labels) + 1)
        if not self.all_class_names:
            self.all_class_names = [str(i) for i in range(n_all)]
        ids = self.classes if self.classes is not None else list(range(n_all))
        bad = [c for c in ids if not 0 <= c < n_all]
        if bad:
            raise ConfigError(f"{self.name}: classes {bad} out of range 0..{n_all - 1}")
        self.class_ids = ids
        label_map = {c: k for k, c in enumerate(ids)}
        keep = [i for i, y in enumerate(train_labels) if y in label_map]
        if self.has_val:
            val_samples, val_labels = self.load_split("val")
            val_idx = [i for i, y in enumerate(val_labels) if y in label_map]
            train_idx = keep
        else:
            perm = torch.randperm(len(keep), generator=g).tolist()
            n_val = int(round(len(keep) * self.val_fraction))
            val_idx = sorted(keep[p] for p in perm[:n_val])
            train_idx = sorted(keep[p] for p in perm[n_val:])
            val_samples, val_labels = train_samples, train_labels
        train_idx = self._subsample(train_idx, train_labels, g)
        test_samples, test_labels = self.load_split("test")
        test_idx = [i for i, y in enumerate(test_labels) if y in label_map]
        val_from = "official" if self.has_val else "train"
        if not keep and not self.has_val and self.val_from_test:
            # no training split: model selection needs a held-out part of the test split
            test_idx, held = self._hold_out(test_idx, self.val_from_test)
            val_samples, val_labels, val_idx, val_from = test_samples, test_labels, held, "test"
        self.split_info = {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx), "val_from": val_from}
        if val_from == "test":
            self.split_info["val_from_test_seed"] = self.split_seed
        self.splits = {
            "train": TaskDataset(train_samples, train_labels, train_idx, label_map, self.transform(True)),
            "val": TaskDataset(val_samples, val_labels, val_idx, label_map, self.transform(False)),
            "test": TaskDataset(test_samples, test_labels, test_idx, label_map, self.transform(False)),
        }

    def _hold_out(self, idx: list[int], size: float) -> tuple[list[int], list[int]]:
        """Split ``idx`` into (rest, held) with ``size`` images held (a fraction when < 1), seeded by
        ``split_seed`` (fixed, not the run seed: every run scores the base on the same images)."""
        n = int(round(len(idx) * size)) if size < 1 else int(size)
        if not 0 < n < len(idx):
            raise ConfigError(f"{self.name}: val_from_test={size} leaves no images on one side of "
                              f"{len(idx)} test images; choose a size between 1 and {len(idx) - 1}")
        perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        return sorted(idx[p] for p in perm[n:]), sorted(idx[p] for p in perm[:n])

    def _subsample(self, idx: list[int], labels: Sequence[int], g: torch.Generator) -> list[int]:
        """Class-balanced, seeded ``sample_rate`` of ``idx``; then at most ``max_train_samples``."""
        if self.sample_rate < 1.0:
            by_class: dict[int, list[int]] = {}
            for i in idx:
                by_class.setdefault(labels[i], []).append(i)
            kept = []
            for c in sorted(by_class):
                members = by_class[c]
                n = max(1, int(round(len(members) * self.sample_rate)))
                perm = torch.randperm(len(members), generator=g)[:n].tolist()
                kept += [members[p] for p in perm]
            idx = sorted(kept)
        if self.max_train_samples is not None and len(idx) > self.max_train_samples:
            perm = torch.randperm(len(idx), generator=g)[: self.max_train_samples].tolist()
            idx = sorted(idx[p] for p in perm)
        return idx

    # ------------------------------------------------------------ loaders
    def loader_kwargs(self) -> dict[str, Any]:
        """The DataLoader settings every split's loader gets."""
        workers = self.num_workers > 0
        kwargs: dict[str, Any] = {
            "num_workers": self.num_workers, "pin_memory": self.pin_memory,
            "persistent_workers": workers if self.persistent_workers is None else self.persistent_workers and workers,
            "multiprocessing_context": worker_context(self.num_workers),
        }
        if workers and self.prefetch_factor is not None:
            kwargs["prefetch_factor"] = self.prefetch_factor
        return kwargs

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        data = self.splits[split]
        sampler, drop_last = training_sampler(data, self.batch_size, self.seed) if shuffle else (ShardSampler(data), False)
        common = dict(
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            sampler=sampler,
            drop_last=drop_last,
            # a fixed generator: iterating a loader then draws nothing from the global RNG
            generator=torch.Generator().manual_seed(self.seed),
            **self.loader_kwargs(),
        )
        if self.image_cache:  # the same batches, from pixels decoded once (data/image_cache.py)
            from . import image_cache as ic

            return ic.ImageCacheLoader(ic.cached_split(self, split), plan=ic.plan_of(self), train=split == "train",
                                       seed=self.seed, device=ic.batch_device(self), **common)
        return DataLoader(data, **common)

