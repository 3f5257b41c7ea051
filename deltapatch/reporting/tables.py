"""Tables shaped like the paper's, from every ``results.json`` under a folder of runs.

One table per (experiment, scenario): rows are backbone × method (× n_deltas for runs with
∆-modules), columns the datasets (single), task sets (joint, sequential), sample rates (transfer)
or domain pairs (zsda), a cell the harmonic mean (single, joint) or mean (sequential) of top-1
accuracies, or the run's own metric, as mean ± sample std over the seeds found. Beside it a
per-task table (the paper's Table 10: base and task accuracy) and, where PAINT runs kept their α
sweep, the α tables (Table 11, :mod:`.alpha`).

Everything here reads plain JSON (and, when present, the run's ``.hydra/config.yaml`` for keys
results.json does not carry, such as ``dataset.sample_rate``); nothing is trained or loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from .alpha import alpha_tables
from .frame import Table, summarise
from .labels import (RowKey, backbone_label, column_of, format_params, row_key, row_label, row_sort_key, slug,
                     task_names)
from .runs import Run, groups
from .values import metric_name, metric_value, number, trainable_params

# scenarios that keep and score a base task next to the new ones (Table 10's base/task columns)
BASE_TASK_SCENARIOS = ("single", "joint", "sequential")
MAIN_LABELS = ["Architecture", "Method", "# Params"]


def ranked_rows(runs: Sequence[Run]) -> dict[RowKey, int]:
    """Each row key of ``runs`` and its position in the paper's order."""
    return {k: i for i, k in enumerate(sorted({row_key(r) for r in runs}, key=row_sort_key))}


def columns_of(runs: Sequence[Run]) -> list[str]:
    """The runs' columns in first-seen order (the order of the sweep)."""
    return list(dict.fromkeys(column_of(r) for r in runs))


def row_meta(keys: Sequence[RowKey]) -> pd.DataFrame:
    """CSV-only columns naming each row's key in config terms."""
    meta = pd.DataFrame([k._asdict() for k in keys], columns=list(RowKey._fields))
    meta["n_deltas"] = meta["n_deltas"].astype("Int64")
    return meta


def seeds_note(runs: Sequence[Run]) -> str:
    seeds = sorted({str(r.seed) for r in runs})
    n = len({r.path for r in runs})  # derived rows (a zsda run's vanilla model) are not runs of their own
    text = f"{n} run{'s' if n != 1 else ''}, seeds {', '.join(seeds)}"
    if len(seeds) > 1:
        text += "; cells are mean ± sample std over seeds"
    return text + "."


def main_table(experiment: str, scenario: str, runs: Sequence[Run], metric: str = "auto") -> Table:
    """The paper's main-table shape (Tables 1–6, 8, 12–13): rows backbone × method, a parameter
    column, one column per dataset / task set / sample rate / domain pair, cell = metric as
    mean ± std over seeds."""
    ranks = ranked_rows(runs)
    params: dict[RowKey, list[int]] = {k: [] for k in ranks}
    for r in runs:
        if (p := trainable_params(r)) is not None:
            params[row_key(r)].append(p)
    obs = pd.DataFrame([{"rank": ranks[k], "Architecture": backbone_label(k.backbone), "Method": row_label(k),
                         "# Params": format_params(params[k]), "column": column_of(r), "value": metric_value(r, metric)}
                        for r in runs for k in [row_key(r)]])
    labels, stats = summarise(obs, MAIN_LABELS, columns_of(runs))
    meta = row_meta(list(ranks))
    meta["params_min"] = pd.array([min(params[k], default=None) for k in ranks], dtype="Int64")
    meta["params_max"] = pd.array([max(params[k], default=None) for k in ranks], dtype="Int64")
    names = " / ".join(sorted({metric_name(r, metric) for r in runs}))
    return Table(slug(experiment, scenario), f"{experiment} — {scenario} ({names}, %)", labels, stats,
                 note=seeds_note(runs), meta=meta)


def per_task_table(experiment: str, scenario: str, runs: Sequence[Run]) -> Table:
    """The paper's Table 10 shape: for each column, the base accuracy after patching and every
    task's accuracy (single-task runs call their one task ``task``)."""
    ranks = ranked_rows(runs)
    sub: dict[str, list[str]] = {c: ["base"] for c in columns_of(runs)}
    obs = []
    for r in runs:
        col, k = column_of(r), row_key(r)
        row = {"rank": ranks[k], "Architecture": backbone_label(k.backbone), "Method": row_label(k)}
        obs.append(row | {"column": f"{col} · base", "value": r.results.get("base_acc_after")})
        tasks = r.results.get("tasks") or {}
        for t in task_names(r.results):
            v = tasks[t]
            label = "task" if scenario == "single" and len(tasks) == 1 else t
            if label not in sub[col]:
                sub[col].append(label)
            obs.append(row | {"column": f"{col} · {label}", "value": v})
    value_cols = [f"{c} · {t}" for c, names in sub.items() for t in names]
    labels, stats = summarise(pd.DataFrame(obs), ["Architecture", "Method"], value_cols)
    return Table(slug(experiment, scenario, "per_task"), f"{experiment} — {scenario}: top-1 accuracy per task (%)",
                 labels, stats, note=seeds_note(runs), meta=row_meta(list(ranks)))


def runs_frame(runs: Sequence[Run], metric: str = "auto") -> pd.DataFrame:
    """One row per run (long format, for pandas / spreadsheets); ``n_deltas`` as reporting reads
    it (empty for methods without ∆-modules)."""
    rows = []
    for r in runs:
        res = r.results
        value = metric_value(r, metric)
        rows.append({"experiment": r.experiment, "scenario": r.scenario, "backbone": r.backbone, "method": r.method,
                     "n_deltas": r.n_deltas, "seed": r.seed, "column": column_of(r),
                     "metric": metric_name(r, metric), "value": value,
                     "base_acc_before": number(res.get("base_acc_before")),
                     "base_acc_after": number(res.get("base_acc_after")), "trainable_params": trainable_params(r),
                     "train_seconds": number(res.get("train_seconds")), "tasks": json.dumps(res.get("tasks") or {}),
                     "run_dir": str(r.path)})
    frame = pd.DataFrame(rows)
    for col in ("n_deltas", "trainable_params"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame.round(6)


@dataclass
class Report:
    tables: list[Table]
    runs: list[Run]

    def markdown(self) -> str:
        if not self.runs:
            return "No results.json found.\n"
        return "\n".join(t.markdown() for t in self.tables)


def build_report(runs: Sequence[Run], metric: str = "auto", per_task: bool = True, alpha: bool = True) -> Report:
    """Every table for ``runs``: per (experiment, scenario) the main table, the per-task table and
    the PAINT α tables (where α sweeps exist)."""
    tables: list[Table] = []
    for (experiment, scenario), rs in groups(runs).items():
        tables.append(main_table(experiment, scenario, rs, metric))
        if per_task and scenario in BASE_TASK_SCENARIOS:  # elsewhere it would repeat the main table
            tables.append(per_task_table(experiment, scenario, rs))
        if alpha:
            tables += alpha_tables(experiment, scenario, rs)
    return Report(tables, list(runs))


def write_report(report: Report, out_dir: str | Path, metric: str = "auto") -> dict[str, Path]:
    """``report.md`` (every table), per table ``<key>.csv`` and ``<key>.tex`` beside it, and
    ``runs.csv`` (one row per run). Everything is rendered before the first file is written."""
    files = {"report.md": report.markdown()}
    for t in report.tables:
        files.update(t.files())
    files["runs.csv"] = runs_frame(report.runs, metric).to_csv(index=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    keys = {"report.md": "markdown", "runs.csv": "runs"}
    return {keys.get(name, name.removesuffix(".csv")): out / name for name in files}


__all__ = ["Report", "build_report", "main_table", "per_task_table", "runs_frame", "write_report"]
