"""What a claim check says and the numbers behind it: paired values, their summary, the seed-level
test, and the verdict rendered for a terminal (rich) or as JSON.

The test is the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``), one-sided in the claimed
direction, over the paired differences (one pair per cell and seed). Why not a paired t-test: the
pairs are few (3 seeds × a handful of datasets), accuracy differences are bounded and often skewed
(one dataset where a method collapses), and the t-test's normality assumption cannot be checked
on so few values; the signed-rank test needs only symmetry of the differences under the null.
Zero differences are dropped (scipy's default ``zero_method="wilcox"``). With n pairs, the
smallest one-sided p it can give is 1/2^n (0.125 for 3 pairs): a verdict never rests on p; p
says how much the seeds support it.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Sequence

import pandas as pd

PASS, FAIL, NOT_ENOUGH = "PASS", "FAIL", "NOT ENOUGH RUNS"
# Fewer pairs than this cannot show a direction beyond one seed's noise.
MIN_PAIRS = 3


def wilcoxon_greater(diffs: Sequence[float]) -> float | None:
    """One-sided Wilcoxon signed-rank p-value for H1 "the differences tend to be > 0"; None with
    fewer than :data:`MIN_PAIRS` differences or when every difference is zero (no ranks)."""
    if len(diffs) < MIN_PAIRS or all(d == 0 for d in diffs):
        return None
    from scipy.stats import wilcoxon

    return float(wilcoxon(list(diffs), alternative="greater").pvalue)


def pair(a_items: Iterable[tuple[Hashable, Hashable, float | None]],
         b_items: Iterable[tuple[Hashable, Hashable, float | None]]) -> pd.DataFrame:
    """Pairs by (cell, seed): ``a_items`` and ``b_items`` are ``(cell, seed, value)``; values of
    repeated keys are averaged (a job run twice), keys on one side only and missing values dropped.
    Columns: cell, seed, a, b, diff (a − b)."""
    def side(items, name):
        frame = pd.DataFrame(list(items), columns=["cell", "seed", name])
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
        return frame.dropna(subset=[name]).groupby(["cell", "seed"], sort=False, dropna=False)[name].mean()

    joined = pd.concat([side(a_items, "a"), side(b_items, "b")], axis=1, join="inner").reset_index()
    return joined.assign(diff=joined["a"] - joined["b"])


def _stat(values: Sequence[float]) -> dict[str, float | None]:
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals) if vals else None,
            "std": statistics.stdev(vals) if len(vals) > 1 else None}


@dataclass
class Verdict:
    """One claim's verdict: the statement, what PASS needs, and the numbers behind it."""

    claim: str
    verdict: str
    rule: str
    numbers: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the pairs (or runs) behind it
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "verdict": self.verdict, "rule": self.rule, "numbers": _clean(self.numbers),
                "rows": _clean(self.rows), "note": self.note}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def paired_verdict(claim: str, rule: str, pairs: pd.DataFrame, a_name: str, b_name: str,
                   holds: Callable[[pd.DataFrame], bool], min_pairs: int = MIN_PAIRS, note: str = "") -> Verdict:
    """The verdict of a paired claim "``a`` ≥ ``b``" on :func:`pair`'s frame (differences oriented
    so that the claim says ``diff`` ≥ 0): NOT ENOUGH RUNS below ``min_pairs`` pairs, else PASS
    when ``holds(pairs)``."""
    diffs = list(pairs["diff"])
    numbers = {"a": a_name, "b": b_name, "n_pairs": len(diffs), "n_cells": int(pairs["cell"].nunique()),
               "a_stat": _stat(pairs["a"]), "b_stat": _stat(pairs["b"]), "diff_stat": _stat(diffs),
               "positive": sum(d > 0 for d in diffs), "zero": sum(d == 0 for d in diffs),
               "negative": sum(d < 0 for d in diffs), "test": "Wilcoxon signed-rank, one-sided (a > b)",
               "p": wilcoxon_greater(diffs)}
    verdict = NOT_ENOUGH if len(diffs) < min_pairs else (PASS if holds(pairs) else FAIL)
    return Verdict(claim, verdict, rule, numbers, pairs.to_dict("records"), note)


def mean_diff_at_least_zero(pairs: pd.DataFrame) -> bool:
    """Rule: the mean paired difference over all pairs is ≥ 0."""
    return float(pairs["diff"].mean()) >= 0


def most_cells_at_least_zero(pairs: pd.DataFrame) -> bool:
    """Rule: in more than half of the cells, the mean difference over the cell's seeds is ≥ 0."""
    per_cell = pairs.groupby("cell", sort=False)["diff"].mean()
    return int((per_cell >= 0).sum()) * 2 > len(per_cell)


def most_pairs_positive(pairs: pd.DataFrame) -> bool:
    """Rule: the difference is strictly > 0 on more than half of the pairs."""
    return int((pairs["diff"] > 0).sum()) * 2 > len(pairs)


# ------------------------------------------------------------------------------ rendering
def _fmt(stat: dict[str, float | None], sign: bool = False) -> str:
    m, s = stat.get("mean"), stat.get("std")
    if m is None:
        return "–"
    text = f"{m:+.2f}" if sign else f"{m:.2f}"
    return text if s is None else f"{text} ± {s:.2f}"


def numbers_text(v: Verdict) -> str:
    """The numbers behind a verdict in one short paragraph."""
    n = v.numbers
    if "a_stat" not in n:  # claims over runs, not pairs: their own summary
        return n.get("summary", "")
    if not n["n_pairs"]:
        return "no pairs"
    p = n["p"]
    return (f"{n['a']} {_fmt(n['a_stat'])} vs {n['b']} {_fmt(n['b_stat'])}; a − b {_fmt(n['diff_stat'], True)} "
            f"over {n['n_pairs']} pair(s) in {n['n_cells']} cell(s) ({n['positive']}+ / {n['zero']}= / "
            f"{n['negative']}−); Wilcoxon one-sided p = {'n/a' if p is None else f'{p:.3g}'}")


def render(verdicts: Sequence[Verdict], title: str = "Claims") -> Any:
    """A rich Table: verdict, the claim with its rule (dimmed), the numbers behind it."""
    from rich.markup import escape
    from rich.table import Table

    colours = {PASS: "green", FAIL: "red", NOT_ENOUGH: "yellow"}
    table = Table(title=title, show_lines=True)
    table.add_column("Verdict", no_wrap=True)
    table.add_column("Claim (rule)", ratio=2)
    table.add_column("Numbers", ratio=3)
    for v in verdicts:
        numbers = numbers_text(v) + (f"\n{v.note}" if v.note else "")
        table.add_row(f"[{colours.get(v.verdict, 'white')}]{v.verdict}[/]",
                      f"{escape(v.claim)}\n[dim]{escape(v.rule)}[/]", escape(numbers))
    return table


__all__ = ["FAIL", "MIN_PAIRS", "NOT_ENOUGH", "PASS", "Verdict", "mean_diff_at_least_zero", "most_cells_at_least_zero",
           "most_pairs_positive", "numbers_text", "pair", "paired_verdict", "render", "wilcoxon_greater"]
