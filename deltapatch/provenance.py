"""What a number was computed with: the versions of the packages that shape it and the source's
git commit. Recorded in every results.json (``software``) and beside every cached base
(``<base>.json``), so a figure that moves between machines can be traced to what changed.

Why: training on CPU is bit-reproducible for one set of versions, not across them (a JPEG decoder
or an initialiser that changes upstream changes the weights): the ResNet-18 CIFAR-10 base rebuilt
here on 2026-11-28 did not reproduce the one built on 2026-11-26 (docs/real_twins.md). Nor is it
across processors for one set of versions: the ConvNeXt-Tiny base built on an Intel Xeon
(2026-12-07) matched the one built on an AMD EPYC in every accuracy but not in its weights, so the
processor and the instruction set torch dispatches to (``cpu``, ``cpu_capability``) are recorded too.
Neither names a processor exactly: a Zen 5 AMD EPYC (2026-12-08) reports the model name of the Zen 2/3
one and the capability of the Intel one, and built weights of its own, so the processor's identity
(``cpu_id``: vendor, family/model/stepping) and its vector extensions (``cpu_isa``) are recorded as well.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

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


CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo(source: Path | None = None) -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo``; empty where there is none."""
    found: dict[str, str] = {}
    try:
        text = (source or CPUINFO).read_text()
    except OSError:
        return found
    for line in text.splitlines():
        if not line.strip():
            break  # one processor is enough: all cores of a machine are alike here
        key, _, value = line.partition(":")
        found.setdefault(key.strip(), value.strip())
    return found


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_id(source: Path | None = None) -> str | None:
    """``<vendor> <family>/<model>/<stepping>`` (``AuthenticAMD 26/2/1``), which tells apart processors
    that share a model name; ``None`` where ``/proc/cpuinfo`` (or ``source``) does not say."""
    info = _cpuinfo(source)
    if "vendor_id" not in info:
        return None
    return f"{info['vendor_id']} {info.get('cpu family', '?')}/{info.get('model', '?')}/{info.get('stepping', '?')}"


def cpu_isa(source: Path | None = None) -> str | None:
    """The processor's vector and matrix extensions (its ``avx*``, ``amx*`` and ``fma`` flags, sorted),
    the ones that decide which kernels torch, oneDNN and MKL pick; ``None`` where unknown."""
    flags = _cpuinfo(source).get("flags")
    if flags is None:
        return None
    return " ".join(sorted(f for f in flags.split() if f.startswith(("avx", "amx")) or f == "fma"))


@functools.lru_cache(maxsize=1)
def software() -> dict[str, str | None]:
    """``{"python": ..., <package>: <version or None>, ..., "git": ..., "cpu": ..., "cpu_id": ...,
    "cpu_isa": ..., "cpu_capability": ...}`` of this process; ``cpu_capability`` is the kernel set torch
    dispatches to (``AVX2``, ``AVX512``, ...), which ``ATEN_CPU_CAPABILITY`` can lower."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    found["git"] = git_commit()
    found["cpu"] = cpu_model()
    found["cpu_id"] = cpu_id()
    found["cpu_isa"] = cpu_isa()
    found["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return found


__all__ = ["PACKAGES", "cpu_id", "cpu_isa", "cpu_model", "git_commit", "software"]
