"""The one base class every dataset shares: splits, class subsets, transforms, loaders.

A dataset subclass only says how to read its files: :meth:`ClassificationDataModule.load_split`
returns the samples and labels of one official split and sets ``self.all_class_names``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetNotFoundError(ConfigError):
    """A dataset's files are not where the config says, and download is off."""


class EpochSampler(torch.utils.data.Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch).

    Lightning calls ``set_epoch`` each epoch, also after resuming from a checkpoint, so a resumed
    run sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, data_source: Sequence, seed: int = 0):
        self.n, self.seed, self.epoch = len(data_source), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


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


class ClassificationDataModule(L.LightningDataModule):
    """Base DataModule: one dataset, optionally restricted to a subset of its classes.

    Splits: the dataset's own ``train``/``test`` (and ``val`` when ``has_val``); otherwise a
    seeded ``val_fraction`` of train is held out for model selection. ``sample_rate`` keeps a
    class-balanced, seeded fraction of the training split (transfer-learning tables).

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
        self.splits = {
            "train": TaskDataset(train_samples, train_labels, train_idx, label_map, self.transform(True)),
            "val": TaskDataset(val_samples, val_labels, val_idx, label_map, self.transform(False)),
            "test": TaskDataset(test_samples, test_labels, test_idx, label_map, self.transform(False)),
        }

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
        }
        if workers and self.prefetch_factor is not None:
            kwargs["prefetch_factor"] = self.prefetch_factor
        return kwargs

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        data = self.splits[split]
        common = dict(
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            sampler=EpochSampler(data, self.seed) if shuffle else None,
            # a fixed generator: iterating a loader then draws nothing from the global RNG
            generator=torch.Generator().manual_seed(self.seed),
            **self.loader_kwargs(),
        )
        if self.image_cache:  # the same batches, from pixels decoded once (data/image_cache.py)
            from . import image_cache as ic

            return ic.ImageCacheLoader(ic.cached_split(self, split), plan=ic.plan_of(self), train=split == "train",
                                       seed=self.seed, device=ic.batch_device(self), **common)
        return DataLoader(data, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
