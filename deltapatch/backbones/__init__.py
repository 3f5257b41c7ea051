"""Backbones as stem, stages of sub-blocks, and head. One adapter per model family.

Every module of this package is imported here, so a new family is one module with a
``@register_adapter`` class (plus a ``conf/backbone/*.yaml`` if it wants a short name).
"""
import importlib
import pkgutil

from .base import BackboneAdapter, Stage, UnsupportedBackboneError, get_adapter, register_adapter
from .data_config import data_config  # also registers the dp.* OmegaConf resolvers
from .factory import PretrainedWeightsError, create_backbone
from .names import available_backbones, backbone_families, config_name, parse_name


def import_adapter_modules() -> None:
    """Import every module of this package, so each ``@register_adapter`` in them runs."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


import_adapter_modules()

__all__ = ["BackboneAdapter", "PretrainedWeightsError", "Stage", "UnsupportedBackboneError", "available_backbones",
           "backbone_families", "config_name", "create_backbone", "data_config", "get_adapter", "parse_name",
           "register_adapter"]
