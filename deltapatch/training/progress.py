"""Scenario progress on disk, so a killed run (pre-emption, a crash) resumes where it stopped:
finished tasks are restored from a safetensors snapshot, the task in flight from its
``last.ckpt`` (written every epoch, read with ``weights_only=True``).

A run folder remembers the configuration it was started with (``run_config.yaml``); resuming with
another one is refused with one line naming the keys that differ (see
:mod:`deltapatch.training.run_config` for the keys that are not compared), unless
``resume=force``, which results.json then records.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoint import atomic_path, remove_checked, tensors_sha256, write_json
from ..errors import CheckpointError, ConfigError, ResumeError
from . import run_config
from .checkpointing import LAST, usable_checkpoint

log = logging.getLogger(__name__)
MODES = ("auto", True, False, "force")


class RunProgress:
    """``progress.json`` (what each finished task produced) and ``state/<task>.safetensors``
    (the method right after that task, including any change its ``end_task`` made; without the
    base model when the method keeps it, which is checked by fingerprint on restore). Only the
    latest snapshot is kept: a resume restores the last finished task only."""

    def __init__(self, out_dir: Path, resume: bool | str = "auto", cfg: DictConfig | None = None):
        if resume not in MODES:
            raise ConfigError(f"resume={resume!r}: choose auto, true, false or force")
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "progress.json"
        has_any = self.path.exists() or any((self.out_dir / "checkpoints").glob(f"*/{LAST}"))
        self.enabled = bool(has_any) if resume == "auto" else bool(resume)
        self.resumed = self.enabled and has_any
        self.forced: dict[str, list[Any]] | None = None
        self.tasks: dict[str, dict[str, Any]] = {}
        if cfg is not None:
            self._check_config(cfg, has_any, force=resume == "force")
        if self.enabled and self.path.exists():
            try:
                self.tasks = json.loads(self.path.read_text())["tasks"]
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"cannot resume: {self.path} is corrupt ({e}); delete it to start over") from None
        if self.enabled and has_any:
            log.info("resuming run in %s (finished tasks: %s)", self.out_dir, list(self.tasks) or "none")

    # -- the configuration the run started with --------------------------------------------
    def _check_config(self, cfg: DictConfig, has_any: bool, force: bool) -> None:
        stored_path = self.out_dir / run_config.FILE
        current = run_config.as_container(cfg)
        if self.enabled and has_any and stored_path.exists():
            diff = run_config.differences(run_config.load(stored_path), current)
            if diff and not force:
                raise ResumeError(
                    f"cannot resume {self.out_dir}: it was started with another config ({run_config.describe(diff)}); "
                    f"use the same settings, a new hydra.run.dir, resume=false to start over, or resume=force")
            if diff:
                log.warning("resume=force: continuing %s although its config differs (%s)", self.out_dir,
                            run_config.describe(diff))
                self.forced = {k: [old, new] for k, (old, new) in diff.items()}
        elif self.enabled and has_any:
            log.warning("resuming %s without a stored run_config.yaml: the config cannot be compared", self.out_dir)
        elif rank_zero_only.rank == 0:  # a fresh start: remember what it was started with
            run_config.save(stored_path, current)

    def summary(self) -> dict[str, Any] | None:
        """For results.json: whether the run resumed, and what ``resume=force`` let change."""
        if not self.resumed:
            return None
        return {"finished_tasks_restored": list(self.tasks), "forced": self.forced is not None,
                "changed": self.forced or {}}

    # -- finished tasks --------------------------------------------------------------------
    def done(self, task: str) -> dict[str, Any] | None:
        return self.tasks.get(task)

    def state_file(self, task: str) -> Path:
        return self.out_dir / "state" / f"{task}.safetensors"

    def record(self, task: str, method: nn.Module, info: dict[str, Any]) -> None:
        """Snapshot the method after ``task`` and mark the task finished (both atomically); then
        drop what the snapshot supersedes (earlier snapshots, the task's ``last.ckpt``)."""
        tensors, meta = _snapshot(method)
        with atomic_path(self.state_file(task)) as tmp:
            save_file(tensors, tmp, metadata=meta)
        self.tasks[task] = info
        write_json(self.path, {"tasks": self.tasks})
        for other in self.state_file(task).parent.glob("*.safetensors"):
            if other.name != self.state_file(task).name:
                other.unlink(missing_ok=True)
        ckpt = self.out_dir / "checkpoints" / task / LAST
        remove_checked(ckpt)
        try:
            ckpt.parent.rmdir()
        except OSError:
            pass  # not empty (another file was put there) or already gone

    def restore(self, task: str, method: nn.Module) -> None:
        path = self.state_file(task)
        try:
            saved = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            own = _own_tensors(method, without_base=meta.get("without_base") == "1")
            if meta.get("without_base") == "1" and tensors_sha256(method.base.state_dict()) != meta["base_sha256"]:
                raise ValueError("the base model differs from the one the run started from")
            if saved.keys() != own.keys():
                raise ValueError(f"{len(saved.keys() ^ own.keys())} tensors differ, e.g. "
                                 f"{sorted(saved.keys() ^ own.keys())[:3]}")
            with torch.no_grad():
                for k, t in own.items():
                    t.copy_(saved[k])
        except Exception as e:
            raise CheckpointError(f"cannot resume: state of task '{task}' ({path}) is unreadable "
                                  f"({str(e).splitlines()[0]}); delete {self.path} to start over") from None

    # -- the task in flight ----------------------------------------------------------------
    def checkpoint(self, task: str) -> Path | None:
        """The last checkpoint of an unfinished task, when resuming and it is usable (a truncated
        or corrupt one is set aside with a warning: the task restarts from its start)."""
        if not self.enabled:
            return None
        return usable_checkpoint(self.out_dir / "checkpoints" / task / LAST)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer once (a module reachable under two names is saved once)."""
    return dict(module.named_parameters()) | dict(module.named_buffers())


def _own_tensors(method: nn.Module, without_base: bool) -> dict[str, torch.Tensor]:
    """The method's tensors, less the base model's own when ``without_base``."""
    tensors = _tensors(method)
    if without_base:
        base_ids = {id(t) for t in _tensors(method.base).values()}
        tensors = {k: t for k, t in tensors.items() if id(t) not in base_ids}
    return tensors


def _snapshot(method: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What :meth:`RunProgress.record` writes: a method that keeps its base stores only its own
    tensors plus the base's SHA-256 (the base comes back from its own source on resume)."""
    without_base = bool(getattr(method, "keeps_base", False)) and hasattr(method, "base")
    tensors = {k: v.detach().cpu().contiguous() for k, v in _own_tensors(method, without_base).items()}
    meta = {"without_base": "1" if without_base else "0"}
    if without_base:
        meta["base_sha256"] = tensors_sha256(method.base.state_dict())
    return tensors, meta
