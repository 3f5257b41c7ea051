"""The view of a CNN that ∆-Networks needs: a stem, stages of sub-blocks, and a head.

An adapter never copies or changes the model it looks at; it only knows where the parts are.
Adapters are found by the model's class: :func:`register_adapter` is the list of supported
families, and a family is supported for every model of its classes, whatever its name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError


class UnsupportedBackboneError(ConfigError, TypeError):
    """No adapter knows this model's class. A :class:`ConfigError` for entry points (one line,
    exit 2) and a ``TypeError`` for code that passes an arbitrary module to ``DeltaNetwork``."""


@dataclass
class Stage:
    """One stage of a backbone, as DESIGN.md defines it.

    ``pre`` runs before the first sub-block (ConvNeXt's downsample); ``h_0`` is its output.
    ``shortcut`` maps ``h_0`` to the shape of the sub-block outputs (ResNet's frozen downsample
    of the first block, whatever it is: a 1x1 conv, avg-pool + 1x1 conv, ...), or is ``None``
    when shapes already match (``P`` is the identity).
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
    """Splits one family of models into stem, stages and head. Subclass once per family, decorate
    with :func:`register_adapter`, and put the module in ``deltapatch/backbones/``: the package
    imports every module there, so nothing else needs to list it."""

    #: model classes this adapter understands (subclasses included)
    model_types: tuple[type, ...] = ()
    #: a short label for messages and listings, e.g. "timm ConvNeXt"
    family: str = ""

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

    def use_small_input(self) -> None:
        """Rebuild the stem in place for 32-px inputs (random init; before weights are loaded)."""
        raise ConfigError(f"small_input is not available for {self.family or type(self.model).__name__} models")

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
    """Class decorator: make an adapter available to :func:`get_adapter` (and its model classes
    to ``create_backbone``, the configs and ``available_backbones``)."""
    if cls not in _ADAPTERS:
        _ADAPTERS.append(cls)
    return cls


def registered_adapters() -> list[type[BackboneAdapter]]:
    """Every registered adapter class, in registration order."""
    return list(_ADAPTERS)


def adapter_class(model_type: type) -> type[BackboneAdapter] | None:
    """The adapter for models of class ``model_type`` (or a subclass), or None."""
    for cls in _ADAPTERS:
        if issubclass(model_type, cls.model_types):
            return cls
    return None


def supported_families() -> str:
    """One line naming every supported model class, for error messages."""
    return "; ".join(
        f"{c.family or c.__name__} ({', '.join(t.__module__ + '.' + t.__name__ for t in c.model_types)})"
        for c in _ADAPTERS
    )


def get_adapter(model: nn.Module) -> BackboneAdapter:
    """The adapter for ``model``'s family; :class:`UnsupportedBackboneError` when there is none."""
    cls = adapter_class(type(model))
    if cls is None:
        raise UnsupportedBackboneError(
            f"deltapatch has no backbone adapter for {type(model).__module__}.{type(model).__name__}; "
            f"supported: {supported_families()}. Add one in deltapatch/backbones/ (see README)."
        )
    return cls(model)
