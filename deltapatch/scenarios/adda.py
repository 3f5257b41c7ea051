"""ADDA — Adversarial Discriminative Domain Adaptation (Tzeng et al., CVPR 2017; the paper's [46]) —
for the zero-shot domain adaptation runner's Table 6 rows.

What we follow (Tzeng et al.'s released code, github.com/erictzeng/adda: ``tools/train_adda.py``,
``adda/adversary.py``, ``scripts/svhn-mnist.sh``):

- the *source encoder* and the *classifier* are the source-trained ("vanilla") model, kept fixed;
- the *target encoder* starts as an exact copy of the source encoder and is the only network
  adapted; the classifier is never trained again, so the ADDA model is the target encoder with
  the source classifier on top;
- the *discriminator* is an MLP on the encoders' pooled features, 500-500 hidden units with ReLU
  (the released script's ``--adversary_relu``), and one logit (their 2-way softmax, the same model);
  an L2 penalty of 2.5e-5 on its weights;
- each step: the discriminator learns source (1) vs target (0) from a batch of each domain; the
  target encoder learns to make its target features be classified as source (the GAN loss with
  inverted labels); Adam with lr 2e-4 and beta1 0.5 for both;
- a fixed budget of steps (their 10,000 at batch 128) and the last target encoder is the model:
  no model selection, so no labelled target data is needed anywhere.

The data: the source's training images and the target's *training* images, both without labels
(:class:`ImagesOnly` never reads a label). The target's labels and its test split are not read
while adapting. The adapted model is cached like the vanilla model, keyed by it, the target data
and the recipe.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..backbones import get_adapter
from ..data.base import LOADER_ONLY_KEYS, ClassificationDataModule, EpochSampler, TaskDataset, worker_context
from ..errors import ConfigError
from ..methods.base import freeze
from .zsda_models import train_once


class ImagesOnly(Dataset):
    """The transformed images of a split, without their labels: reads ``samples`` through the
    split's own index list and transform, never its ``labels``."""

    def __init__(self, data: TaskDataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.indices)

    def __getitem__(self, k: int) -> torch.Tensor:
        item = self.data.samples[self.data.indices[k]]
        image = item[0] if isinstance(item, tuple) else item
        return self.data.transform(image) if self.data.transform is not None else image


def discriminator(in_features: int, hidden: Sequence[int] = (500, 500)) -> nn.Sequential:
    """ADDA's adversary: ``in_features -> hidden... -> 1`` with ReLU; the logit says "source"."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, int(width)), nn.ReLU(inplace=True)]
        in_features = int(width)
    return nn.Sequential(*layers, nn.Linear(in_features, 1))


def head_of(model: nn.Module, task: str | None = None) -> nn.Linear:
    """The classifier of a plain model (``task`` None) or of a method's task."""
    return get_adapter(model).classifier() if task is None else model.head(task)


def pooled(model: nn.Module, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
    """The pooled features that enter the classifier (what the discriminator sees), of a plain
    model or of a method's task (read with a pre-hook on its head)."""
    if task is None:
        adapter = get_adapter(model)
        return adapter.pre_logits(adapter.forward_features(x))
    box: list[torch.Tensor] = []
    hook = head_of(model, task).register_forward_pre_hook(lambda _m, args: box.append(args[0]))
    try:
        model(x, task)
    finally:
        hook.remove()
    return box[0]


class ADDAModule(pl.LightningModule):
    """The adversarial stage: ``target`` (a copy of ``source``, its classifier frozen) against a
    discriminator, ``source`` frozen in eval mode. ``task`` names the classifier when the models
    are ∆ methods (None: plain models). Batches are ``{"source": images, "target": images}``;
    manual optimisation, one discriminator step then one target-encoder step."""

    def __init__(self, source: nn.Module, target: nn.Module, hidden: Sequence[int] = (500, 500),
                 lr: float = 2e-4, betas: Sequence[float] = (0.5, 0.999), disc_weight_decay: float = 2.5e-5,
                 task: str | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.source, self.target, self.task = freeze(source), target, task
        head = head_of(target, task)
        head.requires_grad_(False)  # the source classifier is kept as it is
        self.disc = discriminator(head.in_features, hidden)
        self.lr, self.betas, self.disc_weight_decay = lr, tuple(betas), disc_weight_decay

    def train(self, mode: bool = True) -> "ADDAModule":
        super().train(mode)
        self.source.eval()  # frozen: its BatchNorm statistics never move
        return self

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.target.parameters() if p.requires_grad]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_target, opt_disc = self.optimizers()
        with torch.no_grad():
            f_src = pooled(self.source, batch["source"], self.task)
        f_tgt = pooled(self.target, batch["target"], self.task)  # train mode: BN sees target batches
        ones, zeros = f_src.new_ones(len(f_src), 1), f_tgt.new_zeros(len(f_tgt), 1)
        # the discriminator: source features -> 1, target features -> 0 (one loss over both halves)
        logits = self.disc(torch.cat([f_src, f_tgt.detach()]))
        d_loss = F.binary_cross_entropy_with_logits(logits, torch.cat([ones, zeros]))
        opt_disc.zero_grad()
        self.manual_backward(d_loss)
        opt_disc.step()
        # the target encoder: its target features should pass for source features (inverted labels)
        g_loss = F.binary_cross_entropy_with_logits(self.disc(f_tgt), torch.ones_like(zeros))
        opt_target.zero_grad()
        self.manual_backward(g_loss)
        opt_target.step()
        d_acc = ((logits > 0).float() == torch.cat([ones, zeros])).float().mean() * 100.0
        self.log_dict({"adda/d_loss": d_loss, "adda/g_loss": g_loss, "adda/d_acc": d_acc}, prog_bar=True)

    def configure_optimizers(self):
        # weight decay as Adam's L2 term: the released code's l2 regulariser on the adversary
        return [torch.optim.Adam(self.encoder_parameters(), lr=self.lr, betas=self.betas),
                torch.optim.Adam(self.disc.parameters(), lr=self.lr, betas=self.betas,
                                 weight_decay=self.disc_weight_decay)]


def images_loader(data: TaskDataset, batch_size: int, seed: int, num_workers: int = 0) -> DataLoader:
    """Shuffled (seeded by epoch, sharded across DDP ranks), label-free batches of ``data``."""
    images = ImagesOnly(data)
    sampler = EpochSampler(images, seed)
    return DataLoader(images, batch_size=batch_size, sampler=sampler, drop_last=len(sampler) >= batch_size,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      multiprocessing_context=worker_context(num_workers),
                      generator=torch.Generator().manual_seed(seed))


def adaptation_loader(source: ClassificationDataModule, target: ClassificationDataModule, batch_size: int,
                      seed: int) -> CombinedLoader:
    """One step's data: a batch of source training images and one of target *training* images,
    no labels; an epoch ends with the smaller of the two (``min_size``)."""
    source.setup()
    target.setup()
    return CombinedLoader({"source": images_loader(source.splits["train"], batch_size, seed, source.num_workers),
                           "target": images_loader(target.splits["train"], batch_size, seed + 1,
                                                   target.num_workers)}, mode="min_size")


def _data_key(cfg: Any) -> dict:
    data = OmegaConf.to_container(cfg, resolve=True)
    for k in (*LOADER_ONLY_KEYS, "seed"):
        data.pop(k, None)
    return data


def adda_cache_key(cfg: DictConfig, vanilla_key: str) -> str:
    """Hash of what shapes the ADDA model: the vanilla model it starts from, the target data, the
    recipe and ``base.seed``."""
    a = cfg.scenario.adda
    key = {"vanilla": vanilla_key, "target": _data_key(cfg.scenario.target), "seed": cfg.base.seed,
           "recipe": OmegaConf.to_container(a, resolve=True) | {"enabled": True},
           "batch_size": batch_size_of(cfg), "version": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def batch_size_of(cfg: DictConfig) -> int:
    return int(cfg.scenario.adda.get("batch_size") or cfg.dataset.batch_size)


def check_recipe(cfg: DictConfig) -> None:
    """One clear line for a recipe that cannot run."""
    a = cfg.scenario.adda
    if int(a.epochs) < 1:
        raise ConfigError(f"scenario.adda.epochs={a.epochs}: ADDA needs at least one epoch")
    if a.get("steps_per_epoch") is not None and int(a.steps_per_epoch) < 1:
        raise ConfigError(f"scenario.adda.steps_per_epoch={a.steps_per_epoch}: give a positive number or null")
    if batch_size_of(cfg) < 2:
        raise ConfigError("scenario.adda.batch_size must be at least 2 (BatchNorm needs a batch)")
    if float(a.lr) <= 0:
        raise ConfigError(f"scenario.adda.lr={a.lr}: give a positive learning rate")


def obtain_adda(cfg: DictConfig, model: nn.Module, model_key: str, source: ClassificationDataModule,
                target: ClassificationDataModule, loggers: list, task: str | None = None) -> tuple[nn.Module, dict]:
    """The ADDA model adapted from ``model`` (a plain model, or a ∆ method and its ``task``) with
    ``scenario.adda``'s recipe: a copy whose encoder was trained adversarially, its classifier
    ``model``'s; trained once and cached. Returns it and what results.json says about it."""
    check_recipe(cfg)
    a = cfg.scenario.adda
    bs = batch_size_of(cfg)
    name = f"{cfg.backbone.name}-{adda_cache_key(cfg, model_key)}.safetensors"
    path = Path(cfg.base.cache_dir) / "zsda" / "adda" / name

    def make_module(target_model: nn.Module) -> ADDAModule:
        return ADDAModule(copy.deepcopy(model), target_model, hidden=list(a.discriminator.hidden), lr=float(a.lr),
                          betas=list(a.betas), disc_weight_decay=float(a.discriminator.weight_decay), task=task)

    def build() -> nn.Module:  # the target encoder starts as an exact copy of the source encoder
        if task is not None:
            return copy.deepcopy(model)
        # a plain model: a fresh backbone given the source weights, which draws the random numbers
        # the first version of this code drew, so models it cached are what a new run trains
        fresh = instantiate(cfg.backbone.model, pretrained=False, num_classes=source.num_classes)
        fresh.load_state_dict(model.state_dict())
        return fresh

    adapted = train_once(
        cfg, path, build, make_module,
        data={"train_dataloaders": adaptation_loader(source, target, bs, int(cfg.base.seed))}, loggers=loggers,
        epochs=int(a.epochs), limit_train_batches=a.get("steps_per_epoch"),
        info={"adda_from": model_key, "source": source.name, "target": target.name,
              "recipe": OmegaConf.to_container(a, resolve=True)})
    info = {"target_split": "train", "target_images": len(target.splits["train"]),
            "source_images": len(source.splits["train"]), "batch_size": bs, "epochs": int(a.epochs),
            "steps_per_epoch": a.get("steps_per_epoch"), "lr": float(a.lr), "betas": list(a.betas),
            "discriminator": OmegaConf.to_container(a.discriminator, resolve=True), "selection": "last step",
            "cache": str(path)}
    return adapted, info


__all__ = ["ADDAModule", "ImagesOnly", "adaptation_loader", "adda_cache_key", "check_recipe", "discriminator",
           "head_of", "obtain_adda", "pooled"]
