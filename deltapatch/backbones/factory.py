"""``create_backbone``: a name -> a plain torchvision/timm classifier, with pretrained weights
taken only from local caches or a local file unless the caller allows a download."""
from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from ..errors import ConfigError

# architecture -> default source. ResNets come from torchvision (the paper uses "official PyTorch"
# weights); ConvNeXt from timm (its stages match DESIGN.md's reading).
BACKBONES: dict[str, str] = {
    "resnet18": "torchvision",
    "resnet34": "torchvision",
    "resnet50": "torchvision",
    "resnet101": "torchvision",
    "resnext50_32x4d": "torchvision",
    "wide_resnet50_2": "torchvision",
    "convnext_tiny": "timm",
    "convnext_small": "timm",
    "convnext_base": "timm",
    "convnext_large": "timm",
}
SOURCES = ("torchvision", "timm")


class PretrainedWeightsError(ConfigError):
    """Pretrained weights were asked for but are not available offline."""


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def parse_name(name: str) -> tuple[str, str, str | None]:
    """``"resnet18"``, ``"torchvision/resnet18"``, ``"timm/resnet18"``, ``"resnet18.tv_in1k"``
    -> (source, architecture, timm pretrained tag or None)."""
    source = None
    if "/" in name:
        source, name = name.split("/", 1)
        if source == "tv":
            source = "torchvision"
    arch, _, tag = name.partition(".")
    if tag:  # only timm spells weights as "arch.tag"
        source = source or "timm"
    if arch not in BACKBONES or (source is not None and source not in SOURCES):
        raise ConfigError(
            f"unknown backbone '{name if source is None else source + '/' + name}'; "
            f"known: {', '.join(available_backbones())} "
            f"(prefix with torchvision/ or timm/ to pick the implementation)"
        )
    source = source or BACKBONES[arch]
    if source == "torchvision" and not hasattr(torchvision.models, arch):
        raise ConfigError(f"torchvision has no '{arch}'; use timm/{arch}")
    return source, arch, tag or None


def create_backbone(
    name: str,
    num_classes: int = 1000,
    pretrained: bool | str = False,
    download: bool = False,
    **kwargs,
) -> nn.Module:
    """Build a plain classifier by name.

    ``pretrained``: ``False`` (random init), ``True`` (hub weights from the local torchvision/timm
    cache; fetched only when ``download=True``), or a path to a local checkpoint (safetensors or a
    ``torch.save``'d state dict, read with ``weights_only=True``). Missing weights fail at once.
    When the pretrained head has another class count, a fresh head of ``num_classes`` replaces it.
    """
    source, arch, tag = parse_name(name)
    hub = pretrained is True
    n_hub = 1000 if hub else num_classes
    if source == "torchvision":
        model = _torchvision(arch, n_hub, hub, download, **kwargs)
    else:
        model = _timm(arch, tag, n_hub, hub, download, **kwargs)
    if isinstance(pretrained, (str, os.PathLike)):
        load_state_dict_file(model, pretrained)
    if hub and num_classes != 1000:
        _reset_head(model, num_classes)
    model.deltapatch_name = f"{source}/{arch}" + (f".{tag}" if tag else "")
    return model


def _torchvision(arch: str, num_classes: int, hub: bool, download: bool, **kwargs) -> nn.Module:
    builder = getattr(torchvision.models, arch)
    if not hub:
        return builder(weights=None, num_classes=num_classes, **kwargs)
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.exists() and not download:
        raise PretrainedWeightsError(
            f"pretrained weights for torchvision/{arch} are not in the cache ({cached}); "
            f"download them where there is a network (backbone.download=true), copy them there, "
            f"or set backbone.pretrained=/path/to/checkpoint"
        )
    return builder(weights=weights, **kwargs)


def _timm(arch: str, tag: str | None, num_classes: int, hub: bool, download: bool, **kwargs) -> nn.Module:
    full = f"{arch}.{tag}" if tag else arch
    if not hub:
        return timm.create_model(full, pretrained=False, num_classes=num_classes, **kwargs)
    if download:
        return timm.create_model(full, pretrained=True, **kwargs)
    cfg = timm.models.get_pretrained_cfg(full)
    local = _hf_cached_file(cfg.hf_hub_id) if cfg is not None and cfg.hf_hub_id else None
    if local is None:
        raise PretrainedWeightsError(
            f"pretrained weights for timm/{full} are not in the Hugging Face cache; download them "
            f"where there is a network (backbone.download=true) or set backbone.pretrained=/path/to/checkpoint"
        )
    return timm.create_model(full, pretrained=True, pretrained_cfg_overlay={"file": local}, **kwargs)


def _hf_cached_file(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo_id, filename)
        if isinstance(path, str) and os.path.exists(path):
            return path
    return None


def load_state_dict_file(model: nn.Module, path: str | os.PathLike) -> None:
    """Load weights from a local file without unpickling arbitrary objects."""
    from ..checkpoint import read_state_dict

    state = read_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint {path} does not fit this backbone: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def _reset_head(model: nn.Module, num_classes: int) -> None:
    if hasattr(model, "reset_classifier"):  # timm
        model.reset_classifier(num_classes)
    else:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
