"""A patched stage: the frozen sub-blocks plus every skip ``i < j`` weighted by its λ.

    h̃_j = B_j(h̃_{j-1}) + Σ_{i<j} λ_ij(x) · P_ij(h̃_i)

The frozen blocks are *not* registered as submodules here, so this module's state_dict holds
only the new weights and ``.train()`` on it never reaches the base model.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones.base import Stage
from .gates import GATES

BN_PLACEMENTS = ("out", "skips", "none")


def skip_pairs(k: int) -> list[tuple[int, int]]:
    """The (i, j) node pairs of a k-block stage, in λ column order: j ascending, then i."""
    return [(i, j) for j in range(1, k + 1) for i in range(j)]


class PatchedStage(nn.Module):
    def __init__(self, stage: Stage, bn_placement: str = "out", gate: str = "delta", gate_kwargs: dict | None = None):
        super().__init__()
        if bn_placement not in BN_PLACEMENTS:
            raise ValueError(f"bn_placement must be one of {BN_PLACEMENTS}, got '{bn_placement}'")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {sorted(GATES)}, got '{gate}'")
        self.k = len(stage.blocks)
        self.bn_placement = bn_placement
        self.gate = GATES[gate](stage.in_channels, stage.n_skips, **(gate_kwargs or {}))
        c = stage.out_channels
        if bn_placement == "out":
            self.norm = nn.BatchNorm2d(c)
        elif bn_placement == "skips":  # one BN per node on the sum of its incoming skips
            self.norm = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(self.k))
        else:
            self.norm = None

    @property
    def n_skips(self) -> int:
        return self.k * (self.k + 1) // 2

    def run(self, stage: Stage, h: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """The whole patched stage from its input: ``stage.pre`` (ConvNeXt's downsample), then
        :meth:`forward` on ``h_0``."""
        if stage.pre is not None:
            h = stage.pre(h)
        return self(h, stage, record)

    def forward(self, h0: torch.Tensor, stage: Stage, record: list | None = None) -> torch.Tensor:
        lam = self.gate(h0)
        if record is not None:
            record.append(lam.detach())
        lam = lam.to(h0.dtype)[:, :, None, None, None]  # [B, n_skips, 1, 1, 1]
        # P_0j is the same projection of h_0 for every j: compute it once
        p0 = stage.shortcut(h0) if stage.shortcut is not None else h0
        nodes = [p0]  # nodes[i] = P_i·(h̃_i), all shaped like the block outputs
        col = 0
        h = h0
        for j, block in enumerate(stage.blocks, start=1):
            skip = lam[:, col] * nodes[0]
            for i in range(1, j):
                skip = skip + lam[:, col + i] * nodes[i]
            col += j
            if self.bn_placement == "skips":
                skip = self.norm[j - 1](skip)
            h = block(h) + skip
            nodes.append(h)
        if self.bn_placement == "out":
            h = self.norm(h)
        return h
