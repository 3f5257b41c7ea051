"""``python -m deltapatch.evaluate patch=FILE [overrides]``: put a patch file on its base model and
score the base task and the patched task. Prints one JSON line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from .cli import CONF_DIR, guarded, preflight
from .delta import DeltaNetwork
from .errors import ConfigError, PatchError
from .methods.base import Method
from .patch import load_patch
from .scenarios.common import build_tasks
from .training.base_model import obtain_base
from .training.evaluation import EvalSet, LightningScorer
from .training.trainer import eval_trainer


class _Patched(Method):
    """A DeltaNetwork seen through the Method interface, for :func:`accuracy`."""

    def __init__(self, net: DeltaNetwork):
        super().__init__(net.base)
        self.net = net

    def forward(self, x, task=None):
        return self.net(x, task=task)


def evaluate(cfg: DictConfig) -> dict:
    if OmegaConf.is_missing(cfg, "patch"):
        raise ConfigError("no patch given: python -m deltapatch.evaluate patch=path/to/task.patch.safetensors")
    base = obtain_base(cfg)
    net = DeltaNetwork(base.model)
    name = load_patch(net, Path(cfg.patch))
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


def main(argv: list[str] | None = None) -> None:
    args = preflight(list(sys.argv[1:] if argv is None else argv), config_name="evaluate")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=args)
    print(json.dumps(guarded(evaluate, cfg)))


if __name__ == "__main__":
    main()
