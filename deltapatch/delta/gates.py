"""Where the skip weights λ come from.

``delta`` is the paper's input-conditioned ∆-module; the others are the ablations of Table 8:
a static learned weight per skip, a constant weight (all skips on), and random weights.
"""
from __future__ import annotations

import torch
from torch import nn


class DeltaModule(nn.Module):
    """conv3x3(C→C/2) → BN → ReLU → conv3x3(C/2→C/2) → BN → ReLU → pool → linear → sigmoid.

    Input ``h_0`` of its stage ``[B, C, H, W]``; output λ ``[B, n_skips]`` in [0, 1].
    """

    def __init__(self, in_channels: int, n_skips: int, hidden: int | None = None):
        super().__init__()
        h = hidden or max(in_channels // 2, 1)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, h, 3, padding=1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, padding=1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.fc = nn.Linear(h, n_skips)

    def forward(self, h0: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.features(h0)))


class StaticGate(nn.Module):
    """One learned weight per skip, the same for every input (``all_skips_learnable``)."""

    def __init__(self, in_channels: int, n_skips: int, init: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((n_skips,), float(init)))

    def forward(self, h0: torch.Tensor) -> torch.Tensor:
        return self.weight.expand(h0.shape[0], -1)


class ConstantGate(nn.Module):
    """Every skip weighted by a fixed value (``all_skips``: 1; 0 switches the skips off)."""

    def __init__(self, in_channels: int, n_skips: int, value: float = 1.0):
        super().__init__()
        self.n_skips, self.value = n_skips, float(value)

    def forward(self, h0: torch.Tensor) -> torch.Tensor:
        return h0.new_full((h0.shape[0], self.n_skips), self.value)


class RandomGate(nn.Module):
    """λ ~ U(0, 1) per sample and skip (``random_lambda``); 0.5 at evaluation for a stable score."""

    def __init__(self, in_channels: int, n_skips: int):
        super().__init__()
        self.n_skips = n_skips

    def forward(self, h0: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.rand(h0.shape[0], self.n_skips, device=h0.device, dtype=h0.dtype)
        return h0.new_full((h0.shape[0], self.n_skips), 0.5)


GATES: dict[str, type[nn.Module]] = {
    "delta": DeltaModule,
    "static": StaticGate,
    "constant": ConstantGate,
    "random": RandomGate,
}
