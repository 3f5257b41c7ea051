"""What the detection and segmentation runners share: their data, which parts train (read from
the method's class), the base classifier under the dense model, and the model settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ..data.dense import DenseDataModule
from ..errors import ConfigError
from ..patch import base_fingerprint
from ..training.base_model import BaseInfo, obtain_base
from .common import seed


def method_parts(cfg: DictConfig) -> tuple[bool, bool]:
    """(∆-modules on the body, body weights train) of the chosen method, from its class: a method
    with ``dense = True`` has a detection/segmentation form (fc, finetune, delta, finetune_delta)."""
    cls = get_class(cfg.method.module._target_)
    if not getattr(cls, "dense", False):
        raise ConfigError(f"method '{cfg.method.name}' has no detection/segmentation form; "
                          f"choose method=delta, fc, finetune or finetune_delta")
    uses_delta = "n_deltas" in cfg.method.module  # the ∆ methods take n_deltas; fc/finetune do not
    return uses_delta, bool(cls.trains_backbone)


def delta_options(cfg: DictConfig) -> dict[str, Any]:
    """∆-module options of the chosen method config (its defaults for methods without them)."""
    m = cfg.method.get("module") or {}
    return {"bn_placement": m.get("bn_placement", "out"), "gate": m.get("gate", "delta"),
            "gate_kwargs": OmegaConf.to_container(m.gate_kwargs) if m.get("gate_kwargs") else None}


def model_settings(dm: DenseDataModule, scenario_model: DictConfig | dict | None) -> dict[str, Any]:
    """torchvision's defaults, then the dataset's ``model_hints``, then the scenario's non-null
    ``model`` entries."""
    settings = dict(dm.model_hints)
    given = OmegaConf.to_container(scenario_model) if isinstance(scenario_model, DictConfig) else scenario_model
    settings.update({k: v for k, v in (given or {}).items() if v is not None})
    return settings


def obtain_dense_base(cfg: DictConfig, loggers: list | None = None) -> BaseInfo:
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
    return obtain_base(cfg, loggers)


@dataclass
class DenseSetup:
    """What a detection/segmentation runner starts from: its data, what trains, the base model."""

    dm: Any                 # a DenseDataModule, set up
    use_delta: bool         # ∆-modules on the body
    train_body: bool        # the body trains too (finetune, finetune_delta)
    n_deltas: int           # 0 without ∆
    base: BaseInfo
    fingerprint: str        # of the base model before training


def prepare_dense(cfg: DictConfig, task: str, loggers: list | None = None) -> DenseSetup:
    """Seed, build and set up the ``task`` ("detection" / "segmentation") dataset, read what the
    method trains, obtain the base model and fingerprint it; then reseed, so the new heads'
    initialisation depends on the seed only."""
    seed(cfg.seed)
    dm = instantiate(cfg.dataset)
    if getattr(dm, "task", None) != task:
        raise ConfigError(f"scenario={task} needs a {task} dataset (voc_{task}, shapes_{task}), "
                          f"got dataset={cfg.dataset.name}")
    dm.setup()
    use_delta, train_body = method_parts(cfg)
    base = obtain_dense_base(cfg, loggers)
    fingerprint = base_fingerprint(base.model)
    seed(cfg.seed)
    return DenseSetup(dm, use_delta, train_body, int(cfg.n_deltas) if use_delta else 0, base, fingerprint)
