"""Where the base model comes from (``conf/base/``): hub weights, a local checkpoint, or trained
here on a base dataset and cached under a key derived from everything that shaped it."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import nn

from ..checkpoint import atomic_path, read_state_dict, write_json
from ..data.base import ClassificationDataModule
from ..errors import CheckpointError, ConfigError
from .module import BaseModule

log = logging.getLogger(__name__)
SOURCES = ("train", "pretrained", "checkpoint", "scratch")


@dataclass
class BaseInfo:
    """The base model and how to score its task (``datamodule`` None: not measurable here)."""

    model: nn.Module
    num_classes: int
    datamodule: ClassificationDataModule | None
    reference_acc: float | None = None
    cache_path: Path | None = None


def base_datamodule(cfg: DictConfig) -> ClassificationDataModule | None:
    """The base task's data: ``base.dataset`` (a dataset config), else the top-level dataset
    restricted to ``base.classes`` when those are given, else none."""
    b = cfg.base
    dcfg = b.get("dataset")
    if dcfg is None:
        if b.get("classes") is None:
            return None
        dcfg = cfg.dataset
    overrides = {"classes": list(b.classes)} if b.get("classes") is not None else {}
    return instantiate(dcfg, **overrides)


def base_cache_key(cfg: DictConfig) -> str:
    """Hash of what determines a trained base: architecture, data, classes, recipe and seed."""
    b = cfg.base
    data = OmegaConf.to_container(b.get("dataset") or cfg.dataset, resolve=True)
    for k in ("num_workers", "pin_memory", "eval_batch_size"):  # do not change the weights
        data.pop(k, None)
    data.pop("seed", None)  # the run seed varies patches, not the base: base.seed fixes it
    key = {
        "backbone": cfg.backbone.name,
        "data": data,
        "classes": OmegaConf.to_container(b.classes) if b.get("classes") is not None else None,
        "epochs": b.epochs, "lr": b.lr, "weight_decay": b.weight_decay, "seed": b.seed,
        "version": 1,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def obtain_base(cfg: DictConfig, trainer_kwargs: dict | None = None) -> BaseInfo:
    source = cfg.base.source
    if source not in SOURCES:
        raise ConfigError(f"unknown base.source '{source}'; choose one of {', '.join(SOURCES)}")
    dm = base_datamodule(cfg)
    if source == "pretrained":
        model = instantiate(cfg.backbone.model, pretrained=True, num_classes=1000)
        return BaseInfo(model, 1000, dm, cfg.base.get("reference_acc"))
    if source == "checkpoint":
        if not cfg.base.get("path"):
            raise ConfigError("base=checkpoint needs base.path=/path/to/weights.safetensors")
        model = instantiate(cfg.backbone.model, pretrained=str(cfg.base.path), num_classes=cfg.base.num_classes)
        return BaseInfo(model, cfg.base.num_classes, dm, cfg.base.get("reference_acc"))
    if dm is None:
        raise ConfigError("base=train needs base.classes or base.dataset to train the base model on")
    dm.setup()
    if source == "scratch":  # trained together with the patch later: random init, no cache
        model = instantiate(cfg.backbone.model, pretrained=False, num_classes=dm.num_classes)
        return BaseInfo(model, dm.num_classes, dm)
    return _trained_base(cfg, dm, trainer_kwargs or {})


def _trained_base(cfg: DictConfig, dm: ClassificationDataModule, trainer_kwargs: dict) -> BaseInfo:
    key = base_cache_key(cfg)
    path = Path(cfg.base.cache_dir) / f"{cfg.backbone.name}-{key}.safetensors"
    if path.exists():
        try:
            model = instantiate(cfg.backbone.model, pretrained=str(path), num_classes=dm.num_classes)
            log.info("base model from cache %s", path)
            return BaseInfo(model, dm.num_classes, dm, cache_path=path)
        except (CheckpointError, ConfigError) as e:  # a corrupt cache is rebuilt, not trusted
            log.warning("ignoring unusable cached base %s: %s", path, e)
    log.info("training base model %s on %s classes %s", cfg.backbone.name, dm.name, dm.class_ids)
    with torch.random.fork_rng():
        L.seed_everything(cfg.base.seed, workers=True, verbose=False)
        model = instantiate(cfg.backbone.model, pretrained=False, num_classes=dm.num_classes)
        module = BaseModule(model, dm.num_classes, lr=cfg.base.lr, weight_decay=cfg.base.weight_decay)
        trainer = L.Trainer(max_epochs=cfg.base.epochs, logger=False, enable_checkpointing=False,
                            enable_model_summary=False, num_sanity_val_steps=0, **trainer_kwargs)
        trainer.fit(module, datamodule=dm)
    model.eval()
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp,
                  metadata={"backbone": cfg.backbone.name, "key": key})
    write_json(path.with_suffix(".json"), {"key": key, "backbone": cfg.backbone.name, "dataset": dm.name,
                                           "classes": dm.class_ids, "epochs": cfg.base.epochs})
    # reload so the model is exactly what later runs will read from the cache
    model = instantiate(cfg.backbone.model, pretrained=str(path), num_classes=dm.num_classes)
    return BaseInfo(model, dm.num_classes, dm, cache_path=path)


__all__ = ["BaseInfo", "base_cache_key", "base_datamodule", "obtain_base", "read_state_dict"]
