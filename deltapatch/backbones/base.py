"""The view of a CNN that ∆-Networks needs: a stem, stages of sub-blocks, and a head.

An adapter never copies or changes the model it looks at; it only knows where the parts are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Stage:
    """One stage of a backbone, as DESIGN.md defines it.

    ``pre`` runs before the first sub-block (ConvNeXt's downsample); ``h_0`` is its output.
    ``shortcut`` maps ``h_0`` to the shape of the sub-block outputs (ResNet's frozen downsample
    of the first block), or is ``None`` when shapes already match (``P`` is the identity).
    """

    pre: nn.Module | None
    blocks: list[nn.Module]
    shortcut: nn.Module | None
    in_channels: int  # channels of h_0
    out_channels: int  # channels of h_1 .. h_k

    @property
    def n_skips(self) -> int:
        k = len(self.blocks)
        return k * (k + 1) // 2


class BackboneAdapter:
    """Splits one family of models into stem, stages and head. Subclass once per family."""

    #: model classes this adapter understands
    model_types: tuple[type, ...] = ()

    def __init__(self, model: nn.Module):
        self.model = model

    def stem(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def stages(self) -> list[Stage]:  # pragma: no cover - abstract
        raise NotImplementedError

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last stage -> pooled feature vector fed to the classifier."""
        raise NotImplementedError  # pragma: no cover

    def classifier(self) -> nn.Linear:
        """The base model's final linear layer."""
        raise NotImplementedError  # pragma: no cover

    @property
    def num_features(self) -> int:
        return self.classifier().in_features

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier()(self.pre_logits(x))

    def run_stage(self, stage: Stage, h: torch.Tensor) -> torch.Tensor:
        if stage.pre is not None:
            h = stage.pre(h)
        for block in stage.blocks:
            h = block(h)
        return h

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and every stage: the input of :meth:`pre_logits`."""
        h = self.stem(x)
        for stage in self.stages():
            h = self.run_stage(stage, h)
        return h


_ADAPTERS: list[type[BackboneAdapter]] = []


def register_adapter(cls: type[BackboneAdapter]) -> type[BackboneAdapter]:
    """Class decorator: make an adapter available to :func:`get_adapter`."""
    _ADAPTERS.append(cls)
    return cls


def get_adapter(model: nn.Module) -> BackboneAdapter:
    """The adapter for ``model``'s family; a clear error when there is none."""
    for cls in _ADAPTERS:
        if isinstance(model, cls.model_types):
            return cls(model)
    known = ", ".join(t.__module__ + "." + t.__name__ for c in _ADAPTERS for t in c.model_types)
    raise TypeError(
        f"deltapatch has no backbone adapter for {type(model).__module__}.{type(model).__name__}; "
        f"known model classes: {known}. Add one in deltapatch/backbones/ (see README)."
    )
