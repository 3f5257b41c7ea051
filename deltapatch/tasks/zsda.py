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

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import nn
from torchvision.transforms import v2 as T

from ..backbones import get_adapter
from ..checkpoint import atomic_path, write_json
from ..data.base import ClassificationDataModule
from ..data.digits import DigitsDataModule
from ..errors import CheckpointError, ConfigError
from ..methods.base import Method
from ..patch import base_fingerprint
from ..training.metrics import accuracy
from ..training.module import BaseModule, TaskModule
from .common import accelerator_kwargs, check_base, finish, make_loggers, make_trainer, results_skeleton, run_device

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
            self.log("vanilla/uniformity", reg)
            loss = loss + self.uniform_weight * reg
        self.log("vanilla/train_loss", loss, prog_bar=True)
        return loss


def task_head(method: Method, task: str) -> nn.Module:
    """The linear head of ``task``: its input is the task's pooled feature vector."""
    net = getattr(method, "net", None)
    if net is not None and task in getattr(net, "tasks", {}):
        return net.tasks[task].head  # ∆-Networks
    heads = getattr(method, "heads", None)
    if heads is not None and task in heads:
        return heads[task]  # fc / finetune
    raise ConfigError(f"the uniform prior needs the features before the head; method "
                      f"'{type(method).__name__}' does not expose its head")


class UniformPriorTaskModule(TaskModule):
    """Stage 2: :class:`TaskModule` + the uniform prior on the features entering the task's head
    (read with a forward pre-hook, so any method with a per-task head works unchanged)."""

    def __init__(self, *args, uniform_weight: float = 0.0, uniform_t: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.uniform_weight, self.uniform_t = uniform_weight, uniform_t
        self._feats: list[torch.Tensor] = []
        if uniform_weight > 0:
            task_head(self.method, self.task).register_forward_pre_hook(
                lambda _m, args: self._feats.append(args[0]) if self.training else None)

    def training_step(self, batch, batch_idx):
        self._feats.clear()
        loss = super().training_step(batch, batch_idx)
        if self.uniform_weight > 0 and self._feats:
            reg = uniformity_loss(self._feats[-1], self.uniform_t)
            self.log(f"{self.task}/uniformity", reg)
            loss = loss + self.uniform_weight * reg
        self._feats.clear()
        return loss


# ------------------------------------------------------------------ the target domain twin
class ShiftedDigitsDataModule(DigitsDataModule):
    """scikit-learn's digits in another domain: ``shift`` = ``invert`` (dark digits on white),
    ``rotate`` (by ``angle`` degrees) or ``invert_rotate``. Same classes and test split as
    ``digits`` (same ``split_seed``), so digits -> digits_shifted is a zero-shot domain shift."""

    name = "digits_shifted"
    SHIFTS = ("invert", "rotate", "invert_rotate")

    def __init__(self, shift: str = "rotate", angle: float = 30.0, **kwargs):
        super().__init__(**kwargs)
        if shift not in self.SHIFTS:
            raise ConfigError(f"digits_shifted: shift must be one of {self.SHIFTS}, got '{shift}'")
        self.shift, self.angle = shift, angle

    def _apply_shift(self, image):
        if "rotate" in self.shift:
            image = T.functional.rotate(image, self.angle, interpolation=T.InterpolationMode.BILINEAR)
        if "invert" in self.shift:
            image = T.functional.invert(image)
        return image

    def transform(self, train: bool) -> T.Compose:
        ops = list(super().transform(train).transforms)
        # after the resize, so rotation works on the upsampled image rather than 8x8 pixels
        at = next(i for i, op in enumerate(ops) if isinstance(op, T.Resize)) + 1
        return T.Compose(ops[:at] + [T.Lambda(self._apply_shift)] + ops[at:])


# ------------------------------------------------------------------ stage 1: the vanilla model
def vanilla_cache_key(cfg: DictConfig) -> str:
    """Hash of what shapes the vanilla model (the run seed is not part of it: ``base.seed`` is)."""
    data = OmegaConf.to_container(cfg.dataset, resolve=True)
    for k in ("num_workers", "pin_memory", "eval_batch_size", "seed"):
        data.pop(k, None)
    up = cfg.scenario.uniform_prior
    key = {"backbone": cfg.backbone.name, "init": cfg.base.source, "data": data, "epochs": cfg.base.epochs,
           "lr": cfg.base.lr, "weight_decay": cfg.base.weight_decay, "seed": cfg.base.seed,
           "uniform_prior": [float(up.weight), float(up.t)] if up.weight > 0 else None, "version": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def obtain_vanilla(cfg: DictConfig, source: ClassificationDataModule) -> tuple[nn.Module, int]:
    """The source-trained model and how many parameters training it touched (0: taken as given)."""
    n = source.num_classes
    if cfg.base.source == "checkpoint":
        return instantiate(cfg.backbone.model, pretrained=str(cfg.base.path), num_classes=n), 0
    path = Path(cfg.base.cache_dir) / "zsda" / f"{cfg.backbone.name}-{vanilla_cache_key(cfg)}.safetensors"
    if path.exists():
        try:
            model = instantiate(cfg.backbone.model, pretrained=str(path), num_classes=n)
            log.info("vanilla model from cache %s", path)
            return model, sum(p.numel() for p in model.parameters())
        except (CheckpointError, ConfigError) as e:  # a corrupt cache is rebuilt, not trusted
            log.warning("ignoring unusable cached vanilla model %s: %s", path, e)
    up = cfg.scenario.uniform_prior
    with torch.random.fork_rng():
        L.seed_everything(cfg.base.seed, workers=True, verbose=False)
        model = instantiate(cfg.backbone.model, pretrained=cfg.base.source == "pretrained", num_classes=n)
        module = SourceModule(model, n, lr=cfg.base.lr, weight_decay=cfg.base.weight_decay,
                              uniform_weight=float(up.weight), uniform_t=float(up.t))
        trainer = L.Trainer(max_epochs=cfg.base.epochs, logger=False, enable_checkpointing=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            **accelerator_kwargs(cfg))
        trainer.fit(module, train_dataloaders=source.train_dataloader())
    model.eval()
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp,
                  metadata={"backbone": cfg.backbone.name, "source": source.name})
    write_json(path.with_suffix(".json"), {"backbone": cfg.backbone.name, "source": source.name,
                                           "epochs": cfg.base.epochs, "uniform_prior": float(up.weight)})
    # reload so this run uses exactly what later runs will read from the cache
    return (instantiate(cfg.backbone.model, pretrained=str(path), num_classes=n),
            sum(p.numel() for p in model.parameters()))


# ------------------------------------------------------------------ the runner
def run_zsda(cfg: DictConfig) -> dict[str, Any]:
    """``scenario=zsda``: vanilla model on the source, ``method`` on top, both scored on source
    and target test splits; ``target_acc`` is the patched model's target accuracy."""
    out_dir = Path(cfg.paths.output_dir)
    sc = cfg.scenario
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    source: ClassificationDataModule = instantiate(cfg.dataset)
    target: ClassificationDataModule = instantiate(sc.target)
    source.setup()
    target.setup()
    if source.num_classes != target.num_classes:
        raise ConfigError(f"zsda: source {source.name} has {source.num_classes} classes, target {target.name} "
                          f"{target.num_classes}; the domains must share their classes")
    device = run_device(cfg)
    n = source.num_classes

    t0 = time.perf_counter()
    vanilla, vanilla_params = obtain_vanilla(cfg, source)
    vanilla_seconds = time.perf_counter() - t0
    vanilla.to(device)
    fingerprint = base_fingerprint(vanilla)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    method: Method = instantiate(cfg.method.module, base=vanilla)
    method.to(device)
    scores: dict[str, dict[str, float]] = {"vanilla": {
        "source_acc": accuracy(method, source.test_dataloader(), None, n, device),
        "target_acc": accuracy(method, target.test_dataloader(), None, n, device)}}

    task = str(sc.task_name)
    method.add_task(task, n, source.class_names)
    up = sc.uniform_prior
    scheduler = instantiate(cfg.method.scheduler) if cfg.method.get("scheduler") else None
    module = UniformPriorTaskModule(method, task, n, optimizer=instantiate(cfg.method.optimizer), scheduler=scheduler,
                                    uniform_weight=float(up.weight), uniform_t=float(up.t))
    loggers = make_loggers(cfg)
    trainer = make_trainer(cfg, task, loggers)
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=source.train_dataloader())
    seconds = time.perf_counter() - t0

    method.to(device)
    scores[task] = {"source_acc": accuracy(method, source.test_dataloader(), task, n, device),
                    "target_acc": accuracy(method, target.test_dataloader(), task, n, device)}
    unchanged = check_base(vanilla, fingerprint, frozen=method.keeps_base, what=f"zsda ({cfg.method.name})")

    results = results_skeleton(cfg, source.name)
    results.update(
        target=target.name, metric="target_acc", target_acc=scores[task]["target_acc"],
        source_acc=scores[task]["source_acc"], vanilla=scores["vanilla"], tasks={task: scores[task]["target_acc"]},
        train_seconds=seconds, vanilla_seconds=vanilla_seconds, base_model_unchanged=unchanged,
        uniform_prior=OmegaConf.to_container(up), adda=False, class_names={task: source.class_names},
    )
    results["trainable_params"][task] = method.num_trainable(task)
    results["vanilla_trainable_params"] = vanilla_params
    patch = method.save_patch(task, out_dir / "patches" / f"{task}.patch.safetensors",
                              config=OmegaConf.to_container(cfg, resolve=False))
    if patch is not None:
        results["patch_files"][task] = {"path": str(patch), "bytes": patch.stat().st_size}
    return finish(cfg, results, loggers, {"test/target_acc": scores[task]["target_acc"],
                                          "test/source_acc": scores[task]["source_acc"],
                                          "test/vanilla_target_acc": scores["vanilla"]["target_acc"]})
