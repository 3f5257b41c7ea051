"""MNIST-format idx files (MNIST, Fashion-MNIST): a folder of ``*-ubyte`` or ``*-ubyte.gz`` files,
such as Debian's ``/usr/share/datasets/fashion-mnist``, or torchvision's own layout."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Sequence

import numpy as np
import torchvision

from .base import ClassificationDataModule

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an idx file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {arr.size} values for shape {dims}")
    return arr.reshape(dims)


class IdxDataModule(ClassificationDataModule):
    """Reads ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from ``data_dir``; falls back to
    torchvision's class (``<data_dir>/<Name>/raw``, downloading when ``download=true``)."""

    torchvision_class: type = torchvision.datasets.MNIST
    class_names_list: list[str] = [str(i) for i in range(10)]

    def _find(self, stem: str) -> Path | None:
        for d in (self.data_dir, self.data_dir / self.torchvision_class.__name__ / "raw"):
            for suffix in ("", ".gz"):
                p = d / f"{stem}{suffix}"
                if p.is_file():
                    return p
        return None

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        self.all_class_names = list(self.class_names_list)
        prefix = "train" if split == "train" else "t10k"
        images = self._find(f"{prefix}-images-idx3-ubyte")
        labels = self._find(f"{prefix}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            return list(read_idx(images)), [int(y) for y in read_idx(labels)]
        if not self.download:
            raise self.missing(self.data_dir, f"put the idx files {prefix}-images-idx3-ubyte[.gz] there "
                                              f"or set dataset.download=true")
        ds = self.torchvision_class(str(self.data_dir), train=split == "train", download=True)
        return list(ds.data.numpy()), [int(y) for y in ds.targets]


class MNISTDataModule(IdxDataModule):
    name = "mnist"


class FashionMNISTDataModule(IdxDataModule):
    name = "fashion_mnist"
    torchvision_class = torchvision.datasets.FashionMNIST
    class_names_list = FASHION_CLASSES
