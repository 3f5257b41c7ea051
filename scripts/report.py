#!/usr/bin/env python
"""Tables shaped like the paper's from every results.json under a folder of runs: a thin wrapper
around :func:`deltapatch.report.main` (installed as ``deltapatch-report``); see its docstring.

    .venv/bin/python scripts/report.py outputs/multirun/2026-01-01/12-00-00-000000
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from deltapatch.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
