"""Zero-shot domain adaptation (paper Table 6): train on a source domain, score on a target
domain with the same classes.

One run gives a Table 6 row pair:

1. the model the rows start from: the *vanilla* model, the backbone trained on the source
   (``dataset``) with the ``base`` recipe (``base.epochs``, ``lr``, ``weight_decay``, ``seed``,
   ``limit_train_batches``; random init for ``base=train``/``scratch``, hub weights for
   ``pretrained``; ``base=checkpoint`` is a ready vanilla model), cached by everything that shapes
   it; with ``scenario.adda.enabled`` the *ADDA* model instead: the vanilla model's encoder adapted
   adversarially to the target's unlabelled training images (:mod:`.adda`), its classifier kept;
2. ``method`` on top of it, trained on the labelled source again: ``method=delta`` puts ∆-modules
   and a new head on the frozen model ("+∆-Networks (4)" with ``n_deltas=4``).

Both are scored on the source and the target test splits (``scenario.target``); results.json's
``vanilla`` holds the first model's scores (the ADDA model's when ``adda: true``). With
``scenario.uniform_prior.weight > 0`` the source training of the vanilla model and the ∆ stage add
the uniform-prior regulariser ("+ Uniform prior", Sinha et al. [43]); an ADDA run starts from that
prior-trained vanilla model. Our reading of the prior: the pooled features, L2-normalised, are
pushed towards the uniform distribution on the hypersphere with the Gaussian-potential uniformity
loss ``log E exp(-t ||z_i - z_j||^2)`` (Wang & Isola, 2020).

``scenario.target_only=true`` is Table 6's "Target only" upper bound instead: the backbone trained
with the same ``base`` recipe on the target's *labelled* training split and scored on its test
split (results.json ``method: target_only``, no ∆ stage).

No stage selects a model: every stage trains for a fixed budget and keeps its last weights (the
∆ stage logs source validation accuracy, never target accuracy); target test images are read
only by the final scores. docs/zsda.md has the reading and the numbers.
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
from torch.utils.data import DataLoader, Subset

from ..backbones import get_adapter
from ..data.base import ClassificationDataModule, ShardSampler
from ..errors import ConfigError
from ..methods.base import Method
from ..patch import base_fingerprint
from ..training.base_model import train_cached
from ..training.evaluation import EvalSet, LightningScorer
from ..training.module import BaseModule, TaskModule
from ..training.trainer import eval_trainer, make_trainer
from .adda import obtain_adda
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
def vanilla_cache_key(cfg: DictConfig, data_cfg: Any = None, uniform_prior: bool = True) -> str:
    """Hash of what shapes the model trained on ``data_cfg`` (default: the source, ``cfg.dataset``)
    with the ``base`` recipe (the run seed is not part of it: ``base.seed`` is)."""
    data = OmegaConf.to_container(cfg.dataset if data_cfg is None else data_cfg, resolve=True)
    for k in ("num_workers", "pin_memory", "eval_batch_size", "seed"):
        data.pop(k, None)
    up = cfg.scenario.uniform_prior
    key = {"backbone": cfg.backbone.name, "init": cfg.base.source, "data": data, "epochs": cfg.base.epochs,
           "lr": cfg.base.lr, "weight_decay": cfg.base.weight_decay, "seed": cfg.base.seed,
           "uniform_prior": [float(up.weight), float(up.t)] if uniform_prior and up.weight > 0 else None,
           "version": 1}
    if cfg.base.get("limit_train_batches") is not None:  # only when set: older keys stay what they were
        key["limit_train_batches"] = cfg.base.limit_train_batches
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def obtain_vanilla(cfg: DictConfig, source: ClassificationDataModule, loggers: list, data_cfg: Any = None,
                   uniform_prior: bool = True) -> tuple[nn.Module, int, str]:
    """The model trained on ``source`` (whose config is ``data_cfg``, default ``cfg.dataset``), how
    many parameters training it touched (0: taken as given) and its cache key."""
    n = source.num_classes
    if cfg.base.source == "checkpoint":
        return instantiate(cfg.backbone.model, pretrained=str(cfg.base.path), num_classes=n), 0, \
            f"checkpoint:{cfg.base.path}"
    up = cfg.scenario.uniform_prior
    weight = float(up.weight) if uniform_prior else 0.0
    key = vanilla_cache_key(cfg, data_cfg, uniform_prior)
    path = Path(cfg.base.cache_dir) / "zsda" / f"{cfg.backbone.name}-{key}.safetensors"
    model = train_cached(
        cfg, path, n, pretrained=cfg.base.source == "pretrained",
        make_module=lambda m: SourceModule(m, n, lr=cfg.base.lr, weight_decay=cfg.base.weight_decay,
                                           uniform_weight=weight, uniform_t=float(up.t)),
        data={"datamodule": source}, loggers=loggers, limit_val_batches=0,
        info={"source": source.name, "epochs": cfg.base.epochs, "uniform_prior": weight})
    return model, sum(p.numel() for p in model.parameters()), key


class _Plain(nn.Module):
    """A bare model seen as a method (``forward(x, task)``), so that the evaluation loops score it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        return self.model(x)


class SourceTestSubset:
    """The source's splits with its test split cut to ``n`` images, a fixed subset (seeded by
    ``seed``, the same in every run): the source accuracy is a check, the target (always scored on
    its whole test split) is the score. ``scenario.source_test_images`` sets ``n``."""

    def __init__(self, dm: ClassificationDataModule, n: int, seed: int = 0):
        self.dm = dm
        test = dm.splits["test"]
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[: int(n)]
        self.test = Subset(test, sorted(order.tolist()))

    def val_dataloader(self) -> DataLoader:
        return self.dm.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=self.dm.eval_batch_size, sampler=ShardSampler(self.test),
                          num_workers=self.dm.num_workers)


def scored_source(cfg: DictConfig, source: ClassificationDataModule) -> Any:
    """What scores the source: the datamodule, or :class:`SourceTestSubset` when
    ``scenario.source_test_images`` is below its test split's size."""
    n = cfg.scenario.get("source_test_images")
    if n is None or int(n) >= len(source.splits["test"]):
        return source
    if int(n) < 1:
        raise ConfigError(f"scenario.source_test_images={n}: give a positive number of images or null (all)")
    return SourceTestSubset(source, int(n))


def source_test_count(cfg: DictConfig, source: ClassificationDataModule) -> int:
    scored = scored_source(cfg, source)
    return len(scored.test) if isinstance(scored, SourceTestSubset) else len(source.splits["test"])


def check_scenario(cfg: DictConfig, source: ClassificationDataModule, target: ClassificationDataModule) -> None:
    """One clear line for a domain pair or a row that cannot run."""
    sc = cfg.scenario
    if source.num_classes != target.num_classes:
        raise ConfigError(f"zsda: source {source.name} has {source.num_classes} classes, target {target.name} "
                          f"{target.num_classes}; the domains must share their classes")
    if sc.get("target_only") and (adda_enabled(cfg) or float(sc.uniform_prior.weight) > 0):
        raise ConfigError("zsda: scenario.target_only=true trains on the target's labels; set "
                          "scenario.adda.enabled=false and scenario.uniform_prior.weight=0 for it")


def adda_enabled(cfg: DictConfig) -> bool:
    return bool((cfg.scenario.get("adda") or {}).get("enabled", False))


# ------------------------------------------------------------------ the runner
def run(cfg: DictConfig) -> dict[str, Any]:
    """``scenario=zsda``: the vanilla (or ADDA) model, ``method`` on top, both scored on source and
    target test splits; ``target_acc`` is the patched model's target accuracy. With
    ``scenario.target_only``: the target-trained upper bound alone."""
    sc = cfg.scenario
    seed(cfg.seed)
    source: ClassificationDataModule = instantiate(cfg.dataset)
    target: ClassificationDataModule = instantiate(sc.target)
    source.setup()
    target.setup()
    check_scenario(cfg, source, target)
    loggers = make_loggers(cfg)
    if sc.get("target_only"):
        return run_target_only(cfg, source, target, loggers)
    n = source.num_classes

    t0 = time.perf_counter()
    vanilla, vanilla_params, vanilla_key = obtain_vanilla(cfg, source, loggers)
    adda_info = None
    if adda_enabled(cfg):
        t1 = time.perf_counter()
        vanilla, adda_info = obtain_adda(cfg, vanilla, vanilla_key, source, target, loggers)
        adda_info["seconds"] = time.perf_counter() - t1
    vanilla_seconds = time.perf_counter() - t0
    fingerprint = base_fingerprint(vanilla)
    seed(cfg.seed)
    method: Method = instantiate(cfg.method.module, base=vanilla)
    task = str(sc.task_name)
    method.add_task(task, n, source.class_names)
    evalset = EvalSet()
    for key, dm in (("source", scored_source(cfg, source)), ("target", target)):
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
        base_model_unchanged=unchanged, uniform_prior=OmegaConf.to_container(up), adda=adda_info is not None,
        class_names={task: source.class_names}, selection="fixed budget (last epoch); source val logged only",
        source_test_images=source_test_count(cfg, source),
    )
    if adda_info is not None:
        results["adda_info"] = adda_info
    results["trainable_params"][task] = method.num_trainable(task)
    results["vanilla_trainable_params"] = vanilla_params
    patch = save_patch_file(cfg, method, task)
    if patch is not None:
        results["patch_files"][task] = patch
    return finish(cfg, results, loggers, {"test/target_acc": scores["target"], "test/source_acc": scores["source"],
                                          "test/vanilla_target_acc": vanilla_scores["vanilla_target"]})


def run_target_only(cfg: DictConfig, source: ClassificationDataModule, target: ClassificationDataModule,
                    loggers: list) -> dict[str, Any]:
    """Table 6's "Target only": the ``base`` recipe on the target's labelled training split (a fixed
    budget, last epoch kept), scored on the target's test split (and the source's, for reference)."""
    t0 = time.perf_counter()
    model, params, _ = obtain_vanilla(cfg, target, loggers, data_cfg=cfg.scenario.target, uniform_prior=False)
    seconds = time.perf_counter() - t0
    n = target.num_classes
    evalset = EvalSet()
    evalset.add("source", None, n, scored_source(cfg, source))
    evalset.add("target", None, n, target)
    scores = LightningScorer(lambda: eval_trainer(cfg), _Plain(model), evalset).score("test")
    results = results_skeleton(cfg, source.name)
    task = str(cfg.scenario.task_name)
    results.update(
        method="target_only", target=target.name, metric="target_acc", target_acc=scores["target"],
        source_acc=scores["source"], tasks={task: scores["target"]}, train_seconds=seconds,
        base_model_unchanged=None, uniform_prior=OmegaConf.to_container(cfg.scenario.uniform_prior), adda=False,
        target_only=True, class_names={task: target.class_names},
        selection="fixed budget (last epoch) on the target's labelled training split",
        source_test_images=source_test_count(cfg, source),
    )
    results["trainable_params"][task] = params
    return finish(cfg, results, loggers, {"test/target_acc": scores["target"], "test/source_acc": scores["source"]})
