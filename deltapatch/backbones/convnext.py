"""ConvNeXt and ConvNeXt-V2 (timm): stage i is ``stages[i]``; its downsample runs first (an
Identity in stage 0), sub-blocks are ``blocks`` (GRN and conv-MLP variants included)."""
from __future__ import annotations

import timm.models.convnext
import torch
from timm.layers import trunc_normal_
from torch import nn

from .base import BackboneAdapter, Stage, register_adapter


@register_adapter
class TimmConvNeXtAdapter(BackboneAdapter):
    model_types = (timm.models.convnext.ConvNeXt,)
    family = "timm ConvNeXt/ConvNeXt-V2"

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.stem(x)

    def stages(self) -> list[Stage]:
        chs = {f["module"]: f["num_chs"] for f in self.model.feature_info}
        out = []
        for i, stage in enumerate(self.model.stages):
            c = chs[f"stages.{i}"]
            # h_0 is taken after the downsample, so every skip of the stage is an identity
            out.append(Stage(pre=stage.downsample, blocks=list(stage.blocks.children()), shortcut=None,
                             in_channels=c, out_channels=c))
        return out

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm_pre(x), pre_logits=True)

    def classifier(self) -> nn.Linear:
        return self.model.head.fc

    def use_small_input(self) -> None:
        """The 4x4 stride-4 patchify conv becomes a fresh 2x2 stride-2 one (stage 0 at 16x16 for
        32 px); the overlapping stems (``*_ols``: two 3x3 stride-2 convs) get stride 1 in their
        first conv. Stage 0 keeps its Identity downsample (timm's own ``patch_size=2`` would add a
        stride-2 downsample to stage 0 instead)."""
        stem = self.model.stem
        conv = stem[0]
        if conv.kernel_size == conv.stride and conv.kernel_size[0] > 1:  # patchify
            new = nn.Conv2d(conv.in_channels, conv.out_channels, 2, stride=2, bias=conv.bias is not None)
            trunc_normal_(new.weight, std=0.02)  # timm's ConvNeXt init
            if new.bias is not None:
                nn.init.zeros_(new.bias)
            stem[0] = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        else:
            conv.stride = (1, 1)
