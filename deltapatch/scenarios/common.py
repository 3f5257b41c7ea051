"""What every scenario runner shares, written once: seeding, loggers, the run's device, the
patch tasks' data, the results.json skeleton, the base-model invariant, saving what a run
trained, and finishing a run (final metrics, W&B, results.json) on rank 0 only.

Under DDP the runner runs in every process (``ddp``: Lightning re-runs the whole command per
rank; ``ddp_spawn``: only the main process runs it and Lightning spawns workers for each
fit/test), so everything that writes (results.json, patches, progress, the base cache, W&B)
asks :func:`is_rank_zero` first.

Each runner (``conf/scenario/<name>.yaml`` -> ``runner._target_``) reads top to bottom:
base -> tasks -> for each task fit / score / save -> results.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from safetensors.torch import save_file
from torch import nn

from ..checkpoint import atomic_path, write_json
from ..data.base import ClassificationDataModule
from ..data.joint import JointDataModule
from ..errors import ConfigError, InvariantError
from ..methods.base import Method
from ..patch import base_fingerprint
from ..provenance import software
from ..training.wandb_run import is_wandb, log_run

log = logging.getLogger(__name__)


def is_rank_zero() -> bool:
    """Whether this process writes files (the only process, or DDP rank 0)."""
    return rank_zero_only.rank == 0


def seed(value: int) -> None:
    """Seed python, numpy and torch (and data-loader workers) with ``value``."""
    pl.seed_everything(int(value), workers=True, verbose=False)


def make_loggers(cfg: DictConfig) -> list:
    """``cfg.logger`` instantiated (CSV always; W&B when chosen)."""
    return [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]


def task_specs(cfg: DictConfig) -> dict[str, tuple[DictConfig, dict[str, Any]]]:
    """``scenario.tasks`` as name -> (the dataset config the task uses: its own ``dataset``, else the
    top-level one; the task's overrides of it, ``classes``, ``sample_rate``…)."""
    specs = {}
    for name, t in (cfg.scenario.get("tasks") or {}).items():
        t = t or {}
        specs[str(name)] = (t.get("dataset") or cfg.dataset, {k: v for k, v in t.items() if k != "dataset"})
    return specs


def build_tasks(cfg: DictConfig) -> dict[str, ClassificationDataModule]:
    """The data module of each task of :func:`task_specs`. Joint patching wraps them into one task."""
    tasks = {name: instantiate(dcfg, **overrides) for name, (dcfg, overrides) in task_specs(cfg).items()}
    if not tasks:
        raise ConfigError("scenario.tasks is empty: give at least one task")
    if cfg.scenario.name == "joint":
        tasks = {str(cfg.scenario.get("joint_name", "joint")): JointDataModule(tasks)}
    return tasks


def dataset_names(cfg: DictConfig) -> str:
    """results.json's ``dataset``: the data set the tasks come from, or, where they bring their own
    (the task sets of Tables 3, 4 and 11), theirs in task order joined by '+', not the top-level
    ``dataset`` that no task then uses."""
    names = dict.fromkeys(str(dcfg.name) for dcfg, _ in task_specs(cfg).values())  # task order, once each
    return "+".join(names) or str(cfg.dataset.name)


def scored_parts(name: str, dm: ClassificationDataModule) -> list[tuple[str, ClassificationDataModule, int]]:
    """What to score for a trained task: itself, or each part of a joint task with its label
    offset into the union head."""
    if isinstance(dm, JointDataModule):
        return [(key, part, dm.offsets[key]) for key, part in dm.parts.items()]
    return [(name, dm, 0)]


def results_skeleton(cfg: DictConfig, dataset: str, method: Method | None = None,
                     fingerprint: str | None = None) -> dict[str, Any]:
    """The keys every results.json carries. ``n_deltas`` is the method's own (``None`` for methods
    without ∆-modules); ``base_fingerprint`` is the base model's :func:`base_fingerprint` before
    training (``None`` where the run starts from no base), so that runs can be compared on one base
    only: a rebuilt base can differ under the same cache key (docs/real_twins.md)."""
    return {"method": cfg.method.name, "backbone": cfg.backbone.name, "dataset": dataset,
            "scenario": cfg.scenario.name, "n_deltas": method.n_deltas if method is not None else None,
            "seed": cfg.seed, "experiment": cfg.get("experiment_name"), "base_source": cfg.base.source,
            "base_fingerprint": fingerprint, "trainable_params": {}, "patch_files": {}}


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_base(base: nn.Module, before: str, frozen: bool, what: str) -> bool:
    """Whether ``base`` still has fingerprint ``before``; a frozen base that moved is a bug."""
    unchanged = base_fingerprint(base) == before
    if frozen and not unchanged:
        raise InvariantError(f"{what}: the frozen base model changed during training; this is a bug")
    return unchanged


def save_patch_file(cfg: DictConfig, method: Method, task: str) -> dict | None:
    """The method's patch of ``task`` under ``<run>/patches/`` (rank 0 writes), as
    ``{"path", "bytes"}`` for results.json, or ``None`` when the method has no patch files."""
    path = Path(cfg.paths.output_dir) / "patches" / f"{task}.patch.safetensors"
    if not is_rank_zero():
        return None
    saved = method.save_patch(task, path, config=config_dict(cfg))
    return {"path": str(saved), "bytes": saved.stat().st_size} if saved is not None else None


def save_trained(model: nn.Module, path: Path, frozen_prefix: str | None, metadata: dict[str, Any]) -> dict:
    """Write what training produced (every tensor of ``model`` except those under ``frozen_prefix``,
    the untouched base) as safetensors (rank 0); returns ``{"path", "bytes"}`` for results.json."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if frozen_prefix is None or not k.startswith(frozen_prefix)}
    if is_rank_zero():
        with atomic_path(path) as tmp:
            save_file(state, tmp, metadata={k: str(v) for k, v in metadata.items()})
        return {"path": str(path), "bytes": path.stat().st_size}
    return {"path": str(path), "bytes": None}


def config_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


def finish(cfg: DictConfig, results: dict[str, Any], loggers: list, metrics: dict[str, float]) -> dict[str, Any]:
    """Write results.json atomically (with the run's package versions and git commit), log the final
    metrics, send the run to W&B (:func:`deltapatch.training.wandb_run.log_run`) and close it — on
    rank 0; the other DDP ranks return the same results without writing or logging anything."""
    if not is_rank_zero():
        return results
    results["software"] = software()  # what computed these numbers (deltapatch.provenance)
    write_json(Path(cfg.paths.output_dir) / "results.json", results)  # first: a W&B failure keeps it
    for lg in loggers:
        lg.log_metrics({k: v for k, v in metrics.items() if v is not None})
        lg.save()
        if is_wandb(lg):
            import wandb

            log_run(lg, cfg, json.loads(json.dumps(results, default=str)))  # as results.json holds it
            wandb.finish()  # one W&B run per multirun job
    log.info("results: %s", {k: v for k, v in metrics.items()})
    return results
