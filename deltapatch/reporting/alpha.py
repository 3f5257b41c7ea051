"""PAINT's α sweep as the paper's Table 11: per α, test accuracy of the base and every task, the
test aggregate and the validation aggregate that chose α (marked ``*``); the runs with
∆-modules of the same backbone and column as flat rows (they do not depend on α)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import pandas as pd

from .frame import Table, summarise
from .labels import (BACKBONE_ORDER, backbone_label, column_of, order, row_key, row_label, row_sort_key, slug,
                     task_names)
from .runs import Run
from .values import aggregate, metric_name, metric_value, number


def final_sweep(run: Run) -> tuple[list[dict], str, float | None] | None:
    """The α sweep of a run's last swept task (sequential: the final model on every task so far),
    the aggregate that selected α and the α chosen; None for runs without a sweep."""
    extra = run.results.get("extra") or {}
    for task in reversed(task_names(run.results, "extra")):
        info = extra[task] or {}
        if info.get("alpha_sweep"):
            return info["alpha_sweep"], str(info.get("selection") or metric_name(run)), number(info.get("alpha"))
    return None


def cells_by_backbone_and_column(runs: Sequence[Run]) -> list[tuple[tuple[str, str], list[Run]]]:
    """Runs by (backbone, column), backbones in the paper's order."""
    by_cell: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        by_cell[(r.backbone, column_of(r))].append(r)
    return sorted(by_cell.items(), key=lambda kv: (order(BACKBONE_ORDER, kv[0][0]), kv[0][1]))


def _sweep_obs(sweeps: Sequence[tuple[Run, tuple[list[dict], str, float | None]]], selection: str
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """One observation per (α, value) of every sweep, and the keys: base, then the tasks in task_order."""
    alphas = sorted({float(row["alpha"]) for _, (sweep, _, _) in sweeps for row in sweep})
    chosen = {a for _, (_, _, a) in sweeps if a is not None}
    keys: list[str] = []
    obs = []
    for _, (sweep, sel, _) in sweeps:
        for row in sweep:
            a = float(row["alpha"])
            label = {"rank": alphas.index(a), "Method": "PAINT", "α": f"{a:g}{' *' if a in chosen else ''}"}
            test, val = row.get("test") or {}, row.get("val") or {}
            for k, v in test.items():
                if k != sel:
                    keys.append(k)
                    obs.append(label | {"column": f"test {k}", "value": v})
            obs.append(label | {"column": f"test {selection}", "value": test.get(sel)})
            obs.append(label | {"column": f"val {selection}", "value": val.get(sel)})
    ranked = ["base"] + [t for run, _ in sweeps for t in task_names(run.results)]  # sequential: training order
    return obs, sorted(dict.fromkeys(keys), key=lambda k: ranked.index(k) if k in ranked else len(ranked))


def _flat_obs(cell_runs: Sequence[Run], keys: Sequence[str], selection: str, first_rank: int) -> list[dict[str, Any]]:
    """Observations of the cell's runs with ∆-modules, scored like the sweep's rows."""
    delta_runs = [r for r in cell_runs if r.n_deltas is not None]
    ranks = {k: first_rank + i for i, k in enumerate(sorted({row_key(r) for r in delta_runs}, key=row_sort_key))}
    obs = []
    for r in delta_runs:
        key, res = row_key(r), r.results
        label = {"rank": ranks[key], "Method": row_label(key), "α": "–"}
        accs = {"base": res.get("base_acc_after"), **(res.get("tasks") or {})}
        obs += [label | {"column": f"test {k}", "value": accs.get(k)} for k in keys]
        test = res.get(selection) if selection in res else metric_value(r)
        vals = [v for v in map(number, (res.get("val") or {}).values()) if v is not None]
        obs.append(label | {"column": f"test {selection}", "value": test})
        obs.append(label | {"column": f"val {selection}", "value": aggregate(vals, selection) if vals else None})
    return obs


def alpha_tables(experiment: str, scenario: str, runs: Sequence[Run]) -> list[Table]:
    """The paper's Table 11 shape, one table per (backbone, column) that has PAINT α sweeps: a row
    per α with test accuracy of the base and every task, the test aggregate, and the validation
    aggregate that chose α (``*``); the ∆ runs of the same backbone and column follow as flat rows."""
    tables = []
    for (backbone, col), cell_runs in cells_by_backbone_and_column(runs):
        sweeps = [(r, s) for r in cell_runs if (s := final_sweep(r)) is not None]
        if not sweeps:
            continue
        selection = sweeps[0][1][1]
        obs, keys = _sweep_obs(sweeps, selection)
        n_alphas = len({o["rank"] for o in obs})
        obs += _flat_obs(cell_runs, keys, selection, n_alphas)
        columns = [f"test {k}" for k in keys] + [f"test {selection}", f"val {selection}"]
        labels, stats = summarise(pd.DataFrame(obs), ["Method", "α"], columns)
        tables.append(Table(slug(experiment, scenario, "alpha", backbone, col),
                            f"{experiment} — {scenario}: PAINT α sweep, {backbone_label(backbone)}, {col} (%)",
                            labels, stats, note=f"* = α chosen on validation by {selection}; "
                                                f"{len(sweeps)} PAINT run(s); ∆ rows do not depend on α."))
    return tables


__all__ = ["alpha_tables", "cells_by_backbone_and_column", "final_sweep"]
