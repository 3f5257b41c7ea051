"""Training batches from the feature cache (``cache_features=true``): the frozen prefix of a
method runs once over the training split, and every epoch trains from its output."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ..cache import FeatureCache, auto_feature_cache, storage_dtype
from ..data.base import ClassificationDataModule, EpochBatchSampler, training_sampler
from ..errors import ConfigError
from ..methods.base import Method

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
    train = dm.splits["train"]
    source = DataLoader(train, batch_size=dm.eval_batch_size, shuffle=False, num_workers=dm.num_workers)
    cache = FeatureCache(method, stage, source, dataset_id=f"{dm.name}:{dm.class_ids}:{dm.image_size}:{dm.seed}",
                         cache_dir=cache_dir, dtype=storage_dtype(cfg.trainer))
    dataset, batch_size, seed = cache.dataset, dm.batch_size, dm.seed

    def loader() -> DataLoader:
        sampler, drop_last = training_sampler(dataset, batch_size, seed)
        batches = EpochBatchSampler(sampler, batch_size, drop_last=drop_last)
        return DataLoader(dataset, sampler=batches, batch_size=None)

    return loader
