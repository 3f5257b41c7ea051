"""Which number a run contributes to a table cell (its metric) and how many parameters it trained."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..scores import aggregate_fn, aggregate_name, harmonic_mean, mean

if TYPE_CHECKING:
    from .runs import Run

# The scenarios whose score is an aggregate over base and tasks (deltapatch.scores decides which);
# others (transfer, zsda, from scratch...) are scored by their task accuracy unless results.json
# names a metric.
AGGREGATES = {name: aggregate_name(name) for name in ("single", "joint", "sequential")}


def aggregate(values: Iterable[float], how: str) -> float | None:
    """``hmean`` = harmonic mean, anything else the arithmetic mean (:mod:`deltapatch.scores`)."""
    return aggregate_fn("hmean" if how == "hmean" else "mean")(list(values))


def number(value: Any) -> float | None:
    """``value`` as a float when it is a (non-boolean, finite) JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def lookup(data: Mapping[str, Any], dotted: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``, None where a key is missing."""
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def metric_name(run: Run, metric: str = "auto") -> str:
    """Which number scores a run: ``auto`` = what results.json names (``metric``), else hmean
    (single, joint), mean (sequential), task accuracy (other scenarios, and from-scratch runs,
    whose base task is meaningless)."""
    if metric != "auto":
        return metric
    res = run.results
    if isinstance(res.get("metric"), str):
        return res["metric"]
    if res.get("base_source") == "scratch" or run.scenario not in AGGREGATES:
        return "task"
    agg = AGGREGATES[run.scenario]
    return agg if agg in res else ("mean" if "mean" in res else "hmean")


def metric_value(run: Run, metric: str = "auto") -> float | None:
    """The run's score under ``metric`` (see :func:`metric_name`): ``task`` = mean accuracy over its
    tasks, ``base`` = base accuracy after patching, else a (dotted) key of results.json."""
    name = metric_name(run, metric)
    res = run.results
    if name == "task":
        return mean(v for v in map(number, (res.get("tasks") or {}).values()) if v is not None)
    return number(res.get("base_acc_after") if name == "base" else lookup(res, name))


def trainable_params(run: Run) -> int | None:
    """Parameters one task trains (the paper's "# Parameters"): the largest over the run's tasks."""
    counts = [int(v) for v in map(number, (run.results.get("trainable_params") or {}).values()) if v is not None]
    return max(counts) if counts else None


__all__ = ["AGGREGATES", "aggregate", "harmonic_mean", "lookup", "mean", "metric_name", "metric_value", "number",
           "trainable_params"]
