"""Safe reading and atomic writing of tensor files: nothing read from a user path is unpickled.

Every file a run writes goes through :func:`atomic_path`: a temp file in the destination folder
(the same file system), flushed to disk (``fsync``), given the mode the umask allows (group-readable
caches on shared file systems), then renamed over the final name. A killed writer, a crash or a
full disk never leaves a half-written file under the final name; a full disk becomes one
:class:`~deltapatch.errors.ResourceError` line.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import torch

from .errors import CheckpointError, ResourceError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only a fallback)
    os.umask(mask)
    return mask


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full; libraries that wrap the OS error
    (safetensors, torch's zip writer) keep only its text."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122"))


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as e:
        if not directory or e.errno not in (errno.EINVAL, errno.EBADF):  # some file systems refuse dir fsync
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, before_rename=None) -> Iterator[str]:
    """Yield a temp path beside ``path``; when the block succeeds, fsync it, set its mode from the
    umask (``0o666 & ~umask``: ``mkstemp`` creates 0600), call ``before_rename(tmp)`` if given, and
    rename it over ``path``; otherwise delete it.

    A killed or failing writer never leaves a half-written file under the final name. A full disk
    (ENOSPC/EDQUOT, also as wrapped by libraries) is raised as :class:`ResourceError`.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)  # the rename itself survives a power cut
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(e):
            raise ResourceError(f"no space left on the file system of {path.parent} while writing {path.name}; "
                                f"free some space there (or point the run elsewhere) and rerun: it resumes") from None
        raise


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as JSON atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a plain ``write``, so a full disk raises ENOSPC)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


# ---------------------------------------------------------------------- checksums
def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over named tensors (sorted names, dtypes, shapes and bytes), independent of the file
    format they were stored in."""
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sidecar(path: str | os.PathLike) -> Path:
    """Where :func:`write_checked` keeps the size and SHA-256 of ``path``."""
    return Path(f"{path}.sha256.json")


def write_checked(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically with a checksum sidecar that :func:`check_file` verifies.

    The sidecar lists the new file's digest and the previous one's, and is written before the
    rename, so whenever the process dies the file under ``path`` (old or new) matches it.
    """
    path = Path(path)
    entry = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    previous = []
    if path.exists():
        try:
            previous = json.loads(sidecar(path).read_text()).get("accepted", [])[:1]
        except (OSError, ValueError, AttributeError):
            previous = []
    with atomic_path(path, before_rename=lambda _: write_json(sidecar(path), {"accepted": [entry, *previous]})) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    write_json(sidecar(path), {"accepted": [entry]})


def check_file(path: str | os.PathLike) -> str | None:
    """``None`` when ``path`` matches its checksum sidecar (or has none); otherwise what is wrong."""
    path = Path(path)
    side = sidecar(path)
    if not side.exists():
        return None
    try:
        accepted = json.loads(side.read_text())["accepted"]
    except (OSError, ValueError, KeyError) as e:
        return f"its checksum file {side.name} is unreadable ({e})"
    size = path.stat().st_size
    if not any(a.get("bytes") == size for a in accepted):
        return f"{size} bytes where {accepted[0].get('bytes')} were written (truncated?)"
    digest = file_sha256(path)
    if not any(a.get("sha256") == digest for a in accepted):
        return "its SHA-256 differs from the one recorded when it was written (corrupt)"
    return None


def remove_checked(path: str | os.PathLike) -> None:
    """Delete ``path`` and its checksum sidecar, if present."""
    for p in (Path(path), sidecar(path)):
        p.unlink(missing_ok=True)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a torch file with ``weights_only=True``.

    Lightning checkpoints (``{"state_dict": ...}``) are accepted. Anything else is refused with a
    :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path}: corrupt or truncated safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot read {path}: not a plain tensor checkpoint (truncated, corrupt, or holds pickled "
            f"objects, which are never loaded): {first}"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return obj
