#!/usr/bin/env python
"""Check the paper's claims against every results.json under a folder of runs.

    .venv/bin/python scripts/claims.py outputs/multirun/2026-01-01/12-00-00-000000
    .venv/bin/python scripts/claims.py RUNS --json > claims.json

Prints, per claim, PASS / FAIL / NOT ENOUGH RUNS with the numbers behind it (means ± std, pairs,
the paired differences, a one-sided Wilcoxon signed-rank p over (cell, seed) pairs) and the rule
the verdict follows; the claims and their rules are in deltapatch/reporting/claims.py. It reports
and does not gate: exit 0 whatever the verdicts, 2 for a missing folder or one without runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a plain script from a checkout
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="folder searched (recursively) for results.json")
    p.add_argument("--json", action="store_true", help="print the verdicts and their numbers as JSON")
    p.add_argument("--experiment", action="append", default=None,
                   help="only runs whose experiment_name is this (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from deltapatch.cli import guarded
    from deltapatch.reporting.claims import check_claims
    from deltapatch.reporting.runs import runs_for_command
    from deltapatch.reporting.verdicts import render

    runs = guarded(runs_for_command, args.runs, args.experiment, derived=False)
    verdicts = check_claims(runs)
    if args.json:
        print(json.dumps({"runs_dir": str(args.runs), "runs": len(runs), "claims": [v.as_dict() for v in verdicts]},
                         indent=2, ensure_ascii=False))
    else:
        from rich.console import Console

        Console().print(render(verdicts, title=f"Claims — {len(runs)} runs under {args.runs}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
