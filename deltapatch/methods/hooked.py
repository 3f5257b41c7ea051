"""Shared machinery for baselines that change what frozen base modules compute, per task, without
touching the base: forward hooks that stay dormant unless one of this method's tasks is running.

The hooks are registered once on modules of the frozen base. While ``forward(x, task)`` runs, a
hook may replace the module's output with something computed by that task's own modules (a
per-task BatchNorm, a conv output plus an adapter, ...). With no task active every hook returns
``None``, which PyTorch reads as "output unchanged": ``forward(x, None)`` is the base model itself,
bit for bit, and the base's parameters and buffers are never written.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import ConfigError
from .base import Method, freeze

# hook(task_modules, module, inputs, output) -> new output (None keeps the module's own output)
TaskHook = Callable[[nn.Module, nn.Module, tuple, Any], Any]
# pre_hook(task_modules, module, inputs) -> None (used to observe a module's input)
TaskPreHook = Callable[[nn.Module, nn.Module, tuple], None]


def module_key(name: str) -> str:
    """A base module's dotted name as a ``ModuleDict`` key (dots are not allowed there)."""
    return name.replace(".", "__")


def clone_batchnorm(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """A fresh BatchNorm with ``bn``'s configuration, affine parameters and running statistics.

    Built anew rather than ``copy.deepcopy``'d: a deep copy would also copy the forward hooks this
    module installs on ``bn`` and call itself recursively.
    """
    new = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    ref = bn.weight if bn.weight is not None else bn.running_mean
    return new.to(device=ref.device, dtype=ref.dtype)


class HookedMethod(Method):
    """A frozen base (eval mode, ``requires_grad=False``), one head and one ``ModuleDict`` of new
    modules per task, and hooks on base modules that route through the running task's modules.

    Subclasses register hooks in ``__init__`` with :meth:`hook` / :meth:`pre_hook` and build a
    task's modules in :meth:`make_task_modules`.
    """

    keeps_base = True

    def __init__(self, base: nn.Module):
        super().__init__(freeze(base))
        self.heads = nn.ModuleDict()
        self.tasks = nn.ModuleDict()
        self._active: str | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- hooks -------------------------------------------------------------
    def hook(self, module: nn.Module, fn: TaskHook) -> None:
        """Run ``fn`` after ``module`` while a task of this method is active."""

        def _hook(mod: nn.Module, inputs: tuple, output: Any) -> Any:
            if self._active is None:
                return None  # dormant: the base module's output, untouched
            return fn(self.tasks[self._active], mod, inputs, output)

        self._handles.append(module.register_forward_hook(_hook))

    def pre_hook(self, module: nn.Module, fn: TaskPreHook) -> None:
        """Run ``fn`` before ``module`` while a task of this method is active (observes inputs)."""

        def _hook(mod: nn.Module, inputs: tuple) -> None:
            if self._active is not None:
                fn(self.tasks[self._active], mod, inputs)
            return None

        self._handles.append(module.register_forward_pre_hook(_hook))

    def remove_hooks(self) -> None:
        """Detach every hook from the base (the method is unusable for tasks afterwards)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextmanager
    def routing(self, task: str) -> Iterator[None]:
        """Activate ``task``'s hooks for the duration of one forward pass."""
        if task not in self.tasks:
            raise KeyError(f"unknown task '{task}'; this method has: {list(self.tasks)}")
        if self._active is not None:
            raise RuntimeError(f"task '{self._active}' is already running; forwards do not nest")
        self._active = task
        try:
            yield
        finally:
            self._active = None

    # -- tasks -------------------------------------------------------------
    def make_task_modules(self, name: str) -> nn.ModuleDict:
        """The new modules of a task, keyed as the hooks look them up."""
        raise NotImplementedError

    def add_task(self, name: str, num_classes: int, class_names: list[str] | None = None) -> None:
        if name in self.tasks:
            raise ConfigError(f"task name '{name}' is already taken (existing: {list(self.tasks)})")
        ref = next(self.base.parameters())
        mods = self.make_task_modules(name).to(device=ref.device, dtype=ref.dtype)
        mods.train(self.training)
        self.tasks[name] = mods
        self.heads[name] = nn.Linear(self.adapter.num_features, num_classes).to(ref.device, ref.dtype)
        self.task_classes[name] = class_names

    def forward(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        if task is None:
            return self.base(x)
        with self.routing(task):
            feats = self.adapter.pre_logits(self.adapter.forward_features(x))
        return self.heads[task](feats)

    def head(self, task: str) -> nn.Linear:
        return self.heads[task]

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        params = list(self.tasks[task].parameters()) + list(self.heads[task].parameters())
        return [p for p in params if p.requires_grad]

    def train(self, mode: bool = True) -> "HookedMethod":
        super().train(mode)
        self.base.eval()  # Lightning calls train() every epoch: the base's BN statistics stay put
        return self
