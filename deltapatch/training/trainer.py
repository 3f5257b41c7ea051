"""Trainers made from the run's ``trainer`` config, for fitting (with the run's callbacks and
loggers) and for evaluation loops (no loggers, no checkpoints).

Every trainer turns Lightning's sampler replacement off (``use_distributed_sampler=False``): the
DataModules shard their own loaders across DDP ranks (:mod:`deltapatch.data.base`), so that
training batches match a single-process run and evaluation counts every sample once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from .checkpointing import AtomicCheckpointIO


def make_callbacks(cfg: DictConfig, stage: str | None, checkpoints: bool = True) -> list[pl.Callback]:
    """``cfg.callbacks`` instantiated; callbacks with a ``dirpath`` (checkpoints) write under
    ``<dirpath>/<stage>``, or are left out when ``checkpoints`` is false (evaluation loops)."""
    out = []
    for cb in (cfg.get("callbacks") or {}).values():
        if cb is None:
            continue
        if "dirpath" in cb:
            if not checkpoints or stage is None:
                continue
            out.append(instantiate(cb, dirpath=str(Path(cb.dirpath) / stage)))
        else:
            out.append(instantiate(cb))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar when bars are off
        out = [cb for cb in out if not isinstance(cb, pl.callbacks.ProgressBar)]
    return out


def make_trainer(cfg: DictConfig, stage: str | None = None, loggers: list | None = None,
                 callbacks: list[pl.Callback] | None = None, checkpoints: bool = True, **overrides: Any) -> pl.Trainer:
    """``cfg.trainer`` (accelerator, devices, strategy, precision, limits...) with the run's
    callbacks (checkpoints under ``<dirpath>/<stage>``), ``loggers`` and ``overrides``.

    Checkpoints are written atomically in their own folder (:class:`AtomicCheckpointIO`); without
    a checkpoint callback none are written (Lightning would add its own, of the whole model)."""
    cbs = make_callbacks(cfg, stage, checkpoints) + list(callbacks or [])
    overrides.setdefault("use_distributed_sampler", False)
    has_checkpoints = checkpoints and any(isinstance(cb, pl.callbacks.Checkpoint) for cb in cbs)
    overrides.setdefault("enable_checkpointing", has_checkpoints)
    if has_checkpoints and "plugins" not in cfg.trainer:
        overrides.setdefault("plugins", [AtomicCheckpointIO()])
    return instantiate(cfg.trainer, callbacks=cbs, logger=list(loggers or []) or False,
                       default_root_dir=cfg.paths.output_dir, **overrides)


def eval_trainer(cfg: DictConfig) -> pl.Trainer:
    """A trainer for ``validate``/``test`` loops: the run's devices, precision and batch limits,
    no loggers (the runner logs the final numbers), no checkpoints."""
    return make_trainer(cfg, checkpoints=False, enable_model_summary=False)
