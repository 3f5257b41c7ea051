"""Ablations of the paper's Table 8 that are not ∆-Networks with another gate.

``all_skips``, ``all_skips_learnable`` and ``random_lambda`` (each with and without the output BN)
are :class:`~deltapatch.methods.DeltaMethod` with ``gate``/``bn_placement`` set in their YAMLs.
What is left is ``learnable_skip``: "we make the already existing skip connections in residual
networks soft by introducing a weight parameter ... a scaled identity mapping" — one learned
scalar ``s`` per residual block of the frozen backbone, per task: ``act(F(x) + s·shortcut(x))``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import register_method
from .hooked import HookedMethod


class SkipScales(nn.Module):
    """One scalar per residual block, starting at 1 (the base model's plain residual)."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))


def _residual_bn(block: nn.Module) -> nn.BatchNorm2d:
    """The BN whose output the block adds its shortcut to (Bottleneck: bn3, BasicBlock: bn2)."""
    bn = getattr(block, "bn3", None) or getattr(block, "bn2", None)
    if not isinstance(bn, nn.BatchNorm2d) or not hasattr(block, "downsample"):
        raise ConfigError(f"learnable_skip needs ResNet blocks (bn2/bn3 + downsample); got {type(block).__name__}")
    if getattr(block, "se", None) is not None:  # timm: SE sits between the BN and the addition
        raise ConfigError("learnable_skip does not support blocks with squeeze-excitation")
    return bn


@register_method
class LearnableSkipMethod(HookedMethod):
    """``learnable_skip``: the frozen backbone's own residuals of the last ``n_stages`` stages
    (all stages when ``None``) scaled by a learned scalar each, plus a new head.

    How, without touching the base: a block with a projection shortcut gets its ``downsample``
    output multiplied by ``s``; an identity block gets ``(s − 1)·x`` added to its last BN's output,
    just before the block adds ``x`` itself. Trainable per task: one scalar per block + the head.
    """

    name = "learnable_skip"

    def __init__(self, base: nn.Module, n_stages: int | None = None):
        super().__init__(base)
        stages = self.adapter.stages()
        n = len(stages) if n_stages is None else int(n_stages)
        if not 1 <= n <= len(stages):
            raise ConfigError(f"n_stages={n_stages} but the backbone has {len(stages)} stages")
        self.blocks = [b for st in stages[len(stages) - n:] for b in st.blocks]
        self._inputs: dict[int, torch.Tensor] = {}  # an identity block's input, for its residual BN hook
        for i, block in enumerate(self.blocks):
            bn = _residual_bn(block)
            if block.downsample is not None:
                self.hook(block.downsample, lambda mods, m, inputs, out, i=i: mods["scales"].weight[i] * out)
            else:
                self.pre_hook(block, lambda mods, m, inputs, i=i: self._inputs.__setitem__(i, inputs[0]))
                self.hook(bn, lambda mods, m, inputs, out, i=i: out + (mods["scales"].weight[i] - 1) * self._inputs.pop(i))

    def make_task_modules(self, name: str) -> nn.ModuleDict:
        return nn.ModuleDict({"scales": SkipScales(len(self.blocks))})
