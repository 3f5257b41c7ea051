"""Models of zero-shot domain adaptation (Table 6) that are trained once and cached: the helper
that does it for any module (:func:`train_once`) and the ∆ network trained the way the vanilla
model is (:func:`obtain_joint`, the "joint" reading of "+∆-Networks (4)", docs/zsda.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from safetensors.torch import save_file
from torch import nn

from ..checkpoint import atomic_path, read_state_dict, write_json
from ..data.base import ClassificationDataModule
from ..errors import CheckpointError, ConfigError
from ..methods.base import Method
from ..training.base_model import pretrained_weights
from ..training.trainer import make_trainer
from .uniform_prior import JointSourceModule

log = logging.getLogger(__name__)


def train_once(cfg: DictConfig, path: Path, build: Callable[[], nn.Module],
               module_for: Callable[[nn.Module], pl.LightningModule], data: dict[str, Any], loggers: list,
               epochs: int, limit_train_batches: int | float | None, info: dict[str, Any]) -> nn.Module:
    """``build()`` with the weights cached at ``path``; without a usable file there, ``build()``
    trained by ``module_for(model)`` on ``data`` (``fit`` keywords) for ``epochs`` (of at most
    ``limit_train_batches`` batches) with the run's trainer settings, saved by rank 0 (atomically,
    ``info`` beside it as JSON) and read back. ``build()`` runs seeded with ``base.seed``."""
    with torch.random.fork_rng():
        pl.seed_everything(cfg.base.seed, workers=True, verbose=False)
        model = build()
        if path.exists():
            try:
                model.load_state_dict(read_state_dict(path))
                log.info("model from cache %s", path)
                return model.eval()
            except (CheckpointError, RuntimeError) as e:  # a corrupt or stale file is rebuilt
                log.warning("ignoring unusable cached model %s: %s", path, e)
        log.info("training %s for %s epochs, to be cached at %s", type(model).__name__, epochs, path)
        trainer = make_trainer(cfg, loggers=loggers, checkpoints=False, max_epochs=int(epochs),
                               limit_train_batches=limit_train_batches or 1.0, limit_val_batches=0,
                               deterministic=True if cfg.trainer.get("accelerator", "cpu") == "cpu" else "warn",
                               enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(module_for(model), **data)
    model.eval()
    if rank_zero_only.rank == 0:
        # cloned: a method holds its backbone twice (base, net.base), safetensors refuses shared memory
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, tmp, metadata={"backbone": cfg.backbone.name})
        write_json(path.with_suffix(".json"), {"backbone": cfg.backbone.name, **info})
    trainer.strategy.barrier("zsda-cache")
    model.load_state_dict(read_state_dict(path))  # every run uses what later runs read
    return model


def joint_cache_key(cfg: DictConfig, vanilla_key: str) -> str:
    """What shapes the ∆ network besides the vanilla recipe (``vanilla_key``): the method's config."""
    key = {"vanilla": vanilla_key, "method": OmegaConf.to_container(cfg.method.module, resolve=True),
           "task": str(cfg.scenario.task_name), "version": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def obtain_joint(cfg: DictConfig, source: ClassificationDataModule, vanilla_key: str, loggers: list,
                 uniform_weight: float) -> tuple[Method, str]:
    """``cfg.method`` (a ∆ method whose backbone trains) built on a backbone initialised as the
    vanilla model is (same seed, same random or hub weights) and trained on the source with the
    vanilla model's recipe and prior: the ∆ architecture trained instead of the plain one.
    Returns the method (task ``scenario.task_name``) and its cache key."""
    if cfg.base.source == "checkpoint":
        raise ConfigError("scenario.delta=joint trains the ∆ network the way the vanilla model is trained; "
                          "base=checkpoint gives a ready vanilla model and no recipe: use base=scratch/train")
    n, task = source.num_classes, str(cfg.scenario.task_name)
    key = joint_cache_key(cfg, vanilla_key)

    def build() -> Method:
        base = instantiate(cfg.backbone.model, pretrained=pretrained_weights(cfg) if cfg.base.source == "pretrained" else False,
                           num_classes=n)
        method = instantiate(cfg.method.module, base=base)
        if not method.trains_backbone:
            raise ConfigError(f"scenario.delta=joint trains the backbone with the ∆-modules: use "
                              f"method=finetune_delta, not method={cfg.method.name}")
        method.add_task(task, n, source.class_names)
        return method

    up = cfg.scenario.uniform_prior
    path = Path(cfg.base.cache_dir) / "zsda" / "joint" / f"{cfg.backbone.name}-{key}.safetensors"
    method = train_once(
        cfg, path, build,
        lambda m: JointSourceModule(m, task, n, lr=cfg.base.lr, weight_decay=cfg.base.weight_decay,
                                    uniform_weight=uniform_weight, uniform_t=float(up.t)),
        data={"datamodule": source}, loggers=loggers, epochs=cfg.base.epochs,
        limit_train_batches=cfg.base.get("limit_train_batches"),
        info={"source": source.name, "epochs": cfg.base.epochs, "uniform_prior": uniform_weight,
              "method": cfg.method.name, "from_vanilla_recipe": vanilla_key})
    return method, key


__all__ = ["joint_cache_key", "obtain_joint", "train_once"]
