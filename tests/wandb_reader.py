"""Read an offline W&B run back with wandb's own reader (importable as ``wandb_reader``).

wandb 0.31 writes an offline run as one ``run-<id>.wandb`` transaction log (no
``files/config.yaml`` or ``wandb-summary.json``); ``wandb leet inspect --summary --json`` (wandb's
CLI, backed by its wandb-core reader) prints the run's final config, summary, tags and name.
Logged media (tables, images) are files under the run folder's ``files/``.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any


def offline_runs(root: Path) -> list[Path]:
    """Every offline run folder under ``root`` (``.../wandb/offline-run-*``)."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir())


def read_run(run_dir: Path) -> dict[str, Any]:
    """``{"config", "summary", "tags", "name", "state", "exit_code", ...}`` of an offline run."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run_dir)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


def media_file(run_dir: Path, entry: dict[str, Any]) -> Path:
    """The file a summary entry of a logged table or image points at."""
    return Path(run_dir) / "files" / entry["path"]


def flat_numbers(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every number, string and flag of a results.json under its dotted path (lists of records,
    e.g. PAINT's α sweep, left out: W&B holds them as tables)."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flat_numbers(v, f"{prefix}{k}."))
    elif isinstance(tree, list):
        if tree and all(not isinstance(x, (dict, list)) and x is not None for x in tree):
            out[prefix[:-1]] = tree
    elif tree is not None:
        out[prefix[:-1]] = tree
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, floats to the last bit W&B keeps (it stores JSON doubles)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b
