"""ResNet family (torchvision and timm): stages are layer1..layer4, sub-blocks their blocks."""
from __future__ import annotations

import timm.models.resnet
import torch
import torchvision.models.resnet
from torch import nn

from .base import BackboneAdapter, Stage, register_adapter


def _block_out_channels(block: nn.Module) -> int:
    # Bottleneck ends in bn3, BasicBlock in bn2 (same names in torchvision and timm)
    bn = getattr(block, "bn3", None) or block.bn2
    return bn.num_features


class _ResNetStages(BackboneAdapter):
    def stages(self) -> list[Stage]:
        out = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            blocks = list(getattr(self.model, name).children())
            out.append(
                Stage(
                    pre=None,
                    blocks=blocks,
                    shortcut=blocks[0].downsample,  # P_0j reuses the frozen projection (or None)
                    in_channels=blocks[0].conv1.in_channels,
                    out_channels=_block_out_channels(blocks[-1]),
                )
            )
        return out

    def classifier(self) -> nn.Linear:
        return self.model.fc


@register_adapter
class TorchvisionResNetAdapter(_ResNetStages):
    model_types = (torchvision.models.resnet.ResNet,)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.maxpool(m.relu(m.bn1(m.conv1(x))))

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model.avgpool(x), 1)


@register_adapter
class TimmResNetAdapter(_ResNetStages):
    model_types = (timm.models.resnet.ResNet,)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.maxpool(m.act1(m.bn1(m.conv1(x))))

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=True)
