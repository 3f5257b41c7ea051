"""Mid-task checkpoints that survive crashes and full disks, and hold only what a task trains.

- :class:`LastCheckpoint` writes ``<dirpath>/last.ckpt`` at the end of every epoch and, with
  ``every_n_train_steps``, every N optimizer steps; its state carries the random-number generators,
  so a resumed task draws what an uninterrupted one would.
- :class:`AtomicCheckpointIO` (a Lightning CheckpointIO plugin) writes each checkpoint on the
  destination file system: serialised in memory, a temp file beside the target, fsync, rename, and
  a SHA-256 sidecar (:func:`deltapatch.checkpoint.write_checked`). Lightning's own writer goes
  through a temp file elsewhere and copies, which leaves a truncated file when the disk fills.
- :func:`drop_frozen` / :func:`restore_frozen` (called by the TaskModule's checkpoint hooks) leave
  out every tensor training cannot change (the frozen base: parameters without gradients, buffers
  of modules in eval mode) and put them back from the live model on load, after checking by
  SHA-256 that the live frozen tensors are the ones the checkpoint was made on.
- :func:`usable_checkpoint` says whether a ``last.ckpt`` can be resumed from; a truncated or corrupt
  one is set aside with a warning and the task restarts from its start.
"""
from __future__ import annotations

import io
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from ..checkpoint import check_file, remove_checked, tensors_sha256, write_checked
from ..errors import CheckpointError

log = logging.getLogger(__name__)
FROZEN = "deltapatch_frozen"  # checkpoint key: names and SHA-256 of the tensors left out
LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written atomically in their own folder, with a checksum sidecar."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_checked(path, buffer.getvalue())

    def remove_checkpoint(self, path) -> None:
        remove_checked(path)


class LastCheckpoint(Checkpoint):
    """``<dirpath>/last.ckpt`` after every training epoch (after its validation) and every
    ``every_n_train_steps`` optimizer steps (0: epochs only).

    A step checkpoint lets a long epoch resume part-way; Lightning then continues the epoch
    without replaying its data order, so only epoch-end checkpoints resume bit-exactly.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 0):
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = int(every_n_train_steps or 0)
        self._saved: tuple[int, str] | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        n = self.every_n_train_steps
        last = batch_idx + 1 >= trainer.num_training_batches  # the epoch-end checkpoint follows
        if n > 0 and not last and trainer.global_step > 0 and trainer.global_step % n == 0:
            self._save(trainer, "step")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, "epoch")

    def _save(self, trainer: pl.Trainer, kind: str) -> None:
        if trainer.sanity_checking or self._saved == (trainer.global_step, kind):
            return
        # every rank calls it; the strategy writes on rank 0. Not weights only: resuming needs the
        # loops' and this callback's state (said explicitly, else Lightning logs a line per save).
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved = (trainer.global_step, kind)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])


# ---------------------------------------------------------------------- random-number generators
def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, and CUDA when in use) generator states, in types a
    ``weights_only`` load accepts (NumPy's key array as a tensor)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {"python": [version, list(words), gauss], "torch": torch.get_rng_state(),
                              "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                        float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Undo :func:`rng_states`."""
    if "python" in states:
        version, words, gauss = states["python"]
        random.setstate((version, tuple(words), gauss))
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "numpy" in states:
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------- frozen tensors
def trainable_state_keys(module: nn.Module) -> set[str]:
    """State-dict names training can change: parameters that get gradients, and buffers (BatchNorm
    statistics) of modules in training mode. Call it while the module is in its training modes."""
    keep: set[str] = set()
    for name, m in module.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        keep |= {prefix + n for n, p in m.named_parameters(recurse=False) if p.requires_grad}
        if m.training:
            keep |= {prefix + n for n, _ in m.named_buffers(recurse=False)}
    return keep


def drop_frozen(checkpoint: dict[str, Any], keep: set[str], frozen_digest: str | None = None) -> str:
    """Leave only ``keep`` in ``checkpoint["state_dict"]``; record the names and SHA-256 of the rest
    under :data:`FROZEN`. Returns that SHA-256 (pass it back in: frozen tensors do not change)."""
    state = checkpoint["state_dict"]
    frozen = {k: v for k, v in state.items() if k not in keep}
    digest = frozen_digest or tensors_sha256(frozen)
    checkpoint["state_dict"] = {k: v for k, v in state.items() if k in keep}
    checkpoint[FROZEN] = {"keys": sorted(frozen), "sha256": digest}
    return digest


def restore_frozen(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Put the tensors :func:`drop_frozen` left out back into ``checkpoint["state_dict"]`` from
    ``module``, refusing a checkpoint made on other frozen weights (another base model)."""
    info = checkpoint.get(FROZEN)
    if info is None:  # a complete checkpoint
        return
    live = module.state_dict()
    missing = [k for k in info["keys"] if k not in live]
    if missing:
        raise CheckpointError(f"checkpoint does not fit this model: {len(missing)} frozen tensors it expects are "
                              f"absent (e.g. {missing[0]}); delete the run's checkpoints/ to start the task over")
    frozen = {k: live[k] for k in info["keys"]}
    if tensors_sha256(frozen) != info["sha256"]:
        raise CheckpointError("checkpoint was made on other frozen weights (another base model); delete the run's "
                              "checkpoints/ to start the task over")
    checkpoint["state_dict"] = {**checkpoint["state_dict"], **frozen}


# ---------------------------------------------------------------------- resuming
def usable_checkpoint(path: Path) -> Path | None:
    """``path`` when it exists and can be resumed from. A truncated or corrupt file (checksum
    sidecar, then a ``weights_only`` load) is renamed to ``*.corrupt`` with a warning and ``None``
    returned: the task restarts from its start rather than failing."""
    if not path.exists():
        return None
    problem = check_file(path)
    if problem is None:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or "state_dict" not in obj or "loops" not in obj:
                problem = "not a Lightning training checkpoint"
        except Exception as e:
            problem = f"unreadable ({(str(e).strip().splitlines() or [type(e).__name__])[0][:120]})"
    if problem is None:
        log.info("resuming from %s (saved in epoch %s at step %s)", path, obj.get("epoch"), obj.get("global_step"))
        return path
    aside = path.with_name(path.name + ".corrupt")
    try:
        path.replace(aside)
        remove_checked(path)
    except FileNotFoundError:  # another DDP rank set it aside first
        pass
    log.warning("checkpoint %s is unusable: %s; moved to %s, the task restarts from its start", path, problem,
                aside.name)
    return None


__all__ = ["AtomicCheckpointIO", "FROZEN", "LastCheckpoint", "drop_frozen", "restore_frozen", "rng_states",
           "set_rng_states", "trainable_state_keys", "usable_checkpoint"]
