"""Finished runs as read from disk: every ``results.json`` under a folder, with the run's saved
Hydra config where there is one. Nothing here trains or loads a model.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import RunsError
from .labels import column_of, row_variant

log = logging.getLogger(__name__)


# Methods that never had ∆-modules. results.json files written before the runners recorded the
# method's own n_deltas (null without ∆-modules) carry the config's n_deltas for these too, a
# number that means nothing for them; only for such old files does the method name decide.
_NO_DELTA_METHODS_BEFORE_NULL = frozenset({
    "vanilla", "fc", "finetune", "paint", "parallel_adapter", "series_adapter", "bn_adapt", "bn_adapt_dua", "lora"})


def n_deltas_of(results: Mapping[str, Any]) -> int | None:
    """How many stages carry ∆-modules in this run, None for a method without ∆-modules.

    Read from results.json's own ``n_deltas`` (null: no ∆-modules; 0, as dense runners write for
    their heads-only methods, means the same). Fallback for files older than that rule: a number
    recorded for a method in the list above is ignored.
    """
    n = results.get("n_deltas")
    if n is None or isinstance(n, bool) or results.get("method") in _NO_DELTA_METHODS_BEFORE_NULL:
        return None
    try:
        n = int(n)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


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

    @property
    def n_deltas(self) -> int | None:
        """Stages with ∆-modules, None without any (see :func:`n_deltas_of`)."""
        return n_deltas_of(self.results)


def vanilla_run(run: Run) -> Run | None:
    """The source-trained "vanilla" model a zero-shot domain adaptation run also scored (results'
    ``vanilla``), as a run of its own so that it gets its row (Table 6's "Vanilla")."""
    van = run.results.get("vanilla")
    if not isinstance(van, Mapping) or run.method == "vanilla":
        return None
    res = dict(run.results)
    metric = res.get("metric") if isinstance(res.get("metric"), str) else "target_acc"
    task = next(iter(res.get("tasks") or {"patch": None}))
    params = res.get("vanilla_trainable_params")
    res.update(dict(van), method="vanilla", n_deltas=None, tasks={task: van.get(metric)},
               trainable_params={task: params} if params else {}, patch_files={}, extra={}, lambdas={})
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


def load_runs(root: str | Path, with_config: bool = True, derived: bool = True) -> list[Run]:
    """Every ``results.json`` under ``root`` (any depth), sorted by path; unreadable files are
    skipped with a warning (a sweep still running has half-written folders). With ``derived``,
    runs that also scored a second model (zero-shot domain adaptation's vanilla model) add a run
    for it."""
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
        runs.append(Run(path.parent, results, _config(path.parent) if with_config else None))
    return with_derived(runs) if derived else runs


def _config(run_dir: Path) -> Any | None:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path)
    except Exception as e:  # a broken config only costs the extra keys
        log.warning("ignoring %s: %s", path, e)
        return None


def runs_for_command(folder: str | Path, experiments: Iterable[str] | None = None,
                     derived: bool = True) -> list[Run]:
    """:func:`load_runs` for a command line: :class:`RunsError` (one line) when ``folder`` is not
    a folder or holds no results.json (of the ``experiments`` named, when given)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunsError(f"{folder} is not a folder; pass the folder of a run or sweep (outputs/multirun/...)")
    runs = load_runs(folder, derived=derived)
    if experiments:
        wanted = set(experiments)
        runs = [r for r in runs if r.experiment in wanted]
    if not runs:
        which = f" of experiment {', '.join(sorted(set(experiments)))}" if experiments else ""
        raise RunsError(f"no results.json{which} under {folder}; point at a folder of finished runs")
    return runs


def groups(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (experiment, scenario), in first-seen order."""
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.experiment, r.scenario), []).append(r)
    return out


__all__ = ["Run", "RunsError", "groups", "load_runs", "n_deltas_of", "runs_for_command", "vanilla_run",
           "with_derived"]
