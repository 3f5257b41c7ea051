"""``deltapatch-evaluate`` / ``python -m deltapatch.evaluate patch=FILE [overrides]``: put a patch
file on its base model and score the base task and the patched task. Prints one JSON line.

The patch's metadata is read before anything else: a patch made for another backbone, or for a
base model other than the one the config points at, is refused at once (nothing is trained or
loaded)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .cli import call_with_argv, guarded, hydra_app
from .delta import DeltaNetwork
from .errors import ConfigError, PatchError
from .methods.base import Method
from .patch import base_fingerprint, check_patch_tensors, load_patch, read_patch_metadata
from .scenarios.common import build_tasks
from .training.base_model import base_cache_path, obtain_base
from .training.evaluation import EvalSet, LightningScorer
from .training.trainer import eval_trainer


class _Patched(Method):
    """A DeltaNetwork seen through the Method interface, for :func:`accuracy`."""

    def __init__(self, net: DeltaNetwork):
        super().__init__(net.base)
        self.net = net

    def forward(self, x, task=None):
        return self.net(x, task=task)


def backbone_id(cfg: DictConfig) -> str:
    """The backbone name a patch records (``torchvision/resnet18``) for ``cfg.backbone``, from a
    weightless copy on the meta device (no memory, no weights, no download)."""
    with torch.device("meta"):
        model = instantiate(cfg.backbone.model, pretrained=False, num_classes=2)
    return getattr(model, "deltapatch_name", type(model).__name__)


def _file_fingerprint(path: Path) -> str:
    """:func:`base_fingerprint` of the model a safetensors file holds, without building the model
    (the fingerprint is a hash over the state dict, which the file is)."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise PatchError(f"cached base model {path} is unreadable ({str(e).splitlines()[0][:120]}); "
                         f"delete it and train the base again") from None
    return base_fingerprint(SimpleNamespace(state_dict=lambda: tensors))


def check_patch_fits(cfg: DictConfig) -> dict[str, str]:
    """The patch's metadata, once it is known to fit the configured backbone and (``base=train``)
    the cached base model. Raises :class:`PatchError` with one line otherwise."""
    if OmegaConf.is_missing(cfg, "patch"):
        raise ConfigError("no patch given: deltapatch-evaluate patch=path/to/task.patch.safetensors")
    path = Path(cfg.patch)
    meta = read_patch_metadata(path)
    if cfg.get("verify_patch", True):  # a corrupt file is named as such before any other mismatch
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:
            raise PatchError(f"cannot read patch {path}: corrupt or truncated safetensors file ({e})") from None
        check_patch_tensors(path, meta, state)
    built = backbone_id(cfg)
    if meta.get("backbone") != built:
        made_with = (json.loads(meta.get("config") or "{}").get("backbone") or {}).get("name")
        hint = f"; evaluate it with backbone={made_with}" if made_with else ""
        raise PatchError(f"patch {path} was made for backbone '{meta.get('backbone')}', but "
                         f"backbone={cfg.backbone.name} builds '{built}'{hint}")
    if cfg.base.source == "train":
        base = base_cache_path(cfg)
        if not base.is_file():
            raise PatchError(f"no cached base model at {base} for this config: pass the backbone/base/dataset "
                             f"overrides and paths.cache_dir of the run that made {path.name}")
        if _file_fingerprint(base) != meta.get("base_fingerprint"):
            raise PatchError(f"patch {path} was made for another base model than {base} "
                             f"(fingerprint {str(meta.get('base_fingerprint'))[:12]}…); pass the "
                             f"backbone/base/dataset overrides of the run that made it")
    return meta


def evaluate(cfg: DictConfig) -> dict:
    """Score ``cfg.patch`` on its base model: the patch's task and the base task (test splits)."""
    check_patch_fits(cfg)
    base = obtain_base(cfg)
    net = DeltaNetwork(base.model)
    name = load_patch(net, Path(cfg.patch), verify=cfg.get("verify_patch", True))
    spec = net.specs[name]
    tasks = build_tasks(cfg)
    key = cfg.task or next(iter(tasks))
    if key not in tasks:
        raise PatchError(f"no task '{key}' in scenario {cfg.scenario.name}; have {list(tasks)}")
    dm = tasks[key]
    dm.setup()
    if dm.num_classes != spec.num_classes:
        raise PatchError(f"patch {cfg.patch} has {spec.num_classes} classes but task '{key}' of "
                         f"{dm.name} has {dm.num_classes}; pick the task/classes the patch was trained on")
    evalset = EvalSet()
    evalset.add("task", name, dm.num_classes, dm)
    if base.datamodule is not None:
        base.datamodule.setup()
        evalset.add("base", None, base.num_classes, base.datamodule)
    scores = LightningScorer(lambda: eval_trainer(cfg), _Patched(net), evalset).score("test")
    return {"patch": str(cfg.patch), "task": key, "backbone": net.backbone_name,
            "base_acc": scores.get("base"), "task_acc": scores["task"]}


@hydra_app("evaluate")
def _evaluate(cfg: DictConfig) -> None:
    from .console import setup_console

    setup_console()  # after the imports above: Lightning adds its own log handlers when imported
    print(json.dumps(guarded(evaluate, cfg)), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Console script ``deltapatch-evaluate``; ``argv`` defaults to the command line."""
    call_with_argv(_evaluate, argv)


if __name__ == "__main__":
    main()
