"""Trainers made from the run's ``trainer`` config, for fitting (with the run's callbacks and
loggers) and for evaluation loops (no loggers, no checkpoints).

Every trainer turns Lightning's sampler replacement off (``use_distributed_sampler=False``): the
DataModules shard their own loaders across DDP ranks (:mod:`deltapatch.data.base`), so that
training batches match a single-process run and evaluation counts every sample once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from .checkpointing import AtomicCheckpointIO
from ..errors import ConfigError
from .sync_batchnorm import BatchNormSync

# strategies whose processes Lightning starts by running the whole command again per device
_RELAUNCHING = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def _launched_externally() -> bool:
    """Whether a cluster (SLURM, torchrun, LSF) or Lightning's launcher started this process as one
    rank of several, so Lightning will not start processes itself."""
    from lightning_fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment

    return "LOCAL_RANK" in os.environ or any(
        env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment))


def _several_processes(trainer: DictConfig) -> bool:
    """Whether ``trainer`` asks for more than one process (``devices: -1``/``auto``: possibly)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int):
        several = devices > 1 or devices == -1
    elif isinstance(devices, str):
        several = devices == "auto"
    else:  # a list of device ids
        several = len(devices) > 1
    return several or int(trainer.get("num_nodes", 1) or 1) > 1


def check_launch(cfg: DictConfig) -> None:
    """Refuse ``trainer.strategy=ddp`` with several devices inside a local Hydra multirun.

    Lightning starts the other ranks of ``ddp`` by running the command line again; inside
    ``-m`` that command is the whole sweep, so each extra rank starts a second sweep (a second
    sweep dir, ranks of different jobs paired). ``ddp_spawn`` starts its ranks from inside the
    job, and on SLURM (``tasks_per_node`` = ``trainer.devices``) the cluster starts them.
    """
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if strategy not in _RELAUNCHING or not _several_processes(cfg.trainer) or _launched_externally():
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(f"trainer.strategy={strategy} starts its other ranks by re-running the command, which "
                          f"inside a local multirun (-m) re-runs the whole sweep; use trainer.strategy=ddp_spawn "
                          f"for a local sweep, or hydra/launcher=slurm with tasks_per_node=trainer.devices")


def run_device(cfg: DictConfig) -> torch.device:
    """Where hand-written loops (λ means, detection scores, the feature cache's prefix pass) run:
    the GPU when the trainer uses one."""
    gpu = cfg.trainer.get("accelerator", "cpu") in ("gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


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
    a checkpoint callback none are written (Lightning would add its own, of the whole model).
    ``trainer.sync_batchnorm`` uses :class:`BatchNormSync` (in place, CPU too, hooks kept)."""
    check_launch(cfg)
    cbs = make_callbacks(cfg, stage, checkpoints) + list(callbacks or [])
    overrides.setdefault("use_distributed_sampler", False)
    has_checkpoints = checkpoints and any(isinstance(cb, pl.callbacks.Checkpoint) for cb in cbs)
    overrides.setdefault("enable_checkpointing", has_checkpoints)
    plugins = list(overrides.pop("plugins", []) or [])
    if has_checkpoints and "plugins" not in cfg.trainer:
        plugins.append(AtomicCheckpointIO())
    if cfg.trainer.get("sync_batchnorm"):
        # our in-place sync instead of Lightning's module replacement
        overrides["sync_batchnorm"] = False
        plugins.append(BatchNormSync())
    if plugins:
        overrides["plugins"] = plugins
    return instantiate(cfg.trainer, callbacks=cbs, logger=list(loggers or []) or False,
                       default_root_dir=cfg.paths.output_dir, **overrides)


def eval_trainer(cfg: DictConfig) -> pl.Trainer:
    """A trainer for ``validate``/``test`` loops: the run's devices, precision and batch limits,
    no loggers (the runner logs the final numbers), no checkpoints."""
    return make_trainer(cfg, checkpoints=False, enable_model_summary=False)
