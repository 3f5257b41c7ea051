"""ConvNeXt (timm): stage i is ``stages[i]``; its downsample runs first, sub-blocks are ``blocks``."""
from __future__ import annotations

import timm.models.convnext
import torch
from torch import nn

from .base import BackboneAdapter, Stage, register_adapter


@register_adapter
class TimmConvNeXtAdapter(BackboneAdapter):
    model_types = (timm.models.convnext.ConvNeXt,)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.stem(x)

    def stages(self) -> list[Stage]:
        out = []
        for stage in self.model.stages:
            blocks = list(stage.blocks.children())
            channels = blocks[0].conv_dw.in_channels
            # h_0 is taken after the downsample, so every skip of the stage is an identity
            out.append(Stage(pre=stage.downsample, blocks=blocks, shortcut=None,
                             in_channels=channels, out_channels=channels))
        return out

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm_pre(x), pre_logits=True)

    def classifier(self) -> nn.Linear:
        return self.model.head.fc
