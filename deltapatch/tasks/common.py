"""What the scenario runners of this package share: the run's trainer, loggers, base model,
results.json skeleton, the base-model invariant, and saving what a run trained.

Each runner (``conf/scenario/<name>.yaml`` -> ``runner._target_``) reads top to bottom:
data, base, model, ``trainer.fit``, evaluation, :func:`finish`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from safetensors.torch import save_file
from torch import nn

from ..checkpoint import atomic_path, write_json
from ..errors import ConfigError
from ..experiment import InvariantError
from ..patch import base_fingerprint
from ..training.base_model import BaseInfo, obtain_base

log = logging.getLogger(__name__)


def accelerator_kwargs(cfg: DictConfig) -> dict[str, Any]:
    return {"accelerator": cfg.trainer.get("accelerator", "cpu"), "devices": cfg.trainer.get("devices", 1),
            "enable_progress_bar": cfg.trainer.get("enable_progress_bar", True)}


def run_device(cfg: DictConfig) -> torch.device:
    gpu = cfg.trainer.get("accelerator", "cpu") in ("gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def make_loggers(cfg: DictConfig) -> list:
    return [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]


def make_trainer(cfg: DictConfig, stage: str, loggers: list, **overrides) -> L.Trainer:
    """``cfg.trainer`` with the run's callbacks (checkpoints under ``<dirpath>/<stage>``) and loggers.
    No validation loop: runners score their metric after training."""
    callbacks = []
    for cb in (cfg.get("callbacks") or {}).values():
        if cb is None:
            continue
        callbacks.append(instantiate(cb, **({"dirpath": str(Path(cb.dirpath) / stage)} if "dirpath" in cb else {})))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar when bars are off
        callbacks = [cb for cb in callbacks if not isinstance(cb, L.pytorch.callbacks.ProgressBar)]
    overrides.setdefault("limit_val_batches", 0)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                       default_root_dir=cfg.paths.output_dir, **overrides)


def obtain_dense_base(cfg: DictConfig) -> BaseInfo:
    """The base classifier under a detection/segmentation model.

    ``base=pretrained`` / ``checkpoint`` as for classification. ``base=train`` (offline) trains
    and caches the base on ``base.dataset``, else on ``scenario.base_dataset``: the top-level
    dataset is the dense task's own. ``base=scratch``: random initialisation.
    """
    if cfg.base.source == "scratch":
        return BaseInfo(instantiate(cfg.backbone.model, pretrained=False, num_classes=1000), 1000, None)
    if cfg.base.source == "train" and cfg.base.get("dataset") is None:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.base.dataset = cfg.scenario.base_dataset
    return obtain_base(cfg, trainer_kwargs=accelerator_kwargs(cfg))


@dataclass
class DenseSetup:
    """What a detection/segmentation runner starts from: its data, what trains, the base model."""

    dm: Any                 # a tasks.data.DenseDataModule, set up
    use_delta: bool         # ∆-modules on the body
    train_body: bool        # the body trains too (finetune, finetune_delta)
    n_deltas: int           # 0 without ∆
    base: BaseInfo
    fingerprint: str        # of the base model before training


def prepare_dense(cfg: DictConfig, task: str) -> DenseSetup:
    """Seed, build and set up the ``task`` ("detection" / "segmentation") dataset, read what the
    method trains, obtain the base model and fingerprint it; then reseed, so the new heads'
    initialisation depends on the seed only."""
    from .body import method_parts

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = instantiate(cfg.dataset)
    if getattr(dm, "task", None) != task:
        raise ConfigError(f"scenario={task} needs a {task} dataset (voc_{task}, shapes_{task}), "
                          f"got dataset={cfg.dataset.name}")
    dm.setup()
    use_delta, train_body = method_parts(cfg.method.name)
    base = obtain_dense_base(cfg)
    fingerprint = base_fingerprint(base.model)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return DenseSetup(dm, use_delta, train_body, int(cfg.n_deltas) if use_delta else 0, base, fingerprint)


def results_skeleton(cfg: DictConfig, dataset: str) -> dict[str, Any]:
    """The keys every results.json carries (the classification runner's, where they apply)."""
    return {"method": cfg.method.name, "backbone": cfg.backbone.name, "dataset": dataset,
            "scenario": cfg.scenario.name, "n_deltas": cfg.n_deltas, "seed": cfg.seed,
            "experiment": cfg.get("experiment_name"), "base_source": cfg.base.source,
            "trainable_params": {}, "patch_files": {}}


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_base(base: nn.Module, before: str, frozen: bool, what: str) -> bool:
    """Whether ``base`` still has fingerprint ``before``; a frozen base that moved is a bug."""
    unchanged = base_fingerprint(base) == before
    if frozen and not unchanged:
        raise InvariantError(f"{what}: the frozen base model changed during training; this is a bug")
    return unchanged


def save_trained(model: nn.Module, path: Path, frozen_prefix: str | None, metadata: dict[str, Any]) -> dict:
    """Write what training produced (every tensor of ``model`` except those under ``frozen_prefix``,
    the untouched base) as safetensors; returns ``{"path", "bytes"}`` for results.json."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if frozen_prefix is None or not k.startswith(frozen_prefix)}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={k: str(v) for k, v in metadata.items()})
    return {"path": str(path), "bytes": path.stat().st_size}


def finish(cfg: DictConfig, results: dict[str, Any], loggers: list, metrics: dict[str, float]) -> dict[str, Any]:
    """Log the final metrics, close W&B runs, and write results.json atomically."""
    for lg in loggers:
        lg.log_metrics(metrics)
        lg.save()
        if type(lg).__name__ == "WandbLogger":
            import wandb

            wandb.summary.update({k: v for k, v in results.items() if isinstance(v, (int, float, str))})
            wandb.finish()  # one W&B run per multirun job
    write_json(Path(cfg.paths.output_dir) / "results.json", results)
    log.info("results: %s", {k: v for k, v in metrics.items()})
    return results


def config_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)
