"""Folder datasets: a train/test ImageFolder tree (ImageNet, the CIFAR-10 and MNIST packs, any user
data) and a single folder of class folders with a seeded split (RESISC45 as distributed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torchvision.datasets.folder import make_dataset

from ..errors import ConfigError
from .files import IMAGE_EXTENSIONS, FileDataModule, ImageFiles, list_dirs, list_images


class ImageFolderDataModule(FileDataModule):
    """``data_dir/<train_dir>/<class>/*.jpg`` and ``data_dir/<test_dir>/<class>/*.jpg``.

    One class list (sorted folder names, as torchvision's ImageFolder orders them, so ImageNet's
    indices match pretrained heads) is shared by all splits: a test folder that lacks a class keeps
    the other indices right. ``val_dir`` set: that folder is the official validation split;
    otherwise a seeded fraction of train is held out. ``require_train: false`` allows a test folder
    alone (ImageNet's val folder is enough to measure a base model's accuracy); the train loader
    then raises the one-line missing-data error.
    """

    def __init__(self, train_dir: str = "train", test_dir: str = "test", val_dir: str | None = None,
                 require_train: bool = True, extensions: Sequence[str] = IMAGE_EXTENSIONS, **kwargs):
        super().__init__(**kwargs)
        self.train_dir, self.test_dir, self.val_dir = train_dir, test_dir, val_dir
        self.has_val = val_dir is not None
        self.require_train = require_train
        self.extensions = tuple(e.lower() for e in extensions)
        self.train_missing = False

    def _split_dir(self, split: str) -> Path:
        return self.data_dir / {"train": self.train_dir, "val": self.val_dir or "", "test": self.test_dir}[split]

    def _classes(self) -> list[str]:
        if not self.all_class_names:
            for split in ("train", "test", "val"):
                d = self._split_dir(split)
                if (split != "val" or self.has_val) and d.is_dir():
                    self.all_class_names = [p.name for p in list_dirs(d)]
                    break
        return self.all_class_names

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        folder = self._split_dir(split)
        names = self._classes()
        if not folder.is_dir():
            if split == "train" and not self.require_train and names:
                self.train_missing = True
                return ImageFiles([]), []
            raise self.missing(folder, f"put an ImageFolder tree there ({folder.name}/<class>/<image>)")
        if not names:  # torchvision's make_dataset would fail with a ValueError about class_to_index
            raise self.missing(folder, f"it holds no class folders: put an ImageFolder tree there "
                                       f"({folder.name}/<class>/<image>)")
        extra = sorted({p.name for p in list_dirs(folder)} - set(names))
        if extra:
            raise ConfigError(f"{self.name}: {folder} has class folders the training classes lack: {extra[:5]}")
        class_to_idx = {c: i for i, c in enumerate(names)}
        items = make_dataset(str(folder), class_to_idx, extensions=self.extensions, allow_empty=True)
        return ImageFiles([p for p, _ in items]), [y for _, y in items]

    def train_dataloader(self):
        self.setup()
        if self.train_missing:
            raise self.missing(self._split_dir("train"), "a training folder is needed to train on this dataset")
        return super().train_dataloader()


class ClassFolderDataModule(FileDataModule):
    """One folder of class folders and no official split (RESISC45 as distributed:
    ``NWPU-RESISC45/<class>/<class>_NNN.jpg``). ``test_fraction`` of each class is held out as the
    test split with ``split_seed`` (fixed, not the run seed, so every run shares one test set);
    validation is then a seeded fraction of the rest."""

    def __init__(self, test_fraction: float = 0.2, split_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self._cache: dict[str, tuple[ImageFiles, list[int]]] = {}

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        if not self._cache:
            classes = list_dirs(self.data_dir) if self.data_dir.is_dir() else []
            if not classes:
                raise self.missing(self.data_dir, "point dataset.data_dir at the folder of class folders")
            g = torch.Generator().manual_seed(self.split_seed)
            parts: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "test": ([], [])}
            for y, folder in enumerate(classes):
                files = list_images(folder)
                perm = torch.randperm(len(files), generator=g).tolist()
                n_test = int(round(len(files) * self.test_fraction))
                for name, chosen in (("test", perm[:n_test]), ("train", perm[n_test:])):
                    parts[name][0].extend(files[i] for i in sorted(chosen))
                    parts[name][1].extend([y] * len(chosen))
            self.all_class_names = [c.name for c in classes]
            self._cache = {k: (ImageFiles(p), labels) for k, (p, labels) in parts.items()}
        return self._cache[split]
