"""DataModules for dense prediction: detection (images + boxes) and segmentation (images + masks).

They mirror :class:`deltapatch.data.ClassificationDataModule` where it makes sense (``name``,
``batch_size``, ``seed``, ``class_names``, ``num_classes``, train/val/test loaders) but yield
what torchvision's detection and segmentation models take. A subclass only builds its splits.
"""
from __future__ import annotations

from typing import Any, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from .base import IMAGENET_MEAN, IMAGENET_STD, EpochSampler, ShardSampler, SplitLoaders, worker_context
from .shapes import SHAPE_CLASSES, ShapesDataset

IGNORE_INDEX = 255  # VOC's "void" label: pixels on object borders, and padding


def detection_collate(batch: list) -> tuple[tuple, tuple]:
    """Images of different sizes stay a tuple: the detector resizes and batches them itself."""
    return tuple(zip(*batch))


def segmentation_collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images and masks, padding to the largest (image with 0, mask with the ignore label),
    as torchvision's segmentation reference does."""
    images, masks = zip(*batch)
    h = max(m.shape[-2] for m in masks)
    w = max(m.shape[-1] for m in masks)

    def pad(t: torch.Tensor, value: float) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=value)

    return torch.stack([pad(i, 0.0) for i in images]), torch.stack([pad(m, IGNORE_INDEX) for m in masks])


class DenseDataModule(SplitLoaders, pl.LightningDataModule):
    """Shared loaders. ``class_names`` excludes the background class (index 0 in both tasks).

    ``model_hints``: model sizes that fit this data (Faster R-CNN ``min_size``, ``anchor_sizes``,
    ...); the scenario's ``model`` settings override them. They live with the data because they
    depend on image and object sizes.
    """

    name: str = "dense"
    task: str = "detection"  # or "segmentation"
    class_names: list[str] = []

    def __init__(self, batch_size: int = 4, eval_batch_size: int | None = None, num_workers: int = 0,
                 seed: int = 0, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 model_hints: dict[str, Any] | None = None, name: str | None = None):
        super().__init__()
        if name is not None:
            self.name = name
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.mean, self.std = tuple(mean), tuple(std)
        if isinstance(model_hints, DictConfig):  # from Hydra: plain values for torchvision's keywords
            model_hints = OmegaConf.to_container(model_hints, resolve=True)
        self.model_hints = dict(model_hints or {})
        self.splits: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        """Object classes, background not counted."""
        return len(self.class_names)

    def make_split(self, split: str) -> Dataset:
        """The dataset of ``split`` (``train``, ``val`` or ``test``)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = {s: self.make_split(s) for s in ("train", "val", "test")}

    @property
    def collate(self):
        return detection_collate if self.task == "detection" else segmentation_collate

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        data = self.splits[split]
        # the shuffle order depends on (seed, epoch) only; sharded across DDP ranks like classification
        sampler = EpochSampler(data, self.seed) if shuffle else ShardSampler(data)
        # a last training batch of one image breaks the new heads' BatchNorm (DeepLabV3's pooling
        # branch refuses it): drop it, as torchvision's references do, unless no batch would remain
        return DataLoader(data, batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          sampler=sampler, drop_last=shuffle and len(sampler) >= self.batch_size,
                          num_workers=self.num_workers, collate_fn=self.collate,
                          persistent_workers=self.num_workers > 0,
                          multiprocessing_context=worker_context(self.num_workers),
                          generator=torch.Generator().manual_seed(self.seed))


class ShapesDetectionDataModule(DenseDataModule):
    """Synthetic shapes with exact boxes (see :mod:`deltapatch.data.shapes`): VOC's offline twin.

    Splits are disjoint by construction (each has its own generator stream); ``data_seed`` fixes
    the images, independent of the run seed, so runs of any seed are scored on the same test set.
    """

    name = "shapes_detection"
    task = "detection"
    class_names = SHAPE_CLASSES

    def __init__(self, n_train: int = 2000, n_val: int = 100, n_test: int = 200, image_size: int = 64,
                 max_shapes: int = 3, data_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.image_size, self.max_shapes, self.data_seed = image_size, max_shapes, data_seed

    def make_split(self, split: str) -> Dataset:
        return ShapesDataset(self.sizes[split], split, self.data_seed, self.image_size, self.max_shapes,
                             target="boxes")


class ShapesSegmentationDataModule(ShapesDetectionDataModule):
    """The same shapes with exact per-pixel masks (0 background, 1..3 shapes)."""

    name = "shapes_segmentation"
    task = "segmentation"

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1  # segmentation heads score background too

    def make_split(self, split: str) -> Dataset:
        return ShapesDataset(self.sizes[split], split, self.data_seed, self.image_size, self.max_shapes,
                             target="mask", normalize=(self.mean, self.std))
