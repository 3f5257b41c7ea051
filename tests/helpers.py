"""Constants and helpers the tests share (importable as `helpers`)."""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import subprocess
import sys
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


# a debug=fast run (any command) that does not also evaluate at debug=fast's batch size of 2
CHEAP_RUN = ["debug=fast"]


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


def cli(*args: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python *args`` in a subprocess (from the repository root by default)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def run_main(entry: str, *argv: str) -> int:
    """Run ``deltapatch.<entry>.main(argv)`` in this process, as its console script would; the exit
    code. Hydra's global state and the root logger are restored afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    main = importlib.import_module(f"deltapatch.{entry}").main
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    return code
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
    class _FailAt(_pl.Callback):
        """Fail (``fail``) when epoch ``epoch`` of task ``task`` starts, once: ``marker`` is created
        first, so a rerun with the same config runs on."""

        def __init__(self, task: str, epoch: int, marker: str):
            self.task, self.epoch, self.marker = task, int(epoch), Path(marker)

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if getattr(pl_module, "task", None) == self.task and trainer.current_epoch == self.epoch \
                    and not self.marker.exists():
                self.marker.touch()
                self.fail()

        def fail(self) -> None:
            raise NotImplementedError

    class KillAt(_FailAt):
        """SIGKILL this process (no clean-up, as a pre-empted job) at that epoch, once."""

        def fail(self) -> None:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    class CrashAt(_FailAt):
        """Raise (as a crash would) at that epoch, once."""

        def fail(self) -> None:
            raise RuntimeError(f"simulated crash at epoch {self.epoch} of {self.task}")
