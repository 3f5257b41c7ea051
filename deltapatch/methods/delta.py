"""∆-Networks as a method: each task gets ∆-modules on the last ``n_deltas`` stages and a head."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..delta import DeltaNetwork
from ..patch import save_patch
from .base import Method, register_method


@register_method
class DeltaMethod(Method):
    """∆-Networks(n). ``gate``/``bn_placement`` select the paper's ablations (Table 8):
    ``gate=constant`` is ``all_skips``, ``gate=static`` ``all_skips_learnable``, ``gate=random``
    ``random_lambda``; ``bn_placement=none`` removes the variance-fixing BN."""

    name = "delta"
    has_lambdas = True
    dense = True

    def __init__(self, base: nn.Module, n_deltas: int = 1, bn_placement: str = "out", gate: str = "delta",
                 gate_kwargs: dict | None = None, freeze_base: bool = True):
        super().__init__(base)
        self.net = DeltaNetwork(base, n_deltas=n_deltas, bn_placement=bn_placement, gate=gate,
                                gate_kwargs=dict(gate_kwargs or {}), freeze_base=freeze_base)
        self.keeps_base = freeze_base

    @property
    def n_deltas(self) -> int:
        return self.net.n_deltas

    def add_task(self, name: str, num_classes: int, class_names: list[str] | None = None) -> None:
        self.net.add_task(name, num_classes, class_names=class_names)
        self.task_classes[name] = class_names

    def forward(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        return self.net(x, task=task)

    def head(self, task: str) -> nn.Linear:
        return self.net.tasks[task].head

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        return self.net.trainable_parameters(task)

    def feature_stage(self, task: str) -> int | None:
        return self.net.tasks[task].first_stage if self.net.freeze_base else None

    def base_features(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        return self.net.base_features(x, upto=upto)

    def forward_from(self, h: torch.Tensor, task: str) -> torch.Tensor:
        """Logits of ``task`` from cached frozen-prefix features (see :mod:`deltapatch.cache`)."""
        return self.net.forward_from(h, task)

    def save_patch(self, task: str, path: Path, config: dict | None = None) -> Path:
        return save_patch(self.net, task, path, config=config)

    def lambdas(self, x: torch.Tensor, task: str) -> dict[int, torch.Tensor]:
        return self.net.lambdas(x, task)


@register_method
class FinetuneDeltaMethod(DeltaMethod):
    """``finetune_delta``: ∆-modules trained together with the unfrozen backbone (the paper's
    transfer-learning row). The base task is scored with the changed backbone and base head."""

    name = "finetune_delta"
    trains_backbone = True

    def __init__(self, base: nn.Module, **kwargs):
        kwargs["freeze_base"] = False
        super().__init__(base, **kwargs)
