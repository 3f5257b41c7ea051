"""Constants and helpers the tests share (importable as `helpers`)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

# small and quick: 1 epoch of a few batches, no progress bars
FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.enable_progress_bar=false",
    "base.epochs=1",
    "dataset.batch_size=32",
]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("WANDB_MODE", "offline")
    return env
