"""Training batches from the feature cache (``cache_features=true``): the frozen prefix of a
method runs once over the training split, on the device training uses, and every epoch trains
from its output (held in GPU memory when ``cache_features_on_device`` says so)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ..cache import DEVICE_SHARE, FeatureCache, auto_feature_cache, fits_on_device, human_bytes, storage_dtype
from ..data.base import ClassificationDataModule, EpochBatchSampler, training_sampler, worker_context
from ..errors import ConfigError
from ..methods.base import Method
from .trainer import run_device

log = logging.getLogger(__name__)


def cached_train_loader(cfg: DictConfig, method: Method, task: str,
                        dm: ClassificationDataModule) -> Callable[[], DataLoader] | None:
    """A factory of training loaders over frozen-prefix features computed once now, in the same
    per-epoch order as the image loader (sharded across DDP ranks like it); ``None`` when the
    method has no frozen prefix (it then trains from images)."""
    cache_dir = Path(cfg.paths.cache_dir) / "features"
    stage = method.feature_stage(task)
    if stage is None:
        (log.info if cfg.cache_features == "auto" else log.warning)(
            "cache_features: method %s has no frozen prefix; training from images", cfg.method.name)
        return None
    if cfg.cache_features == "auto" and not auto_feature_cache(method, stage, dm, cache_dir, cfg.trainer):
        return None
    if not dm.deterministic_train_transform:
        raise ConfigError("cache_features=true needs deterministic training transforms (dataset.augment=false)")
    resident = resident_setting(cfg)
    device = training_device(cfg)
    method.to(device)  # the prefix pass runs where training will (on a GPU, not on the host's cores)
    train = dm.splits["train"]
    source = DataLoader(train, batch_size=dm.eval_batch_size, shuffle=False, num_workers=dm.num_workers,
                        pin_memory=device.type == "cuda", multiprocessing_context=worker_context(dm.num_workers))
    cache = FeatureCache(method, stage, source, dataset_id=f"{dm.name}:{dm.class_ids}:{dm.image_size}:{dm.seed}",
                         cache_dir=cache_dir, dtype=storage_dtype(cfg.trainer), device=device)
    if resident == "auto":
        resident = fits_on_device(cache.nbytes, device)
        if device.type == "cuda":
            log.info("cache_features_on_device=auto: %s of features %s", human_bytes(cache.nbytes),
                     f"held in {device} memory" if resident else
                     f"kept in host memory (more than {DEVICE_SHARE:.0%} of {device}'s free memory)")
    if resident:
        cache.keep_on(device)
    dataset, batch_size, seed = cache.dataset, dm.batch_size, dm.seed

    def loader() -> DataLoader:
        sampler, drop_last = training_sampler(dataset, batch_size, seed)
        batches = EpochBatchSampler(sampler, batch_size, drop_last=drop_last)
        return DataLoader(dataset, sampler=batches, batch_size=None)

    return loader


def resident_setting(cfg: DictConfig) -> bool | str:
    """``cache_features_on_device``: True, False or ``"auto"`` (the default)."""
    value = cfg.get("cache_features_on_device", "auto")
    if value not in (True, False, "auto"):
        raise ConfigError(f"cache_features_on_device={value!r}: use true, false or auto")
    return value


def training_device(cfg: DictConfig) -> torch.device:
    """The device this process trains on: its own GPU under DDP (``LOCAL_RANK``), else the run's."""
    device = run_device(cfg)
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device
