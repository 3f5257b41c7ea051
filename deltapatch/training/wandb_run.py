"""What a finished run sends to Weights & Biases, in one place (called on rank 0 only, by
:func:`deltapatch.scenarios.common.finish`), so that runs of different methods can be compared:

- **config**: the whole resolved Hydra config with dotted keys (``method.name``,
  ``backbone.name``, ``dataset.name``, ``seed``, ...), W&B's filter and group keys; ``n_deltas``
  is the method's own (``None`` for methods without ∆-modules, whatever the config group said);
- **summary**: every number of results.json under its dotted path (``tasks.patch``,
  ``base_acc_after``, ``hmean``, ``trainable_params.patch``, ``patch_files.patch.bytes``,
  ``train_seconds``, ``base_split.val``, ``lambdas.patch.3`` ...); tables (PAINT's α sweep) go
  to W&B tables instead;
- **PAINT's α sweep**: a table per task (``paint/alpha_sweep/<task>``: α, chosen, then
  ``val/<key>`` and ``test/<key>`` for the base, each task and the aggregate) and a line chart
  of the same columns against α (``paint/alpha_curve/<task>``);
- **λ heatmaps** of ∆ runs as images (``lambda/<task>``);
- **tags and name** built from results.json: ``n_deltas:<n>`` only when the method has ∆-modules.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from .lambda_heatmap import lambda_figure, pyplot


def is_wandb(logger: Any) -> bool:
    """Whether ``logger`` is Lightning's W&B logger (by name: wandb need not be installed)."""
    return type(logger).__name__ == "WandbLogger"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; other values (lists too) are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def run_config(cfg: DictConfig, results: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config with dotted keys, ``n_deltas`` as results.json has it."""
    config = flatten(OmegaConf.to_container(cfg, resolve=True))
    config["n_deltas"] = results.get("n_deltas")
    return config


def _scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def run_summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of results.json under its dotted path: numbers, strings, flags and lists of
    them (λ per stage); ``None`` and lists of records (the α sweep: a table) are left out."""
    return {k: v for k, v in flatten(results).items()
            if _scalar(v) or (isinstance(v, list) and v and all(_scalar(x) for x in v))}


def run_tags(results: Mapping[str, Any]) -> list[str]:
    """``key:value`` tags true of this run: no ``n_deltas`` tag for a method without ∆-modules."""
    keys = ("method", "backbone", "dataset", "scenario", "n_deltas", "seed")
    return [f"{k}:{results[k]}" for k in keys if results.get(k) is not None]


def run_name(results: Mapping[str, Any]) -> str:
    n = results.get("n_deltas")
    parts = [results.get(k) for k in ("method", "backbone", "dataset", "scenario")]
    return "-".join(str(p) for p in parts) + (f"-n{n}" if n is not None else "") + f"-s{results.get('seed')}"


def alpha_sweeps(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: extra}`` for every task whose method swept α (PAINT)."""
    return {task: extra for task, extra in (results.get("extra") or {}).items()
            if isinstance(extra, Mapping) and extra.get("alpha_sweep")}


def alpha_columns(sweep: Iterable[Mapping[str, Any]], chosen: float | None) -> tuple[list[str], list[list]]:
    """PAINT's sweep as table columns and rows: ``alpha``, ``chosen``, then ``<split>/<key>``."""
    sweep = list(sweep)
    keys: list[str] = []
    for row in sweep:
        for split in ("val", "test"):
            keys += [f"{split}/{k}" for k in (row.get(split) or {}) if f"{split}/{k}" not in keys]
    rows = []
    for row in sweep:
        values = [(row.get(c.split("/", 1)[0]) or {}).get(c.split("/", 1)[1]) for c in keys]
        rows.append([row["alpha"], chosen is not None and row["alpha"] == chosen, *values])
    return ["alpha", "chosen", *keys], rows


def log_run(logger: Any, cfg: DictConfig, results: Mapping[str, Any]) -> None:
    """Send the finished run to ``logger``'s W&B run (see the module doc); rank 0 only."""
    import wandb

    run = logger.experiment
    run.config.update(run_config(cfg, results), allow_val_change=True)
    run.tags = tuple(run_tags(results))
    run.name = run_name(results)
    run.summary.update(run_summary(results))
    media: dict[str, Any] = {}
    for task, extra in alpha_sweeps(results).items():
        columns, rows = alpha_columns(extra["alpha_sweep"], extra.get("alpha"))
        media[f"paint/alpha_sweep/{task}"] = wandb.Table(columns=columns, data=rows)
        series = [(c, [(r[0], r[i]) for r in rows if r[i] is not None]) for i, c in enumerate(columns) if i > 1]
        series = [(c, pts) for c, pts in series if pts]
        if series:
            media[f"paint/alpha_curve/{task}"] = wandb.plot.line_series(
                xs=[[a for a, _ in pts] for _, pts in series], ys=[[y for _, y in pts] for _, pts in series],
                keys=[c for c, _ in series], title=f"PAINT α sweep, task {task} (accuracy %)", xname="alpha")
    for task, lambdas in (results.get("lambdas") or {}).items():
        fig = lambda_figure(lambdas, title=f"{run_name(results)}: mean λ, task {task}")
        media[f"lambda/{task}"] = wandb.Image(fig, caption=f"mean λ of task {task} on its test split")
        pyplot().close(fig)
    if media:
        run.log(media)
