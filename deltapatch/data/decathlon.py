"""The Visual Domain Decathlon (Rebuffi et al. 2017) layout, for any of its ten tasks.

``data_dir`` is the ``decathlon-1.0`` folder: the devkit's ``annotations/<task>_{train,val}.json``
(COCO style: ``images`` with ``file_name`` relative to ``data_dir``, ``annotations`` with
``category_id``, ``categories`` in label order) and the images from
``decathlon-1.0-data.tar.gz`` (one ``<task>.tar`` per task) under ``data/<task>/``. Without the
annotation files, ``data/<task>/<split>/<class>/*`` class folders are read instead.

Tasks: aircraft, cifar100, daimlerpedcls, dtd, gtsrb, imagenet12, omniglot, svhn, ucf101,
vgg-flowers (images resized to a shorter side of 72 px by the organisers).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from torchvision.datasets.folder import make_dataset

from ..errors import ConfigError

from .files import IMAGE_EXTENSIONS, FileDataModule, ImageFiles, list_dirs

TASKS = ("aircraft", "cifar100", "daimlerpedcls", "dtd", "gtsrb", "imagenet12", "omniglot", "svhn", "ucf101",
         "vgg-flowers")


class DecathlonDataModule(FileDataModule):
    """One Visual Decathlon task (``task``). The official test labels are withheld (an evaluation
    server scored them), so by default the test split is the official val split (``test_split:
    val``) and validation is a seeded fraction of train; ``test_split: test`` reads
    ``<task>_test.json`` for a copy with labels."""

    name = "decathlon"
    how_to_get = ("expects decathlon-1.0/{annotations/<task>_<split>.json,data/<task>/} there "
                  "(www.robots.ox.ac.uk/~vgg/decathlon: devkit and data archives)")

    def __init__(self, task: str = "ucf101", test_split: str = "val", **kwargs):
        super().__init__(**kwargs)
        if task not in TASKS:
            raise ConfigError(f"{self.name}: unknown Decathlon task {task!r}; one of {', '.join(TASKS)}")
        if test_split not in ("val", "test"):
            raise ConfigError(f"{self.name}: test_split must be 'val' or 'test', not {test_split!r}")
        self.task, self.test_split = task, test_split

    def _official(self, split: str) -> str:
        return self.test_split if split == "test" else split

    def _from_annotations(self, path: Path) -> tuple[Sequence, Sequence[int]]:
        with open(path) as f:
            coco = json.load(f)
        categories = coco["categories"]
        label_of = {c["id"]: i for i, c in enumerate(categories)}
        names = [str(c.get("name", c["id"])) for c in categories]
        if self.all_class_names and names != self.all_class_names:
            raise ConfigError(f"{self.name}: {path.name} lists other categories than the train annotations")
        self.all_class_names = names
        file_of = {im["id"]: im["file_name"] for im in coco["images"]}
        anns = sorted(coco.get("annotations", []), key=lambda a: a["image_id"])
        if not anns:
            raise ConfigError(f"{self.name}: {path} has no labels (the official test split is unlabelled; "
                             f"use test_split: val)")
        return (ImageFiles([self.data_dir / file_of[a["image_id"]] for a in anns]),
                [label_of[a["category_id"]] for a in anns])

    def _from_folders(self, folder: Path) -> tuple[Sequence, Sequence[int]]:
        if not self.all_class_names:
            self.all_class_names = [p.name for p in list_dirs(self.data_dir / "data" / self.task / "train")]
        class_to_idx = {c: i for i, c in enumerate(self.all_class_names)}
        items = make_dataset(str(folder), class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True)
        return ImageFiles([p for p, _ in items]), [y for _, y in items]

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        official = self._official(split)
        ann = self.data_dir / "annotations" / f"{self.task}_{official}.json"
        if ann.is_file():
            if split != "train" and not self.all_class_names:
                self.load_split("train")  # the train file fixes the category order
            return self._from_annotations(ann)
        folder = self.data_dir / "data" / self.task / official
        if folder.is_dir() and (self.data_dir / "data" / self.task / "train").is_dir():
            return self._from_folders(folder)
        raise self.missing(ann, self.how_to_get)
