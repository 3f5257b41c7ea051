"""Reporting end to end: real short runs -> report tables whose cells are the runs' numbers, CSV
that parses, non-empty PNG figures; and every experiment preset (full and offline twin) composes."""
from __future__ import annotations

import csv
import json
import statistics
from itertools import islice
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import OmegaConf

from deltapatch.experiment import run
from deltapatch.reporting.tables import Stat, build_report, load_runs, method_label, metric_name, write_report

from helpers import CONF, FAST, ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _compose(*overrides: str, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides),
                       return_hydra_config=return_hydra_config)


# ------------------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, base_cache) -> Path:
    """Three short runs on digits: ∆(1) with two seeds and PAINT with a 2-point α sweep (the
    costly part: each α scores every split; large evaluation batches make that cheaper). One ∆
    run gets its config saved where Hydra would put it (for the λ rebuild)."""
    root = tmp_path_factory.mktemp("runs")
    specs = {
        "delta_s0": ["method=delta", "seed=0"],
        "delta_s1": ["method=delta", "seed=1", "lambda_batches=0"],  # keeps no λ: nothing to plot
        "paint_s0": ["method=paint", "seed=0", "method.module.alphas=[0.0,1.0]"],
    }
    for name, extra in specs.items():
        out = root / name
        cfg = _compose(f"paths.output_dir={out}", f"paths.cache_dir={base_cache}", *FAST,
                       "experiment_name=report_test", "callbacks=none", "+dataset.eval_batch_size=256", *extra)
        run(cfg)
        if name == "delta_s0":
            (out / ".hydra").mkdir()
            OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    return root


def _results(runs_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in runs_dir.glob("*/results.json")}


def _cells(table) -> dict[str, dict]:
    """Method label -> that row's cells."""
    return {labels[1]: cells for labels, cells in table.rows}


def test_report_cells_are_the_runs_numbers(runs_dir):
    res = _results(runs_dir)
    report = build_report(load_runs(runs_dir))
    main = report.tables[0]
    assert main.title.startswith("report_test — single (hmean")
    assert main.columns == ["digits"]
    cells = _cells(main)
    delta = cells[method_label("delta", 1)]["digits"]
    hmeans = [res["delta_s0"]["hmean"], res["delta_s1"]["hmean"]]
    assert delta.values == pytest.approx(hmeans)
    assert delta.mean == pytest.approx(statistics.fmean(hmeans))
    assert delta.std == pytest.approx(statistics.stdev(hmeans))
    assert delta.fmt() == f"{statistics.fmean(hmeans):.2f} ± {statistics.stdev(hmeans):.2f}"
    assert cells["PAINT"]["digits"].values == pytest.approx([res["paint_s0"]["hmean"]])
    assert cells["PAINT"]["digits"].fmt() == f"{res['paint_s0']['hmean']:.2f}"  # one seed: no ± part
    # rows in the paper's order: baselines first, ∆-Networks last; the parameter column
    assert [labels[1] for labels, _ in main.rows] == ["PAINT", "∆-Networks (1)"]
    params = {labels[1]: labels[2] for labels, _ in main.rows}
    assert params["∆-Networks (1)"] == f"{res['delta_s0']['trainable_params']['patch'] / 1e6:.2f}M"
    assert params["PAINT"] == f"{res['paint_s0']['trainable_params']['patch'] / 1e6:.2f}M"
    md = report.markdown()
    assert f"| ResNet-18 | ∆-Networks (1) | {params['∆-Networks (1)']} | {delta.fmt()} |" in md
    assert "seeds 0, 1; cells are mean ± sample std over seeds" in md

    per_task = _cells(report.tables[1])
    assert per_task["PAINT"]["digits · base"].values == pytest.approx([res["paint_s0"]["base_acc_after"]])
    assert per_task["PAINT"]["digits · task"].values == pytest.approx([res["paint_s0"]["tasks"]["patch"]])
    assert per_task[method_label("delta", 1)]["digits · task"].mean == pytest.approx(
        statistics.fmean([res["delta_s0"]["tasks"]["patch"], res["delta_s1"]["tasks"]["patch"]]))


def test_alpha_table_holds_the_sweep(runs_dir):
    res = _results(runs_dir)["paint_s0"]
    extra = res["extra"]["patch"]
    alpha = [t for t in build_report(load_runs(runs_dir)).tables if "PAINT α sweep" in t.title]
    assert len(alpha) == 1
    table = alpha[0]
    assert table.columns == ["test base", "test patch", "test hmean", "val hmean"]
    paint_rows = [(labels, cells) for labels, cells in table.rows if labels[0] == "PAINT"]
    assert [labels[1].rstrip(" *") for labels, _ in paint_rows] == ["0", "1"]
    for (labels, cells), row in zip(paint_rows, extra["alpha_sweep"]):
        assert labels[1].endswith("*") == (row["alpha"] == extra["alpha"])  # the chosen α is marked
        assert cells["test patch"].mean == pytest.approx(row["test"]["patch"])
        assert cells["val hmean"].mean == pytest.approx(row["val"]["hmean"])
    # ∆ runs of the same backbone and column are the flat rows
    flat = {labels[0]: cells for labels, cells in table.rows if labels[1] == "–"}
    assert set(flat) == {method_label("delta", 1)}


def test_report_script_writes_markdown_and_csv(runs_dir, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_script", ROOT / "scripts" / "report.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "report"
    assert script.main([str(runs_dir), "--out", str(out), "--plots"]) == 0
    printed = capsys.readouterr().out
    assert "### report_test — single (hmean, %)" in printed
    assert (out / "report.md").read_text().strip() == printed.strip()
    res = _results(runs_dir)
    rows = list(csv.DictReader(open(out / "report_test_single.csv")))
    by_label = {r["Method"]: r for r in rows}
    paint = by_label["PAINT"]
    assert float(paint["digits"]) == pytest.approx(res["paint_s0"]["hmean"], abs=1e-5)
    assert paint["digits std"] == "" and paint["digits n"] == "1"
    assert int(paint["params_max"]) == res["paint_s0"]["trainable_params"]["patch"]
    delta = by_label["∆-Networks (1)"]
    hmeans = [res["delta_s0"]["hmean"], res["delta_s1"]["hmean"]]
    assert float(delta["digits"]) == pytest.approx(statistics.fmean(hmeans), abs=1e-5)
    assert float(delta["digits std"]) == pytest.approx(statistics.stdev(hmeans), abs=1e-5)
    assert delta["digits n"] == "2" and delta["method"] == "delta" and delta["n_deltas"] == "1"
    long = list(csv.DictReader(open(out / "runs.csv")))
    assert sorted(r["method"] for r in long) == ["delta", "delta", "paint"]
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.name for p in pngs} == {"report_test_single_params.png", "report_test_single_alpha_resnet18_digits.png"}
    for p in pngs:
        assert p.stat().st_size > 1000 and p.read_bytes()[:8] == PNG_MAGIC


def test_lambda_heatmaps(runs_dir, tmp_path):
    from deltapatch.reporting.lambdas import lambdas_from_run
    from deltapatch.reporting.plots import lambda_matrix, make_plots, plot_lambda_heatmap

    # the dict form the runner can keep in results.json: stage -> mean λ per skip (j, then i)
    lam = {"2": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3: [0.9, 0.8, 0.7]}
    assert lambda_matrix(lam["2"])[2] == [0.4, 0.5, 0.6]  # into h3 from h0, h1, h2
    png = plot_lambda_heatmap(lam, tmp_path / "heat.png", title="t")
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError):
        lambda_matrix([0.5, 0.5])  # not k(k+1)/2 skips
    # rebuilt from a finished run: ResNet-18 ∆(1) has 3 skips on its last stage, λ in [0, 1]
    rebuilt = lambdas_from_run(runs_dir / "delta_s0", max_batches=2)
    assert list(rebuilt) == ["patch"] and list(rebuilt["patch"]) == [3]
    assert len(rebuilt["patch"][3]) == 3 and all(0.0 <= v <= 1.0 for v in rebuilt["patch"][3])
    # the runner's own λ (results.json, from the live network) are the same numbers
    kept = json.loads((runs_dir / "delta_s0" / "results.json").read_text())["lambdas"]["patch"]["3"]
    assert kept == pytest.approx(rebuilt["patch"][3], abs=1e-5)
    assert "lambdas" not in json.loads((runs_dir / "delta_s1" / "results.json").read_text())
    pngs = [p for p in make_plots(load_runs(runs_dir), tmp_path / "plots", lambdas="rebuild", max_batches=2)
            if p.parent.name == "lambdas"]
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == PNG_MAGIC  # delta_s1 has neither λ nor a config


def test_mean_lambdas_matches_network():
    """mean_lambdas is the batch-size-weighted mean of DeltaNetwork.lambdas."""
    import torch

    from deltapatch import DeltaNetwork, create_backbone
    from deltapatch.reporting.lambdas import mean_lambdas

    torch.manual_seed(0)
    net = DeltaNetwork(create_backbone("resnet18", num_classes=5), n_deltas=2)
    net.add_task("t", 3)
    xs = [torch.randn(4, 3, 32, 32), torch.randn(2, 3, 32, 32)]
    got = mean_lambdas(net, [(x, None) for x in xs], "t")
    with torch.no_grad():
        net.eval()
        full = net.lambdas(torch.cat(xs), "t")
    assert sorted(got) == sorted(full)
    for stage, lam in full.items():
        assert got[stage] == pytest.approx(lam.mean(0).tolist(), abs=1e-6)


# ------------------------------------------------------------------------------ metrics (no runs)
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
    assert seq.columns == ["a-b"] and seq.rows[0][1]["a-b"].values == [60.0]
    scratch = next(t for t in report.tables if t.title.startswith("x — single ("))
    assert scratch.rows[0][1]["digits"].values == [42.0]
    assert scratch.rows[0][0][1] == "∆-Networks (1), from scratch"
    transfer = next(t for t in report.tables if t.title.startswith("x — transfer (target_acc"))
    assert sorted(transfer.columns) == ["digits 100%", "digits 15%"]  # the sample rate is a column (Table 5)
    assert transfer.rows[0][1]["digits 15%"].values == [81.0]
    # per-task (base/task) tables only where a base task is kept: not for transfer
    assert sorted(t.title for t in report.tables if "per task" in t.title) == [
        "x — sequential: top-1 accuracy per task (%)", "x — single: top-1 accuracy per task (%)"]
    assert Stat([1.0, 2.0, 3.0]).fmt() == "2.00 ± 1.00" and Stat().fmt() == "–"
    written = write_report(report, tmp_path / "out")
    assert all(Path(p).exists() for p in written.values())


def test_zsda_runs_give_vanilla_rows(tmp_path):
    """A zero-shot domain adaptation run scores the vanilla model too: it gets its own row, once
    per vanilla model, and the uniform prior sets rows apart."""
    for name, weight, seed in (("a", 0.0, 0), ("b", 0.1, 0), ("c", 0.0, 1)):
        _fake(tmp_path, name, scenario="zsda", n_deltas=4, seed=seed, dataset="mnist", target="usps",
              metric="target_acc", target_acc=80.0 + seed, tasks={"patch": 80.0 + seed},
              vanilla={"target_acc": 50.0 + weight * 100, "source_acc": 99.0}, vanilla_trainable_params=11_000_000,
              trainable_params={"patch": 700_000}, uniform_prior={"weight": weight, "t": 2.0})
    table = build_report(load_runs(tmp_path), per_task=False).tables[0]
    cells = {labels[1]: (labels[2], c["mnist→usps"]) for labels, c in table.rows}
    assert list(cells) == ["Vanilla", "∆-Networks (4)", "Vanilla + Uniform prior", "∆-Networks (4) + Uniform prior"]
    assert cells["Vanilla"][1].values == [50.0, 50.0]  # one vanilla model per seed
    assert cells["Vanilla + Uniform prior"][1].values == [60.0]
    assert cells["∆-Networks (4)"][1].values == [80.0, 81.0]
    assert cells["Vanilla"][0] == "11.00M" and cells["∆-Networks (4)"][0] == "0.70M"


# ------------------------------------------------------------------------------ presets
def _preset_files() -> list[str]:
    folder = CONF / "experiment"
    names = [p.relative_to(folder).with_suffix("").as_posix() for p in folder.glob("table*.yaml")]
    names += [p.relative_to(folder).with_suffix("").as_posix() for p in (folder / "mini").glob("*.yaml")]
    return sorted(names)


def _sweep_values(key: str, value: str) -> list[str]:
    """The values Hydra's basic sweeper would give ``key`` (``a,b`` -> ``['a', 'b']``)."""
    (override,) = OverridesParser.create().parse_overrides([f"{key}={value}"])
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    return list(override.sweep_string_iterator())


def test_there_is_a_preset_per_table():
    presets = set(_preset_files())
    tables = {f"table{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8)} | {"table10_11", "table12_13"}
    assert tables <= presets
    assert {f"mini/{t}" for t in tables} <= presets


@pytest.mark.parametrize("preset", _preset_files())
def test_preset_composes(preset, tmp_path):
    """The preset and every value of every swept parameter (one at a time) compose, resolve, and
    name importable classes; full presets are GPU runs on ImageNet weights for the paper's 50
    epochs, twins CPU runs on a base trained here."""
    fixed = [f"experiment={preset}", f"paths.output_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # one init for every compose
        _check_preset(preset, fixed)


def _check_preset(preset: str, fixed: list[str]) -> None:
    cfg = compose("config", overrides=fixed, return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params or {})
    assert params, f"{preset} sweeps nothing"
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.experiment_name == preset.replace("/", "_")  # the W&B group and the report's table name
    grid = {k: _sweep_values(k, str(v)) for k, v in params.items()}
    first = [f"{k}={vals[0]}" for k, vals in grid.items()]
    if preset.startswith("mini/"):  # run here: every value of every swept key, one at a time
        variants = [first] + [[f"{k}={v}" if k == key else o for o, k in zip(first, grid)]
                              for key, vals in grid.items() for v in islice(vals, 1, None)]
    else:  # GPU grids: the first and last job, and every swept group option exists
        variants = [first, [f"{k}={vals[-1]}" for k, vals in grid.items()]]
        for key, vals in grid.items():
            if (CONF / key).is_dir():
                missing = [v for v in vals if not (CONF / key / f"{v}.yaml").is_file()]
                assert not missing, f"{preset}: {key} has no option {missing}"
    for overrides in variants:
        job = compose("config", overrides=[*fixed, *overrides])
        OmegaConf.resolve(job)  # every interpolation resolves (no ${num_workers} left dangling)
        get_object(job.method.module._target_)
        get_object(job.dataset._target_)
        for t in (job.scenario.get("tasks") or {}).values():
            if t and t.get("dataset") is not None:
                get_object(t.dataset._target_)
        if preset.startswith("mini/"):
            assert job.trainer.accelerator == "cpu" and job.base.source in ("train", "scratch")
            assert job.trainer.max_epochs <= 5
        else:
            assert job.trainer.accelerator == "gpu" and job.trainer.max_epochs == 50
            assert job.base.source in ("pretrained", "scratch")
            assert job.logger.wandb.group == job.experiment_name
        if job.scenario.name in ("joint", "sequential"):
            assert len(job.scenario.tasks) == 3 and "t56" not in job.scenario.tasks  # the set replaced them


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launchers(launcher):
    """submitit launchers compose, take cluster settings from the config, and SLURM starts one
    task per GPU (what Lightning's DDP expects there)."""
    cfg = _compose(f"hydra/launcher={launcher}", "experiment=table2", "trainer=ddp", "cluster.timeout_min=99",
                   return_hydra_config=True)
    la = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert la["gpus_per_node"] == cfg.trainer.devices == 4
    assert la["timeout_min"] == 99
    assert la["_target_"].endswith("SlurmLauncher" if launcher == "slurm" else "LocalLauncher")
    if launcher == "slurm":
        assert la["tasks_per_node"] == 4 and la["partition"]
    plain = _compose(f"hydra/launcher={launcher}", return_hydra_config=True)  # no preset: defaults
    assert OmegaConf.to_container(plain.hydra.launcher, resolve=True)["timeout_min"] == 720
