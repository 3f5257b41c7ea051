"""scikit-learn's bundled 8×8 digits (1,797 images), always available offline, and the same digits in
a shifted domain (the zero-shot domain adaptation twin's target)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import v2 as T

from ..errors import ConfigError
from .base import ClassificationDataModule


class DigitsDataModule(ClassificationDataModule):
    """No official test split: a fixed ``test_fraction`` is held out with ``split_seed`` (not the
    run seed, so base and patch runs of any seed share one test set)."""

    name = "digits"

    def __init__(self, test_fraction: float = 0.2, split_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self._cache: dict[str, tuple[list, list[int]]] = {}

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        if not self._cache:
            from sklearn.datasets import load_digits

            d = load_digits()
            images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
            perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
            n_test = int(round(len(images) * self.test_fraction))
            for name, idx in (("test", sorted(perm[:n_test])), ("train", sorted(perm[n_test:]))):
                self._cache[name] = ([images[i] for i in idx], [int(d.target[i]) for i in idx])
            self.all_class_names = [str(i) for i in range(10)]
        return self._cache[split]


class ShiftedDigitsDataModule(DigitsDataModule):
    """scikit-learn's digits in another domain: ``shift`` = ``invert`` (dark digits on white),
    ``rotate`` (by ``angle`` degrees) or ``invert_rotate``. Same classes and test split as
    ``digits`` (same ``split_seed``), so digits -> digits_shifted is a zero-shot domain shift."""

    name = "digits_shifted"
    SHIFTS = ("invert", "rotate", "invert_rotate")

    def __init__(self, shift: str = "rotate", angle: float = 30.0, **kwargs):
        super().__init__(**kwargs)
        if shift not in self.SHIFTS:
            raise ConfigError(f"digits_shifted: shift must be one of {self.SHIFTS}, got '{shift}'")
        self.shift, self.angle = shift, angle

    def _apply_shift(self, image):
        if "rotate" in self.shift:
            image = T.functional.rotate(image, self.angle, interpolation=T.InterpolationMode.BILINEAR)
        if "invert" in self.shift:
            image = T.functional.invert(image)
        return image

    def transform(self, train: bool) -> T.Compose:
        ops = list(super().transform(train).transforms)
        # after the resize, so rotation works on the upsampled image rather than 8x8 pixels
        at = next(i for i, op in enumerate(ops) if isinstance(op, T.Resize)) + 1
        return T.Compose(ops[:at] + [T.Lambda(self._apply_shift)] + ops[at:])
