"""A clean console: one line per log message, no Lightning tips, no bar frames off a terminal
(one line per epoch instead), and a one-screen summary at the end of each run."""
from __future__ import annotations

import json
import logging
import re
import sys

import pytest

from helpers import CHEAP_RUN, cli

CONSOLE_LOG = re.compile(r"^\[\d\d:\d\d:\d\d\]\[(\w+)\] (.*)$")             # conf/hydra/job_logging
FILE_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[[\w.]+\]\[(\w+)\] - (.*)$")


@pytest.mark.slow
def test_console_of_a_run(tmp_path, base_cache):
    """``deltapatch-train debug=fast n_deltas=2`` without a terminal: each log message once (the
    console shows exactly what the run's log file holds), no Lightning tips, no progress-bar frames,
    and one summary block at the very end."""
    from deltapatch.console import SUMMARY_TITLE

    run_dir = tmp_path / "run"
    p = cli("-m", "deltapatch.train", *CHEAP_RUN, "n_deltas=2", f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={base_cache}")
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["n_deltas"] == 2 and (run_dir / ".hydra" / "config.yaml").exists()

    console = [m.groups() for m in map(CONSOLE_LOG.match, (p.stdout + p.stderr).splitlines()) if m]
    logged = [m.groups() for m in map(FILE_LOG.match, (run_dir / "train.log").read_text().splitlines()) if m]
    assert console and sorted(console) == sorted(logged)  # one line per message, nothing on the side
    assert not [ln for ln in p.stderr.splitlines() if ln.startswith("INFO:")]  # Lightning's own handler
    everything = p.stdout + p.stderr
    for noise in ("litlogger", "Tip", "in eval mode at the start of training", "━", "\r", "it/s"):
        assert noise not in everything, noise
    out = p.stdout.rstrip().splitlines()
    assert sum(SUMMARY_TITLE in ln for ln in out) == 1
    block = out[next(i for i, ln in enumerate(out) if SUMMARY_TITLE in ln):]
    assert len(block) <= 12 and block[-1].split()[-1] == str(run_dir)  # nothing printed after it
    assert any(ln.startswith("hmean") and f"{res['hmean']:.2f}" in ln for ln in block)
    assert any(f"{res['trainable_params']['patch']:,}" in ln for ln in block)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from pytorch_lightning.callbacks import RichProgressBar

    from deltapatch.console import EpochLines, progress_bar

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert isinstance(progress_bar(), EpochLines)


def test_epoch_lines_one_line_per_epoch(caplog):
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from deltapatch.console import EpochLines

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def training_step(self, batch, _):
            loss = torch.nn.functional.cross_entropy(self.lin(batch[0]), batch[1])
            self.log("task/train_loss", loss, on_epoch=True, on_step=True)
            return loss

        def validation_step(self, batch, _):
            self.log("task/val_acc", (self.lin(batch[0]).argmax(1) == batch[1]).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=8)
    trainer = pl.Trainer(max_epochs=3, callbacks=[EpochLines()], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    assert trainer.progress_bar_callback is not None  # it is the bar: Lightning adds none of its own
    with caplog.at_level(logging.INFO, logger="deltapatch.progress"):
        trainer.fit(Tiny(), data, data)
    lines = [r.getMessage() for r in caplog.records if r.name == "deltapatch.progress"]
    assert [ln.split("  ")[0] for ln in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("task/train_loss " in ln and "task/val_acc " in ln and "_step" not in ln for ln in lines)


def test_run_summary_fits_one_screen():
    from deltapatch.console import SUMMARY_TITLE, run_summary_lines

    results = {"method": "delta", "backbone": "resnet18", "dataset": "digits", "scenario": "sequential",
               "n_deltas": 1, "base_acc_before": 97.3, "base_acc_after": 97.3,
               "tasks": {"t56": 100.0, "t78": 98.61}, "tasks_when_trained": {"t56": 100.0, "t78": 98.61},
               "mean": 98.637, "trainable_params": {"t56": 446856, "t78": 446856},
               "patch_files": {"t56": {"path": "p", "bytes": 1806180}}, "train_seconds": 12.34}
    lines = run_summary_lines(results, "/runs/x")
    assert SUMMARY_TITLE in lines[0] and "delta · resnet18 · digits · sequential" in lines[0]
    text = "\n".join(lines)
    for part in ("97.30 → 97.30 (unchanged)", "task t78", "98.61", "mean         98.64", "446,856",
                 "t56 1.81 MB", "12.3 s", "/runs/x"):
        assert part in text, part
    assert len(lines) <= 12 and max(map(len, lines)) <= 100
    moved = run_summary_lines(results | {"base_acc_after": 91.0}, "/runs/x")
    assert "(unchanged)" not in "\n".join(moved)




def test_known_lightning_noise_is_filtered_and_other_warnings_are_not():
    """The warnings a normal run triggers by design (a frozen base in eval mode, a small sequential
    task with fewer batches than the logging interval) are silenced; anything else still shows."""
    import warnings

    from deltapatch.console import setup_console

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup_console()
        warnings.warn("The number of training batches (3) is smaller than the logging interval "
                      "Trainer(log_every_n_steps=5).", UserWarning)
        warnings.warn("Found 68 module(s) in eval mode at the start of training.", UserWarning)
        warnings.warn("something a user must see", UserWarning)
    assert [str(w.message) for w in caught] == ["something a user must see"]
