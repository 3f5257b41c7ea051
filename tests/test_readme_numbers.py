"""README's measured tables are generated (scripts/readme_numbers.py, ``make readme-numbers``):
every marked block is one the script knows, replacing a block touches nothing outside it, and the
cheapest block really runs and writes what the command measured."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from helpers import ROOT, cli_env

spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "scripts" / "readme_numbers.py")
rn = importlib.util.module_from_spec(spec)
sys.modules["readme_numbers"] = rn  # dataclasses look their module up
spec.loader.exec_module(rn)


def test_every_readme_block_is_known_and_paired():
    text = (ROOT / "README.md").read_text()
    names = rn.blocks_in(text)
    assert {"default", "methods", "bench", "sizes"} <= set(names)
    assert len(names) == len(set(names))
    for name in names:
        assert name in rn.BY_NAME, name
        start, end = rn.marker(name)
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end), name


def test_replace_block_is_idempotent_and_local():
    text = "intro\n<!-- numbers:a -->\nold a\n<!-- /numbers:a -->\nmiddle\n<!-- numbers:b -->\nold b\n<!-- /numbers:b -->\nend\n"
    once = rn.replace_block(text, "a", "new a")
    assert once == text.replace("old a", "new a")
    assert rn.replace_block(once, "a", "new a") == once
    with pytest.raises(SystemExit, match="no <!-- numbers:c -->"):
        rn.replace_block(text, "c", "x")


@pytest.mark.slow
def test_sizes_block_writes_what_summary_measures(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- numbers:sizes -->\nstale\n<!-- /numbers:sizes -->\ntail\n")
    p = subprocess.run([sys.executable, "scripts/readme_numbers.py", "--only", "sizes", "--readme", str(readme),
                        "--out", str(tmp_path / "out")], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "sizes" / "summary.json").read_text().strip().splitlines()[-1])
    text = readme.read_text()
    assert "stale" not in text and text.endswith("tail\n")
    assert f"{summary['patch_bytes']:,} bytes" in text and f"{summary['delta_params']:,} ∆ parameters" in text
    assert "make readme-numbers ONLY=sizes" in text


def _run(folder, **res):
    folder.mkdir(parents=True)
    base = {"backbone": "resnet18", "scenario": "single", "experiment": "t", "dataset": "d", "seed": 0,
            "base_acc_before": 90.0, "base_acc_after": 90.0, "base_model_unchanged": True, "train_seconds": 12.4}
    (folder / "results.json").write_text(json.dumps(base | res))


def _cifar_runs(out):
    # the ∆ sweep sorts before fc_paint on disk; the table still reads FC, PAINT, ∆(1), ∆(4)
    for job, n, h in ((0, 1, 74.5), (1, 4, 77.6)):
        _run(out / "delta" / str(job), method="delta", n_deltas=n, hmean=h, tasks={"patch": 70.0 + n},
             trainable_params={"patch": 1000 * n})
    _run(out / "fc_paint" / "0", method="fc", n_deltas=None, hmean=71.9, tasks={"patch": 65.4},
         trainable_params={"patch": 2565})
    _run(out / "fc_paint" / "1", method="paint", n_deltas=None, alpha=0.5, hmean=74.5, base_acc_after=72.3,
         tasks={"patch": 76.9}, trainable_params={"patch": 11179077})


def test_runs_table_has_one_row_per_run_in_method_order(tmp_path):
    _cifar_runs(tmp_path)
    lines = rn.render_runs(tmp_path).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| fc", "| paint (α = 0.5 chosen on val)", "| ∆(1)", "| ∆(4)"]
    assert lines[3] == "| paint (α = 0.5 chosen on val) | 72.30 | 76.90 | 74.50 | 11,179,077 | 12 s |"


def test_keep_shows_the_recorded_wall_time_not_the_render_time(tmp_path):
    out = tmp_path / "out" / "cifar10_pack"
    _cifar_runs(out)
    (out / "wall_seconds").write_text("1200.0\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- numbers:cifar10_pack -->\nstale\n<!-- /numbers:cifar10_pack -->\n")
    assert rn.main(["--only", "cifar10_pack", "--keep", "--readme", str(readme), "--out", str(tmp_path / "out")]) == 0
    text = readme.read_text()
    assert "stale" not in text and ", 20 min wall)" in text and "| ∆(4) | 90.00 | 74.00 | 77.60 | 4,000 | 12 s |" in text


def test_report_block_titles_each_table_once(tmp_path):
    for seed in (0, 1):
        _run(tmp_path / f"r{seed}", method="delta", n_deltas=1, seed=seed, hmean=80.0 + seed, tasks={"patch": 70.0},
             trainable_params={"patch": 1000})
    text = rn.render_report(tmp_path)
    assert "###" not in text and text.count("**t — single") == 1 and "80.50" in text


def test_block_caption_names_the_processor_model(tmp_path):
    # The caption used to say "x86_64" (platform.machine()): kernels, and so results, differ by processor.
    from deltapatch.provenance import cpu_model

    body = rn.body_of(rn.BY_NAME["sizes"], tmp_path, "TABLE", 120.0)
    assert body.startswith("TABLE\n")
    assert f"({cpu_model()}, 2 min wall)" in body
    assert "make readme-numbers ONLY=sizes" in body
