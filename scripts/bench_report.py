#!/usr/bin/env python
"""Merge the parts of ``scripts/gpu_check.sh`` into ``gpu_check.json`` and a Markdown report.

    python3 scripts/bench_report.py OUT_DIR

Reads ``OUT_DIR/{env,methods,workload}.json`` and ``OUT_DIR/parts.txt`` (one tab-separated line per
part: name, status, seconds, message); a part that failed simply has no JSON. Writes ``OUT_DIR/gpu_check.json``
and ``OUT_DIR/gpu_check.md`` and prints the Markdown. Needs only the standard library.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _f(v, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def parts(out: Path) -> list[dict]:
    rows = []
    if (out / "parts.txt").is_file():
        for line in (out / "parts.txt").read_text().splitlines():
            name, status, seconds, message = (line.split("\t", 3) + ["", "", ""])[:4]
            rows.append({"part": name, "status": status, "seconds": seconds, "message": message.strip()})
    return rows


def markdown(report: dict) -> str:
    env, methods, workload = report.get("env") or {}, report.get("methods"), report.get("workload")
    lines = [f"## GPU check: {env.get('gpu') or env.get('device', '?')}",
             "", f"torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}, {env.get('cpus', '?')} CPUs, "
             f"Python {env.get('python', '?')}; random weights, timings from one run.", ""]
    if methods:
        c = methods["config"]
        lines += [f"### Methods: one Table 2 cell ({c['backbone']}, {c['image_size']} px, batch {c['batch_size']}, "
                  f"{'bf16' if c['bf16'] else 'fp32'}, {c['steps']} steps, synthetic images in memory)", "",
                  "| method | images/s | peak GPU memory (MB) | trainable params | × fine-tuning speed |",
                  "|---|---:|---:|---:|---:|"]
        for name, r in methods["methods"].items():
            extra = f" (α sweep {r['alpha_sweep_s']:.1f} s)" if "alpha_sweep_s" in r else ""
            lines.append(f"| {name}{extra} | {_f(r.get('images_per_s'))} | {_f(r.get('peak_gpu_mb'), '.0f')} | "
                         f"{r.get('trainable_params', 0):,} | {_f(r.get('speed_vs_finetune'), '.2f')} |")
        lines.append("")
        if methods.get("variants"):
            main = ("bf16" if c["bf16"] else "fp32") + ("-cl" if c["channels_last"] else "")
            lines += [f"Other precisions and memory formats (-cl: channels_last), against the {main} run:", "",
                      f"| method | variant | images/s | peak GPU memory (MB) | × {main} |", "|---|---|---:|---:|---:|"]
            for name, vs in methods["variants"].items():
                lines += [f"| {name} | {v} | {_f(r.get('images_per_s'))} | {_f(r.get('peak_gpu_mb'), '.0f')} | "
                          f"{_f(r.get('speed_vs_main'), '.2f')} |" for v, r in vs.items()]
            lines.append("")
    if workload:
        c = workload["config"]
        for group, g in workload["groups"].items():
            lines += [f"### Workload {group}: one epoch of {c['images']} Cars-sized JPEGs at {c['image_size']} px, "
                      f"batch {c['batch_size']}", "",
                      "| case | ms/epoch | images/s | data wait share | GPU util % |", "|---|---:|---:|---:|---:|"]
            util = g.get("gpu_util_pct") or {}
            for case, ms in g["ms"].items():
                lines.append(f"| {case} | {ms:.0f} | {g['images_per_s'][case]:.0f} | "
                             f"{g['data_wait_share'][case]:.2f} | {_f(util.get(case), '.0f')} |")
            lines += ["", "| ratio | value |", "|---|---:|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in g["ratios"].items()]
            be = g.get("breakeven_epochs", {})
            lines += ["", f"Break-even epochs: image cache {_f(be.get('image_cache'), '.2f')}, "
                          f"feature cache {_f(be.get('feature_cache'), '.2f')}, held in training memory "
                          f"{_f(be.get('feature_cache_resident'), '.2f')}.", ""]
        ic = workload["image_cache"]
        lines.append(f"Image cache: {ic['bytes'] / 1e6:.0f} MB, {ic['seconds']:.1f} s to build"
                     f"{'' if ic['built'] else ' (reused)'}; " + "; ".join(
                         f"feature cache {bb}: {fc['bytes'] / 1e6:.0f} MB, {fc['seconds']:.1f} s "
                         f"(+{_f(fc.get('resident_seconds'), '.1f')} s to hold it in training memory)"
                         for bb, fc in workload["feature_cache"].items()) + ".")
        lines += ["", "Targets:", ""]
        lines += [f"- {t['status'].upper()} {name} = {_f(t['value'], '.3f')} (target {t['limit']})"
                  for name, t in workload["targets"].items()]
        lines.append("")
    lines += ["### Parts", "", "| part | status | seconds | message |", "|---|---|---:|---|"]
    lines += [f"| {p['part']} | {p['status']} | {p['seconds']} | {p['message']} |" for p in report["parts"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: bench_report.py OUT_DIR")
    out = Path(argv[0])
    report = {"env": _load(out / "env.json"), "methods": _load(out / "methods.json"),
              "workload": _load(out / "workload.json"), "parts": parts(out)}
    report["ok"] = bool(report["parts"]) and all(p["status"] == "ok" for p in report["parts"])
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    md = markdown(report)
    (out / "gpu_check.md").write_text(md)
    print(md)
    return report


if __name__ == "__main__":
    main()
