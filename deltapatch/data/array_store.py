"""Arrays on disk as numpy ``.npy`` files, one folder per cache entry, committed atomically.

An entry is ``<root>/<key>/`` holding ``<name>.npy`` files (numpy's own format: a small header
with dtype and shape, then the raw array, so ``np.load(mmap_mode="r")`` maps it without reading
it) and ``meta.json`` (what was cached, and a SHA-256 of every array). The image cache and the
feature cache both store their arrays this way.

A writer fills a temporary sibling folder and renames it into place only when every array is
complete and flushed to disk: a killed writer never leaves a half-written entry under the final
name, and of two jobs writing the same entry at once the second simply reads the first one's copy.
A reader checks the manifest, the shapes and file sizes (a truncated file fails there), and with
``verify`` the checksums (a flipped byte fails there); an entry failing any check is moved aside
and deleted, and the caller rebuilds it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from numpy.lib.format import open_memmap

META = "meta.json"
HASH_CHUNK = 64 << 20  # bytes hashed per step: bounded memory whatever the array's size


class EntryError(ValueError):
    """A cache entry is missing, incomplete or corrupt (the caller rebuilds it)."""


def _sha256(array: np.ndarray) -> str:
    flat = array.reshape(-1).view(np.uint8)
    h = hashlib.sha256()
    for i in range(0, flat.size, HASH_CHUNK):
        h.update(flat[i:i + HASH_CHUNK])
    return h.hexdigest()


class EntryWriter:
    """Write the arrays of entry ``key`` under ``root``; :meth:`commit` makes them visible.

    Use as a context manager: leaving the block with an exception deletes the temp folder.
    Arrays are created with :meth:`create` and filled in order with :meth:`append` (rows are
    hashed as they are written, so committing needs no second pass over the data).
    """

    def __init__(self, root: str | os.PathLike, key: str, meta: Mapping[str, Any]):
        self.root, self.key, self.meta = Path(root), key, dict(meta)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.arrays: dict[str, np.memmap] = {}
        self._filled: dict[str, int] = {}
        self._hash: dict[str, Any] = {}

    def __enter__(self) -> "EntryWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is not None or self.tmp.exists():  # failed, or never committed
            self.arrays.clear()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def create(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str) -> np.memmap:
        """A new ``.npy`` array, memory-mapped for writing."""
        self.arrays[name] = open_memmap(self.tmp / f"{name}.npy", mode="w+", dtype=np.dtype(dtype), shape=shape)
        self._filled[name], self._hash[name] = 0, hashlib.sha256()
        return self.arrays[name]

    def append(self, name: str, rows: np.ndarray) -> None:
        """Write ``rows`` after the rows written so far."""
        arr, start = self.arrays[name], self._filled[name]
        if start + len(rows) > len(arr):
            raise ValueError(f"{name}: {start + len(rows)} rows written into an array of {len(arr)}")
        rows = np.ascontiguousarray(rows, dtype=arr.dtype)
        arr[start:start + len(rows)] = rows
        self._hash[name].update(rows.reshape(-1).view(np.uint8))
        self._filled[name] = start + len(rows)

    def commit(self) -> Path:
        """Flush, record sizes and checksums in ``meta.json``, rename into place; the final path."""
        arrays = {}
        for name, arr in self.arrays.items():
            if self._filled[name] != len(arr):
                raise ValueError(f"{name}: {self._filled[name]} of {len(arr)} rows written")
            arr.flush()
            arrays[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str, "sha256": self._hash[name].hexdigest()}
            with open(self.tmp / f"{name}.npy", "rb+") as fh:
                os.fsync(fh.fileno())  # on disk before the rename makes the entry visible
        self.arrays.clear()  # drop the write mappings before the rename
        with open(self.tmp / META, "w") as fh:
            json.dump({**self.meta, "key": self.key, "arrays": arrays}, fh, indent=1, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.root / self.key
        try:
            os.rename(self.tmp, final)
        except OSError:
            if not (final / META).is_file():  # not a concurrent writer that finished first
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)
        return final


def open_entry(root: str | os.PathLike, key: str, expect: Mapping[str, Any] | None = None,
               verify: bool = True, mode: str = "r") -> tuple[dict[str, np.memmap], dict[str, Any]]:
    """The arrays (memory maps, ``mode`` as for ``np.load``: ``"r"`` read-only, ``"c"``
    copy-on-write, which torch can wrap without a warning) and manifest of entry ``key``.

    ``expect``: manifest values that must match (e.g. the number of samples). Raises
    :class:`EntryError` saying why when the entry is absent, incomplete or corrupt.
    """
    folder = Path(root) / key
    if not (folder / META).is_file():
        raise EntryError("absent" if not folder.exists() else "no manifest (incomplete)")
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as e:
        raise EntryError(f"unreadable manifest ({e})") from None
    if meta.get("key") != key or not isinstance(meta.get("arrays"), dict):
        raise EntryError("manifest of another entry")
    for k, v in (expect or {}).items():
        if meta.get(k) != v:
            raise EntryError(f"{k} is {meta.get(k)!r}, expected {v!r}")
    arrays = {}
    for name, info in meta["arrays"].items():
        try:
            # numpy checks the header and that the file holds the whole array (truncation fails here)
            arr = np.load(folder / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise EntryError(f"{name}.npy unreadable ({e})") from None
        if list(arr.shape) != info["shape"] or arr.dtype.str != info["dtype"]:
            raise EntryError(f"{name}.npy is {arr.dtype.str}{list(arr.shape)}, manifest says "
                             f"{info['dtype']}{info['shape']}")
        size = (folder / f"{name}.npy").stat().st_size
        if size != arr.offset + arr.nbytes:
            raise EntryError(f"{name}.npy is {size} bytes, expected {arr.offset + arr.nbytes}")
        if verify and _sha256(arr) != info["sha256"]:
            raise EntryError(f"{name}.npy checksum mismatch (corrupt)")
        arrays[name] = arr
    return arrays, meta


def discard(root: str | os.PathLike, key: str) -> None:
    """Remove entry ``key`` (renamed aside first, so no reader sees a half-deleted folder)."""
    folder = Path(root) / key
    if not folder.exists():
        return
    aside = folder.with_name(f".{key}.bad-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(aside)
    except OSError:
        return  # a concurrent job moved it already
    shutil.rmtree(aside, ignore_errors=True)


def entry_bytes(root: str | os.PathLike, key: str) -> int:
    """Bytes on disk of entry ``key`` (0 when absent)."""
    folder = Path(root) / key
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.is_dir() else 0
