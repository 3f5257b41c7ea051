"""Scenario progress on disk, so a killed run (pre-emption, a crash) resumes where it stopped:
finished tasks are restored from a safetensors snapshot, the task in flight from Lightning's
``last.ckpt`` (read with ``weights_only=True``)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoint import atomic_path, write_json
from ..errors import CheckpointError

log = logging.getLogger(__name__)


class RunProgress:
    """``progress.json`` (what each finished task produced) and ``state/<task>.safetensors``
    (the whole method right after that task, including any change its ``end_task`` made)."""

    def __init__(self, out_dir: Path, resume: bool | str = "auto"):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "progress.json"
        has_any = self.path.exists() or any((self.out_dir / "checkpoints").glob("*/last.ckpt"))
        self.enabled = bool(has_any) if resume == "auto" else bool(resume)
        self.tasks: dict[str, dict[str, Any]] = {}
        if self.enabled and self.path.exists():
            try:
                self.tasks = json.loads(self.path.read_text())["tasks"]
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"cannot resume: {self.path} is corrupt ({e}); delete it to start over") from None
        if self.enabled and has_any:
            log.info("resuming run in %s (finished tasks: %s)", self.out_dir, list(self.tasks) or "none")

    def done(self, task: str) -> dict[str, Any] | None:
        return self.tasks.get(task)

    def state_file(self, task: str) -> Path:
        return self.out_dir / "state" / f"{task}.safetensors"

    def record(self, task: str, method: nn.Module, info: dict[str, Any]) -> None:
        """Snapshot the method after ``task`` and mark the task finished (both atomically)."""
        with atomic_path(self.state_file(task)) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in _tensors(method).items()}, tmp)
        self.tasks[task] = info
        write_json(self.path, {"tasks": self.tasks})

    def restore(self, task: str, method: nn.Module) -> None:
        try:
            saved = load_file(str(self.state_file(task)))
            own = _tensors(method)
            if saved.keys() != own.keys():
                raise ValueError(f"{len(saved.keys() ^ own.keys())} tensors differ, e.g. "
                                 f"{sorted(saved.keys() ^ own.keys())[:3]}")
            with torch.no_grad():
                for k, t in own.items():
                    t.copy_(saved[k])
        except Exception as e:
            raise CheckpointError(f"cannot resume: state of task '{task}' ({self.state_file(task)}) is unreadable "
                                  f"({str(e).splitlines()[0]}); delete {self.path} to start over") from None

    def checkpoint(self, task: str) -> Path | None:
        """Lightning's last checkpoint of an unfinished task, when resuming."""
        p = self.out_dir / "checkpoints" / task / "last.ckpt"
        return p if self.enabled and p.exists() else None


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer once (a module reachable under two names is saved once)."""
    return dict(module.named_parameters()) | dict(module.named_buffers())
