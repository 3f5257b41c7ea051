"""Accuracy of the base task and of every task, computed in Lightning's evaluation loops.

What is scored is an :class:`EvalSet`: one :class:`EvalItem` per key (``"base"``, each task, each
part of a joint task), each with the head that scores it and a loader factory per split.
:class:`EvalModule` scores every item (and, for PAINT's α sweep, every model variant) in one
``trainer.validate``/``trainer.test`` loop with one torchmetrics ``MulticlassAccuracy`` per item,
so the numbers are synchronised across DDP ranks, computed under the trainer's precision, shown
with its progress bar, and computed once. Accuracies are in percent everywhere (results.json,
loggers, the α table).

Loaders are built by factories inside the loop, i.e. in each DDP process after the process group
exists, so every rank scores its own disjoint shard (see :class:`deltapatch.data.base.ShardSampler`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from ..data.base import in_process_group
from ..errors import ReportError
from ..methods.base import Method

BASE_KEY = "base"
LoaderFactory = Callable[[], DataLoader]


@dataclass
class EvalItem:
    """One scored key: ``task`` (``None`` = the base model) scores ``num_classes`` labels shifted by
    ``offset`` (a joint task's part inside the union head), with one loader factory per split."""

    key: str
    task: str | None
    num_classes: int
    loaders: dict[str, LoaderFactory] = field(default_factory=dict)
    offset: int = 0


class EvalSet:
    """The keys a run scores, in order (base first)."""

    def __init__(self) -> None:
        self.items: dict[str, EvalItem] = {}

    def add(self, key: str, task: str | None, num_classes: int, datamodule, offset: int = 0) -> None:
        """Score ``datamodule``'s val and test splits under ``key`` with ``task``'s head."""
        self.items[key] = EvalItem(key, task, num_classes,
                                   {"val": datamodule.val_dataloader, "test": datamodule.test_dataloader}, offset)

    def select(self, keys: Iterable[str] | None = None, drop: Iterable[str] = ()) -> list[EvalItem]:
        chosen = list(self.items) if keys is None else [k for k in keys if k in self.items]
        return [self.items[k] for k in chosen if k not in set(drop)]

    def __contains__(self, key: str) -> bool:
        return key in self.items


def _accuracy(num_classes: int) -> MulticlassAccuracy:
    # predictions are passed as class ids, so a one-class task (a sequential step) works too
    return MulticlassAccuracy(max(num_classes, 2), average="micro")


class ItemScoring:
    """Mixin for LightningModules that score ``self.plan`` (a list of ``(variant, split, EvalItem)``)
    in an evaluation loop with several dataloaders, one metric per plan entry."""

    method: Method
    plan: list[tuple[int, str, EvalItem]]
    metrics: nn.ModuleList
    variants: Sequence[Callable[[], None]] | None = None

    def _init_scoring(self, plan: list[tuple[int, str, EvalItem]], variants=None) -> None:
        self.plan = plan
        self.metrics = nn.ModuleList([_accuracy(item.num_classes) for _, _, item in plan])
        self.variants = variants
        self._variant: int | None = None

    def _loaders(self) -> list[DataLoader]:
        return [item.loaders[split]() for _, split, item in self.plan]

    def _score_batch(self, batch, dataloader_idx: int) -> None:
        variant, _, item = self.plan[dataloader_idx]
        if self.variants is not None and variant != self._variant:
            self.variants[variant]()  # loaders run one after another: switch the model once per variant
            self._variant = variant
        x, y = batch
        logits = self.method(x, item.task)
        self.metrics[dataloader_idx].update(logits.argmax(1), y + item.offset)

    def _computed(self) -> list[float]:
        """Percent accuracy per plan entry (torchmetrics syncs the counts across ranks), reset."""
        out = []
        for metric in self.metrics:
            # always computed: it is a collective across DDP ranks (a rank with an empty shard
            # must still take part)
            out.append(float(metric.compute()) * 100.0)
            metric.reset()
        self._variant = None
        return out


def metric_name(split: str, key: str, variant: int | None = None) -> str:
    return f"{split}/{key}/acc" if variant is None else f"{split}/v{variant}/{key}/acc"


class EvalModule(ItemScoring, pl.LightningModule):
    """Scores ``method`` on ``items`` of every split in ``splits``; with ``variants`` (callables
    that change the model in place, e.g. PAINT's interpolation to each α), every item under every
    variant. Logs ``<split>/<key>/acc`` (``<split>/v<i>/<key>/acc`` per variant)."""

    def __init__(self, method: Method, items: list[EvalItem], splits: Sequence[str] = ("test",),
                 variants: Sequence[Callable[[], None]] | None = None):
        super().__init__()
        self.method = method
        n = len(variants) if variants is not None else 1
        self._init_scoring([(v, split, item) for v in range(n) for split in splits for item in items], variants)

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    test_dataloader = val_dataloader

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._score_batch(batch, dataloader_idx)

    test_step = validation_step

    def _log_all(self) -> None:
        many = self.variants is not None
        values = self._computed()
        # the values are already global (torchmetrics synced the counts): averaging identical
        # numbers across ranks changes nothing and tells Lightning they are synchronised
        self.log_dict({metric_name(split, item.key, v if many else None): value
                       for (v, split, item), value in zip(self.plan, values)}, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_all()

    on_test_epoch_end = on_validation_epoch_end


class LightningScorer:
    """The :class:`~deltapatch.methods.base.Scorer` a runner hands to methods: evaluation loops
    on trainers made by ``make_trainer`` over ``evalset``'s items."""

    def __init__(self, make_trainer: Callable[[], pl.Trainer], method: Method, evalset: EvalSet):
        self.make_trainer, self.method, self.evalset = make_trainer, method, evalset

    def _run(self, splits: Sequence[str], items: list[EvalItem], variants=None) -> dict[str, float]:
        if not items:
            return {}
        module = EvalModule(self.method, items, splits, variants)
        trainer = self.make_trainer()
        trainer.test(module, verbose=False)
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    def score_splits(self, splits: Sequence[str], keys: Iterable[str] | None = None,
                     drop: Iterable[str] = ()) -> dict[str, dict[str, float | None]]:
        """``{split: {key: accuracy}}`` for every split in one loop (``keys``: a subset; ``drop``:
        keys left out)."""
        items = self.evalset.select(keys, drop)
        metrics = self._run(splits, items)
        return {split: {item.key: _clean(metrics.get(metric_name(split, item.key))) for item in items}
                for split in splits}

    def score(self, split: str, keys: Iterable[str] | None = None, drop: Iterable[str] = ()) -> dict[str, float | None]:
        """Accuracy per key on ``split``."""
        return self.score_splits((split,), keys, drop)[split]

    def sweep(self, split: str, variants: Sequence[Callable[[], None]]) -> list[dict[str, float | None]]:
        """For each variant (in order): apply it, then score every key; one loop in all."""
        items = self.evalset.select()
        metrics = self._run((split,), items, list(variants))
        return [{item.key: _clean(metrics.get(metric_name(split, item.key, v))) for item in items}
                for v in range(len(variants))]


def _clean(value: float | None) -> float | None:
    return None if value is None or value != value else value  # NaN: nothing was scored


@torch.no_grad()
def mean_lambdas(method, loader: Iterable, task: str, device: torch.device | str = "cpu",
                 max_batches: int | None = None) -> dict[int, list[float]]:
    """``{stage_index: [mean λ per skip]}`` of ``task`` over ``loader`` (λ column order of
    :func:`deltapatch.delta.stage.skip_pairs`: j ascending, then i). ``method`` is anything with
    ``lambdas(x, task)`` (a ∆ method or a :class:`~deltapatch.delta.DeltaNetwork`). Under DDP
    (every rank runs this on its shard of the loader) the mean is over all ranks' images."""
    was_training = method.training
    method.eval()  # λ at inference: random_lambda's gate gives 0.5, the others are deterministic
    sums: dict[int, torch.Tensor] = {}
    count = 0
    try:
        for b, batch in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            for stage, lam in method.lambdas(x.to(device), task).items():
                total = lam.detach().float().sum(0).cpu()
                sums[int(stage)] = sums[int(stage)] + total if int(stage) in sums else total
            count += x.shape[0]
    finally:
        method.train(was_training)
    sums, count = _across_ranks(sums, count)
    if count == 0:
        raise ReportError(f"no samples to average λ of task '{task}' over")
    return {stage: (s / count).tolist() for stage, s in sorted(sums.items())}


def _across_ranks(sums: dict[int, torch.Tensor], count: int) -> tuple[dict[int, torch.Tensor], int]:
    """Sums and count over every DDP rank (each saw its shard of the loader), so all ranks return
    the mean over the same images; gathered as objects, as a rank may have seen none."""
    if not in_process_group():
        return sums, count
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, (sums, count))
    total: dict[int, torch.Tensor] = {}
    for rank_sums, _ in gathered:
        for stage, s in rank_sums.items():
            total[stage] = total[stage] + s if stage in total else s
    return total, sum(c for _, c in gathered)
