"""The interface every method (∆-Networks and the baselines) implements, and the method registry.

A method owns the base model and each task's new weights. Scenario runners call only what is
here, so a new method is one module (a :class:`Method` subclass decorated with
:func:`register_method`) plus one ``conf/method/<name>.yaml`` whose ``module._target_`` names the
class — nothing else to edit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn

from ..backbones import get_adapter
from ..errors import ConfigError


class Scorer(Protocol):
    """What :meth:`Method.end_task` may ask the runner for: accuracies in percent per scored key
    (``"base"`` and each task), computed in Lightning's evaluation loops."""

    def score(self, split: str) -> dict[str, float | None]:
        """Accuracy of every key on ``split`` (``"val"`` or ``"test"``) for the model as it is."""

    def sweep(self, split: str, variants: Sequence[Callable[[], None]]) -> list[dict[str, float | None]]:
        """For each variant: call it (it changes the model in place), then score ``split``.
        One evaluation loop for all variants; returns one dict per variant."""


class Method(nn.Module):
    """A way of adding tasks to a base model.

    ``forward(x, task=None)`` scores the base task (``None``) or a task. ``keeps_base`` promises
    that the base task's predictions never change; the runner checks the promise.

    Class attributes a subclass sets:

    - ``name``: the registry name (the ``conf/method`` YAML's ``name``);
    - ``keeps_base``: the base model is never written;
    - ``has_lambdas``: :meth:`lambdas` gives per-sample skip weights;
    - ``trains_backbone``: the backbone's own weights train (finetune, PAINT, finetune_delta);
    - ``dense``: the method has a detection/segmentation form (a frozen or trained body, with or
      without ∆-modules; see :mod:`deltapatch.delta.body`).
    """

    name: str = "method"
    keeps_base: bool = True
    has_lambdas: bool = False
    trains_backbone: bool = False
    dense: bool = False

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapter = get_adapter(base)
        self.task_classes: dict[str, list[str] | None] = {}

    @property
    def n_deltas(self) -> int | None:
        """Stages carrying ∆-modules per task, or ``None`` for a method without ∆-modules."""
        return None

    # -- tasks -------------------------------------------------------------
    def add_task(self, name: str, num_classes: int, class_names: list[str] | None = None) -> None:
        """Create task ``name``'s new modules and head."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """Logits of the base task (``task=None``) or of ``task``."""
        raise NotImplementedError

    def head(self, task: str) -> nn.Linear:
        """The linear head of ``task`` (its input is the task's pooled feature vector)."""
        raise NotImplementedError

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        """What an optimizer gets for ``task``."""
        raise NotImplementedError

    def num_trainable(self, task: str) -> int:
        return sum(p.numel() for p in self.trainable_parameters(task))

    # -- optional ----------------------------------------------------------
    def end_task(self, task: str, scorer: Scorer) -> dict[str, Any]:
        """Called after a task is trained; may change the model (PAINT's α choice). Returns extra
        fields for results.json."""
        return {}

    def feature_stage(self, task: str) -> int | None:
        """The stage whose input is frozen for ``task`` (so its features can be cached), or None."""
        return None

    def base_features(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """Frozen-prefix features entering stage ``upto`` (methods with a :meth:`feature_stage`)."""
        raise NotImplementedError(f"method '{self.name}' has no frozen prefix to cache")

    def forward_from(self, features: torch.Tensor, task: str) -> torch.Tensor:
        """Logits of ``task`` from :meth:`base_features` at its :meth:`feature_stage`."""
        raise NotImplementedError(f"method '{self.name}' cannot run from cached features")

    def save_patch(self, task: str, path: Path, config: dict | None = None) -> Path | None:
        """Write the task's new weights as a patch file; ``None`` when the method has no patch."""
        return None

    def lambdas(self, x: torch.Tensor, task: str) -> dict[int, torch.Tensor]:
        """Per-sample skip weights ``{stage: [batch, n_skips]}`` (methods with ``has_lambdas``)."""
        raise NotImplementedError(f"method '{self.name}' has no skip weights")


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad=False`` and eval mode (BatchNorm statistics stay fixed)."""
    module.requires_grad_(False)
    module.eval()
    return module


# ---------------------------------------------------------------------- registry
_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator (timm's ``register_model`` habit): make ``cls`` known as ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register_method expects a Method subclass, got {cls!r}")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"method name '{cls.name}' is registered twice "
                         f"({_METHODS[cls.name].__module__} and {cls.__module__})")
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    """Names of every registered method."""
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    """The registered class of method ``name``; one clear line when there is none."""
    if name not in _METHODS:
        raise ConfigError(f"unknown method '{name}'; choose one of: {', '.join(available_methods())}")
    return _METHODS[name]


def create_method(name: str, base: nn.Module, **kwargs: Any) -> Method:
    """``create_method("delta", base, n_deltas=2)``: a method by registry name."""
    return method_class(name)(base, **kwargs)
