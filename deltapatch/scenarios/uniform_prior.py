"""The uniform prior of zero-shot domain adaptation ("+ Uniform prior", Sinha et al., the paper's
[43]) and the LightningModules that train Table 6's models on the labelled source with it.

Our reading of the prior: the pooled features, L2-normalised, are pushed towards the uniform
distribution on the hypersphere with the Gaussian-potential uniformity loss
``log E exp(-t ||z_i - z_j||^2)`` (Wang & Isola, 2020), added with a weight to the cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import get_adapter
from ..methods.base import Method
from ..training.module import BaseModule, TaskModule


def uniformity_loss(features: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` over L2-normalised features ``z``: lowest when
    the batch spreads uniformly over the hypersphere. Zero for a batch of one."""
    z = F.normalize(features.flatten(1).float(), dim=1)
    if len(z) < 2:
        return z.new_zeros(())
    return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log()


class SourceModule(BaseModule):
    """The vanilla model: the whole backbone on the source (``BaseModule``'s recipe) + the prior."""

    def __init__(self, model: nn.Module, num_classes: int, lr: float, weight_decay: float,
                 uniform_weight: float = 0.0, uniform_t: float = 2.0):
        super().__init__(model, num_classes, lr=lr, weight_decay=weight_decay)
        self.adapter = get_adapter(model)
        self.uniform_weight, self.uniform_t = uniform_weight, uniform_t

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.adapter.pre_logits(self.adapter.forward_features(x))
        return feats, self.adapter.classifier()(feats)

    def training_step(self, batch, batch_idx):
        x, y = batch
        feats, logits = self.features_and_logits(x)
        loss = self.loss(logits, y)
        if self.uniform_weight > 0:
            reg = uniformity_loss(feats, self.uniform_t)
            self.log("vanilla/train_uniformity", reg)
            loss = loss + self.uniform_weight * reg
        self.log("vanilla/train_loss", loss, prog_bar=True)
        return loss


class TaskView(nn.Module):
    """One task of a method as a plain model: ``forward(x)`` is ``method(x, task)``."""

    def __init__(self, method: Method, task: str):
        super().__init__()
        self.method, self.task = method, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method(x, self.task)


def head_input(method: Method, task: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features entering the task's head, logits)`` of ``method`` on ``x``."""
    box: list[torch.Tensor] = []
    hook = method.head(task).register_forward_pre_hook(lambda _m, args: box.append(args[0]))
    try:
        logits = method(x, task)
    finally:
        hook.remove()
    return box[0], logits


class JointSourceModule(SourceModule):
    """The ∆ network trained like the vanilla model: backbone, ∆-modules and head of a method
    whose backbone trains (``finetune_delta``) together on the source, with ``BaseModule``'s
    recipe (AdamW, one-cycle schedule) and the prior on the head's input."""

    def __init__(self, method: Method, task: str, num_classes: int, lr: float, weight_decay: float,
                 uniform_weight: float = 0.0, uniform_t: float = 2.0):
        BaseModule.__init__(self, TaskView(method, task), num_classes, lr=lr, weight_decay=weight_decay)
        self.method, self.task = method, task
        self.uniform_weight, self.uniform_t = uniform_weight, uniform_t

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return head_input(self.method, self.task, x)


class UniformPriorTaskModule(TaskModule):
    """:class:`TaskModule` + the prior on the features entering the task's head (read with a
    forward pre-hook, so any method with a per-task head works unchanged)."""

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


__all__ = ["JointSourceModule", "SourceModule", "TaskView", "UniformPriorTaskModule", "head_input",
           "uniformity_loss"]
