"""ResNet family (torchvision and timm): stages are layer1..layer4, sub-blocks their blocks.

Every model of these classes works, whatever its stem or blocks: timm's deep stems (``resnet26``,
``resnet50d``, ``resnet10t``), avg-pool shortcuts (``*d``; P_0j is the first block's own frozen
``downsample``, whatever it holds), SE/ECA inside blocks (blocks run whole), ResNeXt, Wide ResNet,
Res2Net, ResNeSt, SK-ResNet.
"""
from __future__ import annotations

import timm.models.resnet
import torch
import torchvision.models.resnet
from torch import nn

from .base import BackboneAdapter, Stage, register_adapter

LAYERS = ("layer1", "layer2", "layer3", "layer4")


def small_resnet_stem(model: nn.Module) -> None:
    """The 32-px stem (CIFAR-style): a plain 7x7 stride-2 ``conv1`` becomes a fresh 3x3 stride-1
    conv; a deep stem (a Sequential of 3x3 convs) keeps its convs and only its first conv's stride
    becomes 1. The max-pool stays, so a 32-px image reaches ``layer1`` at 16x16."""
    conv = model.conv1
    if isinstance(conv, nn.Conv2d):
        new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")  # as both libraries init convs
        if new.bias is not None:
            nn.init.zeros_(new.bias)
        model.conv1 = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    else:
        first = next(m for m in conv.modules() if isinstance(m, nn.Conv2d))
        first.stride = (1, 1)


class _ResNetStages(BackboneAdapter):
    def stage_channels(self) -> list[tuple[int, int]]:  # pragma: no cover - abstract
        """(channels of h_0, channels of the block outputs) per stage."""
        raise NotImplementedError

    def stages(self) -> list[Stage]:
        out = []
        for name, (c_in, c_out) in zip(LAYERS, self.stage_channels()):
            blocks = list(getattr(self.model, name).children())
            # P_0j reuses the first block's frozen projection (None: shapes already match)
            out.append(Stage(pre=None, blocks=blocks, shortcut=blocks[0].downsample,
                             in_channels=c_in, out_channels=c_out))
        return out

    def classifier(self) -> nn.Linear:
        return self.model.fc

    def use_small_input(self) -> None:
        small_resnet_stem(self.model)


@register_adapter
class TorchvisionResNetAdapter(_ResNetStages):
    model_types = (torchvision.models.resnet.ResNet,)
    family = "torchvision ResNet/ResNeXt/Wide ResNet"

    def stage_channels(self) -> list[tuple[int, int]]:
        out = []
        for name in LAYERS:
            blocks = list(getattr(self.model, name).children())
            last = blocks[-1]
            # Bottleneck ends in conv3, BasicBlock in conv2
            out.append((blocks[0].conv1.in_channels, (getattr(last, "conv3", None) or last.conv2).out_channels))
        return out

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.maxpool(m.relu(m.bn1(m.conv1(x))))

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model.avgpool(x), 1)


@register_adapter
class TimmResNetAdapter(_ResNetStages):
    model_types = (timm.models.resnet.ResNet,)
    family = "timm ResNet"

    def stage_channels(self) -> list[tuple[int, int]]:
        # timm records every stage's width in feature_info (stem first), whatever the block type
        # (Res2Net, ResNeSt and SK blocks have no plain conv1/conv3 to read them from)
        chs = {f["module"]: f["num_chs"] for f in self.model.feature_info}
        prev = [self.model.feature_info[0]["module"], *LAYERS[:-1]]
        return [(chs[p], chs[name]) for p, name in zip(prev, LAYERS)]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.maxpool(m.act1(m.bn1(m.conv1(x))))

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=True)
