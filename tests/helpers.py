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


def cli_env_with_tests(**extra: str) -> dict[str, str]:
    """:func:`cli_env` with this folder importable, for callbacks named on the command line
    (``+callbacks.kill._target_=helpers.KillAt``)."""
    env = cli_env(**extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


try:  # Lightning is a dependency of the package; this keeps helpers importable without it
    import pytorch_lightning as _pl
except ImportError:  # pragma: no cover
    _pl = None

if _pl is not None:
    class KillAt(_pl.Callback):
        """SIGKILL this process (no clean-up, as a pre-empted job) when epoch ``epoch`` of task
        ``task`` starts, once: ``marker`` is created first, so a rerun with the same config runs on."""

        def __init__(self, task: str, epoch: int, marker: str):
            self.task, self.epoch, self.marker = task, int(epoch), Path(marker)

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if getattr(pl_module, "task", None) == self.task and trainer.current_epoch == self.epoch \
                    and not self.marker.exists():
                import signal

                self.marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)

    class CrashAt(_pl.Callback):
        """Raise (as a crash would) when epoch ``epoch`` of task ``task`` starts, once (``marker``)."""

        def __init__(self, task: str, epoch: int, marker: str):
            self.task, self.epoch, self.marker = task, int(epoch), Path(marker)

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if getattr(pl_module, "task", None) == self.task and trainer.current_epoch == self.epoch \
                    and not self.marker.exists():
                self.marker.touch()
                raise RuntimeError(f"simulated crash at epoch {self.epoch} of {self.task}")
