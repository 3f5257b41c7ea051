"""The configuration a run started with, kept in ``<run>/run_config.yaml`` (Hydra rewrites
``.hydra/config.yaml`` at every start, so it cannot tell what an interrupted run was), and the
comparison a resume makes against it.

Keys that cannot change a number in results.json are not compared (:data:`IGNORED`): where
outputs, logs and caches go, loggers, how often checkpoints are written, progress bars and log
cadence, data-loader workers. Everything else must match, or the resume is refused (one line
naming the keys; ``resume=force`` continues anyway and results.json records what changed).
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

FILE = "run_config.yaml"

#: dotted keys (fnmatch patterns; a pattern also covers everything below it) never compared
IGNORED: tuple[str, ...] = (
    "hydra", "resume",
    "paths.root_dir", "paths.output_dir", "paths.cache_dir", "paths.log_dir", "base.cache_dir",
    "logger", "wandb_offline",
    "callbacks.model_checkpoint", "callbacks.rich_progress_bar", "callbacks.progress_bar", "checkpoint_every_n_steps",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    # data-loader workers and prefetching (with augmentation in worker processes, the worker count
    # changes which random crops are drawn; the default digits/∆ recipes draw none)
    "loader", "*.num_workers", "*.pin_memory", "*.persistent_workers", "*.prefetch_factor",
)


def as_container(cfg: DictConfig | dict) -> dict:
    """``cfg`` as plain data, interpolations resolved where they can be (Hydra's runtime values
    only resolve inside a Hydra job)."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        return OmegaConf.to_container(cfg, resolve=False)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are compared as whole values."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def ignored(key: str, patterns: tuple[str, ...] = IGNORED) -> bool:
    return any(key == p or key.startswith(p + ".") or fnmatch.fnmatch(key, p) or fnmatch.fnmatch(key, p + ".*")
               for p in patterns)


def differences(stored: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """``{key: (stored value, current value)}`` for every compared key that differs (a key
    present on one side only counts, with ``<unset>`` on the other)."""
    a, b = flatten(stored), flatten(current)
    unset = "<unset>"
    return {k: (a.get(k, unset), b.get(k, unset)) for k in sorted(a.keys() | b.keys())
            if not ignored(k) and a.get(k, unset) != b.get(k, unset)}


def describe(diff: dict[str, tuple[Any, Any]], limit: int = 6) -> str:
    """``seed: 0 -> 1, dataset.seed: 0 -> 1`` (at most ``limit`` keys, values shortened)."""
    def short(v: Any) -> str:
        s = str(v)
        return s if len(s) <= 40 else s[:37] + "..."

    parts = [f"{k}: {short(old)} -> {short(new)}" for k, (old, new) in list(diff.items())[:limit]]
    if len(diff) > limit:
        parts.append(f"and {len(diff) - limit} more")
    return ", ".join(parts)


def save(path: Path, cfg: DictConfig | dict) -> None:
    """Write ``cfg`` (resolved) to ``path`` atomically."""
    from ..checkpoint import atomic_path

    with atomic_path(path) as tmp:
        OmegaConf.save(OmegaConf.create(as_container(cfg)), tmp)


def load(path: Path) -> dict:
    """The stored run config as plain data (never instantiated)."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


__all__ = ["FILE", "IGNORED", "as_container", "describe", "differences", "flatten", "ignored", "load", "save"]
