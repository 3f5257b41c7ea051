"""The paper's figures as PNG files (matplotlib, Agg backend: no display needed).

- :func:`plot_lambda_heatmap`: mean λ per stage and skip (Figures 3–6), from ``{stage: [λ per skip]}``
  (drawn by :mod:`deltapatch.training.lambda_heatmap`, which runs also use for W&B).
- :func:`plot_alpha_curves`: PAINT's accuracy against α with ∆-Networks as flat lines (Table 11
  as a figure).
- :func:`plot_params_vs_accuracy`: score against trainable parameters across methods.
- :func:`make_plots`: all of them for a folder of runs.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..training.lambda_heatmap import lambda_matrix, plot_lambda_heatmap, pyplot as _pyplot, save_figure as _save
from .alpha import cells_by_backbone_and_column, final_sweep
from .labels import backbone_label, column_of, method_label, row_key, row_label, row_sort_key, slug
from .runs import Run, groups
from .values import metric_name, metric_value, trainable_params

log = logging.getLogger(__name__)


def plot_alpha_curves(alphas: Sequence[float], curves: Mapping[str, Sequence[float | None]], path: str | Path,
                      flat: Mapping[str, float] | None = None, chosen: Sequence[float] = (), title: str = "",
                      ylabel: str = "top-1 accuracy (%)", highlight: str | None = None) -> Path:
    """PAINT's test accuracies against α (one curve per task and the aggregate), ∆-Networks as
    horizontal lines (they do not depend on α), the α chosen on validation marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, ys in curves.items():
        pts = [(a, y) for a, y in zip(alphas, ys) if y is not None]
        if not pts:
            continue
        bold = name == highlight
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3 if not bold else 5,
                lw=2.4 if bold else 1.0, label=f"PAINT {name}", zorder=3 if bold else 2)
        if bold:
            for a in chosen:
                ys_at = [y for x, y in pts if math.isclose(x, a)]
                if ys_at:
                    ax.scatter([a], ys_at, s=120, facecolors="none", edgecolors="red", zorder=4,
                               label="chosen α (validation)")
    styles = ["--", "-.", ":", (0, (5, 1))]
    for k, (name, value) in enumerate((flat or {}).items()):
        ax.axhline(value, ls=styles[k % len(styles)], color=f"C{(k + len(curves)) % 10}", lw=1.6, label=name)
    ax.set_xlabel("α (0 = base model, 1 = fine-tuned)")
    ax.set_ylabel(ylabel)
    ax.set_xlim(min(alphas) - 0.02, max(alphas) + 0.02)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_params_vs_accuracy(points: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
                            ylabel: str = "score (%)") -> Path:
    """Score against trainable parameters (log scale), one subplot per column (dataset / task
    set). ``points``: dicts with ``column``, ``method`` (row label), ``backbone``, ``params``,
    ``value`` and optionally ``std``."""
    plt = _pyplot()
    columns = list(dict.fromkeys(p["column"] for p in points))
    if not columns:
        raise ValueError("no points to plot")
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows), squeeze=False)
    methods = list(dict.fromkeys(p["method"] for p in points))
    backbones = list(dict.fromkeys(p["backbone"] for p in points))
    markers = "osD^vP*Xh<>"
    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")  # one colour per method row
    for ax, col in zip(axes.flat, columns):
        for p in (q for q in points if q["column"] == col):
            c = cmap(methods.index(p["method"]) % cmap.N)
            mk = markers[backbones.index(p["backbone"]) % len(markers)]
            ax.errorbar(p["params"], p["value"], yerr=p.get("std") or None, fmt=mk, color=c, ms=6, capsize=2,
                        label=f"{p['method']} · {p['backbone']}")
        ax.set_xscale("log")
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("trainable parameters per task")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in list(axes.flat)[1:len(columns)]:
        h, lab = ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------------ from runs
def params_points(runs: Sequence[Run], metric: str = "auto") -> list[dict[str, Any]]:
    """One point per (backbone, method row, column): mean score over seeds against parameters."""
    obs = pd.DataFrame([{"key": row_key(r), "column": column_of(r), "value": metric_value(r, metric),
                         "params": trainable_params(r)} for r in runs])
    if obs.empty:
        return []
    obs["value"] = pd.to_numeric(obs["value"], errors="coerce")
    obs["params"] = pd.to_numeric(obs["params"], errors="coerce").where(lambda p: p > 0)
    cells = obs.groupby(["key", "column"], sort=False).agg(
        value=("value", "mean"), std=("value", "std"), params=("params", "mean"))
    points = []
    for (key, col), c in sorted(cells.iterrows(), key=lambda kv: (row_sort_key(kv[0][0]), kv[0][1])):
        if pd.isna(c["value"]) or pd.isna(c["params"]):
            continue
        points.append({"column": col, "method": row_label(key), "backbone": backbone_label(key.backbone),
                       "params": float(c["params"]), "value": float(c["value"]),
                       "std": None if pd.isna(c["std"]) else float(c["std"])})
    return points


def alpha_curves(cell_runs: Sequence[Run]) -> dict[str, Any] | None:
    """Seed-averaged PAINT α curves of one (backbone, column) and the flat lines of its runs with
    ∆-modules."""
    sweeps = [s for r in cell_runs if (s := final_sweep(r)) is not None]
    if not sweeps:
        return None
    selection = sweeps[0][1]
    obs = pd.DataFrame([{"alpha": float(row["alpha"]), "name": k, "value": v}
                        for sweep, _, _ in sweeps for row in sweep for k, v in (row.get("test") or {}).items()])
    obs["value"] = pd.to_numeric(obs["value"], errors="coerce")
    table = obs.pivot_table(index="alpha", columns="name", values="value", aggfunc="mean", sort=True, dropna=False)
    names = list(dict.fromkeys(obs["name"]))
    alphas = [float(a) for a in table.index]
    curves = {k: [None if pd.isna(v) else float(v) for v in table[k]] if k in table else [None] * len(alphas)
              for k in names}
    chosen = sorted({a for _, _, a in sweeps if a is not None})
    flat = pd.DataFrame([{"label": row_label(row_key(r)), "value": metric_value(r)}
                         for r in cell_runs if r.n_deltas is not None], columns=["label", "value"])
    means = pd.to_numeric(flat["value"], errors="coerce").groupby(flat["label"], sort=False).mean().dropna()
    return {"alphas": alphas, "curves": curves, "selection": selection, "chosen": chosen,
            "flat": {f"{k} ({selection})": float(v) for k, v in means.items()}}


def make_plots(runs: Sequence[Run], out_dir: str | Path, metric: str = "auto", lambdas: str = "results",
               max_batches: int | None = None) -> list[Path]:
    """Every figure for ``runs`` under ``out_dir``; returns the PNG paths.

    ``lambdas``: ``results`` = heatmaps for runs whose results.json holds ``lambdas``;
    ``rebuild`` = also recompute them for ∆ runs that lack them (loads base, patches and test data:
    see :func:`deltapatch.reporting.lambdas.lambdas_from_run`); ``off`` = none.
    """
    out = Path(out_dir)
    if lambdas == "rebuild":  # a folder that would run code is refused before any figure is written
        from ..allowlist import check_targets

        for r in runs:
            if not r.results.get("lambdas") and r.n_deltas is not None and r.config is not None:
                check_targets(r.config, str(r.path / ".hydra" / "config.yaml"))
    written: list[Path] = []
    for (experiment, scenario), rs in groups(runs).items():
        pts = params_points(rs, metric)
        if pts:
            names = " / ".join(sorted({metric_name(r, metric) for r in rs}))
            written.append(plot_params_vs_accuracy(
                pts, out / f"{slug(experiment, scenario)}_params.png",
                title=f"{experiment} — {scenario}: {names} vs trainable parameters", ylabel=f"{names} (%)"))
        for (backbone, col), cell_runs in cells_by_backbone_and_column(rs):
            data = alpha_curves(cell_runs)
            if data is None:
                continue
            written.append(plot_alpha_curves(
                data["alphas"], data["curves"], out / f"{slug(experiment, scenario, 'alpha', backbone, col)}.png",
                flat=data["flat"], chosen=data["chosen"], highlight=data["selection"],
                title=f"{experiment} — {scenario}: PAINT vs ∆-Networks, {backbone_label(backbone)}, {col}"))
    if lambdas != "off":
        written += _lambda_plots(runs, out, rebuild=lambdas == "rebuild", max_batches=max_batches)
    return written


def _lambda_plots(runs: Sequence[Run], out: Path, rebuild: bool, max_batches: int | None) -> list[Path]:
    from ..errors import DeltaPatchError, UnsafeTargetError
    from .lambdas import lambdas_from_run

    written = []
    for r in runs:
        lam = r.results.get("lambdas")
        if not lam and rebuild and r.n_deltas is not None:
            try:
                lam = lambdas_from_run(r.path, max_batches=max_batches)
            except UnsafeTargetError:  # a folder that tries to run code is an error, not a missing plot
                raise
            except DeltaPatchError as e:  # e.g. finetune_delta: its patch needs its own changed backbone
                log.warning("no λ for %s: %s", r.path, str(e).splitlines()[0])
                continue
        for task, stages in (lam or {}).items():
            # the run folder's name (the job number in a sweep) keeps repeated configs apart
            name = slug(r.experiment, r.scenario, r.backbone, r.method, f"n{r.n_deltas}",
                        column_of(r), task, f"s{r.seed}", r.path.name)
            written.append(plot_lambda_heatmap(
                stages, out / "lambdas" / f"{name}.png",
                title=f"mean λ — {backbone_label(r.backbone)}, {method_label(r.method, r.n_deltas)}, "
                      f"{column_of(r)} / {task} (seed {r.seed})"))
    return written


__all__ = ["alpha_curves", "lambda_matrix", "make_plots", "params_points", "plot_alpha_curves",
           "plot_lambda_heatmap", "plot_params_vs_accuracy"]
