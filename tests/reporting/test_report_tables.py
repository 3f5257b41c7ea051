"""Report tables from synthetic results.json files (no training): which number a run gives, which
row and column it lands in, how ∆-modules are read, and the CSV/LaTeX renderings."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest

from deltapatch.reporting.alpha import final_sweep
from deltapatch.reporting.frame import fmt_cell, latex_text, summarise
from deltapatch.reporting.runs import load_runs, n_deltas_of
from deltapatch.reporting.tables import build_report, write_report
from deltapatch.reporting.values import metric_name


def _fake(tmp_path: Path, name: str, **res) -> None:
    d = tmp_path / name
    d.mkdir(parents=True)
    base = {"method": "delta", "backbone": "resnet18", "dataset": "digits", "scenario": "single", "n_deltas": 1,
            "seed": 0, "experiment": "x", "tasks": {}, "trainable_params": {}}
    (d / "results.json").write_text(json.dumps(base | res))


def test_metric_choice_and_columns(tmp_path):
    _fake(tmp_path, "seq", scenario="sequential", tasks={"a": 50.0, "b": 70.0}, mean=60.0, base_acc_after=60.0)
    _fake(tmp_path, "scratch", base_source="scratch", tasks={"patch": 42.0}, hmean=1.0)
    _fake(tmp_path, "tl", scenario="transfer", tasks={"digits": 81.0}, sample_rate=0.15, metric="target_acc",
          target_acc=81.0)
    _fake(tmp_path, "tl2", scenario="transfer", tasks={"digits": 90.0}, sample_rate=1.0, metric="target_acc",
          target_acc=90.0)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.json").write_text("{not json")
    runs = {r.path.name: r for r in load_runs(tmp_path)}
    assert set(runs) == {"seq", "scratch", "tl", "tl2"}  # the broken file is skipped
    assert metric_name(runs["seq"]) == "mean"
    assert metric_name(runs["scratch"]) == "task" and metric_name(runs["tl"]) == "target_acc"  # what the run names
    report = build_report(list(runs.values()))
    seq = next(t for t in report.tables if t.title.startswith("x — sequential ("))
    assert seq.columns == ["a-b"] and seq.cell("a-b", Method="∆-Networks (1)") == {"mean": 60.0, "std": None, "n": 1}
    scratch = next(t for t in report.tables if t.title.startswith("x — single ("))
    assert list(scratch.labels["Method"]) == ["∆-Networks (1), from scratch"]
    assert scratch.cell("digits", Method="∆-Networks (1), from scratch")["mean"] == 42.0
    transfer = next(t for t in report.tables if t.title.startswith("x — transfer (target_acc"))
    assert sorted(transfer.columns) == ["digits 100%", "digits 15%"]  # the sample rate is a column (Table 5)
    assert transfer.cell("digits 15%", Method="∆-Networks (1)")["mean"] == 81.0
    # per-task (base/task) tables only where a base task is kept: not for transfer
    assert sorted(t.title for t in report.tables if "per task" in t.title) == [
        "x — sequential: top-1 accuracy per task (%)", "x — single: top-1 accuracy per task (%)"]
    written = write_report(report, tmp_path / "out")
    assert all(Path(p).exists() for p in written.values())
    assert {p.suffix for p in written.values()} == {".md", ".csv", ".tex"}


def test_task_sets_keep_the_order_they_ran_in(tmp_path):
    """results.json is written with sorted keys; ``task_order`` keeps a task set's order, so
    GTSRB→Cars→Flowers is its own column (not cars-flowers-gtsrb) and its per-task columns follow it."""
    for name, order in (("a", ["gtsrb", "cars", "flowers"]), ("b", ["cars", "gtsrb", "flowers"])):
        d = tmp_path / name
        d.mkdir()
        res = {"method": "delta", "backbone": "resnet18", "dataset": "digits", "scenario": "sequential",
               "n_deltas": 1, "seed": 0, "experiment": "x", "trainable_params": {}, "mean": 50.0,
               "base_acc_after": 70.0, "tasks": {t: 10.0 * (i + 1) for i, t in enumerate(order)}, "task_order": order}
        (d / "results.json").write_text(json.dumps(res, sort_keys=True))
    main, per_task = build_report(load_runs(tmp_path), alpha=False).tables
    assert main.columns == ["gtsrb-cars-flowers", "cars-gtsrb-flowers"]
    assert per_task.columns[:4] == ["gtsrb-cars-flowers · base", "gtsrb-cars-flowers · gtsrb",
                                    "gtsrb-cars-flowers · cars", "gtsrb-cars-flowers · flowers"]
    assert per_task.cell("gtsrb-cars-flowers · cars", Method="∆-Networks (1)")["mean"] == 20.0


def test_cells_are_mean_and_sample_std():
    obs = pd.DataFrame([{"rank": 1, "Method": "b", "column": "c1", "value": v} for v in (1.0, 2.0, 3.0)]
                       + [{"rank": 0, "Method": "a", "column": "c2", "value": None}])
    labels, stats = summarise(obs, ["Method"], ["c1", "c2"])
    assert list(labels["Method"]) == ["a", "b"]  # rank order, not first-seen order
    assert stats.loc[1, ("c1", "mean")] == 2.0 and stats.loc[1, ("c1", "std")] == 1.0  # n-1
    assert list(stats[("c1", "n")]) == [0, 3] and list(stats[("c2", "n")]) == [0, 0]
    assert fmt_cell(2.0, 1.0) == "2.00 ± 1.00" and fmt_cell(2.0, float("nan")) == "2.00" and fmt_cell(None) == "–"
    assert latex_text("∆-Networks (4) 50% a_b ± 1") == r"$\Delta$-Networks (4) 50\% a\_b $\pm$ 1"


def test_n_deltas_comes_from_results_with_a_fallback_for_old_files(tmp_path):
    """A row carries "(n)" when results.json's n_deltas says the run has ∆-modules; older files
    recorded the config's n_deltas for every method, so a number is ignored for methods that never
    had ∆-modules (PAINT, FC...)."""
    assert n_deltas_of({"method": "delta", "n_deltas": 2}) == 2
    assert n_deltas_of({"method": "delta", "n_deltas": None}) is None
    assert n_deltas_of({"method": "fc", "n_deltas": 4}) is None  # an old file: the name decides
    assert n_deltas_of({"method": "fc", "n_deltas": None}) is None
    assert n_deltas_of({"method": "my_new_method", "n_deltas": 3}) == 3  # unknown names: results.json decides
    assert n_deltas_of({"method": "finetune_delta", "n_deltas": 0}) is None  # dense runners: 0 = no ∆
    _fake(tmp_path, "old_fc", method="fc", n_deltas=4, hmean=50.0, trainable_params={"patch": 100})
    _fake(tmp_path, "new_fc", method="fc", n_deltas=None, hmean=52.0, seed=1, trainable_params={"patch": 100})
    _fake(tmp_path, "new_skip", method="learnable_skip", n_deltas=None, hmean=60.0, trainable_params={"patch": 10})
    _fake(tmp_path, "custom", method="my_new_method", n_deltas=2, hmean=70.0, trainable_params={"patch": 10})
    table = build_report(load_runs(tmp_path), per_task=False, alpha=False).tables[0]
    assert list(table.labels["Method"]) == ["FC", "Learnable Skip connections", "my_new_method (2)"]
    assert table.cell("digits", Method="FC")["n"] == 2  # old and new FC runs share one row
    assert list(table.meta["n_deltas"].astype(object).where(table.meta["n_deltas"].notna(), None)) == [None, None, 2]


def test_zsda_runs_give_vanilla_rows(tmp_path):
    """A zero-shot domain adaptation run scores the vanilla model too: it gets its own row, once
    per vanilla model, and the uniform prior sets rows apart."""
    for name, weight, seed in (("a", 0.0, 0), ("b", 0.1, 0), ("c", 0.0, 1)):
        # base_source scratch: Table 6's vanilla model is trained from random weights (base=scratch)
        _fake(tmp_path, name, scenario="zsda", n_deltas=4, seed=seed, dataset="mnist", target="usps",
              base_source="scratch",
              metric="target_acc", target_acc=80.0 + seed, tasks={"patch": 80.0 + seed},
              vanilla={"target_acc": 50.0 + weight * 100, "source_acc": 99.0}, vanilla_trainable_params=11_000_000,
              trainable_params={"patch": 700_000}, uniform_prior={"weight": weight, "t": 2.0})
    table = build_report(load_runs(tmp_path), per_task=False).tables[0]
    assert list(table.labels["Method"]) == ["Vanilla", "Vanilla + ∆-Networks (4)", "Vanilla + Uniform prior",
                                            "Vanilla + Uniform prior + ∆-Networks (4)"]
    assert table.cell("mnist→usps", Method="Vanilla") == {"mean": 50.0, "std": 0.0, "n": 2}  # one per seed
    assert table.cell("mnist→usps", Method="Vanilla + Uniform prior") == {"mean": 60.0, "std": None, "n": 1}
    delta = table.cell("mnist→usps", Method="Vanilla + ∆-Networks (4)")
    assert delta["n"] == 2 and delta["mean"] == 80.5 and delta["std"] == pytest.approx(statistics.stdev([80, 81]))
    params = dict(zip(table.labels["Method"], table.labels["# Params"]))
    assert params["Vanilla"] == "11.00M" and params["Vanilla + ∆-Networks (4)"] == "0.70M"


def test_sequential_alpha_table_is_the_last_trained_step(tmp_path):
    """A sequential PAINT run's α table is its last step's sweep (the final model on every task), in
    task_order: the extra object is written with sorted keys, where "usps" comes after "fashion"."""
    def step(alpha: float, tasks: list[str]) -> dict:
        def scores(a: float) -> dict:
            return {"base": 80.0 - 10 * a, **{t: 50.0 + 10 * a for t in tasks}, "mean": 60.0}
        sweep = [{"alpha": a, "val": scores(a)} | ({"test": scores(a)} if a == alpha else {}) for a in (0.0, 0.5, 1.0)]
        return {"alpha": alpha, "alpha_sweep": sweep, "selection": "mean"}
    order = ["omniglot", "usps", "fashion"]
    _fake(tmp_path, "paint", method="paint", scenario="sequential", n_deltas=None, mean=55.0, base_acc_after=40.0,
          task_order=order, tasks={t: 60.0 for t in order},
          extra={t: step(a, order[:i + 1]) for i, (t, a) in enumerate(zip(order, (1.0, 0.5, 0.0)))})
    (tmp_path / "paint" / "results.json").write_text(
        json.dumps(json.loads((tmp_path / "paint" / "results.json").read_text()), sort_keys=True))
    run = load_runs(tmp_path)[0]
    sweep, selection, alpha = final_sweep(run)
    assert alpha == 0.0 and set(sweep[0]["val"]) == {"base", "omniglot", "usps", "fashion", "mean"}
    table = next(t for t in build_report([run]).tables if "α sweep" in t.title)
    assert table.columns[:4] == ["test base", "test omniglot", "test usps", "test fashion"]
