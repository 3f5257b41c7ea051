"""``bn_adapt``: per-task BatchNorm on the frozen backbone (the normalisation baseline of the
paper's Table 1), base untouched.

Each task gets a copy of every BatchNorm of the backbone (affine parameters and running
statistics, starting from the base's) that replaces the frozen one on the task's path, and a new
head. ``train_affine=true``: the BN affine parameters train with the head, and the BN statistics
follow the task's batches (momentum ``bn.momentum``, 0.1). ``train_affine=false`` is DUA
(Mirza et al., ``jmiemirza/DUA``): the backbone gets no gradient at all, only its BN running
statistics adapt, with DUA's decaying momentum — before the n-th adaptation batch,
``momentum = 0.1 · decay_factor^n + min_momentum`` (DUA's defaults 0.94 and 0.005); the head
still trains, since a new task's classes need one.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import register_method
from .hooked import HookedMethod, clone_batchnorm, module_key


@register_method
class BNAdaptMethod(HookedMethod):
    """Per-task BatchNorm statistics (and affine parameters with ``train_affine``) + head.

    ``dua_momentum``: use DUA's decaying momentum (default: on exactly when ``train_affine`` is off).
    Trainable per task: ``2·Σ C`` over the backbone's BNs (``train_affine``) plus the head.
    """

    name = "bn_adapt"

    def __init__(self, base: nn.Module, train_affine: bool = True, dua_momentum: bool | None = None,
                 decay_factor: float = 0.94, min_momentum: float = 0.005, initial_momentum: float = 0.1):
        super().__init__(base)
        self.train_affine = train_affine
        self.dua_momentum = (not train_affine) if dua_momentum is None else dua_momentum
        self.decay_factor, self.min_momentum, self.initial_momentum = decay_factor, min_momentum, initial_momentum
        self.sites = [(name, m) for name, m in self.base.named_modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.sites:
            raise ConfigError(f"{type(self.base).__name__} has no BatchNorm2d: bn_adapt needs a BN backbone "
                              "(ConvNeXt uses LayerNorm)")
        for name, bn in self.sites:
            key = module_key(name)
            # the frozen bn ran on its input too; its output is dropped for the task's own BN
            self.hook(bn, lambda mods, mod, inputs, out, key=key: mods[key](inputs[0]))
        self.adapt_steps: dict[str, int] = {}  # training forwards seen per task (DUA's counter)

    def make_task_modules(self, name: str) -> nn.ModuleDict:
        mods = nn.ModuleDict()
        for site, bn in self.sites:
            task_bn = clone_batchnorm(bn)
            task_bn.requires_grad_(self.train_affine)
            mods[module_key(site)] = task_bn
        self.adapt_steps[name] = 0
        return mods

    def forward(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        if task is not None and self.dua_momentum and self.tasks[task].training:
            # DUA: mom_new = mom_pre · decay, momentum = mom_new + min (fresh for every batch)
            self.adapt_steps[task] += 1
            momentum = self.initial_momentum * self.decay_factor ** self.adapt_steps[task] + self.min_momentum
            for bn in self.tasks[task].values():
                bn.momentum = momentum
        return super().forward(x, task)

