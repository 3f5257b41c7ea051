"""Shared plumbing for datasets read from files: archives, lazily opened images, torchvision classes.

An archive (the packs in ``../shared/data``, a user's own ``.tar.gz``/``.zip``) is extracted once
into a cache folder, atomically: everything goes into a temporary sibling folder first and is
renamed into place only when complete, so an interrupted extraction never leaves a half-filled
folder that later runs would mistake for the dataset, and two jobs that start together (a Hydra
multirun) do not trip over each other.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from ..errors import ConfigError, CorruptDataError
from .base import ClassificationDataModule

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def extract_once(archives: Sequence[str | os.PathLike], dest: str | os.PathLike) -> Path:
    """Extract every archive into ``dest`` unless ``dest`` already exists; return ``dest``.

    ``.zip`` and every tar flavour (``.tar``, ``.tar.gz``, ``.tar.xz``, ``.tar.bz2``, ``.tgz``) are
    understood. Raises :class:`FileNotFoundError` naming the first archive that is missing.
    """
    dest = Path(os.path.expanduser(str(dest)))
    if dest.is_dir():
        return dest
    paths = [Path(os.path.expanduser(str(a))) for a in archives]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(p)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        for p in paths:
            if zipfile.is_zipfile(p):
                with zipfile.ZipFile(p) as zf:
                    zf.extractall(tmp)  # zipfile itself drops absolute paths and '..'
            else:
                with tarfile.open(p) as tf:
                    _safe_extract(tf, tmp)
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():  # a concurrent job that finished first is fine; anything else is not
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _safe_extract(tf: tarfile.TarFile, dest: Path) -> None:
    """Extract a tar without letting a member escape ``dest`` (absolute paths, '..', links)."""
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: the stdlib's own check
        tf.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for m in tf.getmembers():
        target = (dest / m.name).resolve()
        if m.issym() or m.islnk() or not (target == root or root in target.parents):
            raise ValueError(f"refusing to extract {m.name!r} from an archive")
    tf.extractall(dest)


class ImageFiles(Sequence):
    """Image paths that open as PIL images on indexing, so a split costs no memory until read."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:  # type: ignore[override]
        try:
            with Image.open(self.paths[i]) as im:
                im.load()  # read now: the file handle must not outlive this call
                return im
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for empty/corrupt files
            raise CorruptDataError(f"cannot read image {self.paths[i]} ({type(e).__name__}: {e}); "
                                   f"replace or delete the file") from None


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (the order is part of every seeded split)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def list_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder``, sorted by name, hidden ones skipped."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class FileDataModule(ClassificationDataModule):
    """A DataModule whose files may first be extracted from ``archives`` into ``extract_to``.

    ``data_dir`` keeps its meaning (where the dataset's files are read from); for a pack it points
    at or inside ``extract_to``. Without ``archives`` nothing is extracted. Also holds the helper
    that opens a torchvision dataset class and turns "not found" into the one-line error.
    """

    #: one line telling a user how to get the files (shown with the path that was searched)
    how_to_get: str = "set dataset.data_dir to its folder, or dataset.download=true where torchvision can download it"

    def __init__(self, archives: Sequence[str] | None = None, extract_to: str | os.PathLike | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.archives = [str(a) for a in archives] if archives else []
        if self.archives and extract_to is None:
            raise ConfigError(f"{self.name}: archives given without extract_to (the cache folder to extract into)")
        self.extract_to = Path(os.path.expanduser(str(extract_to))) if extract_to is not None else None

    def extract(self) -> None:
        """Extract the archives if that has not been done yet (a no-op without archives)."""
        if not self.archives:
            return
        assert self.extract_to is not None
        try:
            extract_once(self.archives, self.extract_to)
        except FileNotFoundError as e:
            raise self.missing(e.args[0] if e.args else self.archives[0],
                               "set paths.packs_dir (or DELTAPATCH_PACKS) to the folder that holds the pack") from None

    def prepare_data(self) -> None:
        self.extract()

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            # setup() is also reached through num_classes/class_names, without prepare_data()
            self.extract()
        super().setup(stage)

    def open_torchvision(self, factory: Callable[[], Any], where: Path | str | None = None) -> Any:
        """``factory()`` (a torchvision dataset constructor), with its "not found" errors turned
        into :meth:`missing`. Other errors (a corrupt file, a failed download) pass through."""
        try:
            return factory()
        except FileNotFoundError:
            pass
        except RuntimeError as e:
            if "not found" not in str(e).lower():
                raise
        raise self.missing(where or self.data_dir, self.how_to_get) from None
