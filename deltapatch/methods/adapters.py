"""Rebuffi et al.'s residual adapters (``srebuffi/residual_adapters``, ``models.py``) on a frozen
backbone: ``series_adapter`` and ``parallel_adapter``, one set per task, base untouched.

For every 3×3 convolution ``conv`` of the backbone followed by its BatchNorm ``bn`` (in ResNet
blocks: ``convN`` -> ``bnN``), with ``x`` the conv's input and ``z = conv(x)``:

- series:   ``BN_out(z + conv1x1(BN_in(z)))``              (Rebuffi's ``conv_task`` + ``conv1x1``
  in ``series_adapters`` mode: a BN then a 1×1 conv, added to ``z``, then the task's BN)
- parallel: ``BN_task(conv3x3(x) + conv1x1_task(x))``       (the 1×1 has the 3×3's stride)

In Rebuffi's network every BN is task-specific; here the task's BN (``BN_out``/``BN_task``)
replaces the frozen ``bn`` on the task's path and starts as a copy of it (affine parameters and
running statistics). The 1×1 convolutions start at zero (``zero_init``) so that a new task's path
begins as exactly the base model's features; Rebuffi trains from his own init (normal with std
``sqrt(2/n)``), available as ``zero_init=false``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .base import register_method
from .hooked import HookedMethod, clone_batchnorm, module_key

MODES = ("series", "parallel")


def conv3x3_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """Every ``convN`` with a 3×3 kernel whose parent has a ``bnN`` BatchNorm2d right after it
    (torchvision and timm ResNet blocks name them so), as ``(conv name, conv, bn)``."""
    out = []
    for parent_name, parent in model.named_modules():
        for child_name, conv in parent.named_children():
            if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and child_name.startswith("conv")):
                continue
            bn = getattr(parent, "bn" + child_name[len("conv"):], None)
            if isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels:
                out.append((f"{parent_name}.{child_name}" if parent_name else child_name, conv, bn))
    return out


class SeriesAdapter(nn.Module):
    """``z + conv1x1(BN_in(z))`` (Rebuffi's ``conv1x1`` in ``series_adapters`` mode)."""

    def __init__(self, channels: int, zero_init: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        _init_conv(self.conv, zero_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.conv(self.bn(z))


def _init_conv(conv: nn.Conv2d, zero: bool) -> None:
    if zero:
        nn.init.zeros_(conv.weight)
    else:  # Rebuffi's init: normal(0, sqrt(2 / (k*k*C_out)))
        n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))


class ResidualAdapterMethod(HookedMethod):
    """Residual adapters (``mode``: ``series`` or ``parallel``) beside/after every 3×3 conv of
    the frozen backbone, a per-task BN in place of the conv's BN, and a new head per task.

    Trainable per task: Σ over 3×3 convs of ``C_out² + 4·C_out`` (series: 1×1 conv, BN_in,
    BN_out) or ``C_in·C_out + 2·C_out`` (parallel: 1×1 conv, BN_task), plus the head.
    """

    name = "residual_adapter"

    def __init__(self, base: nn.Module, mode: str = "series", zero_init: bool = True):
        super().__init__(base)
        if mode not in MODES:
            raise ConfigError(f"adapter mode must be one of {MODES}, got '{mode}'")
        self.mode, self.zero_init = mode, zero_init
        self.sites = conv3x3_bn_pairs(self.base)
        if not self.sites:
            raise ConfigError(f"{type(self.base).__name__} has no 3x3 convolution followed by a BatchNorm "
                              "(convN -> bnN, as in ResNet/ResNeXt/Wide ResNet blocks); residual adapters need them")
        for name, conv, bn in self.sites:
            key = module_key(name)
            self.hook(conv, self._conv_hook(key))
            self.hook(bn, self._bn_hook(key))

    def _conv_hook(self, key: str):
        if self.mode == "series":
            return lambda mods, conv, inputs, z: mods[key + "__adapter"](z)
        return lambda mods, conv, inputs, z: z + mods[key + "__adapter"](inputs[0])

    @staticmethod
    def _bn_hook(key: str):
        # the frozen bn ran on its input too; its output is dropped for the task's own BN
        return lambda mods, bn, inputs, out: mods[key + "__bn"](inputs[0])

    def make_task_modules(self, name: str) -> nn.ModuleDict:
        mods = nn.ModuleDict()
        for site, conv, bn in self.sites:
            key = module_key(site)
            if self.mode == "series":
                mods[key + "__adapter"] = SeriesAdapter(conv.out_channels, self.zero_init)
            else:
                par = nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=conv.stride, bias=False)
                _init_conv(par, self.zero_init)
                mods[key + "__adapter"] = par
            task_bn = clone_batchnorm(bn)
            task_bn.requires_grad_(True)
            mods[key + "__bn"] = task_bn
        return mods


@register_method
class SeriesAdapterMethod(ResidualAdapterMethod):
    """``series_adapter``: ``BN_out(z + conv1x1(BN_in(z)))`` after every 3×3 conv ``z``."""

    name = "series_adapter"

    def __init__(self, base: nn.Module, zero_init: bool = True):
        super().__init__(base, mode="series", zero_init=zero_init)


@register_method
class ParallelAdapterMethod(ResidualAdapterMethod):
    """``parallel_adapter``: ``BN_task(conv3x3(x) + conv1x1_task(x))`` at every 3×3 conv."""

    name = "parallel_adapter"

    def __init__(self, base: nn.Module, zero_init: bool = True):
        super().__init__(base, mode="parallel", zero_init=zero_init)
