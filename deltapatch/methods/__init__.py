"""Methods: ∆-Networks and the baselines, one module each, all behind :class:`Method`."""
from .base import Method
from .delta import DeltaMethod, FinetuneDeltaMethod
from .heads import FCMethod, FinetuneMethod

__all__ = ["DeltaMethod", "FCMethod", "FinetuneDeltaMethod", "FinetuneMethod", "Method"]
