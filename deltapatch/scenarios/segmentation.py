"""Semantic segmentation (paper Section 3.2, Table 7): torchvision's DeepLabV3 on a ∆-patched body.

The model is torchvision's ``DeepLabV3`` (ASPP head on the last stage, optional FCN auxiliary head
on the third) with :class:`DeltaBody` in place of ``IntermediateLayerGetter``. As in
``deeplabv3_resnet50`` the body is dilated to output stride 8: a deep copy of the base classifier
with strides turned into dilation (same tensors), so the base model object itself is never
touched; ResNet-18/34 dilate too (torchvision's constructor refuses BasicBlock dilation, the
in-place rule here does not). What trains follows ``method`` exactly as for detection
(:mod:`deltapatch.scenarios.detection`): ``delta`` = ∆-modules + DeepLab head(s) on the frozen base.

The score is mIoU over all classes, background included (VOC's protocol), from torchmetrics'
``MulticlassJaccardIndex`` with VOC's border label ignored.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

from ..data.dense import IGNORE_INDEX, DenseDataModule
from ..delta.body import DeltaBody
from ..errors import ConfigError
from ..training.module import optimizers_for
from ..training.trainer import make_trainer, run_device
from .common import check_base, config_dict, count_trainable, finish, make_loggers, results_skeleton, save_trained
from .dense import delta_options, model_settings, prepare_dense

log = logging.getLogger(__name__)

# output stride -> torchvision's replace_stride_with_dilation for layer2..layer4
DILATION = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


def dilate_resnet(model: ResNet, output_stride: int) -> ResNet:
    """Turn the strides of ``model``'s last stages into dilation, in place (DeepLab's atrous body).

    The rule is torchvision's ``replace_stride_with_dilation``: a dilated stage's first block keeps
    the previous dilation and loses its stride, its other blocks take the new dilation. Unlike
    torchvision's constructor it also works for BasicBlock ResNets (resnet18/34). No tensor changes.
    """
    dilation = 1
    for name, dilate in zip(("layer2", "layer3", "layer4"), DILATION[output_stride]):
        if not dilate:
            continue
        previous, dilation = dilation, dilation * 2
        for k, block in enumerate(getattr(model, name)):
            d = previous if k == 0 else dilation
            for conv in (block.conv2,) if isinstance(block, Bottleneck) else (block.conv1, block.conv2):
                conv.stride = (1, 1)
                conv.dilation = conv.padding = (d, d)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return model


def dilated_copy(base: nn.Module, output_stride: int | None) -> tuple[nn.Module, int]:
    """``base``'s body at ``output_stride`` (None: 8, as torchvision's DeepLabV3): a deep copy with
    strides turned into dilation, so the base model object itself is never touched."""
    output_stride = 8 if output_stride is None else int(output_stride)
    if output_stride not in DILATION:
        raise ConfigError(f"scenario.model.output_stride must be one of {sorted(DILATION)}, got {output_stride}")
    if output_stride == 32:
        return base, 32
    if not isinstance(base, ResNet):
        raise ConfigError(f"output_stride={output_stride} dilates torchvision ResNets only, not "
                          f"{type(base).__name__}; use scenario.model.output_stride=32")
    return dilate_resnet(copy.deepcopy(base), output_stride), output_stride


class DeltaDeepLabBackbone(nn.Module):
    """:class:`DeltaBody` as DeepLabV3 wants it: ``{"out": last stage, "aux": third stage}``."""

    def __init__(self, body: DeltaBody, aux: bool):
        super().__init__()
        self.body, self.aux = body, aux

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = list(self.body(x).values())
        out = {"out": feats[-1]}
        if self.aux:
            out["aux"] = feats[-2]
        return out


def build_deeplab(body: DeltaBody, num_classes: int, aux: bool) -> DeepLabV3:
    backbone = DeltaDeepLabBackbone(body, aux)
    channels = body.out_channels_list
    return DeepLabV3(backbone, DeepLabHead(channels[-1], num_classes),
                     FCNHead(channels[-2], num_classes) if aux else None)


class SegmentationModule(pl.LightningModule):
    """Per-pixel cross-entropy (+ 0.5 x the auxiliary head's, as torchvision's reference)."""

    def __init__(self, model: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 aux_weight: float = 0.5):
        super().__init__()
        self.model, self.optimizer_factory, self.scheduler_factory = model, optimizer, scheduler
        self.aux_weight = aux_weight

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.model(x)
        loss = F.cross_entropy(out["out"], y, ignore_index=IGNORE_INDEX)
        if "aux" in out:
            loss = loss + self.aux_weight * F.cross_entropy(out["aux"], y, ignore_index=IGNORE_INDEX)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return optimizers_for(self, params, self.optimizer_factory, self.scheduler_factory)


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader, num_classes: int,
                          device: torch.device | str = "cpu") -> dict[str, Any]:
    """mIoU and pixel accuracy in percent, plus the IoU of each class.

    IoU is accumulated over the whole split (not averaged per image); classes that appear in
    neither predictions nor ground truth of the split are left out of the mean (they have no IoU).
    """
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    was_training = model.training
    model.eval()
    iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=IGNORE_INDEX).to(device)
    acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX).to(device)
    seen = torch.zeros(num_classes, dtype=torch.bool, device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        pred = model(x)["out"].argmax(1)
        iou.update(pred, y)
        acc.update(pred, y)
        valid = y != IGNORE_INDEX
        seen[pred[valid].unique()] = True
        seen[y[valid].unique()] = True
    per_class = iou.compute()
    model.train(was_training)
    return {"miou": float(per_class[seen].mean()) * 100.0 if seen.any() else 0.0,
            "pixel_acc": float(acc.compute()) * 100.0,
            "class_iou": [round(float(v) * 100.0, 4) if s else None for v, s in zip(per_class, seen)]}


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scenario=segmentation``: train DeepLabV3 on ``dataset`` and score mIoU on its test split."""
    out_dir = Path(cfg.paths.output_dir)
    loggers = make_loggers(cfg)
    setup = prepare_dense(cfg, "segmentation", loggers)
    dm: DenseDataModule = setup.dm
    use_delta, train_body, n_deltas = setup.use_delta, setup.train_body, setup.n_deltas
    base, fingerprint = setup.base, setup.fingerprint
    settings = model_settings(dm, cfg.scenario.get("model"))
    body_model, stride = dilated_copy(base.model, settings.get("output_stride"))  # copies; draws no random numbers
    body = DeltaBody(body_model, n_deltas, train_body=train_body, **delta_options(cfg))
    aux = bool(settings.get("aux_loss", True))
    model = build_deeplab(body, dm.num_classes, aux)
    module = SegmentationModule(model, instantiate(cfg.scenario.optimizer),
                                instantiate(cfg.scenario.scheduler) if cfg.scenario.get("scheduler") else None)

    # bilinear upsampling has no deterministic CUDA backward: warn there instead of failing
    deterministic = cfg.trainer.get("deterministic", False)
    if deterministic is True and run_device(cfg).type == "cuda":
        deterministic = "warn"
    trainer = make_trainer(cfg, "segmentation", loggers, deterministic=deterministic, limit_val_batches=0)
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    seconds = time.perf_counter() - t0

    device = run_device(cfg)
    model.to(device)
    scores = evaluate_segmentation(model, dm.test_dataloader(), dm.num_classes, device)
    # the frozen body holds the base's tensors (the dilated twin a copy of them): both must be intact
    unchanged = check_base(body_model, fingerprint, frozen=not train_body, what="segmentation")
    unchanged = check_base(base.model, fingerprint, frozen=not train_body, what="segmentation") and unchanged

    task = dm.name
    results = results_skeleton(cfg, dm.name, fingerprint=fingerprint)
    results.update(
        n_deltas=n_deltas or None, train_seconds=seconds, base_model_unchanged=unchanged, tasks={task: scores["miou"]},
        metric="miou", output_stride=stride, **scores,
        trained_parts=(["delta"] if use_delta else []) + (["body"] if train_body else [])
        + ["classifier"] + (["aux_classifier"] if aux else []),
        class_names={task: ["background", *dm.class_names]},
    )
    results["trainable_params"][task] = count_trainable(model)
    results["delta_params"] = sum(p.numel() for p in body.delta_parameters())
    results["patch_files"][task] = save_trained(
        model, out_dir / "patches" / f"{task}.deeplab.safetensors", None if train_body else "backbone.body.base.",
        {"format": "deltapatch-deeplab/1", "backbone": cfg.backbone.name, "n_deltas": n_deltas,
         "output_stride": stride, "base_fingerprint": fingerprint, "config": config_dict(cfg)})
    return finish(cfg, results, loggers, {"test/miou": scores["miou"], "test/pixel_acc": scores["pixel_acc"]})
