"""Smoke test of scripts/bench.py: it runs end to end in --quick mode and its last line is JSON
with every key the issue asks for. No timing assertions (timings belong to the full bench)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RATIOS = [
    "train_step_ratio_delta1_vs_finetune",
    "train_step_ratio_delta1_vs_fc",
    "epoch_ratio_cached_vs_uncached",
    "infer_ratio_patched_vs_base",
    "infer_ratio_4tasks_shared_vs_separate",
]


@pytest.mark.timeout(600)
def test_bench_quick_prints_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--plain", "--json-out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == result
    for key in RATIOS:
        assert isinstance(result[key], float) and result[key] > 0, key
    # a real patch file is a small fraction of a real model file
    assert 0 < result["patch_bytes_resnet18_delta1"] < result["model_bytes_resnet18"]
    for mode in ("finetune", "fc", "delta1", "delta1_cached"):
        assert result["peak_memory"][mode]["peak_rss_mb"] > 0
        assert result[f"peak_mem_above_idle_mb_{mode}"] == result["peak_memory"][mode]["peak_rss_above_idle_mb"]
    assert all(v > 0 for v in result["ms"].values())
    targets = result["targets"]
    assert {"delta1_step_vs_finetune", "delta1_step_vs_fc", "cached_epoch_vs_uncached", "patched_infer_vs_base",
            "4tasks_shared_vs_separate", "patch_file_bytes"} <= set(targets)
    for t in targets.values():
        assert t["status"] in ("pass", "miss")
        assert t["status"] == "pass" or t["over_by_pct"] > 0
    assert result["config"]["quick"] and result["config"]["device"] == "cpu"
