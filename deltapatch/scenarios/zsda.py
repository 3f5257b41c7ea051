"""Zero-shot domain adaptation (paper Table 6): train on a source domain, score on a target
domain with the same classes that is never seen in training.

One run gives a Table 6 row pair:

1. the *vanilla* model: the backbone trained on the source (``dataset``) with the ``base`` recipe
   (``base.epochs``, ``lr``, ``weight_decay``, ``seed``; random init for ``base=train``/``scratch``,
   hub weights for ``pretrained``; ``base=checkpoint`` is a ready vanilla model). It is cached
   like a trained base, keyed by everything that shapes it;
2. ``method`` on top of it, trained on the source again: ``method=delta`` puts ∆-modules and a new
   head on the frozen vanilla model ("+∆-Networks (4)" with ``n_deltas=4``).

Both are scored on the source and the target test splits (``scenario.target``). With
``scenario.uniform_prior.weight > 0`` both stages add the uniform-prior regulariser ("+ Uniform
prior", Sinha et al. [43]). Our reading of it: the pooled features, L2-normalised, are pushed
towards the uniform distribution on the hypersphere with the Gaussian-potential uniformity loss
``log E exp(-t ||z_i - z_j||^2)`` (Wang & Isola, 2020). ADDA (adversarial adaptation with
unlabelled target data) is not implemented.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..backbones import get_adapter
from ..data.base import LOADER_ONLY_KEYS, ClassificationDataModule
from ..errors import ConfigError
from ..methods.base import Method
from ..patch import base_fingerprint
from ..training.base_model import pretrained_weights, train_cached
from ..training.evaluation import EvalSet, LightningScorer
from ..training.module import BaseModule, TaskModule
from ..training.trainer import eval_trainer, make_trainer
from .common import check_base, finish, make_loggers, results_skeleton, save_patch_file, seed

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ the regulariser
def uniformity_loss(features: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` over L2-normalised features ``z``: lowest when
    the batch spreads uniformly over the hypersphere. Zero for a batch of one."""
    z = F.normalize(features.flatten(1).float(), dim=1)
    if len(z) < 2:
        return z.new_zeros(())
    return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log()


class SourceModule(BaseModule):
    """Stage 1: the whole backbone on the source (``BaseModule``'s recipe) + the uniform prior."""

    def __init__(self, model: nn.Module, num_classes: int, lr: float, weight_decay: float,
                 uniform_weight: float = 0.0, uniform_t: float = 2.0):
        super().__init__(model, num_classes, lr=lr, weight_decay=weight_decay)
        self.adapter = get_adapter(model)
        self.uniform_weight, self.uniform_t = uniform_weight, uniform_t

    def training_step(self, batch, batch_idx):
        x, y = batch
        feats = self.adapter.pre_logits(self.adapter.forward_features(x))
        loss = self.loss(self.adapter.classifier()(feats), y)
        if self.uniform_weight > 0:
            reg = uniformity_loss(feats, self.uniform_t)
            self.log("vanilla/train_uniformity", reg)
            loss = loss + self.uniform_weight * reg
        self.log("vanilla/train_loss", loss, prog_bar=True)
        return loss


class UniformPriorTaskModule(TaskModule):
    """Stage 2: :class:`TaskModule` + the uniform prior on the features entering the task's head
    (read with a forward pre-hook, so any method with a per-task head works unchanged)."""

    def __init__(self, *args, uniform_weight: float = 0.0, uniform_t: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.uniform_weight, self.uniform_t = uniform_weight, uniform_t
        self._feats: list[torch.Tensor] = []
        if uniform_weight > 0:
            self.method.head(self.task).register_forward_pre_hook(
                lambda _m, args: self._feats.append(args[0]) if self.training else None)

    def training_step(self, batch, batch_idx):
        self._feats.clear()
        loss = super().training_step(batch, batch_idx)
        if self.uniform_weight > 0 and self._feats:
            reg = uniformity_loss(self._feats[-1], self.uniform_t)
            self.log(f"train/{self.task}/uniformity", reg)
            loss = loss + self.uniform_weight * reg
        self._feats.clear()
        return loss


# ------------------------------------------------------------------ stage 1: the vanilla model
def vanilla_cache_key(cfg: DictConfig) -> str:
    """Hash of what shapes the vanilla model (the run seed is not part of it: ``base.seed`` is)."""
    data = OmegaConf.to_container(cfg.dataset, resolve=True)
    for k in (*LOADER_ONLY_KEYS, "seed"):
        data.pop(k, None)
    up = cfg.scenario.uniform_prior
    key = {"backbone": cfg.backbone.name, "init": cfg.base.source, "data": data, "epochs": cfg.base.epochs,
           "lr": cfg.base.lr, "weight_decay": cfg.base.weight_decay, "seed": cfg.base.seed,
           "uniform_prior": [float(up.weight), float(up.t)] if up.weight > 0 else None, "version": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def obtain_vanilla(cfg: DictConfig, source: ClassificationDataModule, loggers: list) -> tuple[nn.Module, int]:
    """The source-trained model and how many parameters training it touched (0: taken as given)."""
    n = source.num_classes
    if cfg.base.source == "checkpoint":
        return instantiate(cfg.backbone.model, pretrained=str(cfg.base.path), num_classes=n), 0
    up = cfg.scenario.uniform_prior
    path = Path(cfg.base.cache_dir) / "zsda" / f"{cfg.backbone.name}-{vanilla_cache_key(cfg)}.safetensors"
    model = train_cached(
        cfg, path, n, pretrained=pretrained_weights(cfg) if cfg.base.source == "pretrained" else False,
        make_module=lambda m: SourceModule(m, n, lr=cfg.base.lr, weight_decay=cfg.base.weight_decay,
                                           uniform_weight=float(up.weight), uniform_t=float(up.t)),
        data={"datamodule": source}, loggers=loggers, limit_val_batches=0,
        info={"source": source.name, "epochs": cfg.base.epochs, "uniform_prior": float(up.weight)})
    return model, sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ the runner
def run(cfg: DictConfig) -> dict[str, Any]:
    """``scenario=zsda``: vanilla model on the source, ``method`` on top, both scored on source
    and target test splits; ``target_acc`` is the patched model's target accuracy."""
    sc = cfg.scenario
    seed(cfg.seed)
    source: ClassificationDataModule = instantiate(cfg.dataset)
    target: ClassificationDataModule = instantiate(sc.target)
    source.setup()
    target.setup()
    if source.num_classes != target.num_classes:
        raise ConfigError(f"zsda: source {source.name} has {source.num_classes} classes, target {target.name} "
                          f"{target.num_classes}; the domains must share their classes")
    n = source.num_classes
    loggers = make_loggers(cfg)

    t0 = time.perf_counter()
    vanilla, vanilla_params = obtain_vanilla(cfg, source, loggers)
    vanilla_seconds = time.perf_counter() - t0
    fingerprint = base_fingerprint(vanilla)
    seed(cfg.seed)
    method: Method = instantiate(cfg.method.module, base=vanilla)
    task = str(sc.task_name)
    method.add_task(task, n, source.class_names)
    evalset = EvalSet()
    for key, dm in (("source", source), ("target", target)):
        evalset.add(f"vanilla_{key}", None, n, dm)
        evalset.add(key, task, n, dm)
    scorer = LightningScorer(lambda: eval_trainer(cfg), method, evalset)
    vanilla_scores = scorer.score("test", keys=["vanilla_source", "vanilla_target"])

    up = sc.uniform_prior
    scheduler = instantiate(cfg.method.scheduler) if cfg.method.get("scheduler") else None
    # validation on the source only: the target is never seen before the final score
    module = UniformPriorTaskModule(method, task, n, optimizer=instantiate(cfg.method.optimizer), scheduler=scheduler,
                                    uniform_weight=float(up.weight), uniform_t=float(up.t),
                                    train_loader=source.train_dataloader, val_items=evalset.select(["source"]),
                                    aggregate="mean")
    trainer = make_trainer(cfg, task, loggers)
    t0 = time.perf_counter()
    trainer.fit(module)
    seconds = time.perf_counter() - t0

    scores = scorer.score("test", keys=["source", "target"])
    unchanged = check_base(vanilla, fingerprint, frozen=method.keeps_base, what=f"zsda ({cfg.method.name})")

    results = results_skeleton(cfg, source.name, method)
    results.update(
        target=target.name, metric="target_acc", target_acc=scores["target"], source_acc=scores["source"],
        vanilla={"source_acc": vanilla_scores["vanilla_source"], "target_acc": vanilla_scores["vanilla_target"]},
        tasks={task: scores["target"]}, train_seconds=seconds, vanilla_seconds=vanilla_seconds,
        base_model_unchanged=unchanged, uniform_prior=OmegaConf.to_container(up), adda=False,
        class_names={task: source.class_names},
    )
    results["trainable_params"][task] = method.num_trainable(task)
    results["vanilla_trainable_params"] = vanilla_params
    patch = save_patch_file(cfg, method, task)
    if patch is not None:
        results["patch_files"][task] = patch
    return finish(cfg, results, loggers, {"test/target_acc": scores["target"], "test/source_acc": scores["source"],
                                          "test/vanilla_target_acc": vanilla_scores["vanilla_target"]})
