#!/usr/bin/env python
"""The paper's figures as PNG files from a folder of runs.

    .venv/bin/python scripts/plots.py outputs/multirun/2026-01-01/12-00-00-000000
    .venv/bin/python scripts/plots.py RUNS --lambdas rebuild --max-batches 10

Per (experiment, scenario): accuracy vs trainable parameters across methods; per backbone and
column with PAINT runs: accuracy vs α with ∆-Networks as flat lines (Table 11 as a figure); per ∆
run and task: heatmaps of mean λ per stage and skip (Figures 3–6) — from results.json's
``lambdas`` when the runner kept them, or recomputed from the run folder with ``--lambdas rebuild``
(loads the run's base model, patch files and test split; run it from the folder the runs were
started in, so cache paths resolve as they did).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a plain script from a checkout
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="folder searched (recursively) for results.json")
    p.add_argument("--out", type=Path, default=None, help="where to write PNGs (default: RUNS/report/plots)")
    p.add_argument("--metric", default="auto", help="as in scripts/report.py")
    p.add_argument("--lambdas", choices=["results", "rebuild", "off"], default="results",
                   help="λ heatmaps from results.json (results), also recomputed from run folders (rebuild), or none")
    p.add_argument("--max-batches", type=int, default=None, help="with --lambdas rebuild: batches of the test split to average")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from deltapatch.cli import guarded
    from deltapatch.reporting.plots import make_plots
    from deltapatch.reporting.runs import runs_for_command

    runs = guarded(runs_for_command, args.runs)
    out = args.out or args.runs / "report" / "plots"
    paths = guarded(make_plots, runs, out, metric=args.metric, lambdas=args.lambdas, max_batches=args.max_batches)
    for p in paths:
        print(p)
    print(f"{len(runs)} runs -> {len(paths)} PNG files in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
