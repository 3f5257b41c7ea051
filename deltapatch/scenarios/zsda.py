"""Zero-shot domain adaptation (paper Table 6): train on a source domain, score on a target
domain with the same classes.

One run gives a Table 6 row pair:

1. the model the rows start from: the *vanilla* model, the backbone trained on the source
   (``dataset``) with the ``base`` recipe (``base.epochs``, ``lr``, ``weight_decay``, ``seed``,
   ``limit_train_batches``; random init for ``base=train``/``scratch``, hub weights for
   ``pretrained``; ``base=checkpoint`` is a ready vanilla model), cached by everything that shapes
   it; with ``scenario.adda.enabled`` the *ADDA* model instead: the vanilla model's encoder adapted
   adversarially to the target's unlabelled training images (:mod:`.adda`), its classifier kept;
2. "+∆-Networks (4)", as ``scenario.delta`` reads it: ``on_top`` (default), ``method`` on top of
   the starting model, trained on the labelled source again (``method=delta``: ∆-modules and a new
   head on the frozen model); or ``joint`` (:func:`run_joint`, ``method=finetune_delta``): the ∆
   network (backbone, ∆-modules, head) trained from the vanilla model's initialisation with its
   recipe instead of the plain network, and adapted with ADDA for the ADDA rows.

Both are scored on the source and the target test splits (``scenario.target``); results.json's
``vanilla`` holds the first model's scores (the ADDA model's when ``adda: true``). With
``scenario.uniform_prior.weight > 0`` the source training of the vanilla model and the ∆ stage add
the uniform-prior regulariser ("+ Uniform prior", Sinha et al. [43]); an ADDA run starts from that
prior-trained vanilla model (the prior itself: :mod:`.uniform_prior`).

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
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..data.base import LOADER_ONLY_KEYS, ClassificationDataModule, ShardSampler
from ..errors import ConfigError
from ..methods.base import Method
from ..patch import base_fingerprint
from ..training.base_model import pretrained_weights, train_cached
from ..training.evaluation import EvalSet, LightningScorer
from ..training.trainer import eval_trainer, make_trainer
from .adda import obtain_adda
from .common import check_base, finish, make_loggers, results_skeleton, save_patch_file, seed
from .uniform_prior import SourceModule, UniformPriorTaskModule, uniformity_loss
from .zsda_models import obtain_joint

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ stage 1: the vanilla model
def vanilla_cache_key(cfg: DictConfig, data_cfg: Any = None, uniform_prior: bool = True) -> str:
    """Hash of what shapes the model trained on ``data_cfg`` (default: the source, ``cfg.dataset``)
    with the ``base`` recipe (the run seed is not part of it: ``base.seed`` is)."""
    data = OmegaConf.to_container(cfg.dataset if data_cfg is None else data_cfg, resolve=True)
    for k in (*LOADER_ONLY_KEYS, "seed"):
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
        cfg, path, n, pretrained=pretrained_weights(cfg) if cfg.base.source == "pretrained" else False,
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


READINGS = ("on_top", "joint")


def delta_reading(cfg: DictConfig) -> str:
    """``scenario.delta``: how "+∆-Networks" is trained (docs/zsda.md): ``on_top`` of the frozen
    starting model, or ``joint``ly with the backbone from the vanilla model's initialisation."""
    reading = str(cfg.scenario.get("delta", "on_top"))
    if reading not in READINGS:
        raise ConfigError(f"scenario.delta={reading}: choose one of {', '.join(READINGS)}")
    return reading


def score_models(cfg: DictConfig, source: ClassificationDataModule, target: ClassificationDataModule,
                 models: dict[str, tuple[nn.Module, str | None]]) -> dict[str, dict[str, float | None]]:
    """Test accuracy on source and target of each ``name: (model, task)`` (task None: a plain
    model), as ``{name: {"source_acc", "target_acc"}}``, one evaluation loop per model."""
    out = {}
    n = source.num_classes
    for name, (model, task) in models.items():
        evalset = EvalSet()
        evalset.add("source", task, n, scored_source(cfg, source))
        evalset.add("target", task, n, target)
        scores = LightningScorer(lambda: eval_trainer(cfg), _Plain(model) if task is None else model, evalset)
        got = scores.score("test")
        out[name] = {"source_acc": got["source"], "target_acc": got["target"]}
    return out


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
    if delta_reading(cfg) == "joint":
        return run_joint(cfg, source, target, loggers)
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

    results = results_skeleton(cfg, source.name, method, fingerprint)
    results.update(
        target=target.name, metric="target_acc", target_acc=scores["target"], source_acc=scores["source"],
        vanilla={"source_acc": vanilla_scores["vanilla_source"], "target_acc": vanilla_scores["vanilla_target"]},
        tasks={task: scores["target"]}, train_seconds=seconds, vanilla_seconds=vanilla_seconds,
        base_model_unchanged=unchanged, uniform_prior=OmegaConf.to_container(up), adda=adda_info is not None,
        class_names={task: source.class_names}, selection="fixed budget (last epoch); source val logged only",
        source_test_images=source_test_count(cfg, source), delta_reading="on_top",
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


def run_joint(cfg: DictConfig, source: ClassificationDataModule, target: ClassificationDataModule,
              loggers: list) -> dict[str, Any]:
    """``scenario.delta=joint``: the ∆ network (``method``, e.g. finetune_delta: backbone, ∆-modules
    and head) trained on the source exactly as the vanilla model is (same initialisation, recipe,
    data order and prior) next to the vanilla model; with ADDA both are adapted. ``vanilla`` is the
    starting model's scores, ``target_acc`` the ∆ network's."""
    sc, task = cfg.scenario, str(cfg.scenario.task_name)
    weight = float(sc.uniform_prior.weight)
    t0 = time.perf_counter()
    vanilla, vanilla_params, vanilla_key = obtain_vanilla(cfg, source, loggers)
    if adda_enabled(cfg):
        vanilla, _ = obtain_adda(cfg, vanilla, vanilla_key, source, target, loggers)
    vanilla_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    method, joint_key = obtain_joint(cfg, source, vanilla_key, loggers, weight)
    adda_info = None
    if adda_enabled(cfg):
        method, adda_info = obtain_adda(cfg, method, joint_key, source, target, loggers, task=task)
    seconds = time.perf_counter() - t0
    scores = score_models(cfg, source, target, {"vanilla": (vanilla, None), "delta": (method, task)})
    results = results_skeleton(cfg, source.name, method, base_fingerprint(vanilla))
    results.update(
        target=target.name, metric="target_acc", target_acc=scores["delta"]["target_acc"],
        source_acc=scores["delta"]["source_acc"], vanilla=scores["vanilla"],
        tasks={task: scores["delta"]["target_acc"]},
        train_seconds=seconds, vanilla_seconds=vanilla_seconds, base_model_unchanged=None,
        uniform_prior=OmegaConf.to_container(sc.uniform_prior), adda=adda_info is not None,
        class_names={task: source.class_names}, selection="fixed budget (last epoch / step) in every stage",
        source_test_images=source_test_count(cfg, source), delta_reading="joint",
    )
    if adda_info is not None:
        results["adda_info"] = adda_info
    results["trainable_params"][task] = sum(p.numel() for p in method.trainable_parameters(task))
    results["vanilla_trainable_params"] = vanilla_params
    return finish(cfg, results, loggers, {"test/target_acc": results["target_acc"],
                                          "test/source_acc": results["source_acc"],
                                          "test/vanilla_target_acc": scores["vanilla"]["target_acc"]})


def run_target_only(cfg: DictConfig, source: ClassificationDataModule, target: ClassificationDataModule,
                    loggers: list) -> dict[str, Any]:
    """Table 6's "Target only": the ``base`` recipe on the target's labelled training split (a fixed
    budget, last epoch kept), scored on the target's test split (and the source's, for reference)."""
    t0 = time.perf_counter()
    model, params, _ = obtain_vanilla(cfg, target, loggers, data_cfg=cfg.scenario.target, uniform_prior=False)
    seconds = time.perf_counter() - t0
    scores = score_models(cfg, source, target, {"model": (model, None)})["model"]
    results = results_skeleton(cfg, source.name)
    task = str(cfg.scenario.task_name)
    results.update(
        method="target_only", target=target.name, metric="target_acc", target_acc=scores["target_acc"],
        source_acc=scores["source_acc"], tasks={task: scores["target_acc"]}, train_seconds=seconds,
        base_model_unchanged=None, uniform_prior=OmegaConf.to_container(cfg.scenario.uniform_prior), adda=False,
        target_only=True, class_names={task: target.class_names},
        selection="fixed budget (last epoch) on the target's labelled training split",
        source_test_images=source_test_count(cfg, source),
    )
    results["trainable_params"][task] = params
    return finish(cfg, results, loggers, {"test/target_acc": scores["target_acc"],
                                          "test/source_acc": scores["source_acc"]})


__all__ = ["READINGS", "SourceModule", "SourceTestSubset", "UniformPriorTaskModule", "adda_enabled", "check_scenario",
           "delta_reading", "obtain_vanilla", "run", "run_joint", "run_target_only", "score_models", "scored_source",
           "uniformity_loss", "vanilla_cache_key"]
