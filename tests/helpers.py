"""Constants and helpers the tests share (importable as `helpers`)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

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


def state_hash(model: nn.Module) -> str:
    """SHA-256 of every tensor of ``model.state_dict()``, bit for bit (written here, independently
    of deltapatch.patch.base_fingerprint, so the tests do not trust the code they check)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
