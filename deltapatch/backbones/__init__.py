"""Backbones as stem, stages of sub-blocks, and head. One adapter per model family."""
from . import convnext, resnet  # noqa: F401  (register the adapters)
from .base import BackboneAdapter, Stage, get_adapter, register_adapter
from .factory import BACKBONES, PretrainedWeightsError, available_backbones, create_backbone, parse_name

__all__ = ["BACKBONES", "BackboneAdapter", "PretrainedWeightsError", "Stage", "available_backbones",
           "create_backbone", "get_adapter", "parse_name", "register_adapter"]
