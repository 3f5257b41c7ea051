"""Accuracy of the base task and of every task with torchmetrics, their harmonic mean / mean,
and the Lightning callback that logs them during training."""
from __future__ import annotations

import statistics
from typing import Mapping

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from ..methods.base import Method

BASE_KEY = "base"


@torch.no_grad()
def accuracy(method: Method, loader: DataLoader, task: str | None, num_classes: int,
             device: torch.device | str = "cpu", label_offset: int = 0) -> float:
    """Top-1 accuracy in percent of ``method`` on ``loader`` for ``task`` (``None`` = base)."""
    was_training = method.training
    method.eval()
    metric = MulticlassAccuracy(max(num_classes, 2), average="micro").to(device)
    for x, y in loader:
        logits = method(x.to(device), task)
        metric.update(logits.argmax(1), y.to(device) + label_offset)
    method.train(was_training)
    return float(metric.compute()) * 100.0


def harmonic_mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    if len(vals) != len(values) or not vals:
        return None
    return statistics.harmonic_mean(vals) if all(v > 0 for v in vals) else 0.0


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


class EvalSet:
    """What to evaluate: the base task and each task, each a loader and its class count."""

    def __init__(self):
        self.items: dict[str, tuple[DataLoader, int, str | None, int]] = {}

    def add(self, key: str, loader: DataLoader, num_classes: int, task: str | None, label_offset: int = 0):
        self.items[key] = (loader, num_classes, task, label_offset)

    def evaluate(self, method: Method, device="cpu", skip: Mapping[str, float] | None = None,
                 only: list[str] | None = None) -> dict[str, float]:
        """Accuracy per key (or per key in ``only``); keys in ``skip`` take the given value
        without recomputation."""
        out = {}
        for key, (loader, n, task, off) in self.items.items():
            if only is not None and key not in only:
                continue
            out[key] = skip[key] if skip and key in skip else accuracy(method, loader, task, n, device, off)
        return out


class PatchMetrics(L.Callback):
    """After each validation epoch, log ``val/base/acc``, ``val/<task>/acc`` for every task so far
    and ``val/hmean`` (or ``val/mean`` for sequential). The base accuracy of a method that keeps the
    base model is computed once."""

    def __init__(self, method: Method, evalset: EvalSet, aggregate: str = "hmean"):
        self.method, self.evalset, self.aggregate = method, evalset, aggregate
        self._fixed: dict[str, float] = {}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        accs = self.evalset.evaluate(self.method, pl_module.device, skip=self._fixed)
        if self.method.keeps_base and BASE_KEY in accs:
            self._fixed[BASE_KEY] = accs[BASE_KEY]
        agg = harmonic_mean if self.aggregate == "hmean" else mean
        metrics = {f"val/{k}/acc": v for k, v in accs.items()}
        value = agg(list(accs.values()))
        if value is not None:
            metrics[f"val/{self.aggregate}"] = value
        pl_module.log_dict(metrics)
