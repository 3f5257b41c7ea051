"""The interface every method (∆-Networks and the baselines) implements.

A method owns the base model and each task's new weights. The scenario runner only calls what is
here, so a new method is one module with one class and one ``conf/method/*.yaml``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..backbones import get_adapter

# evaluate(method) -> {"base": acc or None, task: acc, ...} on a fixed split, in percent
Evaluator = Callable[["Method"], dict[str, float | None]]


class Method(nn.Module):
    """A way of adding tasks to a base model.

    ``forward(x, task=None)`` scores the base task (``None``) or a task. ``keeps_base`` promises
    that the base task's predictions never change; the runner checks the promise.
    """

    name: str = "method"
    keeps_base: bool = True
    has_lambdas: bool = False  # True: lambdas(x, task) gives per-sample skip weights

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapter = get_adapter(base)
        self.task_classes: dict[str, list[str] | None] = {}

    # -- tasks -------------------------------------------------------------
    def add_task(self, name: str, num_classes: int, class_names: list[str] | None = None) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        raise NotImplementedError

    def num_trainable(self, task: str) -> int:
        return sum(p.numel() for p in self.trainable_parameters(task))

    # -- hooks (optional) --------------------------------------------------
    def end_task(self, task: str, evaluate_val: Evaluator, evaluate_test: Evaluator) -> dict[str, Any]:
        """Called after a task is trained; may change the model (PAINT's α choice). Returns extra
        fields for results.json."""
        return {}

    def feature_stage(self, task: str) -> int | None:
        """The stage whose input is frozen for ``task`` (so its features can be cached), or None."""
        return None

    def save_patch(self, task: str, path: Path, config: dict | None = None) -> Path | None:
        """Write the task's new weights as a patch file; ``None`` when the method has no patch."""
        return None

    def lambdas(self, x: torch.Tensor, task: str) -> dict[int, torch.Tensor]:
        """Per-sample skip weights ``{stage: [batch, n_skips]}`` (methods with ``has_lambdas``)."""
        raise NotImplementedError(f"method '{self.name}' has no skip weights")


def freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module
