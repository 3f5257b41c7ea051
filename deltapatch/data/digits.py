"""scikit-learn's bundled 8×8 digits (1,797 images): always available offline."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

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
