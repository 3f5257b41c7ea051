"""Methods: ∆-Networks and the baselines, one module each, all behind :class:`Method`.

Every module of this package is imported here, so each ``@register_method`` class is in the
registry (:func:`available_methods`, :func:`create_method`); a new method needs no line here.
The names below are re-exported for convenience.
"""
import importlib
import pkgutil

from .base import Method, Scorer, available_methods, create_method, method_class, register_method

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

from .ablations import LearnableSkipMethod  # noqa: E402
from .adapters import ParallelAdapterMethod, ResidualAdapterMethod, SeriesAdapterMethod  # noqa: E402
from .bn_adapt import BNAdaptMethod  # noqa: E402
from .delta import DeltaMethod, FinetuneDeltaMethod  # noqa: E402
from .heads import FCMethod, FinetuneMethod  # noqa: E402
from .lora import LoRAMethod  # noqa: E402
from .paint import ClippedAdamW, PaintMethod  # noqa: E402

__all__ = ["BNAdaptMethod", "ClippedAdamW", "DeltaMethod", "FCMethod", "FinetuneDeltaMethod", "FinetuneMethod",
           "LearnableSkipMethod", "LoRAMethod", "Method", "PaintMethod", "ParallelAdapterMethod",
           "ResidualAdapterMethod", "Scorer", "SeriesAdapterMethod", "available_methods", "create_method",
           "method_class", "register_method"]
