"""Object detection (paper Section 3.2, Table 7): torchvision's Faster R-CNN on a ∆-patched body.

The detector is torchvision's ``FasterRCNN`` with an FPN over the base classifier's four stages,
like ``fasterrcnn_resnet50_fpn`` but with the body of :class:`DeltaBody`: with ``method=delta``
the base is frozen and its last ``n_deltas`` stages run with ∆-modules, so the FPN sees the
∆-patched features. What trains (also recorded in results.json as ``trained_parts``):

- ``delta``: ∆-modules + FPN + RPN + box heads; the base classifier is frozen (the paper:
  "train only the ∆-modules, keeping the backbone parameters frozen"; the detection heads are new
  and have nothing to keep, so they train).
- ``fc``: FPN + RPN + box heads on the frozen base: Table 7's plain backbone row.
- ``finetune`` / ``finetune_delta``: the body trains too (its BatchNorm statistics stay frozen,
  as with torchvision's ``FrozenBatchNorm2d``).

The score is mAP from torchmetrics' ``MeanAveragePrecision`` (COCO-style 101-point AP; VOC 2007's
official protocol is 11-point AP at IoU 0.5, so ``map_50`` is the comparable number).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..data.dense import DenseDataModule
from ..delta.body import DeltaBody
from ..errors import ConfigError
from ..training.module import optimizers_for
from ..training.trainer import make_trainer, run_device
from .common import check_base, config_dict, count_trainable, finish, make_loggers, results_skeleton, save_trained
from .dense import delta_options, model_settings, prepare_dense

log = logging.getLogger(__name__)


class DeltaFPN(nn.Module):
    """:class:`DeltaBody` + FPN (with the extra max-pooled level), the backbone Faster R-CNN wants:
    ``forward`` returns the pyramid, ``out_channels`` its width."""

    def __init__(self, body: DeltaBody, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels_list, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor):
        return self.fpn(self.body(x))


def build_detector(body: DeltaBody, num_classes: int, mean, std, settings: dict[str, Any]) -> FasterRCNN:
    """Faster R-CNN with ``num_classes`` object classes (+ background) on ``body``.

    ``settings``: ``fpn_channels``, ``anchor_sizes`` (one per pyramid level, 5 for four stages),
    ``representation_size`` (of the box head's two MLP layers) and any ``FasterRCNN`` keyword
    (``min_size``, ``box_batch_size_per_image``, ...).
    """
    settings = dict(settings)
    backbone = DeltaFPN(body, int(settings.pop("fpn_channels", 256)))
    representation = settings.pop("representation_size", None)
    if representation is not None:  # a narrower box head than torchvision's 1024 (small offline runs)
        resolution = 7  # torchvision's default box RoI pool output
        settings["box_head"] = TwoMLPHead(backbone.out_channels * resolution**2, int(representation))
        settings["box_predictor"] = FastRCNNPredictor(int(representation), num_classes + 1)
    anchor_sizes = settings.pop("anchor_sizes", None)
    anchors = None
    if anchor_sizes is not None:
        levels = len(body.return_stages) + 1
        if len(anchor_sizes) != levels:
            raise ConfigError(f"anchor_sizes needs one size per pyramid level ({levels}), got {list(anchor_sizes)}")
        anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * levels)
    return FasterRCNN(backbone, num_classes=None if "box_predictor" in settings else num_classes + 1,
                      rpn_anchor_generator=anchors, image_mean=list(mean), image_std=list(std), **settings)


class DetectionModule(pl.LightningModule):
    """Trains a torchvision detector on the sum of its losses; optimises only what requires grad."""

    def __init__(self, model: nn.Module, optimizer: Callable, scheduler: Callable | None = None):
        super().__init__()
        self.model, self.optimizer_factory, self.scheduler_factory = model, optimizer, scheduler

    def training_step(self, batch, batch_idx):
        images, targets = batch
        losses = self.model(list(images), [{k: t[k] for k in ("boxes", "labels")} for t in targets])
        loss = sum(losses.values())
        n = len(images)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return optimizers_for(self, params, self.optimizer_factory, self.scheduler_factory)


@torch.no_grad()
def evaluate_detection(model: nn.Module, loader, device: torch.device | str = "cpu") -> dict[str, float]:
    """mAP (IoU 0.5:0.95), mAP@0.5 and mAP@0.75 in percent. Targets' ``iscrowd`` (VOC's difficult
    objects) are regions whose detections count neither as hits nor as false positives."""
    from torchmetrics.detection import MeanAveragePrecision

    was_training = model.training
    model.eval()
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    for images, targets in loader:
        preds = model([im.to(device) for im in images])
        metric.update([{k: v.cpu() for k, v in p.items()} for p in preds],
                      [{k: v for k, v in t.items() if k in ("boxes", "labels", "iscrowd")} for t in targets])
    out = metric.compute()
    model.train(was_training)
    return {k: float(out[k]) * 100.0 for k in ("map", "map_50", "map_75")}


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scenario=detection``: train Faster R-CNN on ``dataset`` and score mAP on its test split."""
    out_dir = Path(cfg.paths.output_dir)
    loggers = make_loggers(cfg)
    setup = prepare_dense(cfg, "detection", loggers)
    dm: DenseDataModule = setup.dm
    use_delta, train_body, n_deltas = setup.use_delta, setup.train_body, setup.n_deltas
    base, fingerprint = setup.base, setup.fingerprint
    body = DeltaBody(base.model, n_deltas, train_body=train_body, **delta_options(cfg))
    model = build_detector(body, dm.num_classes, cfg.backbone.mean, cfg.backbone.std,
                           model_settings(dm, cfg.scenario.get("model")))
    module = DetectionModule(model, instantiate(cfg.scenario.optimizer),
                             instantiate(cfg.scenario.scheduler) if cfg.scenario.get("scheduler") else None)

    trainer = make_trainer(cfg, "detection", loggers, limit_val_batches=0)
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    seconds = time.perf_counter() - t0

    device = run_device(cfg)
    model.to(device)
    scores = evaluate_detection(model, dm.test_dataloader(), device)
    unchanged = check_base(base.model, fingerprint, frozen=not train_body, what="detection")

    task = dm.name
    results = results_skeleton(cfg, dm.name, fingerprint=fingerprint)
    results.update(
        n_deltas=n_deltas or None, train_seconds=seconds, base_model_unchanged=unchanged, tasks={task: scores["map_50"]},
        metric="map_50", **scores,
        trained_parts=(["delta"] if use_delta else []) + (["body"] if train_body else []) + ["fpn", "rpn", "roi_heads"],
        class_names={task: dm.class_names},
    )
    results["trainable_params"][task] = count_trainable(model)
    results["delta_params"] = sum(p.numel() for p in body.delta_parameters())
    results["patch_files"][task] = save_trained(
        model, out_dir / "patches" / f"{task}.detector.safetensors", None if train_body else "backbone.body.base.",
        {"format": "deltapatch-detector/1", "backbone": cfg.backbone.name, "n_deltas": n_deltas,
         "base_fingerprint": fingerprint, "class_names": dm.class_names, "config": config_dict(cfg)})
    return finish(cfg, results, loggers, {f"test/{k}": v for k, v in scores.items()})
