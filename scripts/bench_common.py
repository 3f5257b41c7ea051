"""What every workload of ``scripts/bench.py`` shares: interleaved timing, medians, target
entries, tables, the JSON line, peak RSS and GPU utilisation sampling.

Timing style: every case runs in one process, interleaved round by round (epochs: batch by batch,
or epoch by epoch where background loader workers would otherwise overlap another case), so a
burst of load from elsewhere hits all cases alike; after warm-up the figure kept is the median
over rounds, and ratios of medians are compared with the targets.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as plain scripts from a checkout
    sys.path.insert(0, str(ROOT))

Windows = dict[str, list[tuple[float, float]]]


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def time_cases(cases: dict[str, Callable[[], Any]], sync: Callable[[], None], warmup: int, repeats: int,
               cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Wall-clock ms per call of each case: warm-up, then ``repeats`` interleaved rounds.

    ``cpu``, when given, receives the process CPU time (all threads) of the same calls: on a
    machine shared with other work, time spent descheduled inflates wall-clock but not CPU time.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    sync()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            sync()
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            sync()
            t1, c1 = time.perf_counter(), time.process_time()
            samples[name].append((t1 - t0) * 1e3)
            if cpu is not None:
                cpu.setdefault(name, []).append((c1 - c0) * 1e3)
    return samples


def time_epochs(cases: dict[str, Callable[[], Iterator[None]]], sync: Callable[[], None], warmup: int, repeats: int,
                cpu: dict[str, list[float]] | None = None, by: str = "batch",
                windows: Windows | None = None) -> dict[str, list[float]]:
    """ms per whole epoch of each case; a case is a function returning a generator that yields
    after every batch. ``by="batch"``: the cases of a round advance batch by batch in turn;
    ``by="epoch"``: one whole epoch after another (use it when loader workers run in the
    background, or they would decode during another case's steps). ``windows`` receives the
    (start, end) ``time.time()`` spans of each case, for matching GPU utilisation samples.
    """
    for fn in cases.values():
        for _ in range(warmup):
            for _ in fn():
                pass
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        wall = dict.fromkeys(cases, 0.0)
        proc = dict.fromkeys(cases, 0.0)
        order = [[name] for name in cases] if by == "epoch" else [list(cases)]
        for group in order:
            live = {name: cases[name]() for name in group}
            while live:
                for name in list(live):
                    sync()
                    w0, c0, t0 = time.time(), time.process_time(), time.perf_counter()
                    try:
                        next(live[name])
                    except StopIteration:
                        del live[name]
                    sync()
                    wall[name] += time.perf_counter() - t0
                    proc[name] += time.process_time() - c0
                    if windows is not None:
                        windows.setdefault(name, []).append((w0, time.time()))
        for name in cases:
            samples[name].append(wall[name] * 1e3)
            if cpu is not None:
                cpu.setdefault(name, []).append(proc[name] * 1e3)
    return samples


def target_entry(value: float | None, limit: float, how: str = "<=") -> dict:
    """``{"value", "limit", "status"}``: pass/miss against ``limit`` (``n/a`` without a value)."""
    if value is None:
        return {"value": None, "limit": f"{how} {limit:g}", "status": "n/a"}
    ok = value <= limit if how == "<=" else value >= limit
    entry: dict[str, Any] = {"value": value, "limit": f"{how} {limit:g}", "status": "pass" if ok else "miss"}
    if not ok:
        entry["over_by"] = value - limit
        entry["over_by_pct"] = round(100 * (value / limit - 1), 1)
    return entry


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child (loader workers)."""
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def render_tables(tables: list[tuple[str, tuple, list[tuple]]], plain: bool = False) -> None:
    """Print ``(title, columns, rows)`` tables, with rich when installed (and not ``plain``)."""
    tables = [t for t in tables if t[2]]
    try:
        if plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table

        # piped output (tee, CI logs): rich would fall back to 80 columns and squash the names
        console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 180)
        for title, cols, rows in tables:
            tab = Table(title=title)
            for i, c in enumerate(cols):
                tab.add_column(str(c), justify="left" if i == 0 else "right")
            for r in rows:
                tab.add_row(*(str(v) for v in r))
            console.print(tab)
    except ImportError:
        for title, cols, rows in tables:
            widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(cols)]
            print(f"\n{title}")
            print("  ".join(str(c).ljust(w) for c, w in zip(cols, widths)))
            for r in rows:
                print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def target_rows(targets: dict[str, dict]) -> list[tuple]:
    """One table row per target: name, value, limit, PASS/MISS, by how much."""
    rows = []
    for name, t in targets.items():
        v = t["value"]
        shown = "-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:.3f}"
        rows.append((name, shown, t["limit"], t["status"].upper(),
                     f"+{t['over_by_pct']}%" if t["status"] == "miss" else ""))
    return rows


def print_target_lines(targets: dict[str, dict]) -> None:
    """``PASS name value (limit)`` lines, easy to grep in a log."""
    for name, t in targets.items():
        v = "-" if t["value"] is None else f"{t['value']:.3f}"
        print(f"{t['status'].upper():4s} {name} = {v} (target {t['limit']})")


def load_warning(result: dict) -> None:
    load = result["config"]["loadavg_start"][0]
    if result["config"]["device"] == "cpu" and load > (os.cpu_count() or 1):
        print(f"WARNING: load average {load:.1f} on {os.cpu_count()} CPUs at start: other work shares these "
              f"cores, so wall-clock figures are inflated and noisy; compare the min and CPU-time ratios")


def emit_json(result: dict, path: str | None) -> None:
    """The result as ONE final JSON line on stdout (``tail -n1``), and in ``path`` when given."""
    line = json.dumps(result, separators=(",", ":"), default=str)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(line + "\n")
    print(line, flush=True)


class GpuUtilization:
    """``nvidia-smi`` utilisation samples in a background thread (none without nvidia-smi).

    ``mean(windows)``: the mean utilisation (percent) of the samples taken inside the given
    ``(start, end)`` spans, or ``None`` when no sample fell inside them.
    """

    def __init__(self, interval_ms: int = 100):
        self.samples: list[tuple[float, float]] = []
        self.proc: subprocess.Popen | None = None
        self.interval_ms = interval_ms
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return shutil.which("nvidia-smi") is not None

    def start(self) -> "GpuUtilization":
        if not self.available:
            return self
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
               f"--loop-ms={self.interval_ms}", f"--id={os.environ.get('CUDA_VISIBLE_DEVICES', '0').split(',')[0]}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.samples.append((time.time(), float(line.strip())))
            except ValueError:
                continue

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def mean(self, windows: list[tuple[float, float]]) -> float | None:
        inside = [u for t, u in self.samples if any(a <= t <= b for a, b in windows)]
        return sum(inside) / len(inside) if inside else None
