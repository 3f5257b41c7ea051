"""Patch files: one task's ∆-modules and head as safetensors, with metadata that ties the patch
to the exact base model it was trained on and a SHA-256 of its own tensors, checked on load (a
patch whose bytes changed on disk is refused, not scored). Loading never unpickles."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .checkpoint import atomic_path, tensors_sha256
from .delta.network import DeltaNetwork, TaskSpec
from .errors import PatchError

FORMAT = "deltapatch/1"
log = logging.getLogger(__name__)


def base_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer of ``model`` (names, dtypes, shapes and bytes)."""
    return tensors_sha256(model.state_dict())


def save_patch(net: DeltaNetwork, task: str, path: str | os.PathLike, config: dict | None = None) -> Path:
    """Write task ``task`` of ``net`` to ``path`` (atomically). Returns the path."""
    if task not in net.tasks:
        raise PatchError(f"cannot save patch: no task '{task}' (have {list(net.tasks)})")
    spec = net.specs[task]
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.tasks[task].state_dict().items()}
    metadata = {
        "format": FORMAT,
        "task": task,
        "backbone": net.backbone_name,
        "n_deltas": str(spec.n_deltas),
        "num_classes": str(spec.num_classes),
        "class_names": json.dumps(spec.class_names),
        "spec": json.dumps(spec.to_dict()),
        "base_fingerprint": base_fingerprint(net.base),
        "config": json.dumps(config or {}, default=str),
        "tensors_sha256": tensors_sha256(tensors),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def read_patch_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a patch file, checked to be a deltapatch file."""
    path = Path(path)
    if not path.is_file():
        raise PatchError(f"patch file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise PatchError(f"cannot read patch {path}: corrupt or truncated safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise PatchError(f"{path} is not a deltapatch patch file (format={meta.get('format')!r})")
    return meta


def load_patch(net: DeltaNetwork, path: str | os.PathLike, task: str | None = None, check_base: bool = True,
               verify: bool = True) -> str:
    """Add the task stored in ``path`` to ``net`` (under ``task`` or its saved name); return its name.

    Refused with :class:`PatchError` when the file is corrupt (unreadable, or, with ``verify``, its
    tensors no longer match the SHA-256 recorded when it was saved), made for another backbone, or
    made for a base model whose weights differ (fingerprint mismatch). ``verify=False`` skips the
    tensor hash (a few ms per MB) for trusted files.
    """
    meta = read_patch_metadata(path)
    if meta["backbone"] != net.backbone_name:
        raise PatchError(
            f"patch {path} was made for backbone '{meta['backbone']}', this network is '{net.backbone_name}'"
        )
    try:
        from safetensors.torch import load_file

        state = load_file(str(path))
    except Exception as e:
        raise PatchError(f"cannot read patch {path}: corrupt or truncated safetensors file ({e})") from None
    if verify:
        check_patch_tensors(path, meta, state)
    if check_base and meta["base_fingerprint"] != base_fingerprint(net.base):
        raise PatchError(
            f"patch {path} was made for another base model (fingerprint {meta['base_fingerprint'][:12]}…, "
            f"this base {base_fingerprint(net.base)[:12]}…); load it onto the base it was trained on"
        )
    spec = TaskSpec(**json.loads(meta["spec"]))
    name = task or meta["task"]
    kwargs = {k: v for k, v in spec.to_dict().items() if k not in ("num_classes", "class_names")}
    net.add_task(name, spec.num_classes, class_names=spec.class_names, **kwargs)
    try:
        net.tasks[name].load_state_dict(state, strict=True)
    except RuntimeError as e:
        net.remove_task(name)
        raise PatchError(f"patch {path} does not fit this network: {str(e).splitlines()[0]}") from None
    return name


def check_patch_tensors(path: str | os.PathLike, meta: dict[str, str], state: dict[str, torch.Tensor]) -> None:
    """Refuse a patch whose tensors differ from the SHA-256 in its metadata. Patches written before
    the hash existed carry none and are accepted with a warning."""
    recorded = meta.get("tensors_sha256")
    if recorded is None:
        log.warning("patch %s carries no tensor checksum (written by an older version); "
                                            "loading it unverified", path)
        return
    if tensors_sha256(state) != recorded:
        raise PatchError(f"patch {path} is corrupt: its tensors do not match the SHA-256 recorded when it was "
                         f"saved ({recorded[:12]}…); copy it again from where it was made")
