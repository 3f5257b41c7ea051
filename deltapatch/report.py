"""Tables shaped like the paper's from every results.json under a folder of runs.

    deltapatch-report outputs/multirun/2026-01-01/12-00-00-000000
    make report RUNS=outputs/multirun/...             # the same
    deltapatch-report RUNS --metric task --plots

Writes ``report.md`` (every table), per table a CSV and a LaTeX ``.tex`` beside it, and
``runs.csv`` (one row per run) into ``--out`` (default ``RUNS/report``), and prints the Markdown.
Per (experiment, scenario): the main table (rows backbone × method, columns datasets / task sets,
harmonic mean or mean, mean ± std over seeds, trainable parameters), the per-task table (base and
task accuracies, Table 10) and, where PAINT runs kept their α sweep, the α tables (Table 11).
``--plots`` also draws the figures (see scripts/plots.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="deltapatch-report", description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="folder searched (recursively) for results.json")
    p.add_argument("--out", type=Path, default=None, help="where to write tables (default: RUNS/report)")
    p.add_argument("--metric", default="auto",
                   help="cell value: auto (hmean for single/joint, mean for sequential, task accuracy for "
                        "other scenarios and from-scratch runs), hmean, mean, task, base, or any results.json key")
    p.add_argument("--experiment", action="append", default=None,
                   help="only runs whose experiment_name is this (repeatable)")
    p.add_argument("--no-per-task", action="store_true", help="skip the per-task (Table 10) tables")
    p.add_argument("--no-alpha", action="store_true", help="skip the PAINT α (Table 11) tables")
    p.add_argument("--plots", action="store_true", help="also write the figures into OUT/plots")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The ``deltapatch-report`` command; exit 2 with one line for a missing or empty folder."""
    args = parse_args(argv)
    from .cli import guarded
    from .reporting.runs import runs_for_command
    from .reporting.tables import build_report, write_report

    runs = guarded(runs_for_command, args.runs, args.experiment)
    out = args.out or args.runs / "report"
    report = build_report(runs, metric=args.metric, per_task=not args.no_per_task, alpha=not args.no_alpha)
    written = write_report(report, out, metric=args.metric)
    if args.plots:
        from .reporting.plots import make_plots

        written.update({p.stem: p for p in make_plots(runs, out / "plots", metric=args.metric)})
    if not args.quiet:
        print(report.markdown())
    print(f"{len(runs)} runs -> {len(written)} files in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
