"""Input normalisation, size and interpolation of a backbone, read from the model's own pretrained
config (timm ``resolve_data_config``, torchvision weights' ``transforms()``), and the two
OmegaConf resolvers the backbone YAMLs use:

- ``${dp.data_config:mean}`` (``std``, ``input_size``, ``interpolation``, ``crop_pct``): that
  value for the model named in the same backbone node (``model.name``/``model.source``);
- ``${dp.name:}``: the node's short name (:func:`~deltapatch.backbones.names.config_name`).

Both read the node they sit in (``_parent_``), so they work wherever the backbone group is placed,
and a command-line value (``backbone.mean=[0.5,0.5,0.5]``) simply replaces the interpolation.
No network: timm's pretrained configs live in its code, torchvision's in its weights enums.
"""
from __future__ import annotations

from functools import lru_cache

import timm
import timm.data
import torchvision
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .names import config_name, parse_name

KEYS = ("mean", "std", "input_size", "interpolation", "crop_pct")


def data_config(name: str, source: str | None = None) -> dict:
    """``{"mean", "std", "input_size" [C, H, W], "interpolation", "crop_pct"}`` of the pretrained
    weights of backbone ``name`` (the default weights when no timm tag is given)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in _data_config(*parse_name(name, source))}  # copies


@lru_cache(maxsize=None)
def _data_config(source: str, arch: str, tag: str | None) -> tuple:
    if source == "timm":
        cfg = timm.get_pretrained_cfg(f"{arch}.{tag}" if tag else arch)
        dc = timm.data.resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
        out = {"mean": list(dc["mean"]), "std": list(dc["std"]), "input_size": list(dc["input_size"]),
               "interpolation": dc["interpolation"], "crop_pct": float(dc["crop_pct"])}
    else:
        try:
            t = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        except (ValueError, AttributeError):  # a builder without weights: ImageNet's usual numbers
            return (("mean", list(timm.data.IMAGENET_DEFAULT_MEAN)), ("std", list(timm.data.IMAGENET_DEFAULT_STD)),
                    ("input_size", [3, 224, 224]), ("interpolation", "bilinear"), ("crop_pct", 0.875))
        out = {"mean": list(t.mean), "std": list(t.std), "input_size": [3, t.crop_size[0], t.crop_size[0]],
               "interpolation": t.interpolation.value, "crop_pct": t.crop_size[0] / t.resize_size[0]}
    return tuple(out.items())


def _backbone_node(parent: DictConfig) -> tuple[str, str | None, bool]:
    model = parent.get("model") if parent is not None else None
    if model is None or model.get("name") is None:
        raise ConfigError("dp.data_config/dp.name belong in a backbone config with model.name")
    return str(model.name), model.get("source"), bool(model.get("small_input", False))


def _resolve_data_config(key: str, _parent_: DictConfig):
    if key not in KEYS:
        raise ConfigError(f"dp.data_config: unknown key '{key}'; one of {', '.join(KEYS)}")
    name, source, _ = _backbone_node(_parent_)
    return data_config(name, source)[key]


def _resolve_name(_parent_: DictConfig) -> str:
    name, source, small = _backbone_node(_parent_)
    return config_name(name, source, small)


OmegaConf.register_new_resolver("dp.data_config", _resolve_data_config, replace=True)
OmegaConf.register_new_resolver("dp.name", _resolve_name, replace=True)
