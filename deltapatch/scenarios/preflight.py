"""One check before anything trains: the configuration's values (:mod:`.validation`), every folder
the run will write (run dir, base-model and feature caches, archive extraction targets), and every
split of every dataset it will read (present, not empty, one sample of each decodes).

Without it a read-only cache is found after the base model trained, a corrupt test image after
the patch trained. Every problem found is one clause of a single :class:`ConfigError` line.
Detection and segmentation data (dense datasets) are read by their runners; their base data is
checked here.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterator

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from ..data.base import ClassificationDataModule
from ..data.files import FileDataModule
from ..data.joint import JointDataModule
from ..errors import ConfigError, DeltaPatchError
from ..training.base_model import base_cache_path, base_datamodule
from .common import build_tasks
from .validation import validate_config

CLASSIFICATION = ("single", "joint", "sequential")
HINTS = {
    "paths.output_dir": "set hydra.run.dir=/a/writable/dir (or paths.root_dir)",
    "base.cache_dir": "set paths.cache_dir=/a/writable/dir (or DELTAPATCH_CACHE)",
    "paths.cache_dir": "set paths.cache_dir=/a/writable/dir (or DELTAPATCH_CACHE)",
}


def preflight(cfg: DictConfig) -> None:
    """Check ``cfg``'s values, then its writable paths and data; raise one :class:`ConfigError`
    line naming every problem (values first: with bad values the rest cannot be checked)."""
    validate_config(cfg)
    problems = [p for key, path in writable_paths(cfg) if (p := not_writable(key, path)) is not None]
    problems += dataset_problems(cfg)
    if problems:  # once each: the base data and a task often read the same folder
        raise ConfigError("; ".join(dict.fromkeys(problems)))


# ---------------------------------------------------------------------- folders
def writable_paths(cfg: DictConfig) -> list[tuple[str, Path]]:
    """``(config key, folder)`` for every folder the run will write into."""
    out = [("paths.output_dir", Path(cfg.paths.output_dir))]
    source = cfg.base.get("source")
    if source == "train" or (cfg.scenario.get("name") == "zsda" and source != "checkpoint"):
        if not _cached_base_exists(cfg):  # a read-only cache that holds the base is fine
            out.append(("base.cache_dir", Path(cfg.base.cache_dir)))
    if cfg.get("cache_features"):
        out.append(("paths.cache_dir", Path(cfg.paths.cache_dir) / "features"))
    return out


def _cached_base_exists(cfg: DictConfig) -> bool:
    """Whether the base model a classification run trains is in the cache already."""
    if cfg.scenario.get("name") not in CLASSIFICATION or cfg.base.get("source") != "train":
        return False
    try:
        return base_cache_path(cfg).is_file()
    except Exception:  # a key that cannot be computed: check the folder as usual
        return False


def not_writable(key: str, path: Path) -> str | None:
    """``None`` when a file can be created in ``path`` (created if missing; tried for real, since
    root ignores mode bits but not a read-only mount); else the problem."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return f"{key}={path} is not writable ({e.strerror or e}); {HINTS.get(key, 'point it at a writable folder')}"
    return None


# ---------------------------------------------------------------------- data
def datasets_read(cfg: DictConfig) -> Iterator[tuple[str, Any, bool]]:
    """``(what, datamodule, trained on)`` for every dataset the run reads (built, not set up)."""
    name = cfg.scenario.get("name")
    source = cfg.base.get("source")
    if name in CLASSIFICATION or (name not in ("transfer", "zsda", "detection", "segmentation")
                                  and cfg.scenario.get("tasks")):
        for task, dm in build_tasks(cfg).items():
            parts = dm.parts.items() if isinstance(dm, JointDataModule) else [(task, dm)]
            for key, part in parts:
                yield f"task '{key}'", part, True
    elif name == "transfer":
        sc = cfg.scenario
        overrides: dict[str, Any] = {"sample_rate": float(sc.sample_rate)}
        if sc.get("classes") is not None:
            overrides["classes"] = list(sc.classes)
        yield "the target dataset", instantiate(cfg.dataset, **overrides), True
    elif name == "zsda":
        yield "the source dataset", instantiate(cfg.dataset), True
        yield "the target dataset", instantiate(cfg.scenario.target), False
        return  # zsda trains its own source model: no base data
    base_cfg = cfg
    if name in ("detection", "segmentation") and source == "train" and cfg.base.get("dataset") is None:
        base_cfg = cfg.copy()
        with open_dict(base_cfg):
            base_cfg.base.dataset = cfg.scenario.base_dataset
    if source == "train" or name in CLASSIFICATION:  # the base is trained on it, or scored on it
        dm = base_datamodule(base_cfg)
        if dm is not None:
            yield "the base data", dm, source == "train"


def dataset_problems(cfg: DictConfig) -> list[str]:
    """What is wrong with the data the run reads: each dataset set up, each split it uses
    non-empty, and one sample of each decoded (a corrupt file there is found now)."""
    problems: list[str] = []
    try:
        found = list(datasets_read(cfg))
    except DeltaPatchError as e:
        return [_first_line(e)]
    seen: set[int] = set()
    for what, dm, trained in found:
        if not isinstance(dm, ClassificationDataModule) or id(dm) in seen:
            continue
        seen.add(id(dm))
        problems += _check_datamodule(what, dm, trained)
    return problems


def _check_datamodule(what: str, dm: ClassificationDataModule, trained: bool) -> list[str]:
    if isinstance(dm, FileDataModule) and dm.archives and dm.extract_to is not None and not dm.extract_to.is_dir():
        problem = not_writable("paths.cache_dir", dm.extract_to.parent)
        if problem:
            return [f"{what} ({dm.name}) is extracted into {dm.extract_to}, but {problem}"]
    try:
        dm.setup()
    except DeltaPatchError as e:
        return [_first_line(e)]
    except Exception as e:  # a format the loader does not expect: say where, in one line
        return [f"{what} ({dm.name}) cannot be read from {dm.data_dir}: {type(e).__name__}: {_first_line(e)}"]
    problems = []
    for split in ("train", "val", "test"):
        data = dm.splits.get(split)
        if data is None:
            continue
        if len(data) == 0:
            if split == "test" or (split == "train" and trained):
                problems.append(f"{what} ({dm.name}): its {split} split is empty (classes {dm.class_ids}, "
                                f"data under {dm.data_dir}); put images there or choose other classes")
            continue
        try:
            data[0]
        except DeltaPatchError as e:
            problems.append(_first_line(e))
        except Exception as e:
            problems.append(f"{what} ({dm.name}): the first {split} sample cannot be decoded "
                            f"({type(e).__name__}: {_first_line(e)})")
    return problems


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


__all__ = ["dataset_problems", "datasets_read", "not_writable", "preflight", "writable_paths"]
