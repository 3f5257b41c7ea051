"""Methods: ∆-Networks and the baselines, one module each, all behind :class:`Method`."""
from .ablations import LearnableSkipMethod
from .adapters import ParallelAdapterMethod, ResidualAdapterMethod, SeriesAdapterMethod
from .base import Method
from .bn_adapt import BNAdaptMethod
from .delta import DeltaMethod, FinetuneDeltaMethod
from .heads import FCMethod, FinetuneMethod
from .lora import LoRAMethod
from .paint import ClippedAdamW, PaintMethod

__all__ = ["BNAdaptMethod", "ClippedAdamW", "DeltaMethod", "FCMethod", "FinetuneDeltaMethod", "FinetuneMethod",
           "LearnableSkipMethod", "LoRAMethod", "Method", "PaintMethod", "ParallelAdapterMethod",
           "ResidualAdapterMethod", "SeriesAdapterMethod"]
