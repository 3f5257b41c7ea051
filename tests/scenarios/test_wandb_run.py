"""What a run sends to W&B, read back from the offline run with wandb's own reader: the resolved
config under dotted keys, results.json's numbers as the summary, true tags, PAINT's α sweep as a
table and a line chart, and the λ heatmap of a ∆ run as an image."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from deltapatch.scenarios import run
from deltapatch.training.wandb_run import flatten

from wandb_reader import flat_numbers, media_file, offline_runs, read_run, same

pytest.importorskip("wandb")


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):  # wandb's staging, not ~/
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))


def logged_run(cfg) -> tuple[dict, dict, Path]:
    """Run ``cfg``; return (results.json, the W&B run as read back, its folder)."""
    run(cfg)
    out = Path(cfg.paths.output_dir)
    runs = offline_runs(out)
    assert len(runs) == 1
    logged = read_run(runs[0])
    assert logged["state"] == "finished" and logged["exit_code"] == 0
    return json.loads((out / "results.json").read_text()), logged, runs[0]


def assert_summary_holds_results(logged: dict, results: dict) -> None:
    numbers = flat_numbers(results)
    for key in ("tasks.patch", "base_acc_before", "base_acc_after", "hmean", "trainable_params.patch",
                "train_seconds", "base_split.val", "base_split.test", "val.base"):
        assert key in numbers, key
    for key, value in numbers.items():
        assert same(logged["summary"].get(key), value), (key, logged["summary"].get(key), value)


def test_delta_run_config_summary_tags_and_lambda_image(make_cfg, wandb_env):
    cfg = make_cfg("logger=wandb")
    results, logged, folder = logged_run(cfg)
    config = logged["config"]
    assert (config["method.name"], config["backbone.name"], config["dataset.name"], config["scenario.name"],
            config["seed"], config["n_deltas"]) == ("delta", "resnet18", "digits", "single", 0, 1)
    # the whole resolved config, every leaf under its dotted key
    expected = flatten(OmegaConf.to_container(cfg, resolve=True))
    assert set(expected) <= set(config)
    assert config["trainer.max_epochs"] == 1 and config["scenario.tasks.patch.classes"] == [5, 6, 7, 8, 9]
    assert_summary_holds_results(logged, results)
    assert "patch_files.patch.bytes" in logged["summary"] and "lambdas.patch.3" in logged["summary"]
    assert logged["tags"] == ["method:delta", "backbone:resnet18", "dataset:digits", "scenario:single",
                              "n_deltas:1", "seed:0"]
    assert logged["name"] == "delta-resnet18-digits-single-n1-s0"
    image = logged["summary"]["lambda/patch"]
    assert image["_type"] == "image-file"
    assert media_file(folder, image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paint_run_alpha_table_chart_and_no_delta_tag(make_cfg, wandb_env):
    cfg = make_cfg("logger=wandb", "method=paint", "method.module.alphas=[0.0,0.5,1.0]")
    results, logged, folder = logged_run(cfg)
    assert logged["config"]["method.name"] == "paint" and logged["config"]["n_deltas"] is None
    assert not any(t.startswith("n_deltas:") for t in logged["tags"])  # PAINT has no ∆-modules
    assert "method:paint" in logged["tags"] and logged["name"] == "paint-resnet18-digits-single-s0"
    assert_summary_holds_results(logged, results)
    assert "lambda/patch" not in logged["summary"]
    # the α sweep as a table: one row per α, the chosen one flagged, every score of results.json
    table = json.loads(media_file(folder, logged["summary"]["paint/alpha_sweep/patch"]).read_text())
    assert table["columns"] == ["alpha", "chosen", "val/base", "val/patch", "val/hmean",
                                "test/base", "test/patch", "test/hmean"]
    assert [row[0] for row in table["data"]] == [0.0, 0.5, 1.0]
    assert [row[0] for row in table["data"] if row[1]] == [results["alpha"]]
    for row, swept in zip(table["data"], results["alpha_sweep"]):
        for column, value in zip(table["columns"][2:], row[2:]):
            split, key = column.split("/")
            assert same(value, swept[split][key]), (column, value, swept)
    # ... and as a line chart of every column against α (W&B keeps the chart's data as a table)
    chart = json.loads(media_file(folder, logged["summary"]["paint/alpha_curve/patch_table"]).read_text())
    assert len(chart["data"]) == 6 * 3 and {row[1] for row in chart["data"]} == set(table["columns"][2:])
