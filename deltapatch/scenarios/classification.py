"""Classification patching (paper Section 3.1): ``single``, ``joint`` and ``sequential``.

Read top to bottom: the base model and the data that scores it, the patch tasks, the method;
then for each task fit, score (the method may change the model after training: PAINT's α),
save the patch; then the final scores, the base-model invariant and results.json.
Every accuracy is computed in Lightning's evaluation loops (:mod:`deltapatch.training.evaluation`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ..errors import ConfigError, InvariantError, ResourceError
from ..methods.base import Method
from ..patch import base_fingerprint
from ..scores import aggregate_for
from ..training.base_model import BaseInfo, obtain_base
from ..training.evaluation import BASE_KEY, EvalSet, LightningScorer, mean_lambdas
from ..training.feature_loader import cached_train_loader
from ..training.module import make_task_module
from ..training.progress import RunProgress
from ..training.trainer import eval_trainer, make_trainer, run_device
from .common import (build_tasks, dataset_names, finish, is_rank_zero, make_loggers, results_skeleton,
                     save_patch_file, scored_parts, seed)

log = logging.getLogger(__name__)
SCENARIOS = ("single", "joint", "sequential")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the classification experiment ``cfg``; return (and write) its results."""
    if cfg.scenario.name not in SCENARIOS:
        raise ConfigError(f"unknown scenario '{cfg.scenario.name}'; choose one of {', '.join(SCENARIOS)}")
    seed(cfg.seed)
    # first: a resume with another config is refused before anything trains
    progress = RunProgress(Path(cfg.paths.output_dir), cfg.get("resume", "auto"), cfg)
    loggers = make_loggers(cfg)
    base = obtain_base(cfg, loggers)
    tasks = build_tasks(cfg)
    for dm in tasks.values():
        dm.setup()
    method: Method = instantiate(cfg.method.module, base=base.model)
    check_base_data(cfg, method, base)

    evalset = EvalSet()
    if base.datamodule is not None:
        base.datamodule.setup()
        evalset.add(BASE_KEY, None, base.num_classes, base.datamodule)
    scorer = LightningScorer(lambda: eval_trainer(cfg), method, evalset)
    fingerprint = base_fingerprint(base.model)
    first = scorer.score_splits(("test", "val"), keys=[BASE_KEY])
    before = first["test"].get(BASE_KEY, base.reference_acc)
    # a kept base is scored on validation once, not every epoch
    fixed = {BASE_KEY: first["val"].get(BASE_KEY, base.reference_acc)} if method.keeps_base else {}
    aggregate, combine = aggregate_for(cfg.scenario.name)

    results = results_skeleton(cfg, dataset_names(cfg), method, fingerprint)
    results.update(base_acc_before=before, tasks={}, val={}, extra={}, class_names={},
                   # results.json sorts its keys: the order the tasks came in is kept here (Tables 3/4 columns)
                   task_order=[key for name, dm in tasks.items() for key, _, _ in scored_parts(name, dm)])
    if base.datamodule is not None:
        results["base_split"] = base.datamodule.split_info
    if progress.summary() is not None:
        results["resume"] = progress.summary()
    at_end_of_task: dict[str, float] = {}
    restore_from: str | None = None  # last finished task whose snapshot still has to be loaded
    seconds = 0.0
    for index, (name, dm) in enumerate(tasks.items()):
        done = progress.done(name)
        if done is None and restore_from is not None:  # the model as the finished tasks left it
            progress.restore(restore_from, method)
            restore_from = None
        # each task starts from its own seed, whatever ran (and drew random numbers) before it
        seed(cfg.seed + 1000 * index)
        method.add_task(name, dm.num_classes, dm.class_names)
        results["class_names"][name] = dm.class_names
        for key, part, offset in scored_parts(name, dm):
            evalset.add(key, name, dm.num_classes, part, offset)
        if done is None:
            t0 = time.perf_counter()
            fit_task(cfg, method, name, dm, evalset, fixed, aggregate, loggers, progress.checkpoint(name))
            done = {"trainable_params": method.num_trainable(name), "extra": method.end_task(name, scorer)}
            patch = save_patch_file(cfg, method, name)
            if patch is not None:
                done["patch"] = patch
            if cfg.scenario.name == "sequential":  # scored again at the end: must not move for ∆
                done["at_end"] = scorer.score("test", keys=[key for key, _, _ in scored_parts(name, dm)])[name]
            done["seconds"] = time.perf_counter() - t0
            if is_rank_zero():
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

    final = scorer.score_splits(("test", "val"))
    accs = dict(final["test"])
    after = accs.pop(BASE_KEY, base.reference_acc)
    results.update(base_acc_after=after, tasks=accs, val=final["val"])
    results[aggregate] = combine([after, *accs.values()])
    if base.datamodule is None:
        results["base_acc_note"] = ("reference value from config" if base.reference_acc is not None
                                    else "not measured: no base-task data configured (base.dataset)")
    if at_end_of_task:
        results["tasks_when_trained"] = at_end_of_task
    check_invariant(cfg, method, base, fingerprint, before, after, at_end_of_task, accs)
    results["base_model_unchanged"] = base_fingerprint(base.model) == fingerprint
    if method.has_lambdas and cfg.get("lambda_batches", 0):
        # mean λ per task on its test split, for the paper's λ heatmaps (scripts/plots.py)
        device = run_device(cfg)
        method.to(device)
        results["lambdas"] = {name: mean_lambdas(method, dm.test_dataloader(), name, device, cfg.lambda_batches)
                              for name, dm in tasks.items()}
    metrics = {f"test/{k}/acc": v for k, v in accs.items()} | {f"test/{aggregate}": results[aggregate],
                                                              f"test/{BASE_KEY}/acc": after}
    return finish(cfg, results, loggers, metrics)


def check_base_data(cfg: DictConfig, method: Method, base: BaseInfo) -> None:
    """A method that changes the backbone can only be scored with base data: a reference number
    says nothing about the changed model, and PAINT's α would be chosen on the tasks alone."""
    if method.keeps_base or base.datamodule is not None:
        return
    raise ConfigError(f"method={cfg.method.name} changes the backbone, so the base task must be scored on "
                      f"data: set base.dataset (e.g. base.dataset=imagenet with its val folder); "
                      f"base.reference_acc only serves methods that keep the base")


def fit_task(cfg: DictConfig, method: Method, name: str, dm, evalset: EvalSet, fixed: dict, aggregate: str,
             loggers: list, ckpt: Path | None) -> None:
    """Train task ``name`` (from ``ckpt`` when resuming mid-task), validating every scored key
    each epoch (a kept base's accuracy in ``fixed`` is not scored again)."""
    train_loader, from_features = dm.train_dataloader, False
    if cfg.get("cache_features"):
        cached = cached_train_loader(cfg, method, name, dm)
        if cached is not None:
            train_loader, from_features = cached, True
    module = make_task_module(cfg, method, name, dm.num_classes, train_loader=train_loader,
                              val_items=evalset.select(drop=fixed), fixed=fixed, aggregate=aggregate,
                              from_features=from_features)
    trainer = make_trainer(cfg, name, loggers)
    try:
        trainer.fit(module, ckpt_path=ckpt, weights_only=True if ckpt else None)
    except torch.cuda.OutOfMemoryError:
        raise ResourceError(f"out of GPU memory training task '{name}' at batch size {dm.batch_size}; "
                            f"retry with dataset.batch_size={max(dm.batch_size // 2, 1)}") from None


def check_invariant(cfg: DictConfig, method: Method, base: BaseInfo, fingerprint: str, before, after,
                    at_end_of_task: dict[str, float], accs: dict[str, float]) -> None:
    """A method that promises to keep the base (and earlier tasks) must have kept them exactly."""
    if not method.keeps_base:
        return
    if base_fingerprint(base.model) != fingerprint or (before is not None and after != before):
        raise InvariantError(f"method '{cfg.method.name}' changed the base model "
                             f"(base accuracy {before} -> {after}); this is a bug")
    moved = {k: (v, accs[k]) for k, v in at_end_of_task.items() if accs[k] != v}
    if moved:
        raise InvariantError(f"method '{cfg.method.name}' changed earlier tasks {moved}; this is a bug")
