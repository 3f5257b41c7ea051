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
from .base import get_adapter
from .names import SMALL_INPUT_SUFFIX, parse_name


class PretrainedWeightsError(ConfigError):
    """Pretrained weights were asked for but are not available offline."""


def create_backbone(
    name: str,
    num_classes: int = 1000,
    pretrained: bool | str = False,
    download: bool = False,
    *,
    small_input: bool = False,
    source: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a plain classifier by name: any ResNet/ConvNeXt of timm or torchvision (see
    :func:`~deltapatch.backbones.names.parse_name` for the spellings; ``source`` is the library
    tried first for a name without a ``timm/``/``torchvision/`` prefix).

    ``pretrained``: ``False`` (random init), ``True`` (hub weights from the local torchvision/timm
    cache; fetched only when ``download=True``), or a path to a local checkpoint (safetensors or a
    ``torch.save``'d state dict, read with ``weights_only=True``). Missing weights fail at once.
    When the pretrained head has another class count, a fresh head of ``num_classes`` replaces it.
    ``small_input=True`` swaps the stem for 32-px images (the family adapter's ``use_small_input``);
    hub weights do not fit that stem, a checkpoint made with it does.
    """
    src, arch, tag = parse_name(name, source)
    hub = pretrained is True
    if small_input and hub:
        raise ConfigError(f"small_input=true replaces the stem of {src}/{arch}, so its pretrained hub weights "
                          f"do not fit; use pretrained=false or a checkpoint made with small_input")
    n_hub = 1000 if hub else num_classes
    if src == "torchvision":
        model = _torchvision(arch, n_hub, hub, download, **kwargs)
    else:
        model = _timm(arch, tag, n_hub, hub, download, **kwargs)
    adapter = get_adapter(model)  # an unannotated builder of another family is refused here
    if small_input:
        adapter.use_small_input()
    if isinstance(pretrained, (str, os.PathLike)):
        load_state_dict_file(model, pretrained)
    if hub and num_classes != 1000:
        _reset_head(model, num_classes)
    # patch files record this name: a patch for one stem is refused on the other
    model.deltapatch_name = f"{src}/{arch}" + (f".{tag}" if tag else "") + (SMALL_INPUT_SUFFIX if small_input else "")
    return model


def _torchvision(arch: str, num_classes: int, hub: bool, download: bool, **kwargs) -> nn.Module:
    builder = torchvision.models.get_model_builder(arch)
    if not hub:
        return builder(weights=None, num_classes=num_classes, **kwargs)
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.exists() and not download:
        raise PretrainedWeightsError(
            f"pretrained weights for torchvision/{arch} are not in the cache ({cached}); "
            f"download them where there is a network (backbone.model.download=true), copy them there, "
            f"or set backbone.model.pretrained=/path/to/weights.safetensors"
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
            f"where there is a network (backbone.model.download=true) or set "
            f"backbone.model.pretrained=/path/to/weights.safetensors"
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
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ: e.g. a checkpoint of the other stem (small_input)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise ConfigError(f"checkpoint {path} does not fit this backbone: {lines[min(1, len(lines) - 1)]}") from None
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
