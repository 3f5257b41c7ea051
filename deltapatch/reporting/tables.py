"""Tables shaped like the paper's, from every ``results.json`` under a folder of runs.

One table per (experiment, scenario): rows are backbone × method (× n_deltas for the ∆ family),
columns the datasets (single) or task sets (joint, sequential), a cell the harmonic mean (single,
joint) or mean (sequential) of top-1 accuracies, as mean ± std over the seeds found. Beside it a
per-task table (the paper's Table 10: base and task accuracy) and, where PAINT runs kept their α
sweep, the α table (Table 11) with the ∆ runs of the same backbone and column as the flat rows.

Everything here reads plain JSON (and, when present, the run's ``.hydra/config.yaml`` for keys
results.json does not carry, such as ``dataset.sample_rate``); nothing is trained or loaded.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

# The scenarios whose score is an aggregate over base and tasks; others (transfer, zsda, from
# scratch...) are scored by their task accuracy unless results.json names a metric.
AGGREGATES = {"single": "hmean", "joint": "hmean", "sequential": "mean"}

# Methods whose result does not depend on n_deltas: their row label carries no "(n)".
N_FREE_METHODS = frozenset({"paint", "fc", "finetune", "parallel_adapter", "series_adapter", "bn_adapt",
                            "bn_adapt_dua", "lora", "vanilla"})

# The paper's row names (Tables 1, 2, 5, 8); unknown methods keep their config name.
METHOD_NAMES = {
    "vanilla": "Vanilla", "paint": "PAINT", "fc": "FC", "finetune": "Fine-tuning", "finetune_delta": "Fine-tuning + ∆-Networks",
    "delta": "∆-Networks", "parallel_adapter": "Parallel Adapters", "series_adapter": "Series Adapters",
    "bn_adapt": "BatchNormAdapt", "bn_adapt_dua": "BatchNormAdapt (DUA)", "lora": "LoRA",
    "learnable_skip": "Learnable Skip connections", "all_skips_learnable_nobn": "All Skips (Learnable)",
    "all_skips_learnable": "All Skips (Learnable) + BN", "all_skips_nobn": "All Skips",
    "all_skips": "All Skips + BN", "random_lambda_nobn": "All Skips + Random", "random_lambda": "All Skips + BN + Random",
}
# Row order within a backbone: baselines first, ∆-Networks last (as in every table of the paper).
METHOD_ORDER = ["vanilla", "fc", "finetune", "paint", "parallel_adapter", "series_adapter", "bn_adapt", "bn_adapt_dua", "lora",
                "learnable_skip", "all_skips_learnable_nobn", "all_skips_learnable", "all_skips_nobn", "all_skips",
                "random_lambda_nobn", "random_lambda", "delta", "finetune_delta"]
BACKBONE_NAMES = {
    "resnet18": "ResNet-18", "timm_resnet18": "ResNet-18 (timm)", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
    "resnet101": "ResNet-101", "resnext50_32x4d": "ResNeXt-50", "wide_resnet50_2": "WideResNet-50",
    "convnext_tiny": "ConvNeXt-Tiny", "convnext_small": "ConvNeXt-Small", "convnext_base": "ConvNeXt-Base",
    "convnext_large": "ConvNeXt-Large",
}
BACKBONE_ORDER = list(BACKBONE_NAMES)


# --------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One finished run: its folder, its results.json and (when Hydra saved it) its config."""

    path: Path
    results: dict[str, Any]
    config: Any | None = None

    def cfg(self, key: str, default: Any = None) -> Any:
        """A value of the run's Hydra config (``dataset.sample_rate``), ``default`` when absent or
        unresolvable (run configs reference ``hydra:`` resolvers that exist only inside Hydra)."""
        if self.config is None:
            return default
        from omegaconf import OmegaConf

        try:
            value = OmegaConf.select(self.config, key, default=default, throw_on_resolution_failure=False)
        except Exception:  # an interpolation to a missing resolver: treat as absent
            return default
        return default if value is None else value

    @property
    def method(self) -> str:
        return str(self.results.get("method", "?"))

    @property
    def backbone(self) -> str:
        return str(self.results.get("backbone", "?"))

    @property
    def scenario(self) -> str:
        return str(self.results.get("scenario", "?"))

    @property
    def experiment(self) -> str:
        return str(self.results.get("experiment") or "default")

    @property
    def seed(self) -> Any:
        return self.results.get("seed")


def vanilla_run(run: Run) -> Run | None:
    """The source-trained "vanilla" model a zero-shot domain adaptation run also scored (results'
    ``vanilla``), as a run of its own so that it gets its row (Table 6's "Vanilla")."""
    van = run.results.get("vanilla")
    if not isinstance(van, Mapping) or run.method == "vanilla":
        return None
    res = dict(run.results)
    metric = res.get("metric") if isinstance(res.get("metric"), str) else "target_acc"
    task = next(iter(res.get("tasks") or {"patch": None}))
    res.update({k: v for k, v in van.items()}, method="vanilla", n_deltas=None, tasks={task: van.get(metric)},
               trainable_params={task: res.get("vanilla_trainable_params")} if res.get("vanilla_trainable_params") else {},
               patch_files={}, extra={}, lambdas={})
    res.pop("vanilla", None)
    return Run(run.path, res, run.config)


def with_derived(runs: Sequence[Run]) -> list[Run]:
    """``runs`` plus one vanilla run per distinct vanilla model (several ∆ runs on one vanilla
    model — other methods, or seeds that reuse the cached model — would count it several times)."""
    out, seen = list(runs), set()
    for r in runs:
        v = vanilla_run(r)
        if v is None:
            continue
        key = (v.experiment, v.scenario, v.backbone, column_of(v), row_variant(v), v.seed)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def load_runs(root: str | Path, with_config: bool = True) -> list[Run]:
    """Every ``results.json`` under ``root`` (any depth), sorted by path; unreadable files are
    skipped with a warning (a sweep still running has half-written folders). Runs that also scored
    a second model (zero-shot domain adaptation's vanilla model) add a run for it."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    runs = []
    # natural order (job 2 before job 10), so columns and rows appear in the order of the sweep
    for path in sorted(root.rglob("results.json"), key=_natural_key):
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log.warning("skipping %s: %s", path, e)
            continue
        if not isinstance(results, dict) or "tasks" not in results:
            log.warning("skipping %s: not a deltapatch results.json", path)
            continue
        config = None
        cfg_path = path.parent / ".hydra" / "config.yaml"
        if with_config and cfg_path.exists():
            from omegaconf import OmegaConf

            try:
                config = OmegaConf.load(cfg_path)
            except Exception as e:  # a broken config only costs the extra keys
                log.warning("ignoring %s: %s", cfg_path, e)
        runs.append(Run(path.parent, results, config))
    return with_derived(runs)


# ------------------------------------------------------------------------------ keys and values
def method_label(method: str, n_deltas: Any = None) -> str:
    """The paper's row name: ``∆-Networks (2)``, ``PAINT``…"""
    name = METHOD_NAMES.get(method, method)
    if method in N_FREE_METHODS or n_deltas is None:
        return name
    return f"{name} ({n_deltas})"


def backbone_label(backbone: str) -> str:
    return BACKBONE_NAMES.get(backbone, backbone)


def _order(seq: Sequence[str], value: str) -> tuple[int, str]:
    return (seq.index(value), value) if value in seq else (len(seq), value)


def row_variant(run: Run) -> str:
    """What else sets a row apart beside backbone, method and n_deltas: the uniform prior of
    zero-shot domain adaptation (Table 6's "+ Uniform prior" rows), training from scratch (Tables 12-13)."""
    prior = run.results.get("uniform_prior")
    if isinstance(prior, Mapping) and float(prior.get("weight") or 0) > 0:
        return "Uniform prior"
    if run.results.get("base_source") == "scratch":  # Tables 12-13: no pre-training
        return "from scratch"
    return ""


def row_key(run: Run) -> tuple[str, str, Any, str]:
    """(backbone, method, n_deltas, variant) — n_deltas None for methods it does not affect."""
    n = None if run.method in N_FREE_METHODS else run.results.get("n_deltas")
    return run.backbone, run.method, n, row_variant(run)


def row_sort_key(key: tuple[str, str, Any, str]) -> tuple:
    backbone, method, n, variant = key
    return (_order(BACKBONE_ORDER, backbone), variant, _order(METHOD_ORDER, method), -1 if n is None else int(n))


def row_label(key: tuple[str, str, Any, str]) -> str:
    """``∆-Networks (4)``, ``Vanilla + Uniform prior``…"""
    _, method, n, variant = key
    label = method_label(method, n)
    if variant == "from scratch":
        return f"{label}, from scratch"
    return f"{label} + {variant}" if variant else label


def column_of(run: Run) -> str:
    """The column a run belongs to: its dataset (single; with the sample rate when below 1), its
    task set (joint, sequential: task names joined by '-'), or what results.json names."""
    res = run.results
    if res.get("column"):
        return str(res["column"])
    if run.scenario in ("joint", "sequential"):
        return "-".join(res.get("tasks") or {}) or str(res.get("dataset"))
    name = str(res.get("dataset"))
    if res.get("target"):
        name = f"{name}→{res['target']}"
    # transfer runs name their sample rate (100% included: it is a column of Table 5); other runs
    # only show a reduced dataset.sample_rate
    explicit = res.get("sample_rate") is not None
    rate = res.get("sample_rate") if explicit else run.cfg("dataset.sample_rate")
    try:
        if rate is not None and (explicit or float(rate) < 1.0):
            name = f"{name} {float(rate):.0%}"
    except (TypeError, ValueError):
        pass
    return name


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


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def metric_value(run: Run, metric: str = "auto") -> float | None:
    """The run's score under ``metric`` (see :func:`metric_name`): ``task`` = mean accuracy over its
    tasks, ``base`` = base accuracy after patching, else a (dotted) key of results.json."""
    name = metric_name(run, metric)
    res = run.results
    if name == "task":
        accs = [v for v in (res.get("tasks") or {}).values() if isinstance(v, (int, float))]
        return sum(accs) / len(accs) if accs else None
    if name == "base":
        value = res.get("base_acc_after")
    else:
        value = _lookup(res, name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def trainable_params(run: Run) -> int | None:
    """Parameters one task trains (the paper's "# Parameters"): the largest over the run's tasks."""
    counts = [int(v) for v in (run.results.get("trainable_params") or {}).values() if isinstance(v, (int, float))]
    return max(counts) if counts else None


# ------------------------------------------------------------------------------------- cells
@dataclass
class Stat:
    """The values of one cell (one per seed/run) and their mean ± sample std."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float | None) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.values.append(float(value))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n-1), None for fewer than two values."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def fmt(self, digits: int = 2) -> str:
        if not self.values:
            return "–"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def format_params(counts: Iterable[int]) -> str:
    """``0.45M``; a range when the head size differs between columns (``0.45–0.46M``)."""
    counts = sorted(set(counts))
    if not counts:
        return "–"

    def one(n: int, unit: str) -> str:
        return f"{n / 1e6:.2f}" if unit == "M" else f"{n / 1e3:.1f}"

    unit = "M" if counts[-1] >= 100_000 else "K"
    lo, hi = one(counts[0], unit), one(counts[-1], unit)
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


# ------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A rendered table: row labels + cells, as Markdown and as CSV (mean and std apart)."""

    key: str                       # file stem
    title: str
    label_header: list[str]        # leading label columns
    columns: list[str]             # value columns
    rows: list[tuple[list[str], dict[str, Stat | str]]]
    note: str = ""
    meta: list[dict[str, Any]] = field(default_factory=list)  # per row, CSV-only columns (raw names, counts)

    def markdown(self) -> str:
        head = [*self.label_header, *self.columns]
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * len(self.label_header) + ["---:"] * len(self.columns)) + "|")
        for labels, cells in self.rows:
            vals = [c.fmt() if isinstance(c, Stat) else str(c) for c in (cells.get(col, "–") for col in self.columns)]
            lines.append("| " + " | ".join([*labels, *vals]) + " |")
        return "\n".join(lines) + "\n"

    def csv_rows(self) -> tuple[list[str], list[list[Any]]]:
        meta_keys = list(dict.fromkeys(k for m in self.meta for k in m))
        header = [*self.label_header, *meta_keys]
        for col in self.columns:
            header += [col, f"{col} std", f"{col} n"]
        out = []
        for i, (labels, cells) in enumerate(self.rows):
            meta = self.meta[i] if i < len(self.meta) else {}
            row: list[Any] = [*labels, *(meta.get(k, "") for k in meta_keys)]
            for col in self.columns:
                c = cells.get(col)
                if isinstance(c, Stat):
                    row += [_num(c.mean), _num(c.std), c.n]
                else:
                    row += [c if c is not None else "", "", ""]
            out.append(row)
        return header, out

    def write_csv(self, path: Path) -> Path:
        header, rows = self.csv_rows()
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return path


def _num(x: float | None) -> str | float:
    return "" if x is None else round(x, 6)


def slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "_".join(p for p in parts if p)).strip("_")


def groups(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (experiment, scenario), in first-seen order."""
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.experiment, r.scenario), []).append(r)
    return out


def _columns(runs: Sequence[Run]) -> list[str]:
    seen: dict[str, None] = {}
    for r in runs:
        seen.setdefault(column_of(r), None)
    return list(seen)


def _row_labels(key: tuple[str, str, Any, str]) -> list[str]:
    return [backbone_label(key[0]), row_label(key)]


def main_table(experiment: str, scenario: str, runs: Sequence[Run], metric: str = "auto") -> Table:
    """The paper's main-table shape (Tables 1–4, 8, 12–13): rows backbone × method, a parameter
    column, one column per dataset / task set, cell = metric as mean ± std over seeds."""
    columns = _columns(runs)
    cells: dict[tuple, dict[str, Stat]] = defaultdict(lambda: defaultdict(Stat))
    params: dict[tuple, list[int]] = defaultdict(list)
    names = set()
    for r in runs:
        key = row_key(r)
        cells[key][column_of(r)].add(metric_value(r, metric))
        names.add(metric_name(r, metric))
        p = trainable_params(r)
        if p is not None:
            params[key].append(p)
    rows, meta = [], []
    for key in sorted(cells, key=row_sort_key):
        rows.append(([*_row_labels(key), format_params(params[key])], dict(cells[key])))
        meta.append(_row_meta(key) | {"params_min": min(params[key], default=""),
                                      "params_max": max(params[key], default="")})
    metric_text = " / ".join(sorted(names))
    return Table(slug(experiment, scenario), f"{experiment} — {scenario} ({metric_text}, %)",
                 ["Architecture", "Method", "# Params"], columns, rows, note=_seeds_note(runs), meta=meta)


def _row_meta(key: tuple[str, str, Any, str]) -> dict[str, Any]:
    backbone, method, n, variant = key
    return {"backbone": backbone, "method": method, "n_deltas": "" if n is None else n, "variant": variant}


def _seeds_note(runs: Sequence[Run]) -> str:
    seeds = sorted({str(r.seed) for r in runs})
    n = len({r.path for r in runs})  # derived rows (a zsda run's vanilla model) are not runs of their own
    text = f"{n} run{'s' if n != 1 else ''}, seeds {', '.join(seeds)}"
    if len(seeds) > 1:
        text += "; cells are mean ± sample std over seeds"
    return text + "."


# scenarios that keep and score a base task next to the new ones (Table 10's base/task columns)
BASE_TASK_SCENARIOS = ("single", "joint", "sequential")


def per_task_table(experiment: str, scenario: str, runs: Sequence[Run]) -> Table:
    """The paper's Table 10 shape: for each column, the base accuracy after patching and every
    task's accuracy (single-task runs call their one task ``task``)."""
    columns = _columns(runs)
    sub: dict[str, list[str]] = {c: ["base"] for c in columns}
    cells: dict[tuple, dict[str, Stat]] = defaultdict(lambda: defaultdict(Stat))
    for r in runs:
        col = column_of(r)
        key = row_key(r)
        cells[key][f"{col} · base"].add(r.results.get("base_acc_after"))
        tasks = r.results.get("tasks") or {}
        for t, v in tasks.items():
            label = "task" if scenario == "single" and len(tasks) == 1 else t
            if label not in sub[col]:
                sub[col].append(label)
            cells[key][f"{col} · {label}"].add(v)
    value_cols = [f"{c} · {t}" for c in columns for t in sub[c]]
    keys = sorted(cells, key=row_sort_key)
    return Table(slug(experiment, scenario, "per_task"), f"{experiment} — {scenario}: top-1 accuracy per task (%)",
                 ["Architecture", "Method"], value_cols, [(_row_labels(k), dict(cells[k])) for k in keys],
                 note=_seeds_note(runs), meta=[_row_meta(k) for k in keys])


def _final_sweep(run: Run) -> tuple[list[dict], str] | None:
    """The α sweep of a run's last task (sequential: the final model on every task so far)."""
    extra = run.results.get("extra") or {}
    for task in reversed(list(extra)):
        info = extra[task] or {}
        if info.get("alpha_sweep"):
            return info["alpha_sweep"], str(info.get("selection") or metric_name(run))
    return None


def alpha_tables(experiment: str, scenario: str, runs: Sequence[Run]) -> list[Table]:
    """The paper's Table 11 shape, one table per (backbone, column) that has PAINT α sweeps: a row
    per α with test accuracy of the base and every task, the test aggregate, and the validation
    aggregate that chose α (``*``); the ∆ runs of the same backbone and column follow as flat rows."""
    by_cell: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        by_cell[(r.backbone, column_of(r))].append(r)
    tables = []
    for (backbone, col), cell_runs in sorted(by_cell.items(), key=lambda kv: (_order(BACKBONE_ORDER, kv[0][0]), kv[0][1])):
        sweeps = [(r, s) for r in cell_runs if (s := _final_sweep(r)) is not None]
        if not sweeps:
            continue
        keys: list[str] = []
        stats: dict[float, dict[str, Stat]] = defaultdict(lambda: defaultdict(Stat))
        chosen: dict[float, int] = defaultdict(int)
        selection = sweeps[0][1][1]
        for r, (sweep, sel) in sweeps:
            for row in sweep:
                a = float(row["alpha"])
                for k, v in (row.get("test") or {}).items():
                    if k == sel:
                        continue
                    if k not in keys:
                        keys.append(k)
                    stats[a][f"test {k}"].add(v)
                stats[a][f"test {sel}"].add((row.get("test") or {}).get(sel))
                stats[a][f"val {sel}"].add((row.get("val") or {}).get(sel))
            picked = (r.results.get("extra") or {})
            last = [v for v in picked.values() if (v or {}).get("alpha_sweep")][-1]
            chosen[float(last.get("alpha"))] += 1
        columns = [f"test {k}" for k in keys] + [f"test {selection}", f"val {selection}"]
        rows: list[tuple[list[str], dict[str, Stat | str]]] = []
        for a in sorted(stats):
            mark = " *" if chosen.get(a) else ""
            rows.append((["PAINT", f"{a:g}{mark}"], dict(stats[a])))
        # ∆-family runs of the same cell: constant in α (the base never moves)
        flat: dict[tuple, dict[str, Stat]] = defaultdict(lambda: defaultdict(Stat))
        for r in cell_runs:
            if r.method == "paint" or r.method in N_FREE_METHODS:
                continue
            key = row_key(r)
            res = r.results
            accs = {"base": res.get("base_acc_after"), **(res.get("tasks") or {})}
            for k in keys:
                flat[key][f"test {k}"].add(accs.get(k))
            agg = selection if selection in res else metric_name(r)
            flat[key][f"test {selection}"].add(res.get(agg) if agg in res else metric_value(r))
            val = res.get("val") or {}
            vals = [v for v in val.values() if isinstance(v, (int, float))]
            if vals:
                flat[key][f"val {selection}"].add(_aggregate(vals, selection))
        for key in sorted(flat, key=row_sort_key):
            rows.append(([row_label(key), "–"], dict(flat[key])))
        tables.append(Table(slug(experiment, scenario, "alpha", backbone, col),
                            f"{experiment} — {scenario}: PAINT α sweep, {backbone_label(backbone)}, {col} (%)",
                            ["Method", "α"], columns, rows,
                            note=f"* = α chosen on validation by {selection}; "
                                 f"{len(sweeps)} PAINT run(s); ∆ rows do not depend on α."))
    return tables


def _aggregate(values: list[float], how: str) -> float | None:
    if not values:
        return None
    if how == "hmean":
        return statistics.harmonic_mean(values) if all(v > 0 for v in values) else 0.0
    return statistics.fmean(values)


def runs_table(runs: Sequence[Run], metric: str = "auto") -> tuple[list[str], list[list[Any]]]:
    """One CSV row per run (long format, for pandas / spreadsheets)."""
    header = ["experiment", "scenario", "backbone", "method", "n_deltas", "seed", "column", "metric", "value",
              "base_acc_before", "base_acc_after", "trainable_params", "train_seconds", "tasks", "run_dir"]
    rows = []
    for r in runs:
        res = r.results
        rows.append([r.experiment, r.scenario, r.backbone, r.method, res.get("n_deltas"), r.seed, column_of(r),
                     metric_name(r, metric), _num(metric_value(r, metric)), _num(res.get("base_acc_before")),
                     _num(res.get("base_acc_after")), trainable_params(r) or "",
                     _num(res.get("train_seconds")), json.dumps(res.get("tasks") or {}), str(r.path)])
    return header, rows


# ------------------------------------------------------------------------------------- report
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
    """``report.md`` (every table), one CSV per table and ``runs.csv`` (one row per run)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out / "report.md"}
    (out / "report.md").write_text(report.markdown())
    for t in report.tables:
        written[t.key] = t.write_csv(out / f"{t.key}.csv")
    header, rows = runs_table(report.runs, metric)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    written["runs"] = out / "runs.csv"
    return written


__all__ = ["Report", "Run", "Stat", "Table", "alpha_tables", "build_report", "column_of", "load_runs", "main_table",
           "method_label", "metric_name", "metric_value", "per_task_table", "write_report"]
