"""Datasets torchvision reads: each DataModule opens torchvision's own class on its own layout
(``download: true`` passes through), and adds only what the shared base needs: labels as a list,
the class names, and the one-line error when files are missing.

Files already present are trusted: torchvision verifies MD5s when it downloads, but several
classes (STL-10, SVHN, CIFAR, Flowers-102) also hash every file on every construction. For
STL-10 that means reading a 2.6 GB unlabeled file the classification splits never use, and it
rejects any file not byte-identical to the 2011 release. The ``_Present*`` subclasses below only
check that the files exist; everything else is torchvision's code.
"""
from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path
from typing import Sequence

from torch.utils.data import ConcatDataset
from torchvision import datasets as tvd

from .files import FileDataModule, ImageFiles, list_dirs, list_images

DIGITS = [str(i) for i in range(10)]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
# signnames.csv of the GTSRB benchmark: class id -> sign
GTSRB_CLASSES = [
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing", "Beware of ice/snow",
    "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead", "Turn left ahead",
    "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
]


# ---------------------------------------------------------------- presence-only integrity checks
class _PresentSTL10(tvd.STL10):
    def _check_integrity(self) -> bool:
        # the labelled splits only: unlabeled_X.bin is 2.6 GB and unused here
        files = [f for f, _ in self.train_list if not f.startswith("unlabeled")] + [f for f, _ in self.test_list]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in files)


class _PresentSVHN(tvd.SVHN):
    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))


class _PresentCIFAR:
    """Mixin for CIFAR-10/100: present batch files and meta file are enough."""

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f))
                   for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        if not os.path.isfile(path):
            raise RuntimeError(f"Dataset metadata file not found: {path}")
        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _PresentCIFAR10(_PresentCIFAR, tvd.CIFAR10):
    pass


class _PresentCIFAR100(_PresentCIFAR, tvd.CIFAR100):
    pass


class _PresentFlowers102(tvd.Flowers102):
    def _check_integrity(self) -> bool:
        return self._images_folder.is_dir() and all(
            (self._base_folder / self._file_dict[k][0]).is_file() for k in ("label", "setid"))


# ---------------------------------------------------------------- DataModules
class STL10DataModule(FileDataModule):
    """STL-10 binary files (``data_dir/stl10_binary/{train,test}_{X,y}.bin``): 5,000 train /
    8,000 test 96×96 images, 10 classes; validation is a seeded fraction of train."""

    name = "stl10"
    how_to_get = "expects stl10_binary/{train,test}_{X,y}.bin there, or set dataset.download=true"

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        ds = self.open_torchvision(lambda: _PresentSTL10(str(self.data_dir), split=split, download=self.download),
                                   self.data_dir / "stl10_binary")
        self.all_class_names = list(getattr(ds, "classes", None) or STL10_CLASSES)
        return ds, [int(y) for y in ds.labels]


class GTSRBDataModule(FileDataModule):
    """GTSRB, 43 traffic-sign classes, in either layout:

    - the official one (also the ``gtsrb-32px`` pack): ``GTSRB/Final_Training/Images/000NN/*.ppm``
      with per-class ``GT-000NN.csv``, and ``GTSRB/Final_Test/Images/*.ppm`` with
      ``GT-final_test.csv`` (from ``GTSRB_Final_Test_GT.zip``; searched in ``Final_Test/``,
      ``Final_Test/Images/`` and beside ``GTSRB/``);
    - torchvision's download layout ``data_dir/gtsrb/...`` (used when ``download: true``).
    """

    name = "gtsrb"
    how_to_get = ("expects GTSRB/Final_Training/Images/000NN/ and GTSRB/Final_Test/ (official layout) "
                  "or gtsrb/ (torchvision's), or set dataset.download=true")

    def _official_root(self) -> Path | None:
        for root in (self.data_dir / "GTSRB", self.data_dir / "gtsrb" / "GTSRB", self.data_dir):
            if (root / "Final_Training" / "Images").is_dir():
                return root
        return None

    @staticmethod
    def _read_csv(path: Path) -> list[dict[str, str]]:
        with open(path, newline="") as f:
            return list(csv.DictReader(f, delimiter=";", skipinitialspace=True))

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        self.all_class_names = list(GTSRB_CLASSES)
        root = self._official_root()
        if root is None:
            ds = self.open_torchvision(lambda: tvd.GTSRB(str(self.data_dir), split=split, download=self.download))
            return ds, [int(y) for _, y in ds._samples]
        paths: list[Path] = []
        labels: list[int] = []
        if split == "train":
            for folder in list_dirs(root / "Final_Training" / "Images"):
                gt = folder / f"GT-{folder.name}.csv"
                if gt.is_file():
                    rows = self._read_csv(gt)
                    paths += [folder / r["Filename"] for r in rows]
                    labels += [int(r["ClassId"]) for r in rows]
                else:  # the folder name is the class id
                    files = [p for p in list_images(folder) if p.suffix.lower() == ".ppm"]
                    paths += files
                    labels += [int(folder.name)] * len(files)
        else:
            candidates = [root / "Final_Test" / "GT-final_test.csv",
                          root / "Final_Test" / "Images" / "GT-final_test.csv",
                          root / "GT-final_test.csv", root.parent / "GT-final_test.csv"]
            gt = next((c for c in candidates if c.is_file()), None)
            if gt is None:
                raise self.missing(candidates[0], "the test labels come in GTSRB_Final_Test_GT.zip (GT-final_test.csv)")
            rows = self._read_csv(gt)
            paths = [root / "Final_Test" / "Images" / r["Filename"] for r in rows]
            labels = [int(r["ClassId"]) for r in rows]
        return ImageFiles(paths), labels


class Flowers102DataModule(FileDataModule):
    """Oxford Flowers-102 (``data_dir/flowers-102/{jpg/,imagelabels.mat,setid.mat}``): official
    train/val/test (10/10/rest per class)."""

    name = "flowers102"
    has_val = True
    how_to_get = "expects flowers-102/{jpg/,imagelabels.mat,setid.mat} there, or set dataset.download=true"

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        ds = self.open_torchvision(lambda: _PresentFlowers102(str(self.data_dir), split=split, download=self.download),
                                   self.data_dir / "flowers-102")
        self.all_class_names = list(ds.classes)
        return ds, [int(y) for y in ds._labels]


class StanfordCarsDataModule(FileDataModule):
    """Stanford Cars, 196 classes (``data_dir/stanford_cars/`` with ``devkit/cars_meta.mat``,
    ``devkit/cars_train_annos.mat``, ``cars_train/``, ``cars_test/`` and
    ``cars_test_annos_withlabels.mat``). Validation is a seeded fraction of train;
    ``sample_rate`` keeps a class-balanced fraction of train (Table 5)."""

    name = "stanford_cars"
    how_to_get = ("its download URL is gone: get the files (e.g. Kaggle's copy) and arrange "
                  "stanford_cars/{devkit/,cars_train/,cars_test/,cars_test_annos_withlabels.mat}")

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        # download=False always: torchvision raises on download=True even when the files are present
        ds = self.open_torchvision(lambda: tvd.StanfordCars(str(self.data_dir), split=split, download=False),
                                   self.data_dir / "stanford_cars")
        self.all_class_names = [str(c) for c in ds.classes]
        return ds, [int(y) for _, y in ds._samples]


class FGVCAircraftDataModule(FileDataModule):
    """FGVC-Aircraft 2013b (``data_dir/fgvc-aircraft-2013b/data/``): official train/val/test from
    ``images_<level>_<split>.txt``; ``annotation_level`` is variant (100 classes), family (70) or
    manufacturer (30); ``sample_rate`` keeps a class-balanced fraction of train (Table 5)."""

    name = "fgvc_aircraft"
    has_val = True
    how_to_get = "expects fgvc-aircraft-2013b/data/ there, or set dataset.download=true"

    def __init__(self, annotation_level: str = "variant", **kwargs):
        super().__init__(**kwargs)
        self.annotation_level = annotation_level

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        ds = self.open_torchvision(lambda: tvd.FGVCAircraft(str(self.data_dir), split=split,
                                                            annotation_level=self.annotation_level,
                                                            download=self.download),
                                   self.data_dir / "fgvc-aircraft-2013b")
        self.all_class_names = list(ds.classes)
        return ds, [int(y) for y in ds._labels]


class DTDDataModule(FileDataModule):
    """Describable Textures (``data_dir/dtd/dtd/{images,labels}``): official train/val/test of one
    of its 10 ``partition``s, 47 classes."""

    name = "dtd"
    has_val = True
    how_to_get = "expects dtd/dtd/{images,labels}/ there, or set dataset.download=true"

    def __init__(self, partition: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.partition = partition

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        ds = self.open_torchvision(lambda: tvd.DTD(str(self.data_dir), split=split, partition=self.partition,
                                                   download=self.download),
                                   self.data_dir / "dtd")
        # torchvision numbers the classes present in this split's list; number all 47 by the image
        # folders instead, so a split that lacked a class would not shift the others
        self.all_class_names = [p.name for p in list_dirs(ds._images_folder)]
        index = {c: i for i, c in enumerate(self.all_class_names)}
        return ds, [index[Path(f).parent.name] for f in ds._image_files]


class SVHNDataModule(FileDataModule):
    """SVHN cropped digits (``data_dir/{train,test,extra}_32x32.mat``); label 10 is digit 0
    (torchvision maps it). ``include_extra`` adds the 531k easier "extra" images to train."""

    name = "svhn"
    how_to_get = "expects {train,test}_32x32.mat there, or set dataset.download=true"

    def __init__(self, include_extra: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.include_extra = include_extra

    def _open(self, split: str) -> tvd.SVHN:
        return self.open_torchvision(lambda: _PresentSVHN(str(self.data_dir), split=split, download=self.download),
                                     self.data_dir / f"{split}_32x32.mat")

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        self.all_class_names = list(DIGITS)
        parts = [self._open(split)] + ([self._open("extra")] if split == "train" and self.include_extra else [])
        labels = [int(y) for ds in parts for y in ds.labels]
        return (parts[0] if len(parts) == 1 else ConcatDataset(parts)), labels


class CIFAR10DataModule(FileDataModule):
    """CIFAR-10 python batches (``data_dir/cifar-10-batches-py/``); validation is a seeded fraction
    of train. For the JPEG folder pack use :class:`~deltapatch.data.ImageFolderDataModule`."""

    name = "cifar10"
    torchvision_class: type = _PresentCIFAR10
    how_to_get = "expects cifar-10-batches-py/ there, or set dataset.download=true"

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        cls = self.torchvision_class
        ds = self.open_torchvision(lambda: cls(str(self.data_dir), train=split == "train", download=self.download),
                                   self.data_dir / cls.base_folder)
        self.all_class_names = list(ds.classes)
        return ds, [int(y) for y in ds.targets]


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 python files (``data_dir/cifar-100-python/``), the 100 fine labels."""

    name = "cifar100"
    torchvision_class = _PresentCIFAR100
    how_to_get = "expects cifar-100-python/ there, or set dataset.download=true"


class USPSDataModule(FileDataModule):
    """USPS 16×16 digits from the LIBSVM bz2 files torchvision reads (``data_dir/usps.bz2``,
    ``data_dir/usps.t.bz2``): 7,291 train / 2,007 test."""

    name = "usps"
    how_to_get = "expects usps.bz2 and usps.t.bz2 there, or set dataset.download=true"

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        self.all_class_names = list(DIGITS)
        ds = self.open_torchvision(lambda: tvd.USPS(str(self.data_dir), train=split == "train", download=self.download),
                                   self.data_dir / ("usps.bz2" if split == "train" else "usps.t.bz2"))
        return ds, [int(y) for y in ds.targets]


__all__ = ["CIFAR100DataModule", "CIFAR10DataModule", "DTDDataModule", "FGVCAircraftDataModule",
           "Flowers102DataModule", "GTSRBDataModule", "STL10DataModule", "SVHNDataModule",
           "StanfordCarsDataModule", "USPSDataModule"]
