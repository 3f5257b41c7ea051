#!/usr/bin/env python
"""Regenerate every measured figure in README.md: rerun the commands, rewrite the tables.

    make readme-numbers                          # every block (hours on 2 CPU cores)
    make readme-numbers ONLY=default,methods     # some blocks
    .venv/bin/python scripts/readme_numbers.py --list
    .venv/bin/python scripts/readme_numbers.py --only sizes --readme /tmp/README.md

README's generated text sits between ``<!-- numbers:NAME -->`` and ``<!-- /numbers:NAME -->``;
everything between the two markers is replaced by the block's table, its command lines, the
machine and the wall time. Runs go to ``outputs/readme/<NAME>/`` (``--keep`` reuses finished
runs there instead of rerunning them). Numbers measured on another CPU can differ in the last
digits: the CPU's math kernels (oneDNN/MKL) pick their blocking and summation order by
instruction set, and different rounding flips a few argmaxes; on one machine a run repeats
exactly (deterministic training, seeded data order).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TRAIN = [PY, "-m", "deltapatch.train"]
METHODS = ["fc", "delta", "finetune", "finetune_delta", "paint", "series_adapter", "parallel_adapter", "bn_adapt",
           "bn_adapt_dua", "lora", "learnable_skip", "all_skips", "all_skips_nobn", "all_skips_learnable",
           "all_skips_learnable_nobn", "random_lambda", "random_lambda_nobn"]


@dataclass
class Block:
    """One generated piece of README: commands (``{out}`` = the block's run folder) and a renderer
    turning that folder into Markdown."""

    name: str
    about: str
    commands: list[list[str]]
    render: Callable[[Path], str]
    shown: list[str] = field(default_factory=list)  # the commands as README shows them (default: derived)


def pct(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def results(folder: Path) -> list[dict]:
    """Every results.json under ``folder``, in run order."""
    paths = sorted(folder.rglob("results.json"), key=lambda p: [int(t) if t.isdigit() else t
                                                                for t in re.split(r"(\d+)", str(p))])
    return [json.loads(p.read_text()) for p in paths]


# ------------------------------------------------------------------ renderers
def with_alpha(label: str, r: dict) -> str:
    """``label``, with PAINT's α chosen on validation where the run has one."""
    return f"{label} (α = {r['alpha']} chosen on val)" if "alpha" in r else label


def run_cells(r: dict) -> str:
    """A run's base after, task, hmean and trainable-parameter cells of a Markdown row."""
    return (f"{pct(r['base_acc_after'])} | {pct(r['tasks']['patch'])} | {pct(r['hmean'])} | "
            f"{r['trainable_params']['patch']:,}")


def render_default(out: Path) -> str:
    rows = ["| run | base before → after | tasks | hmean / mean |", "|---|---|---|---|"]
    for name in ("single", "sequential"):
        r = json.loads((out / name / "results.json").read_text())
        tasks = ", ".join(f"{k}: {pct(v)}" for k, v in r["tasks"].items())
        agg = f"hmean {pct(r['hmean'])}" if "hmean" in r else f"mean {pct(r['mean'])}"
        rows.append(f"| {name} | {pct(r['base_acc_before'])} → {pct(r['base_acc_after'])} | {tasks} | {agg} |")
    return "\n".join(rows)


def render_methods(out: Path) -> str:
    rows = ["| method | base after | task 5–9 | hmean | trainable params |", "|---|---:|---:|---:|---:|"]
    paint = None
    by_method = {r["method"]: r for r in results(out)}
    for name in METHODS:
        r = by_method.get(name)
        if r is None:
            continue
        rows.append(f"| {with_alpha(name, r)} | {run_cells(r)} |")
        if name == "paint":
            paint = r
    text = "\n".join(rows)
    if paint is not None:
        sweep = ", ".join(f"{row['alpha']:.1f} {pct(row['val']['hmean'])}/{pct(row['test']['hmean'])}"
                          for row in paint["alpha_sweep"])
        text += f"\n\nPAINT's α sweep (val / test harmonic mean): {sweep}."
    return text


def render_runs(out: Path) -> str:
    """One row per run: base after, task, hmean, trainable parameters and training time."""
    rows = ["| method | base after | task | hmean | trainable params | train time |", "|---|---:|---:|---:|---:|---:|"]
    order = {"fc": 0, "paint": 1}  # then the ∆ rows by n
    for r in sorted(results(out), key=lambda r: (order.get(r["method"], 2), r.get("n_deltas") or 0)):
        label = f"∆({r['n_deltas']})" if r["method"] == "delta" else r["method"]
        rows.append(f"| {with_alpha(label, r)} | {run_cells(r)} | {r['train_seconds']:.0f} s |")
    return "\n".join(rows)


def render_report(out: Path) -> str:
    """The main table of every (experiment, scenario) found, as the report writes it."""
    from deltapatch.reporting.runs import groups, load_runs
    from deltapatch.reporting.tables import main_table

    parts = []
    for (experiment, scenario), runs in groups(load_runs(out)).items():
        table = main_table(experiment, scenario, runs)
        parts.append(f"**{table.title}**\n\n{table.markdown(heading=False)}")
    return "\n\n".join(parts)


def render_bench(out: Path) -> str:
    data = json.loads((out / "bench.json").read_text())
    rows = ["| target | limit | measured | |", "|---|---|---:|---|"]
    for name, t in data["targets"].items():
        value = "–" if t["value"] is None else f"{t['value']:.3f}"
        rows.append(f"| {name} | {t['limit']} | {value} | {t['status']} |")
    return "\n".join(rows)


def render_sizes(out: Path) -> str:
    s = json.loads((out / "summary.json").read_text().strip().splitlines()[-1])
    return (f"A {s['backbone']} ∆({s['n_deltas']}) patch with a {s['num_classes']}-class head is "
            f"{s['patch_bytes']:,} bytes ({s['delta_params']:,} ∆ parameters + {s['head_params']:,} head) "
            f"against {4 * s['base_params'] / 1e6:.1f} MB of float32 weights for a model copy.")


def train(*args: str) -> list[str]:
    return [*TRAIN, *args]


BLOCKS = [
    Block("default", "the default experiment and its sequential variant",
          [train("hydra.run.dir={out}/single"), train("scenario=sequential", "hydra.run.dir={out}/sequential")],
          render_default),
    Block("methods", "every method on the default experiment, 2 epochs",
          [train("-m", "method=" + ",".join(METHODS), "trainer.max_epochs=2", "hydra.sweep.dir={out}")],
          render_methods),
    Block("mini_table2", "Table 2's offline twin", [train("-m", "experiment=mini/table2", "hydra.sweep.dir={out}")],
          render_report),
    Block("beyond", "the offline twins beyond classification",
          [train("-m", f"experiment=mini/{name}", "hydra.sweep.dir={out}/" + name)
           for name in ("table7", "transfer_cifar10", "table5", "table6", "table12_13")], render_report),
    # FC and PAINT ignore n_deltas, so they get a sweep of their own instead of running once per n
    Block("cifar10_pack", "single patching on the CIFAR-10 pack",
          [train("-m", "dataset=cifar10_pack", "base.epochs=4", "trainer.max_epochs=3", "trainer.limit_train_batches=40",
                 *methods, "hydra.sweep.dir={out}/" + name)
           for name, methods in (("fc_paint", ["method=fc,paint"]), ("delta", ["method=delta", "n_deltas=1,4"]))],
          render_runs),
    Block("bench", "speed and size ratios, synthetic tensors", [[PY, "scripts/bench.py", "--json", "{out}/bench.json"]],
          render_bench),
    Block("bench_jpeg", "speed on JPEG folders at 224 px",
          [[PY, "scripts/bench.py", "--workload", "jpeg", "--json", "{out}/bench.json"]], render_bench),
    Block("sizes", "patch size against a model copy",
          [[PY, "-m", "deltapatch.summary", "backbone=resnet18", "methods=false", "--json"]], render_sizes),
]
BY_NAME = {b.name: b for b in BLOCKS}


# ------------------------------------------------------------------ README plumbing
def marker(name: str) -> tuple[str, str]:
    return f"<!-- numbers:{name} -->", f"<!-- /numbers:{name} -->"


def blocks_in(text: str) -> list[str]:
    """Names of the generated blocks in README text, in order."""
    return re.findall(r"<!-- numbers:([\w-]+) -->", text)


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the part between ``name``'s markers replaced by ``body``."""
    start, end = marker(name)
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"readme_numbers: README has no {start} ... {end} pair")
    return text[: i + len(start)] + "\n" + body.strip() + "\n" + text[j:]


def shown(cmd: list[str], out: Path) -> str:
    """A command as README shows it: the venv's python as ``python``, paths relative."""
    args = ["python" if a == PY else a.replace("{out}", str(out.relative_to(ROOT)) if out.is_relative_to(ROOT)
                                                else str(out)) for a in cmd]
    return " ".join(shlex.quote(a) for a in args)


def run_block(block: Block, out: Path, keep: bool) -> tuple[str, float]:
    """Run ``block``'s commands (unless ``keep`` and its folder holds results); its Markdown and wall time.
    The wall time is written to ``out/wall_seconds``, so that ``keep`` shows the run's, not the render's."""
    recorded = out / "wall_seconds"
    if keep and out.exists() and any(out.iterdir()):
        return block.render(out), float(recorded.read_text()) if recorded.exists() else 0.0
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for cmd in block.commands:
        argv = [a.replace("{out}", str(out)) for a in cmd]
        print("$", shown(cmd, out), flush=True)
        proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            raise SystemExit(f"readme_numbers: block '{block.name}' failed: {shown(cmd, out)} exited {proc.returncode}")
        if block.name == "sizes":
            (out / "summary.json").write_text(proc.stdout)
    seconds = time.perf_counter() - t0
    recorded.write_text(f"{seconds:.1f}\n")
    return block.render(out), seconds


def body_of(block: Block, out: Path, table: str, seconds: float) -> str:
    commands = "\n".join(shown(c, out) for c in block.commands)
    from deltapatch.provenance import cpu_model  # imports torch: keep it out of --list

    cpu = cpu_model()
    return (f"{table}\n\n<sub>Generated by `make readme-numbers ONLY={block.name}` on {date.today().isoformat()} "
            f"({cpu}, {seconds / 60:.0f} min wall); commands:</sub>\n\n```bash\n{commands}\n```")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated block names (default: every block in README)")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "readme")
    p.add_argument("--keep", action="store_true", help="render from earlier runs in --out instead of rerunning")
    p.add_argument("--list", action="store_true", help="list the blocks and exit")
    args = p.parse_args(argv)
    if args.list:
        for b in BLOCKS:
            print(f"{b.name:14s} {b.about}")
        return 0
    text = args.readme.read_text()
    names = [n for n in args.only.split(",") if n] or blocks_in(text)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"readme_numbers: unknown block(s) {unknown}; --list shows them")
    for name in names:
        block = BY_NAME[name]
        table, seconds = run_block(block, args.out / name, args.keep)
        text = replace_block(text, name, body_of(block, args.out / name, table, seconds))
        args.readme.write_text(text)  # after each block: a long run keeps what it finished
        print(f"readme_numbers: {name} done ({seconds / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
