"""Reporting end to end: real short runs -> report tables whose cells are the runs' numbers, CSV
and LaTeX beside them, non-empty PNG figures."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import deltapatch.cli  # noqa: F401  (numeric group choices such as n_deltas=2)
from deltapatch.scenarios import run
from deltapatch.reporting.frame import fmt_cell
from deltapatch.reporting.labels import method_label
from deltapatch.reporting.runs import load_runs
from deltapatch.reporting.tables import build_report

from helpers import CONF, FAST, ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


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


def _md_rows(markdown: str) -> list[list[str]]:
    """The cells of every Markdown table row (padding stripped)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]


def test_report_cells_are_the_runs_numbers(runs_dir):
    res = _results(runs_dir)
    report = build_report(load_runs(runs_dir))
    main = report.tables[0]
    assert main.title.startswith("report_test — single (hmean")
    assert main.columns == ["digits"]
    delta = main.cell("digits", Method=method_label("delta", 1))
    hmeans = [res["delta_s0"]["hmean"], res["delta_s1"]["hmean"]]
    assert delta["n"] == 2
    assert delta["mean"] == pytest.approx(statistics.fmean(hmeans))
    assert delta["std"] == pytest.approx(statistics.stdev(hmeans))  # sample std (n-1)
    delta_text = f"{statistics.fmean(hmeans):.2f} ± {statistics.stdev(hmeans):.2f}"
    paint = main.cell("digits", Method="PAINT")
    assert paint["n"] == 1 and paint["mean"] == pytest.approx(res["paint_s0"]["hmean"]) and paint["std"] is None
    # rows in the paper's order: baselines first, ∆-Networks last; the parameter column
    assert list(main.labels["Method"]) == ["PAINT", "∆-Networks (1)"]
    params = dict(zip(main.labels["Method"], main.labels["# Params"]))
    assert params["∆-Networks (1)"] == f"{res['delta_s0']['trainable_params']['patch'] / 1e6:.2f}M"
    assert params["PAINT"] == f"{res['paint_s0']['trainable_params']['patch'] / 1e6:.2f}M"
    md = report.markdown()
    rows = _md_rows(md)
    assert rows[0] == ["Architecture", "Method", "# Params", "digits"]
    assert ["ResNet-18", "∆-Networks (1)", params["∆-Networks (1)"], delta_text] in rows
    assert ["ResNet-18", "PAINT", params["PAINT"], f"{res['paint_s0']['hmean']:.2f}"] in rows  # one seed: no ±
    assert "seeds 0, 1; cells are mean ± sample std over seeds" in md

    per_task = report.tables[1]
    assert per_task.cell("digits · base", Method="PAINT")["mean"] == pytest.approx(res["paint_s0"]["base_acc_after"])
    assert per_task.cell("digits · task", Method="PAINT")["mean"] == pytest.approx(res["paint_s0"]["tasks"]["patch"])
    assert per_task.cell("digits · task", Method=method_label("delta", 1))["mean"] == pytest.approx(
        statistics.fmean([res["delta_s0"]["tasks"]["patch"], res["delta_s1"]["tasks"]["patch"]]))


def test_alpha_table_holds_the_sweep(runs_dir):
    res = _results(runs_dir)["paint_s0"]
    extra = res["extra"]["patch"]
    alpha = [t for t in build_report(load_runs(runs_dir)).tables if "PAINT α sweep" in t.title]
    assert len(alpha) == 1
    table = alpha[0]
    assert table.columns == ["test base", "test patch", "test hmean", "val hmean"]
    paint = table.labels["Method"] == "PAINT"
    marks = list(table.labels.loc[paint, "α"])
    assert [m.rstrip(" *") for m in marks] == ["0", "1"]
    for mark, row in zip(marks, extra["alpha_sweep"]):
        assert mark.endswith("*") == (row["alpha"] == extra["alpha"])  # the chosen α is marked
        assert table.cell("test patch", α=mark)["mean"] == pytest.approx(row["test"]["patch"])
        assert table.cell("val hmean", α=mark)["mean"] == pytest.approx(row["val"]["hmean"])
    # ∆ runs of the same backbone and column are the flat rows
    assert list(table.labels.loc[table.labels["α"] == "–", "Method"]) == [method_label("delta", 1)]


@pytest.mark.parametrize("entry", ["script", "module"])
def test_report_command_writes_markdown_csv_and_latex(runs_dir, tmp_path, capsys, entry):
    """scripts/report.py and deltapatch.report.main (the deltapatch-report command) are one command."""
    if entry == "script":
        import importlib.util

        spec = importlib.util.spec_from_file_location("report_script", ROOT / "scripts" / "report.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        main = script.main
    else:
        from deltapatch.report import main
    out = tmp_path / "report"
    assert main([str(runs_dir), "--out", str(out)] + (["--plots"] if entry == "script" else [])) == 0
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
    assert paint["n_deltas"] == ""  # PAINT has no ∆-modules
    delta = by_label["∆-Networks (1)"]
    hmeans = [res["delta_s0"]["hmean"], res["delta_s1"]["hmean"]]
    assert float(delta["digits"]) == pytest.approx(statistics.fmean(hmeans), abs=1e-5)
    assert float(delta["digits std"]) == pytest.approx(statistics.stdev(hmeans), abs=1e-5)
    assert delta["digits n"] == "2" and delta["method"] == "delta" and delta["n_deltas"] == "1"
    # LaTeX beside every CSV: the same cells, escaped
    csvs = sorted(p.stem for p in out.glob("*.csv") if p.name != "runs.csv")
    assert csvs == sorted(p.stem for p in out.glob("*.tex"))
    tex = (out / "report_test_single.tex").read_text()
    assert tex.startswith("\\begin{table}") and "\\toprule" in tex and "\\label{tab:report_test_single}" in tex
    delta_tex = fmt_cell(statistics.fmean(hmeans), statistics.stdev(hmeans)).replace("±", "$\\pm$")
    assert f"ResNet-18 & $\\Delta$-Networks (1) & {delta['# Params']} & {delta_tex} \\\\" in tex
    long = list(csv.DictReader(open(out / "runs.csv")))
    assert sorted(r["method"] for r in long) == ["delta", "delta", "paint"]
    if entry == "script":  # --plots
        pngs = sorted((out / "plots").glob("*.png"))
        assert {p.name for p in pngs} == {"report_test_single_params.png",
                                          "report_test_single_alpha_resnet18_digits.png"}
        for p in pngs:
            assert p.stat().st_size > 1000 and p.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("entry", ["report", "plots"])
def test_commands_refuse_a_folder_without_runs(tmp_path, capsys, entry):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{entry}_script", ROOT / "scripts" / f"{entry}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "empty").mkdir()
    for folder, says in ((tmp_path / "missing", "is not a folder"), (tmp_path / "empty", "no results.json")):
        with pytest.raises(SystemExit) as exit_info:
            script.main([str(folder)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and says in err and "\n" not in err  # one line
    assert not (tmp_path / "empty" / "report").exists()  # nothing half-written


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
