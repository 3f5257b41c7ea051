"""What a number was computed with: the versions of the packages that shape it and the source's
git commit. Recorded in every results.json (``software``) and beside every cached base
(``<base>.json``), so a figure that moves between machines can be traced to what changed.

Why: training on CPU is bit-reproducible for one set of versions, not across them (a JPEG decoder
or an initialiser that changes upstream changes the weights): the ResNet-18 CIFAR-10 base rebuilt
here on 2026-11-28 did not reproduce the one built on 2026-11-26 (docs/real_twins.md).
"""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# the distributions whose versions can change a trained number (decoding, initialisation, kernels)
PACKAGES = ("deltapatch", "torch", "torchvision", "timm", "pytorch-lightning", "torchmetrics", "numpy", "pillow")


def git_commit(where: str | Path = Path(__file__).parent) -> str | None:
    """The commit checked out at ``where`` (``+dirty`` when tracked files differ from it); ``None``
    outside a git work tree or without git (an installed wheel)."""
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@functools.lru_cache(maxsize=1)
def software() -> dict[str, str | None]:
    """``{"python": ..., <package>: <version or None>, ..., "git": ...}`` of this process."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    found["git"] = git_commit()
    return found


__all__ = ["PACKAGES", "git_commit", "software"]
