"""Baselines that put a new linear head on the backbone's pooled features: ``fc`` (frozen
backbone) and ``finetune`` (whole backbone trained; no guarantee for the base task)."""
from __future__ import annotations

import torch
from torch import nn

from .base import Method, freeze, register_method


class HeadsMethod(Method):
    """Shared machinery: one head per task over ``adapter.pre_logits`` of the current backbone."""

    def __init__(self, base: nn.Module):
        super().__init__(base)
        self.heads = nn.ModuleDict()

    def add_task(self, name: str, num_classes: int, class_names: list[str] | None = None) -> None:
        ref = next(self.base.parameters())
        self.heads[name] = nn.Linear(self.adapter.num_features, num_classes).to(ref.device, ref.dtype)
        self.task_classes[name] = class_names

    def head(self, task: str) -> nn.Linear:
        return self.heads[task]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.pre_logits(self.adapter.forward_features(x))

    def forward(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        if task is None:
            return self.base(x)
        return self.heads[task](self.features(x))


@register_method
class FCMethod(HeadsMethod):
    """``fc``: frozen backbone in eval mode, only the new head trains."""

    name = "fc"
    dense = True

    def __init__(self, base: nn.Module):
        super().__init__(freeze(base))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().features(x)

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.heads[task].parameters())

    def train(self, mode: bool = True) -> "FCMethod":
        super().train(mode)
        self.base.eval()
        return self


@register_method
class FinetuneMethod(HeadsMethod):
    """``finetune``: backbone + new head trained; the base head stays as it was and scores the
    base task on the changed backbone (so base accuracy may drop)."""

    name = "finetune"
    keeps_base = False
    trains_backbone = True
    dense = True

    def __init__(self, base: nn.Module):
        super().__init__(base)
        base.requires_grad_(True)
        self.adapter.classifier().requires_grad_(False)

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = set(map(id, self.adapter.classifier().parameters()))
        return [p for p in self.base.parameters() if id(p) not in head]

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        return self.backbone_parameters() + list(self.heads[task].parameters())
