"""How a run's accuracies become one number: the harmonic mean of base and task accuracies
(single and joint patching) or their mean (sequential patching), paper Section 3.1.

A leaf module: the runner, the metrics, PAINT's α choice and reporting all decide here.
"""
from __future__ import annotations

import statistics
from typing import Callable, Sequence

AGGREGATES = ("hmean", "mean")


def harmonic_mean(values: Sequence[float | None]) -> float | None:
    """Harmonic mean of ``values``; ``None`` when any is missing, 0 when any is 0."""
    vals = [v for v in values if v is not None]
    if len(vals) != len(values) or not vals:
        return None
    return statistics.harmonic_mean(vals) if all(v > 0 for v in vals) else 0.0


def mean(values: Sequence[float | None]) -> float | None:
    """Arithmetic mean of the values that are not ``None`` (``None`` when there are none)."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate_name(scenario: str) -> str:
    """``mean`` for sequential patching, ``hmean`` for everything else."""
    return "mean" if scenario == "sequential" else "hmean"


def aggregate_fn(name: str) -> Callable[[Sequence[float | None]], float | None]:
    """The function behind an aggregate name (``hmean`` or ``mean``)."""
    if name not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got '{name}'")
    return harmonic_mean if name == "hmean" else mean


def aggregate_for(scenario: str) -> tuple[str, Callable[[Sequence[float | None]], float | None]]:
    """``(name, function)`` of the scenario's aggregate: ``("mean", mean)`` for sequential,
    ``("hmean", harmonic_mean)`` otherwise."""
    name = aggregate_name(scenario)
    return name, aggregate_fn(name)
