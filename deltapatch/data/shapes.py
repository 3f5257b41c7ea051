"""Synthetic shapes: the offline twin of PASCAL VOC for detection and segmentation.

Each image holds a few non-overlapping filled shapes (rectangle, ellipse, triangle) in random
colours on a noisy background. Image ``i`` of a split is drawn from its own generator seeded by
``(seed, split, i)``, so the set is generated on the fly, identical on every run and every worker,
and its ground truth is exact: the box of a shape is the tight box of its own pixels, and the mask
holds the class of every pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

SHAPE_CLASSES = ["rectangle", "ellipse", "triangle"]  # labels 1..3; 0 is background
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class ShapesSample:
    image: np.ndarray  # [H, W, 3] uint8
    boxes: np.ndarray  # [N, 4] float32, (x0, y0, x1, y1), x1/y1 exclusive pixel edges
    labels: np.ndarray  # [N] int64 in 1..len(SHAPE_CLASSES)
    mask: np.ndarray  # [H, W] uint8 class per pixel, 0 = background


def render_shapes(index: int, seed: int = 0, split: str = "train", image_size: int = 64, max_shapes: int = 3,
                  min_extent: float = 0.15, max_extent: float = 0.45) -> ShapesSample:
    """Draw image ``index`` of ``split``. Shape extents are fractions of ``image_size``."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    s = image_size
    background = rng.integers(0, 256, size=3)
    image = np.clip(background + rng.normal(0, 12, size=(s, s, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((s, s), dtype=np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(10):  # a placement that overlaps an earlier shape is drawn again
            label = int(rng.integers(1, len(SHAPE_CLASSES) + 1))
            w, h = (rng.uniform(min_extent, max_extent, size=2) * s).astype(int)
            x0, y0 = int(rng.integers(0, s - w)), int(rng.integers(0, s - h))
            canvas = Image.new("L", (s, s), 0)
            draw = ImageDraw.Draw(canvas)
            corners = [x0, y0, x0 + w - 1, y0 + h - 1]
            if label == 1:
                draw.rectangle(corners, fill=1)
            elif label == 2:
                draw.ellipse(corners, fill=1)
            else:
                draw.polygon([(x0 + w // 2, y0), (x0, y0 + h - 1), (x0 + w - 1, y0 + h - 1)], fill=1)
            own = np.asarray(canvas, dtype=bool)
            if own.any() and not (own & (mask > 0)).any():
                break
        else:
            continue  # no free spot: fewer shapes in this image
        # a colour far enough from the background that the shape is visible
        color = (background + rng.integers(80, 176, size=3)) % 256
        image[own] = color
        mask[own] = label
        ys, xs = np.nonzero(own)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(label)
    return ShapesSample(image, np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                        np.asarray(labels, dtype=np.int64), mask)


class ShapesDataset(Dataset):
    """``length`` shapes images of one split, rendered when asked for.

    ``target="boxes"`` yields ``(image, {"boxes", "labels"})`` as torchvision's detection models
    take them; ``target="mask"`` yields ``(image, mask)`` with a long mask. Images are float
    tensors in [0, 1]; ``normalize=(mean, std)`` normalises them (segmentation models do not
    normalise their input themselves, detection models do).
    """

    def __init__(self, length: int, split: str, seed: int = 0, image_size: int = 64, max_shapes: int = 3,
                 target: str = "boxes", normalize: tuple | None = None):
        if target not in ("boxes", "mask"):
            raise ValueError(f"target must be 'boxes' or 'mask', got '{target}'")
        self.length, self.split, self.seed = length, split, seed
        self.image_size, self.max_shapes, self.target = image_size, max_shapes, target
        self.normalize = normalize

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if not 0 <= i < self.length:
            raise IndexError(i)
        s = render_shapes(i, self.seed, self.split, self.image_size, self.max_shapes)
        image = torch.from_numpy(s.image).permute(2, 0, 1).float().div_(255)
        if self.normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in self.normalize)
            image = (image - mean) / std
        if self.target == "mask":
            return image, torch.from_numpy(s.mask).long()
        return image, {"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)}
