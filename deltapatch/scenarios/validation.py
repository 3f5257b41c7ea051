"""Values a run cannot use, found before anything is built: each becomes one clause of a single
:class:`~deltapatch.errors.ConfigError` line (``trainer.max_epochs=-1: trains forever; ...``).

Hydra composes any value a key is given (``seed=abc``, ``classes=[cat,dog]``); without these
checks such values end in tracebacks deep inside Lightning or PyTorch, or worse, run: a
``max_epochs=-1`` trains forever, ``classes=[5,5]`` trains a head with two classes named "5".
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..errors import ConfigError

RESUME_MODES = ("auto", True, False, "force")
LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")


def show(value: Any) -> str:
    """A value as a user typed it: ``[5, 5]``, ``abc``, ``null``."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":")).replace('"', "")
    except TypeError:
        return str(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def whole(key: str, v: Any, minimum: int) -> str | None:
    """``None`` when ``v`` is an integer >= ``minimum``; else the problem."""
    if not _is_int(v):
        return f"{key}={show(v)}: not a whole number"
    if v < minimum:
        return f"{key}={show(v)}: must be at least {minimum}"
    return None


def class_list(key: str, v: Any) -> str | None:
    """``classes``: null (all) or a non-empty list of distinct class indices."""
    if v is None:
        return None
    items = list(v) if isinstance(v, (list, tuple, ListConfig)) else None
    if items is None:
        return f"{key}={show(v)}: give a list of class indices, e.g. [5,6,7]"
    if not items:
        return f"{key}=[]: no classes; give at least one class index (or null for all classes)"
    bad = [x for x in items if not _is_int(x)]
    if bad:
        return f"{key}={show(v)}: class ids are integer indices into the dataset's classes, not {show(bad[0])}"
    if any(x < 0 for x in items):
        return f"{key}={show(v)}: class indices cannot be negative"
    twice = sorted({x for x in items if items.count(x) > 1})
    if twice:
        return f"{key}={show(v)}: class {twice[0]} is listed twice; each class once"
    return None


def _dataset_nodes(cfg: DictConfig) -> Iterator[tuple[str, Any]]:
    """Every dataset config (or override of one) the run may instantiate, with its key."""
    yield "dataset", cfg.get("dataset")
    if cfg.get("base") is not None:
        yield "base.dataset", cfg.base.get("dataset")
    sc = cfg.get("scenario") or {}
    for key in ("target", "base_dataset"):
        yield f"scenario.{key}", sc.get(key)
    for name, t in (sc.get("tasks") or {}).items():
        t = t or {}
        yield f"scenario.tasks.{name}", t
        yield f"scenario.tasks.{name}.dataset", t.get("dataset")


def config_problems(cfg: DictConfig) -> list[str]:
    """Every value of ``cfg`` a run cannot use, one short clause each."""
    problems: list[str | None] = [whole("seed", cfg.get("seed"), 0)]
    tr = cfg.get("trainer") or {}
    epochs, steps = tr.get("max_epochs"), tr.get("max_steps", -1)
    if epochs == -1 and (steps is None or steps == -1):
        problems.append("trainer.max_epochs=-1: trains forever; give a number of epochs (or trainer.max_steps)")
    elif epochs != -1:
        problems.append(whole("trainer.max_epochs", epochs, 1))
    if steps is not None and steps != -1:
        problems.append(whole("trainer.max_steps", steps, 1))
    for k in LIMITS:
        v = tr.get(k)
        if v is not None and not (_is_int(v) and v >= 0) and not (isinstance(v, float) and 0.0 <= v <= 1.0):
            problems.append(f"trainer.{k}={show(v)}: a batch count (0, 1, 2, ...) or a fraction in [0, 1]")
    base = cfg.get("base") or {}
    if base.get("source") == "train":
        problems.append(whole("base.epochs", base.get("epochs"), 1))
        problems.append(whole("base.seed", base.get("seed"), 0))
        for k in ("lr", "weight_decay"):
            v = base.get(k)
            if v is not None and (not _is_number(v) or v < 0 or (k == "lr" and v == 0)):
                problems.append(f"base.{k}={show(v)}: must be a {'positive' if k == 'lr' else 'non-negative'} number")
    problems.append(class_list("base.classes", base.get("classes")))
    sc = cfg.get("scenario") or {}
    problems.append(class_list("scenario.classes", sc.get("classes")))
    for key, node in _dataset_nodes(cfg):
        if not isinstance(node, (dict, DictConfig)):
            continue
        if "classes" in node:
            problems.append(class_list(f"{key}.classes", node.get("classes")))
        if node.get("batch_size") is not None or "batch_size" in node:
            problems.append(whole(f"{key}.batch_size", node.get("batch_size"), 1))
        if node.get("eval_batch_size") is not None:
            problems.append(whole(f"{key}.eval_batch_size", node.get("eval_batch_size"), 1))
        if "num_workers" in node:
            problems.append(whole(f"{key}.num_workers", node.get("num_workers"), 0))
        if "image_size" in node and node.get("image_size") is not None:
            problems.append(whole(f"{key}.image_size", node.get("image_size"), 1))
        rate = node.get("sample_rate")
        if rate is not None and (not _is_number(rate) or not 0 < rate <= 1):
            problems.append(f"{key}.sample_rate={show(rate)}: a fraction in (0, 1]")
    for k in ("lambda_batches", "checkpoint_every_n_steps"):
        if cfg.get(k) is not None:
            problems.append(whole(k, cfg.get(k), 0))
    if cfg.get("resume", "auto") not in RESUME_MODES:
        problems.append(f"resume={show(cfg.get('resume'))}: choose auto, true, false or force")
    return [p for p in problems if p]


def validate_config(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` line listing every unusable value of ``cfg`` (or saying
    which interpolation cannot be resolved)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        problems = config_problems(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"the config cannot be resolved: {str(e).strip().splitlines()[0]}") from None
    if problems:
        raise ConfigError("; ".join(problems))


__all__ = ["class_list", "config_problems", "show", "validate_config", "whole"]
