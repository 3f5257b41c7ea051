"""The LightningModule that trains one task of a method (and the one that trains a base model)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics.classification import MulticlassAccuracy

from ..errors import ConfigError
from ..methods.base import Method
from ..scores import aggregate_fn
from .checkpointing import drop_frozen, restore_frozen, trainable_state_keys
from .evaluation import EvalItem, ItemScoring, LoaderFactory


def _default_optimizer(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


class TaskModule(ItemScoring, pl.LightningModule):
    """Trains ``method``'s task ``task`` with cross-entropy; optimizes only
    ``method.trainable_parameters(task)``. Frozen parts stay in eval mode because every method's
    ``train()`` keeps them there.

    Data comes from factories called inside Lightning's loops (in each DDP process):
    ``train_loader`` for training, and every item of ``val_items`` (the base task and every task
    so far) for the per-epoch validation, which logs ``val/<key>/acc`` and ``val/<aggregate>``
    (``fixed`` values, e.g. a kept base's accuracy measured once, join the aggregate unscored).
    With ``from_features`` the training batches hold cached frozen-prefix features.
    """

    def __init__(self, method: Method, task: str, num_classes: int,
                 optimizer: Callable | None = None, scheduler: Callable | None = None,
                 label_smoothing: float = 0.0, channels_last: bool = False, compile: bool | str = False,
                 train_loader: LoaderFactory | None = None, val_items: Sequence[EvalItem] = (),
                 fixed: dict[str, float | None] | None = None, aggregate: str = "hmean",
                 from_features: bool = False):
        super().__init__()
        self.method, self.task = method, task
        self.optimizer_factory = optimizer or _default_optimizer
        self.scheduler_factory = scheduler
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(max(num_classes, 2), average="micro")
        self.channels_last = channels_last
        self.from_features = from_features
        self.train_loader_factory = train_loader
        self._init_scoring([(0, "val", item) for item in val_items])
        self.fixed = dict(fixed or {})
        self.aggregate = aggregate
        self._run, self._run_from = self._plain_run, self._plain_run_from
        if compile:
            # compiled lazily on the first batch; true = inductor, a string names another backend
            backend = "inductor" if compile is True else str(compile)
            self._run = torch.compile(self._plain_run, backend=backend)
            self._run_from = torch.compile(self._plain_run_from, backend=backend)

    def _plain_run(self, x: torch.Tensor) -> torch.Tensor:
        return self.method(x, self.task)

    def _plain_run_from(self, h: torch.Tensor) -> torch.Tensor:
        return self.method.forward_from(h, self.task)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._run(x)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            # DDP all-reduces the gradient of every parameter that requires one and fails when one
            # gets none: earlier tasks' modules (sequential) and heads this task does not use
            # (PAINT's base head) are not this fit's business
            train = {id(p) for p in self.method.trainable_parameters(self.task)}
            ignore = [n for n, p in self.named_parameters() if id(p) not in train]
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, ignore)

    # -- data ----------------------------------------------------------------
    def train_dataloader(self):
        if self.train_loader_factory is None:
            raise RuntimeError("TaskModule needs train_loader (a loader factory) to train")
        return self.train_loader_factory()

    def val_dataloader(self):
        return self._loaders()

    # -- steps ---------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        # from_features: batches hold cached frozen-prefix features, not images
        logits = self._run_from(x) if self.from_features else self(x)
        loss = self.loss(logits, y)
        self.train_acc.update(logits.argmax(1), y)
        self.log(f"train/{self.task}/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log(f"train/{self.task}/acc", self.train_acc.compute() * 100.0, sync_dist=True)
        self.train_acc.reset()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._score_batch(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        if not self.plan:
            return
        accs = {item.key: value for (_, _, item), value in zip(self.plan, self._computed())}
        accs = {**self.fixed, **accs}
        # already global values (torchmetrics synced the counts); sync_dist only says so
        self.log_dict({f"val/{k}/acc": v for k, v in accs.items() if v is not None}, sync_dist=True)
        value = aggregate_fn(self.aggregate)(list(accs.values()))
        if value is not None:
            self.log(f"val/{self.aggregate}", value, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        params = [p for p in self.method.trainable_parameters(self.task) if p.requires_grad]
        return optimizers_for(self, params, self.optimizer_factory, self.scheduler_factory)

    # -- checkpoints: only what training can change (see training/checkpointing.py) -------------
    def on_train_start(self) -> None:
        self._kept_keys = trainable_state_keys(self)  # the modules are in their training modes here
        self._frozen_digest = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = getattr(self, "_kept_keys", None) or trainable_state_keys(self)
        self._frozen_digest = drop_frozen(checkpoint, keep, getattr(self, "_frozen_digest", None))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen(self, checkpoint)


def optimizers_for(module: pl.LightningModule, params: list[nn.Parameter], optimizer: Callable,
                   scheduler: Callable | None = None) -> Any:
    """What ``configure_optimizers`` returns: ``optimizer(params)``, with ``scheduler(opt,
    total_steps=...)`` stepped every batch when one is given."""
    opt = optimizer(params)
    if scheduler is None:
        return opt
    sched = scheduler(opt, total_steps=module.trainer.estimated_stepping_batches)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_task_module(cfg: DictConfig, method: Method, task: str, num_classes: int, **kwargs: Any) -> TaskModule:
    """The TaskModule of ``task`` with the method's optimizer/scheduler and the run's speed options
    (``channels_last``, ``compile``); ``kwargs`` go to :class:`TaskModule` (loaders, val items)."""
    sched: Any = cfg.method.get("scheduler")
    return TaskModule(method, task, num_classes, optimizer=instantiate(cfg.method.optimizer),
                      scheduler=instantiate(sched) if sched else None,
                      channels_last=cfg.get("channels_last", False), compile=cfg.get("compile", False), **kwargs)


def warmup_cosine(optimizer, total_steps: int, warmup_steps: int = 0):
    """Linear warm-up then cosine to 0 (PAINT's schedule), stepped every batch."""
    import math

    total = max(int(total_steps), 1)
    warm = min(warmup_steps, total - 1) if total > 1 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(total - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)



BASE_OPTIMIZERS = ("adamw", "sgd")


class BaseModule(pl.LightningModule):
    """Trains a whole backbone on the base task (``base=train``): cross-entropy (optionally with
    ``label_smoothing``), AdamW (``optimizer="adamw"``) or SGD with (Nesterov) momentum
    (``optimizer="sgd"``), and a OneCycle schedule peaking at ``lr`` after ``pct_start`` of the
    steps. The defaults are the original recipe (AdamW, no smoothing, OneCycle's 0.3)."""

    def __init__(self, model: nn.Module, num_classes: int, lr: float = 1e-3, weight_decay: float = 1e-4,
                 optimizer: str = "adamw", momentum: float = 0.9, nesterov: bool = False,
                 label_smoothing: float = 0.0, pct_start: float = 0.3):
        super().__init__()
        if optimizer not in BASE_OPTIMIZERS:
            raise ConfigError(f"base.optimizer must be one of {', '.join(BASE_OPTIMIZERS)}, got '{optimizer}'")
        self.model, self.lr, self.weight_decay = model, lr, weight_decay
        self.optimizer, self.momentum, self.nesterov = optimizer, momentum, nesterov
        self.pct_start = pct_start
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.val_acc = MulticlassAccuracy(max(num_classes, 2), average="micro")

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("base_model/train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc.update(self(x).argmax(1), y)

    def on_validation_epoch_end(self) -> None:
        self.log("base_model/val_acc", self.val_acc.compute() * 100.0, prog_bar=True, sync_dist=True)
        self.val_acc.reset()

    def configure_optimizers(self):
        params = self.model.parameters()
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                                  weight_decay=self.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        # OneCycle cycles SGD's momentum too (0.85..0.95); AdamW's beta1 likewise
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, pct_start=self.pct_start,
                                                    total_steps=max(int(self.trainer.estimated_stepping_batches), 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
