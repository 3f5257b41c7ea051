"""What a run prints: one line per log message, no Lightning tips, known harmless warnings
silenced, a progress bar only on a terminal (one plain line per epoch otherwise), and a one-screen
summary at the end of each run."""
from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger("deltapatch.progress")

SUMMARY_TITLE = "deltapatch run summary"
# Loggers Lightning gives handlers of their own when imported (the `lightning` meta-package always,
# `pytorch_lightning`/`lightning_fabric` when the root logger had none yet): with Hydra's handlers on
# the root logger too, every message would be printed twice.
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# Where Lightning's rank-zero messages, its tips among them, are logged from.
_RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                      "lightning_fabric.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _NoTips(logging.Filter):
    """Drops Lightning's advertising ("💡 Tip: ... try installing litlogger / litmodels"), and its
    device lines ("GPU available: ...") after the first time: a run builds several Trainers (the
    base, each task, the evaluation loops) and each would print them again."""

    def __init__(self) -> None:
        super().__init__()
        self._devices_seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if "💡 Tip" in msg:
            return False
        if msg.startswith(("GPU available:", "TPU available:", "HPU available:")):
            text = record.getMessage()
            if text in self._devices_seen:
                return False
            self._devices_seen.add(text)
        return True


def setup_console() -> None:
    """Make a run's console clean; called by the entry points once Lightning is imported. Idempotent."""
    if logging.getLogger().handlers:  # the root logger is configured (Hydra's job_logging): use only it
        for name in _LIGHTNING_LOGGERS:
            lg = logging.getLogger(name)
            for h in list(lg.handlers):
                lg.removeHandler(h)
            lg.propagate = True
    for name in _RANK_ZERO_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in lg.filters):
            lg.addFilter(_NoTips())
    # Intended: ∆ training keeps the frozen base in eval mode (BatchNorm statistics must not move,
    # DESIGN.md's invariant), which Lightning reports at the start of every fit.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Lightning 2.6 calls a torch pytree API that newer torch deprecates; nothing to change on our side.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Small tasks (a sequential task of 2 classes) have fewer batches than the logging interval;
    # every epoch's metrics still reach the loggers at its end.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")


# ------------------------------------------------------------------ progress
class EpochLines(ProgressBar):
    """A progress "bar" for logs and pipes: one INFO line per training epoch with the metrics logged
    so far (``epoch 2/6  base/train_loss 0.0861  base/val_acc 0.972``)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        log.info("%s", epoch_line(trainer))


def epoch_line(trainer: pl.Trainer) -> str:
    """``epoch i/n`` and every scalar in ``trainer.callback_metrics`` (per-step copies left out)."""
    total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
    parts = [f"epoch {trainer.current_epoch + 1}/{total}"]
    for key, value in sorted(trainer.callback_metrics.items()):
        if key.endswith("_step") or getattr(value, "numel", lambda: 1)() != 1:
            continue
        v = float(value)
        parts.append(f"{key.removesuffix('_epoch')} {v:.4g}" if math.isfinite(v) else f"{key} {v}")
    return "  ".join(parts)


def progress_bar() -> ProgressBar:
    """The progress callback for ``trainer.enable_progress_bar: true``: Lightning's rich bar when
    stdout is a terminal, :class:`EpochLines` otherwise (a bar's frames make no sense in a log)."""
    return RichProgressBar() if sys.stdout.isatty() else EpochLines()


# ------------------------------------------------------------------ the end-of-run summary
def _pct(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "n/a"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def run_summary_lines(results: dict, run_dir: str | Path) -> list[str]:
    """The lines of :func:`print_run_summary`."""
    what = " · ".join(str(results[k]) for k in ("method", "backbone", "dataset", "scenario") if results.get(k))
    if results.get("n_deltas") is not None and results.get("method") not in (None, "fc", "finetune", "paint"):
        what += f" · n_deltas {results['n_deltas']}"
    lines = [f"── {SUMMARY_TITLE} ── {what}"]
    before, after = results.get("base_acc_before"), results.get("base_acc_after")
    if before is not None or after is not None:
        same = " (unchanged)" if before is not None and before == after else ""
        lines.append(f"{'base task':<13}{_pct(before)} → {_pct(after)}{same}")
    metric = results.get("metric")
    when = results.get("tasks_when_trained") or {}
    for name, acc in (results.get("tasks") or {}).items():
        extra = f"  (when trained {_pct(when[name])})" if name in when else ""
        lines.append(f"{'task ' + str(name):<13}{_pct(acc)}{f' {metric}' if metric else ''}{extra}")
    for agg in ("hmean", "mean"):
        if results.get(agg) is not None:
            lines.append(f"{agg:<13}{_pct(results[agg])}")
    params = results.get("trainable_params") or {}
    if params:
        lines.append(f"{'trainable':<13}" + ", ".join(f"{k} {v:,}" for k, v in params.items()))
    patches = results.get("patch_files") or {}
    if patches:
        lines.append(f"{'patch files':<13}" + ", ".join(f"{k} {_size(p['bytes'])}" for k, p in patches.items()))
    if results.get("train_seconds") is not None:
        lines.append(f"{'train time':<13}{results['train_seconds']:.1f} s")
    lines.append(f"{'run dir':<13}{run_dir}")
    return lines


def print_run_summary(results: dict, run_dir: str | Path) -> None:
    """Print a one-screen summary of a finished run (the numbers are in ``run_dir/results.json``)."""
    print("\n".join(run_summary_lines(results, run_dir)), flush=True)
