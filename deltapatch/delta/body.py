"""A classifier's stem and stages as the body of a dense-prediction model, with ∆-modules.

:class:`DeltaBody` plays the part of torchvision's ``IntermediateLayerGetter``: it returns the
output of chosen stages as an ``OrderedDict`` (``"0"``, ``"1"``, ...), so torchvision's FPN and
DeepLab heads sit on it unchanged. Stages in the last ``n_deltas`` run as :class:`PatchedStage`
(the frozen blocks plus input-conditioned skips), so the features the heads see flow through
the ∆-patched path, exactly as in :class:`deltapatch.DeltaNetwork`.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from typing import Sequence

import torch
from torch import nn

from ..backbones import get_adapter
from ..errors import ConfigError
from .stage import PatchedStage


class DeltaBody(nn.Module):
    """Body of ``base`` (a classifier deltapatch has an adapter for) with ∆-modules on its last
    ``n_deltas`` stages (0: none).

    With ``train_body=False`` the base has ``requires_grad=False``; the prefix before the first
    ∆-stage runs under ``no_grad``. Either way the base's BatchNorm layers stay in eval mode,
    as torchvision's detection and segmentation backbones freeze them (``FrozenBatchNorm2d``):
    detection batches are too small for batch statistics, and for a frozen body it is what keeps
    the base model bit for bit unchanged. The ∆-modules' own BatchNorm trains as usual.
    """

    def __init__(self, base: nn.Module, n_deltas: int, return_stages: Sequence[int] = (0, 1, 2, 3),
                 train_body: bool = False, bn_placement: str = "out", gate: str = "delta",
                 gate_kwargs: dict | None = None):
        super().__init__()
        self.base = base
        self.adapter = get_adapter(base)
        self.stages = self.adapter.stages()
        n = len(self.stages)
        if not 0 <= n_deltas <= n:
            raise ConfigError(f"n_deltas={n_deltas}: {type(base).__name__} has {n} stages (0 means no ∆-modules)")
        self.first_delta = n - n_deltas
        self.deltas = nn.ModuleDict({str(i): PatchedStage(self.stages[i], bn_placement, gate, gate_kwargs)
                                     for i in range(self.first_delta, n)})
        self.return_stages = sorted(return_stages)
        self.out_channels_list = [self.stages[i].out_channels for i in self.return_stages]
        self.train_body = train_body
        base.requires_grad_(False)
        if train_body:  # every body weight; the classifier head is not part of the body
            head = {id(p) for p in self.adapter.classifier().parameters()}
            for p in base.parameters():
                if id(p) not in head:
                    p.requires_grad_(True)
        base.eval()

    def train(self, mode: bool = True) -> "DeltaBody":
        super().train(mode)
        self.base.eval()  # Lightning calls train() every epoch: keep the base's BN statistics
        return self

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        last = self.return_stages[-1]
        frozen_until = 0 if self.train_body else min(self.first_delta, last + 1)
        with torch.no_grad() if frozen_until > 0 else nullcontext():
            h = self.adapter.stem(x)
            for i in range(frozen_until):
                h = self._stage(i, h)
                if i in self.return_stages:
                    out[str(len(out))] = h
        for i in range(frozen_until, last + 1):
            h = self._stage(i, h)
            if i in self.return_stages:
                out[str(len(out))] = h
        return out

    def _stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        ps = self.deltas[str(i)] if str(i) in self.deltas else None
        return self.adapter.run_stage(self.stages[i], h) if ps is None else ps.run(self.stages[i], h)

    def delta_parameters(self) -> list[nn.Parameter]:
        return list(self.deltas.parameters())
