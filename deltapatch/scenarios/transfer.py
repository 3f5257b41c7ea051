"""Transfer learning (paper Table 5) and training from scratch (appendix Tables 12-13).

``scenario=transfer`` trains one task on ``dataset`` (optionally a class subset, and a seeded,
class-balanced ``sample_rate`` of its training split) starting from the base model, and reports
the target test accuracy. There is no base task to keep: the paper compares ``method=finetune``
(the vanilla baseline, whole network + new head) with ``method=finetune_delta`` (the same, with
∆-modules trained together with the backbone) at ``n_deltas=4``.

With ``base=scratch`` the backbone starts from random weights and trains together with the
∆-modules (Tables 12-13): only methods that train the backbone make sense there.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..methods.base import Method
from ..patch import base_fingerprint
from ..training.base_model import obtain_base
from ..training.evaluation import EvalSet, LightningScorer
from ..training.module import make_task_module
from ..training.trainer import eval_trainer, make_trainer
from .common import check_base, finish, make_loggers, results_skeleton, save_patch_file, seed

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train ``method`` on the target ``dataset`` from ``base`` and score target test accuracy."""
    seed(cfg.seed)
    sc = cfg.scenario
    overrides = {"sample_rate": float(sc.sample_rate)}
    if sc.get("classes") is not None:
        overrides["classes"] = list(sc.classes)
    dm = instantiate(cfg.dataset, **overrides)
    dm.setup()
    task = str(sc.get("task_name") or dm.name)
    loggers = make_loggers(cfg)

    if cfg.base.source == "scratch":  # no pre-training: a random backbone the method trains
        model = instantiate(cfg.backbone.model, pretrained=False, num_classes=dm.num_classes)
    else:
        model = obtain_base(cfg, loggers).model
    fingerprint = base_fingerprint(model)
    seed(cfg.seed)  # the new weights depend on the seed only
    method: Method = instantiate(cfg.method.module, base=model)
    if cfg.base.source == "scratch" and method.keeps_base:
        raise ConfigError(f"base=scratch starts from random weights that method={cfg.method.name} would keep "
                          f"frozen; train from scratch with method=finetune_delta (∆-Networks) or method=finetune")
    method.add_task(task, dm.num_classes, dm.class_names)
    evalset = EvalSet()
    evalset.add(task, task, dm.num_classes, dm)

    module = make_task_module(cfg, method, task, dm.num_classes, train_loader=dm.train_dataloader,
                              val_items=evalset.select(), aggregate="mean")
    trainer = make_trainer(cfg, task, loggers)
    t0 = time.perf_counter()
    trainer.fit(module)
    seconds = time.perf_counter() - t0

    scores = LightningScorer(lambda: eval_trainer(cfg), method, evalset).score_splits(("test", "val"))
    target, val = scores["test"][task], scores["val"][task]
    unchanged = check_base(model, fingerprint, frozen=method.keeps_base, what=f"transfer ({cfg.method.name})")

    results = results_skeleton(cfg, dm.name, method, None if cfg.base.source == "scratch" else fingerprint)
    results.update(train_seconds=seconds, base_model_unchanged=unchanged, metric="target_acc",
                   target_acc=target, tasks={task: target}, val={task: val},
                   sample_rate=float(sc.sample_rate), train_samples=len(dm.splits["train"]),
                   classes=OmegaConf.to_container(sc.classes) if sc.get("classes") is not None else None,
                   class_names={task: dm.class_names})
    results["trainable_params"][task] = method.num_trainable(task)
    patch = save_patch_file(cfg, method, task)
    if patch is not None:
        results["patch_files"][task] = patch
    return finish(cfg, results, loggers, {"test/target_acc": target})
