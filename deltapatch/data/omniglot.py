"""Omniglot as a classification task: every character is a class, its drawings are split."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torchvision import datasets as tvd

from .files import FileDataModule, ImageFiles, list_dirs, list_images

TORCHVISION_SETS = {"images_background": True, "images_evaluation": False}  # name -> Omniglot(background=)


class OmniglotDataModule(FileDataModule):
    """Omniglot's official folder layout ``<set>/<alphabet>/<character>/*.png``, for each of ``sets``
    (``images_background`` and ``images_evaluation``: 964 + 659 characters; or the small background
    sets of the pack). A set is looked for in ``data_dir/<set>`` and in torchvision's
    ``data_dir/omniglot-py/<set>``; ``download: true`` fetches the two standard sets with
    torchvision. Each character is a class named ``alphabet/character``; one listed by several
    sets is one class, read from the first (the pack's two small sets both hold Greek and Latin,
    with the same files: their union has 136 + 156 - 50 = 242 characters).

    Omniglot has no per-character split: ``test_fraction`` of each character's drawings (20 each)
    is the test split, chosen with ``split_seed`` (fixed, so every run shares one test set).
    torchvision's own class is not used to read, because it insists on the md5 of the original
    zip even after extraction and knows only the two standard sets.
    """

    name = "omniglot"

    def __init__(self, sets: Sequence[str] = ("images_background", "images_evaluation"),
                 test_fraction: float = 0.25, split_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.sets = list(sets)
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self._cache: dict[str, tuple[ImageFiles, list[int]]] = {}

    def _find_set(self, name: str) -> Path:
        candidates = [self.data_dir / name, self.data_dir / tvd.Omniglot.folder / name]
        for c in candidates:
            if c.is_dir():
                return c
        if self.download and name in TORCHVISION_SETS:
            tvd.Omniglot(str(self.data_dir), background=TORCHVISION_SETS[name], download=True)
            return candidates[1]
        raise self.missing(candidates[0], f"unzip {name}.zip there (github.com/brendenlake/omniglot)"
                                          + (", or set dataset.download=true" if name in TORCHVISION_SETS else ""))

    def load_split(self, split: str) -> tuple[Sequence, Sequence[int]]:
        if not self._cache:
            g = torch.Generator().manual_seed(self.split_seed)
            names: list[str] = []
            seen: set[str] = set()
            parts: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "test": ([], [])}
            for set_name in self.sets:
                for alphabet in list_dirs(self._find_set(set_name)):
                    for character in list_dirs(alphabet):
                        name = f"{alphabet.name}/{character.name}"
                        if name in seen:  # the same character (same files) listed by another set
                            continue
                        seen.add(name)
                        y = len(names)
                        names.append(name)
                        files = list_images(character)
                        perm = torch.randperm(len(files), generator=g).tolist()
                        n_test = int(round(len(files) * self.test_fraction))
                        for part, chosen in (("test", perm[:n_test]), ("train", perm[n_test:])):
                            parts[part][0].extend(files[i] for i in sorted(chosen))
                            parts[part][1].extend([y] * len(chosen))
            if not names:
                raise self.missing(self._find_set(self.sets[0]), "no <alphabet>/<character>/ folders found")
            self.all_class_names = names
            self._cache = {k: (ImageFiles(p), labels) for k, (p, labels) in parts.items()}
        return self._cache[split]
