"""PASCAL VOC for detection and segmentation, read by torchvision's own classes.

Layout (torchvision's, ``download: true`` passes through): ``<data_dir>/VOCdevkit/VOC<year>/``
with ``JPEGImages/``, ``Annotations/*.xml`` and ``ImageSets/Main/<split>.txt`` (detection),
``SegmentationClass/*.png`` and ``ImageSets/Segmentation/<split>.txt`` (segmentation).
VOC 2007's test set ships as its own archive into the same folder.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import datasets as tvd
from torchvision import tv_tensors
from torchvision.transforms import v2 as T

from .base import DatasetNotFoundError
from .dense import IGNORE_INDEX, DenseDataModule

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]


def voc_target(annotation: dict[str, Any], keep_difficult: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's parsed VOC XML -> ``boxes`` (x0, y0, x1, y1), ``labels`` (1..20) and
    ``iscrowd`` (VOC's ``difficult`` flag; detections of these count neither way in mAP).

    VOC boxes are 1-based inclusive pixel indices; ``xmin - 1`` and ``xmax`` give 0-based
    pixel edges, the convention of torchvision's detection models.
    """
    boxes, labels, difficult = [], [], []
    for obj in annotation["annotation"].get("object", []):
        hard = int(obj.get("difficult", "0")) == 1
        if hard and not keep_difficult:
            continue
        b = obj["bndbox"]
        boxes.append([float(b["xmin"]) - 1, float(b["ymin"]) - 1, float(b["xmax"]), float(b["ymax"])])
        labels.append(VOC_CLASSES.index(obj["name"].strip()) + 1)
        difficult.append(int(hard))
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "iscrowd": torch.tensor(difficult, dtype=torch.int64)}


def _open(cls, data_dir, year: str, image_set: str, download: bool, name: str):
    try:
        return cls(str(data_dir), year=year, image_set=image_set, download=download)
    except (RuntimeError, FileNotFoundError) as e:
        raise DatasetNotFoundError(
            f"{name}: no VOC{year} '{image_set}' split under {data_dir}/VOCdevkit ({e}); set "
            f"dataset.download=true where there is a network, or dataset.data_dir to a folder holding VOCdevkit/"
        ) from None


class VOCDetectionSet(Dataset):
    """VOC detection as ``(image in [0, 1], {"boxes", "labels", "iscrowd"})``; training drops
    ``difficult`` objects (VOC's protocol), evaluation keeps them as ignored regions."""

    def __init__(self, voc: tvd.VOCDetection, train: bool, keep_difficult: bool = False):
        self.voc, self.train, self.keep_difficult = voc, train, keep_difficult
        ops = [T.RandomHorizontalFlip(0.5)] if train else []
        self.transform = T.Compose([*ops, T.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.voc)

    def __getitem__(self, i: int):
        image, annotation = self.voc[i]
        target = voc_target(annotation, keep_difficult=self.keep_difficult or not self.train)
        image = tv_tensors.Image(T.functional.pil_to_tensor(image))
        target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=image.shape[-2:])
        image, target = self.transform(image, target)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        return image.as_subclass(torch.Tensor), target


class VOCSegmentationSet(Dataset):
    """VOC segmentation as ``(normalised image, mask)`` with torchvision's reference recipe:
    training rescales by 0.5-2x of ``base_size``, flips and crops ``crop_size`` (padding the mask
    with the ignore label); evaluation resizes the shorter side to ``base_size``."""

    def __init__(self, voc: tvd.VOCSegmentation, train: bool, base_size: int, crop_size: int,
                 mean: tuple, std: tuple):
        self.voc = voc
        if train:
            ops = [T.RandomResize(int(0.5 * base_size), int(2.0 * base_size)), T.RandomHorizontalFlip(0.5),
                   T.RandomCrop(crop_size, pad_if_needed=True,
                                fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX})]
        else:
            ops = [T.Resize(base_size)]
        self.transform = T.Compose([*ops, T.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                                    T.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.voc)

    def __getitem__(self, i: int):
        image, mask = self.voc[i]
        image = tv_tensors.Image(T.functional.pil_to_tensor(image))
        # palette PNG: pixel values are class ids (0..20) and 255 for borders
        mask = tv_tensors.Mask(T.functional.pil_to_tensor(mask)[0].long())
        image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class _VOCDataModule(DenseDataModule):
    """``image_size``: the shorter image side the task works at (``None``: the task's own
    recipe); ``debug=fast`` sets it, so a smoke run of Table 7 is small."""

    class_names = VOC_CLASSES

    def __init__(self, data_dir: str = "data/voc", year: str = "2007", train_split: str = "trainval",
                 val_split: str = "val", test_split: str = "test", download: bool = False,
                 image_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data_dir, self.year, self.download = data_dir, str(year), download
        self.image_size = image_size
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}


class VOCDetectionDataModule(_VOCDataModule):
    """PASCAL VOC detection (default: 2007 trainval for training, 2007 test for the score)."""

    name = "voc_detection"
    task = "detection"

    def __init__(self, keep_difficult: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.keep_difficult = keep_difficult
        if self.image_size is not None:  # Faster R-CNN scales the shorter side to min_size itself
            self.model_hints.setdefault("min_size", int(self.image_size))

    def make_split(self, split: str) -> Dataset:
        voc = _open(tvd.VOCDetection, self.data_dir, self.year, self.split_names[split], self.download, self.name)
        return VOCDetectionSet(voc, train=split == "train", keep_difficult=self.keep_difficult)


class VOCSegmentationDataModule(_VOCDataModule):
    """PASCAL VOC segmentation: 21 classes (background + 20), border pixels ignored."""

    name = "voc_segmentation"
    task = "segmentation"

    def __init__(self, base_size: int = 520, crop_size: int = 480, **kwargs):
        kwargs.setdefault("year", "2012")
        kwargs.setdefault("train_split", "train")
        kwargs.setdefault("test_split", "val")  # VOC2012's test masks are not public: val is the benchmark
        super().__init__(**kwargs)
        if self.image_size is not None:  # evaluation at that shorter side, training crops no larger
            base_size, crop_size = int(self.image_size), min(crop_size, int(self.image_size))
        self.base_size, self.crop_size = base_size, crop_size

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    def make_split(self, split: str) -> Dataset:
        voc = _open(tvd.VOCSegmentation, self.data_dir, self.year, self.split_names[split], self.download,
                    self.name)
        return VOCSegmentationSet(voc, split == "train", self.base_size, self.crop_size, self.mean, self.std)
