"""Where the base model comes from (``conf/base/``): hub weights, a local checkpoint, or trained
here on a base dataset and cached under a key derived from everything that shaped it."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytorch_lightning as pl
import torch
from filelock import FileLock, Timeout
from pytorch_lightning.utilities import rank_zero_only
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..checkpoint import atomic_path, read_state_dict, tensors_sha256, write_json
from ..data.base import LOADER_ONLY_KEYS, ClassificationDataModule
from ..errors import CheckpointError, ConfigError
from ..provenance import software
from .checkpointing import LastCheckpoint, usable_checkpoint
from .module import BaseModule
from .trainer import make_trainer

log = logging.getLogger(__name__)
SOURCES = ("train", "pretrained", "checkpoint", "scratch")
# BaseModule's recipe options under base.* and the values of the original recipe
RECIPE_DEFAULTS: dict[str, Any] = {"optimizer": "adamw", "momentum": 0.9, "nesterov": False,
                                   "label_smoothing": 0.0, "pct_start": 0.3}


@dataclass
class BaseInfo:
    """The base model and how to score its task (``datamodule`` None: not measurable here)."""

    model: nn.Module
    num_classes: int
    datamodule: ClassificationDataModule | None
    reference_acc: float | None = None
    cache_path: Path | None = None


def base_datamodule(cfg: DictConfig) -> ClassificationDataModule | None:
    """The base task's data: ``base.dataset`` (a dataset config), else the top-level dataset
    restricted to ``base.classes`` when those are given, else none."""
    b = cfg.base
    dcfg = b.get("dataset")
    if dcfg is None:
        if b.get("classes") is None:
            return None
        dcfg = cfg.dataset
    overrides = {"classes": list(b.classes)} if b.get("classes") is not None else {}
    return instantiate(dcfg, **overrides)


def pretrained_weights(cfg: DictConfig) -> bool | str:
    """What ``base=pretrained`` loads: the local file named by ``backbone.model.pretrained`` when
    it is a path (no hub, no network), else the hub weights (``True``)."""
    given = cfg.backbone.model.get("pretrained")
    return str(given) if isinstance(given, str) and given else True


def base_cache_key(cfg: DictConfig) -> str:
    """Hash of what determines a trained base: architecture, data, classes, recipe and seed."""
    b = cfg.base
    data = OmegaConf.to_container(b.get("dataset") or cfg.dataset, resolve=True)
    for k in LOADER_ONLY_KEYS:  # do not change the weights
        data.pop(k, None)
    data.pop("seed", None)  # the run seed varies patches, not the base: base.seed fixes it
    key = {
        "backbone": cfg.backbone.name,
        "data": data,
        "classes": OmegaConf.to_container(b.classes) if b.get("classes") is not None else None,
        "epochs": b.epochs, "lr": b.lr, "weight_decay": b.weight_decay, "seed": b.seed,
        "version": 1,
    }
    # the run's trainer shapes the base too: recorded only when not the default, so that the
    # keys of plain single-process fp32 bases stay what they were
    world = world_size(cfg)
    if world > 1:
        key["world_size"] = world
    if str(cfg.trainer.get("precision", "32-true")) not in ("32-true", "32"):
        key["precision"] = str(cfg.trainer.precision)
    if b.get("limit_train_batches") is not None:
        key["limit_train_batches"] = b.limit_train_batches
    # recipe options added later: in the key only when they differ from the original recipe, so
    # the keys of bases trained before them stay valid
    for name, default in RECIPE_DEFAULTS.items():
        if b.get(name, default) != default:
            key[name] = b.get(name)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def base_recipe(cfg: DictConfig) -> dict[str, Any]:
    """BaseModule's recipe options from ``base.*`` (absent keys: the original recipe's values)."""
    return {name: cfg.base.get(name, default) for name, default in RECIPE_DEFAULTS.items()}


def obtain_base(cfg: DictConfig, loggers: list | None = None) -> BaseInfo:
    """The base model of ``cfg.base`` and the data that scores it (see :class:`BaseInfo`).
    A base trained here uses the run's trainer settings (devices, strategy, precision) and
    ``loggers``, with its own recipe (``base.epochs``, ``lr``, ``weight_decay``, ``seed``,
    ``limit_train_batches``)."""
    source = cfg.base.source
    if source not in SOURCES:
        raise ConfigError(f"unknown base.source '{source}'; choose one of {', '.join(SOURCES)}")
    dm = base_datamodule(cfg)
    if source == "pretrained":
        model = instantiate(cfg.backbone.model, pretrained=pretrained_weights(cfg), num_classes=1000)
        return BaseInfo(model, 1000, dm, cfg.base.get("reference_acc"))
    if source == "checkpoint":
        if not cfg.base.get("path"):
            raise ConfigError("base=checkpoint needs base.path=/path/to/weights.safetensors")
        model = instantiate(cfg.backbone.model, pretrained=str(cfg.base.path), num_classes=cfg.base.num_classes)
        return BaseInfo(model, cfg.base.num_classes, dm, cfg.base.get("reference_acc"))
    if dm is None:
        raise ConfigError("base=train needs base.classes or base.dataset to train the base model on")
    dm.setup()
    if source == "scratch":  # trained together with the patch later: random init, no cache
        model = instantiate(cfg.backbone.model, pretrained=False, num_classes=dm.num_classes)
        return BaseInfo(model, dm.num_classes, dm)
    return _trained_base(cfg, dm, loggers or [])


def base_cache_path(cfg: DictConfig) -> Path:
    """Where ``base=train`` keeps the base model ``cfg`` describes."""
    return Path(cfg.base.cache_dir) / f"{cfg.backbone.name}-{base_cache_key(cfg)}.safetensors"


def _trained_base(cfg: DictConfig, dm: ClassificationDataModule, loggers: list) -> BaseInfo:
    path = base_cache_path(cfg)
    model = train_cached(
        cfg, path, dm.num_classes,
        make_module=lambda m: BaseModule(m, dm.num_classes, lr=cfg.base.lr, weight_decay=cfg.base.weight_decay,
                                         **base_recipe(cfg)),
        data={"datamodule": dm}, loggers=loggers,
        info={"dataset": dm.name, "classes": dm.class_ids, "epochs": cfg.base.epochs})
    return BaseInfo(model, dm.num_classes, dm, cache_path=path)


def world_size(cfg: DictConfig) -> int:
    """Processes the run's trainer starts (devices x nodes; 1 when devices is not a count)."""
    devices = cfg.trainer.get("devices", 1)
    return (int(devices) if str(devices).isdigit() else 1) * int(cfg.trainer.get("num_nodes", 1) or 1)


def train_cached(cfg: DictConfig, path: Path, num_classes: int, make_module: Callable[[nn.Module], pl.LightningModule],
                 data: dict[str, Any], loggers: list | None = None, info: dict[str, Any] | None = None,
                 pretrained: bool = False, **trainer_overrides: Any) -> nn.Module:
    """A ``cfg.backbone`` model trained once with ``base.*``'s recipe and cached at ``path``.

    A usable file at ``path`` is loaded; otherwise the model is built (random init, or hub weights
    with ``pretrained``), wrapped by ``make_module`` and fitted on ``data`` (``fit`` keywords) with
    the run's trainer settings, saved by rank 0 (atomically, with a SHA-256 of its tensors in the
    metadata and ``info`` beside it as JSON) and read back, so a run uses exactly what later runs
    read from the cache. A truncated or corrupt entry is rebuilt with a warning.

    A build killed part-way continues from its last finished epoch (``<path stem>.partial/last.ckpt``,
    removed once the entry is written) to the same weights an uninterrupted build gives.

    Runs sharing a cache: a single-process run holds ``<path>.lock`` (``filelock``) while it looks
    for the entry and builds it, so concurrent runs wait for one builder and then read its file.
    Under DDP (world size > 1) every rank must train together, so no lock is taken there: start
    DDP runs that need the same new base one after another (or build it first with one process).
    """
    with _builder_lock(path) if world_size(cfg) == 1 else nullcontext():
        model = _load_cached(cfg, path, num_classes)
        if model is not None:
            return model
        return _train_and_cache(cfg, path, num_classes, make_module, data, loggers, info, pretrained,
                                **trainer_overrides)


@contextmanager
def _builder_lock(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` (created with the umask's mode, so colleagues can take it too); say so
    when another run holds it. In a cache this process may only read, an existing entry is read
    without the lock."""
    lock = FileLock(f"{path}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(blocking=False)
    except Timeout:
        log.info("waiting for another run building %s (lock %s.lock)", path.name, path)
        lock.acquire()
    except OSError:
        if not path.exists():
            raise
        yield  # a cache we may only read: nothing will be built, so nothing to wait for
        return
    try:
        yield
    finally:
        lock.release()


def _load_cached(cfg: DictConfig, path: Path, num_classes: int) -> nn.Module | None:
    """The model cached at ``path``, or ``None`` when there is none or it is unusable (warned)."""
    if not path.exists():
        return None
    try:
        state = read_state_dict(path)
        with safe_open(str(path), framework="pt") as f:
            recorded = (f.metadata() or {}).get("tensors_sha256")
        if recorded is not None and tensors_sha256(state) != recorded:
            raise CheckpointError(f"{path}: its tensors do not match the SHA-256 recorded when it was written")
        del state
        model = instantiate(cfg.backbone.model, pretrained=str(path), num_classes=num_classes)
    except Exception as e:
        cause = _user_error(e)
        if cause is None:
            raise
        log.warning("rebuilding unusable cached model %s: %s", path, str(cause).splitlines()[0])
        return None
    log.info("model from cache %s", path)
    return model


def _user_error(exc: BaseException | None) -> Exception | None:
    """The CheckpointError/ConfigError behind ``exc`` (Hydra's instantiate wraps them)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (CheckpointError, ConfigError)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def partial_dir(path: Path) -> Path:
    """Where the build of the cache entry ``path`` keeps its epoch-end ``last.ckpt`` until it ends."""
    return path.with_suffix(".partial")


def _train_and_cache(cfg: DictConfig, path: Path, num_classes: int, make_module: Callable[[nn.Module], pl.LightningModule],
                     data: dict[str, Any], loggers: list | None, info: dict[str, Any] | None, pretrained: bool,
                     **trainer_overrides: Any) -> nn.Module:
    # a build killed part-way (pre-emption, a job's time limit) continues from its last finished
    # epoch: hours of a base on a CPU or a short SLURM slot are not lost. The checkpoint carries
    # the generators and the sampler is seeded by epoch, so the result is the uninterrupted one.
    last = LastCheckpoint(partial_dir(path))
    resume = usable_checkpoint(last.path)
    log.info("training %s for %s epochs, to be cached at %s%s", cfg.backbone.name, cfg.base.epochs, path,
             f" (continuing the build in {last.dirpath})" if resume else "")
    with torch.random.fork_rng():
        pl.seed_everything(cfg.base.seed, workers=True, verbose=False)
        model = instantiate(cfg.backbone.model, pretrained=pretrained, num_classes=num_classes)
        module = make_module(model)
        # checkpoints=True with no stage: none of the run's own checkpoint callbacks, only ``last``
        trainer = make_trainer(cfg, loggers=loggers, callbacks=[last], max_epochs=cfg.base.epochs,
                               limit_train_batches=cfg.base.get("limit_train_batches") or 1.0,
                               # bit-reproducible on CPU; CUDA lacks deterministic kernels for some
                               # backward passes (adaptive pooling): warn there instead of failing
                               deterministic=True if cfg.trainer.get("accelerator", "cpu") == "cpu" else "warn",
                               enable_model_summary=False, num_sanity_val_steps=0, **trainer_overrides)
        trainer.fit(module, ckpt_path=str(resume) if resume else None, **data)
    model.eval()
    if rank_zero_only.rank == 0:  # one writer; the other DDP ranks wait at the barrier, then read it
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        digest = tensors_sha256(tensors)  # = base_fingerprint of the loaded model: results.json's base_fingerprint
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata={"backbone": cfg.backbone.name, "tensors_sha256": digest})
        write_json(path.with_suffix(".json"), {"backbone": cfg.backbone.name, "tensors_sha256": digest, **(info or {}),
                                               **({"resumed": True} if resume else {}), "software": software()})
        shutil.rmtree(last.dirpath, ignore_errors=True)
    trainer.strategy.barrier("model-cache")
    return instantiate(cfg.backbone.model, pretrained=str(path), num_classes=num_classes)


__all__ = ["BaseInfo", "base_cache_key", "base_cache_path", "base_datamodule", "obtain_base", "partial_dir",
           "read_state_dict", "train_cached", "world_size"]
