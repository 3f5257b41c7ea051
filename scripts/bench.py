#!/usr/bin/env python
"""Speed benchmarks, every case side by side in one process (interleaved rounds, medians, ratios).

    .venv/bin/python scripts/bench.py                     # synthetic tensors: ∆(1) vs fine-tuning vs FC-only
    .venv/bin/python scripts/bench.py --workload jpeg     # JPEG folders at 224 px, image and feature caches
    .venv/bin/python scripts/bench.py --workload methods  # images/s and peak memory per method (Table 2 cell)

Each workload has its own options (``--workload jpeg --help``) and ``--quick`` (a smoke run of
seconds), prints tables and PASS/MISS lines, then ONE final JSON line (``--json FILE`` also
writes it). Workloads: bench_synthetic.py, bench_jpeg.py, bench_methods.py beside this file.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_* modules beside this file

WORKLOADS = {"synthetic": "bench_synthetic", "jpeg": "bench_jpeg", "methods": "bench_methods"}


def main(argv: list[str] | None = None):
    """Run the workload named by ``--workload`` (default ``synthetic``) with the other arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    workload = "synthetic"
    for i, a in enumerate(argv):
        if a == "--workload" and i + 1 < len(argv):
            workload = argv[i + 1]
            del argv[i:i + 2]
            break
        if a.startswith("--workload="):
            workload = a.split("=", 1)[1]
            del argv[i]
            break
    if workload not in WORKLOADS:
        raise SystemExit(f"bench.py: unknown --workload '{workload}'; choose one of {', '.join(WORKLOADS)}")
    return importlib.import_module(WORKLOADS[workload]).main(argv)


if __name__ == "__main__":
    main()
