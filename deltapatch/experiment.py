"""One experiment, top to bottom: base model, tasks, training per scenario, evaluation,
patch files and results.json. ``deltapatch.train`` is the Hydra entry point around :func:`run`."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .checkpoint import write_json
from .data.base import ClassificationDataModule
from .data.joint import JointDataModule
from .errors import ConfigError, DeltaPatchError, ResourceError
from .methods.base import Method
from .patch import base_fingerprint
from .reporting.lambdas import mean_lambdas
from .training.base_model import obtain_base
from .training.metrics import BASE_KEY, EvalSet, PatchMetrics, harmonic_mean, mean
from .training.module import make_task_module
from .training.progress import RunProgress

log = logging.getLogger(__name__)
SCENARIOS = ("single", "joint", "sequential")


class InvariantError(DeltaPatchError):
    """A method that promises to keep the base model changed it."""


def build_tasks(cfg: DictConfig) -> dict[str, ClassificationDataModule]:
    """``scenario.tasks``: name -> overrides of the top-level dataset (``classes``, ``sample_rate``…)
    or a whole dataset config under ``dataset``."""
    tasks = {}
    for name, t in (cfg.scenario.tasks or {}).items():
        t = t or {}
        dcfg = t.get("dataset") or cfg.dataset
        overrides = {k: v for k, v in t.items() if k != "dataset"}
        tasks[str(name)] = instantiate(dcfg, **overrides)
    if not tasks:
        raise ConfigError("scenario.tasks is empty: give at least one task")
    return tasks


def _callbacks(cfg: DictConfig, task: str) -> list[L.Callback]:
    out = []
    for cb in (cfg.get("callbacks") or {}).values():
        if cb is None:
            continue
        kwargs = {"dirpath": str(Path(cb.dirpath) / task)} if "dirpath" in cb else {}
        out.append(instantiate(cb, **kwargs))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar when bars are off
        out = [cb for cb in out if not isinstance(cb, L.pytorch.callbacks.ProgressBar)]
    return out


def _loggers(cfg: DictConfig) -> list:
    return [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]


def _trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                       default_root_dir=cfg.paths.output_dir)


def _scored_parts(name: str, dm: ClassificationDataModule):
    """What to score for a trained task: itself, or each part of a joint task with its label offset
    into the union head."""
    if isinstance(dm, JointDataModule):
        return [(key, part, dm.offsets[key]) for key, part in dm.parts.items()]
    return [(name, dm, 0)]


def cached_train_loader(cfg: DictConfig, method: Method, name: str, dm: ClassificationDataModule):
    """Training batches of frozen-prefix features, computed once (``cache_features=true``), in the
    same per-epoch order as the image loader; ``None`` when the method has no frozen prefix."""
    from torch.utils.data import DataLoader

    from .cache import FeatureCache, auto_feature_cache, storage_dtype
    from .data.base import EpochBatchSampler, EpochSampler

    cache_dir = Path(cfg.paths.cache_dir) / "features"
    stage = method.feature_stage(name)
    if stage is None:
        (log.info if cfg.cache_features == "auto" else log.warning)(
            "cache_features: method %s has no frozen prefix; training from images", cfg.method.name)
        return None
    if cfg.cache_features == "auto" and not auto_feature_cache(method.net, stage, dm, cache_dir, cfg.trainer):
        return None
    if not dm.deterministic_train_transform:
        raise ConfigError("cache_features=true needs deterministic training transforms (dataset.augment=false)")
    train = dm.splits["train"]
    source = DataLoader(train, batch_size=dm.eval_batch_size, shuffle=False, num_workers=dm.num_workers)
    cache = FeatureCache(method.net, stage, source, dataset_id=f"{dm.name}:{dm.class_ids}:{dm.image_size}:{dm.seed}",
                         cache_dir=cache_dir, dtype=storage_dtype(cfg.trainer))
    sampler = EpochBatchSampler(EpochSampler(cache.dataset, dm.seed), dm.batch_size, drop_last=False)
    return DataLoader(cache.dataset, sampler=sampler, batch_size=None)


def _fit_task(cfg: DictConfig, method: Method, name: str, dm: ClassificationDataModule, val_set: EvalSet,
              aggregate: str, loggers: list, ckpt: Path | None) -> None:
    """Train task ``name`` (from ``ckpt`` when resuming mid-task)."""
    module = make_task_module(cfg, method, name, dm.num_classes)
    trainer = _trainer(cfg, _callbacks(cfg, name) + [PatchMetrics(method, val_set, aggregate)], loggers)
    data: dict[str, Any] = {"datamodule": dm}
    if cfg.get("cache_features"):
        loader = cached_train_loader(cfg, method, name, dm)
        if loader is not None:
            data = {"train_dataloaders": loader, "val_dataloaders": dm.val_dataloader()}
            module.from_features = True
    try:
        trainer.fit(module, **data, ckpt_path=ckpt, weights_only=True if ckpt else None)
    except torch.cuda.OutOfMemoryError:
        raise ResourceError(f"out of GPU memory training task '{name}' at batch size {dm.batch_size}; "
                            f"retry with dataset.batch_size={max(dm.batch_size // 2, 1)}") from None


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the experiment ``cfg`` and return (and write) its results.

    A scenario config with a ``runner`` (``_target_`` of a function taking ``cfg``) runs that
    instead: detection, segmentation, domain adaptation... live in their own modules.
    """
    if cfg.scenario.get("runner") is not None:
        return instantiate(cfg.scenario.runner, _partial_=True)(cfg)
    if cfg.scenario.name not in SCENARIOS:
        raise ConfigError(f"unknown scenario '{cfg.scenario.name}'; choose one of {', '.join(SCENARIOS)}")
    out_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    accel = {"accelerator": cfg.trainer.get("accelerator", "cpu"), "devices": cfg.trainer.get("devices", 1),
             "enable_progress_bar": cfg.trainer.get("enable_progress_bar", True)}
    base = obtain_base(cfg, trainer_kwargs=accel)
    tasks = build_tasks(cfg)
    if cfg.scenario.name == "joint":
        tasks = {str(cfg.scenario.get("joint_name", "joint")): JointDataModule(tasks)}
    for dm in tasks.values():
        dm.setup()
    method: Method = instantiate(cfg.method.module, base=base.model)
    device = torch.device("cuda" if accel["accelerator"] in ("gpu", "cuda") and torch.cuda.is_available() else "cpu")
    method.to(device)

    val_set, test_set = EvalSet(), EvalSet()
    if base.datamodule is not None:
        base.datamodule.setup()
        val_set.add(BASE_KEY, base.datamodule.val_dataloader(), base.num_classes, None)
        test_set.add(BASE_KEY, base.datamodule.test_dataloader(), base.num_classes, None)
    fingerprint = base_fingerprint(base.model)
    before = test_set.evaluate(method, device).get(BASE_KEY, base.reference_acc)

    aggregate = "mean" if cfg.scenario.name == "sequential" else "hmean"
    loggers = _loggers(cfg)
    results: dict[str, Any] = {
        "method": cfg.method.name, "backbone": cfg.backbone.name, "dataset": cfg.dataset.name,
        "scenario": cfg.scenario.name, "n_deltas": cfg.n_deltas, "seed": cfg.seed,
        "experiment": cfg.get("experiment_name"), "base_source": cfg.base.source,
        "base_acc_before": before, "tasks": {}, "val": {}, "trainable_params": {}, "patch_files": {},
        "extra": {}, "class_names": {},
    }
    progress = RunProgress(out_dir, cfg.get("resume", "auto"))
    at_end_of_task: dict[str, float] = {}
    restore_from: str | None = None  # last finished task whose snapshot still has to be loaded
    seconds = 0.0
    for index, (name, dm) in enumerate(tasks.items()):
        done = progress.done(name)
        if done is None and restore_from is not None:  # the model as the finished tasks left it
            progress.restore(restore_from, method)
            restore_from = None
        # each task starts from its own seed, whatever ran (and drew random numbers) before it
        L.seed_everything(cfg.seed + 1000 * index, workers=True, verbose=False)
        method.add_task(name, dm.num_classes, dm.class_names)
        results["class_names"][name] = dm.class_names
        for key, part, offset in _scored_parts(name, dm):
            val_set.add(key, part.val_dataloader(), dm.num_classes, name, offset)
            test_set.add(key, part.test_dataloader(), dm.num_classes, name, offset)
        if done is None:
            t0 = time.perf_counter()
            _fit_task(cfg, method, name, dm, val_set, aggregate, loggers, progress.checkpoint(name))
            method.to(device)
            done = {"trainable_params": method.num_trainable(name),
                    "extra": method.end_task(name, lambda m: val_set.evaluate(m, device),
                                             lambda m: test_set.evaluate(m, device))}
            patch = method.save_patch(name, out_dir / "patches" / f"{name}.patch.safetensors",
                                      config=OmegaConf.to_container(cfg, resolve=False))
            if patch is not None:
                done["patch"] = {"path": str(patch), "bytes": patch.stat().st_size}
            if cfg.scenario.name == "sequential":  # scored again at the end: must not move for ∆
                done["at_end"] = test_set.evaluate(method, device, only=[name])[name]
            done["seconds"] = time.perf_counter() - t0
            progress.record(name, method, done)
        else:
            restore_from = name
        results["trainable_params"][name] = done["trainable_params"]
        results["extra"][name] = done["extra"]
        if "patch" in done:
            results["patch_files"][name] = done["patch"]
        if "at_end" in done:
            at_end_of_task[name] = done["at_end"]
        seconds += done["seconds"]
    if restore_from is not None:
        progress.restore(restore_from, method)
    for extra in results["extra"].values():  # the last task's choice (PAINT's α) at top level too
        results.update({k: v for k, v in extra.items() if k in ("alpha", "alpha_sweep")})
    results["train_seconds"] = seconds

    accs = test_set.evaluate(method, device)
    after = accs.pop(BASE_KEY, base.reference_acc)
    results.update(base_acc_after=after, tasks=accs, val=val_set.evaluate(method, device))
    scores = [after, *accs.values()]
    results[aggregate] = harmonic_mean(scores) if aggregate == "hmean" else mean(scores)
    if base.datamodule is None:
        results["base_acc_note"] = ("reference value from config" if base.reference_acc is not None
                                    else "not measured: no base-task data configured (base.dataset)")
    if at_end_of_task:
        results["tasks_when_trained"] = at_end_of_task
    if method.keeps_base:
        if base_fingerprint(base.model) != fingerprint or (before is not None and after != before):
            raise InvariantError(f"method '{cfg.method.name}' changed the base model "
                                 f"(base accuracy {before} -> {after}); this is a bug")
        moved = {k: (v, accs[k]) for k, v in at_end_of_task.items() if accs[k] != v}
        if moved:
            raise InvariantError(f"method '{cfg.method.name}' changed earlier tasks {moved}; this is a bug")
    results["base_model_unchanged"] = base_fingerprint(base.model) == fingerprint
    if method.has_lambdas and cfg.get("lambda_batches", 0):
        # mean λ per task on its test split, for the paper's λ heatmaps (scripts/plots.py)
        results["lambdas"] = {name: mean_lambdas(method, dm.test_dataloader(), name, device, cfg.lambda_batches)
                              for name, dm in tasks.items()}

    for lg in loggers:
        lg.log_metrics({f"test/{k}/acc": v for k, v in accs.items()} | {
            f"test/{aggregate}": results[aggregate] or 0.0, "test/base/acc": after or 0.0})
        lg.save()
        if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
            import wandb

            wandb.summary.update({k: v for k, v in results.items() if isinstance(v, (int, float, str))})
            wandb.finish()  # one W&B run per multirun job
    write_json(out_dir / "results.json", results)
    log.info("results: base %s -> %s, tasks %s, %s %s", before, after, accs, aggregate, results[aggregate])
    return results
