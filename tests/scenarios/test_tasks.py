"""Beyond classification (deltapatch.scenarios): each scenario end to end on its offline twin, the VOC
loaders on a fixture in VOC's own layout, and the pieces the scenarios rest on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2 as T

from deltapatch import create_backbone
from deltapatch.data.base import DatasetNotFoundError
from deltapatch.errors import ConfigError
from deltapatch.scenarios import run
from deltapatch.patch import base_fingerprint
from deltapatch.delta.body import DeltaBody
from deltapatch.data.dense import IGNORE_INDEX, segmentation_collate
from deltapatch.data.shapes import render_shapes
from deltapatch.data.voc import VOC_CLASSES, VOCDetectionDataModule, VOCSegmentationDataModule, voc_target
from deltapatch.scenarios.zsda import uniformity_loss

import fixtures_datasets as fx

# every scenario run here: one epoch of two tiny batches, no bars, no checkpoints
TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
        "callbacks=none", "logger=none", "base.epochs=1"]
# detection/segmentation twins: 4 test images, 48 px
SHAPES = ["dataset.batch_size=2", "dataset.n_test=4", "dataset.image_size=48"]
# a base trained here on a few digits (cached for the session), instead of the hub's ImageNet weights
DIGIT_BASE = ["+scenario.base_dataset.max_train_samples=64", "scenario.base_dataset.image_size=16"]


def results_of(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())


def common_keys(res: dict) -> None:
    for key in ("method", "backbone", "dataset", "scenario", "n_deltas", "seed", "trainable_params",
                "train_seconds", "metric", "base_model_unchanged"):
        assert key in res, key
    assert res[res["metric"]] is not None


# digits: hold out 5% (90 images) as the test split, not 20%
SMALL_DIGITS_TEST = ["+dataset.test_fraction=0.05"]


# ------------------------------------------------------------------------------ synthetic shapes
def test_shapes_ground_truth_is_exact_and_reproducible():
    for i in range(20):
        s = render_shapes(i, seed=3, image_size=48)
        assert len(s.boxes) == len(s.labels) >= 1
        for (x0, y0, x1, y1), label in zip(s.boxes.astype(int), s.labels):
            inside = s.mask[y0:y1, x0:x1] == label
            # the box is tight: the shape touches all four edges, and no pixel of it lies outside
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert inside.sum() == (s.mask == label).sum() or (s.labels == label).sum() > 1
        assert set(np.unique(s.mask)) <= {0, *s.labels.tolist()}
    a, b = render_shapes(5, seed=3), render_shapes(5, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(render_shapes(5, seed=3, split="test").image, a.image)


def test_voc_detection_fixture(tmp_path):
    root = fx.write_voc(tmp_path / "voc", "2007")
    dm = VOCDetectionDataModule(data_dir=str(root), year="2007", download=False, batch_size=2)
    dm.setup()
    assert dm.num_classes == 20 and len(dm.splits["train"]) == 2
    # training: the difficult chair is dropped; boxes are 0-based edges (xmin - 1, ymin - 1, xmax, ymax)
    dm.splits["train"].transform = T.ToDtype(torch.float32, scale=True)  # no random flip here
    image, target = dm.splits["train"][0]
    assert image.shape == (3, 375, 500) and image.dtype == torch.float32 and image.max() <= 1
    assert target["boxes"].tolist() == [[262.0, 210.0, 324.0, 339.0]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("chair") + 1]
    # test: difficult objects stay, flagged as iscrowd (ignored by mAP)
    _, target = dm.splits["test"][0]
    assert target["iscrowd"].tolist() == [0, 1] and len(target["boxes"]) == 2
    _, target = dm.splits["test"][1]
    assert target["labels"].tolist() == [VOC_CLASSES.index("car") + 1, VOC_CLASSES.index("person") + 1]
    images, targets = next(iter(dm.test_dataloader()))
    assert len(images) == len(targets) == 2
    # the parser alone, on torchvision's dict form of an XML file with a single object
    one = {"annotation": {"object": [{"name": "dog", "difficult": "0",
                                      "bndbox": {"xmin": "1", "ymin": "2", "xmax": "3", "ymax": "4"}}]}}
    assert voc_target(one)["boxes"].tolist() == [[0.0, 1.0, 3.0, 4.0]]
    with pytest.raises(DatasetNotFoundError, match="download=true"):
        VOCDetectionDataModule(data_dir=str(tmp_path / "absent"), download=False).setup()


def test_voc_segmentation_fixture(tmp_path):
    root = fx.write_voc(tmp_path / "voc", "2012")
    dm = VOCSegmentationDataModule(data_dir=str(root), download=False, base_size=64, crop_size=48,
                                   batch_size=2, eval_batch_size=2)
    dm.setup()
    assert dm.num_classes == 21
    image, mask = dm.splits["test"][0]  # val.txt: 000007 (car + person)
    assert image.shape[0] == 3 and image.shape[1:] == mask.shape and min(mask.shape) == 64
    assert set(mask.unique().tolist()) <= {0, VOC_CLASSES.index("car") + 1, VOC_CLASSES.index("person") + 1,
                                           IGNORE_INDEX}
    assert (mask == VOC_CLASSES.index("car") + 1).any()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[-2:] == y.shape[-2:] == (48, 48) and y.dtype == torch.int64
    # images of different sizes batch by padding: 0 for the image, the ignore label for the mask
    xs, ys = segmentation_collate([(torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.long)),
                                   (torch.ones(3, 4, 2), torch.zeros(4, 2, dtype=torch.long))])
    assert xs.shape == (2, 3, 4, 3) and ys[0, 3, 0] == IGNORE_INDEX and xs[0, :, 3, 0].eq(0).all()


# ------------------------------------------------------------------------------ the ∆ body
def test_delta_body_trains_only_deltas_and_keeps_base():
    torch.manual_seed(0)
    base = create_backbone("resnet18", num_classes=3)
    before = base_fingerprint(base)
    body = DeltaBody(base, n_deltas=2)
    body.train()
    assert not base.training and all(not m.training for m in base.modules())
    feats = body(torch.randn(2, 3, 32, 32))
    assert list(feats) == ["0", "1", "2", "3"] and [f.shape[1] for f in feats.values()] == [64, 128, 256, 512]
    sum(f.mean() for f in feats.values()).backward()
    assert all(p.grad is None for p in base.parameters())
    assert all(p.grad is not None for p in body.deltas.parameters() if p.requires_grad)
    assert set(body.deltas) == {"2", "3"} and base_fingerprint(base) == before
    with torch.no_grad():  # no ∆: the body's last output is the base's own features
        plain = DeltaBody(base, n_deltas=0)(torch.ones(1, 3, 32, 32))["3"]
        assert torch.equal(plain, body.adapter.forward_features(torch.ones(1, 3, 32, 32)))


def test_dilated_body_matches_torchvision():
    import copy

    import torchvision

    from deltapatch.scenarios.segmentation import dilate_resnet

    torch.manual_seed(0)
    plain = torchvision.models.resnet50().eval()
    ref = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    ref.load_state_dict(plain.state_dict())
    ours = dilate_resnet(copy.deepcopy(plain), 8)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats = [torch.nn.Sequential(*list(m.children())[:-2])(x) for m in (ref, ours)]
    assert feats[0].shape[-1] == 4 and torch.equal(*feats)
    assert base_fingerprint(ours) == base_fingerprint(plain)  # dilation changes no tensor


def test_uniformity_loss_prefers_spread_features():
    spread = torch.eye(8)
    clustered = torch.ones(8, 8) + 0.01 * torch.randn(8, 8)
    assert uniformity_loss(spread) < uniformity_loss(clustered)
    assert uniformity_loss(torch.randn(1, 8)) == 0


# ------------------------------------------------------------------------------ scenarios
def test_detection_scenario_on_shapes(make_cfg):
    cfg = make_cfg("scenario=detection", "n_deltas=2", *SHAPES, *TINY, *DIGIT_BASE, fast=False)
    res = run(cfg)
    assert results_of(cfg) == json.loads(json.dumps(res, default=str))
    common_keys(res)
    assert (res["scenario"], res["dataset"], res["metric"], res["n_deltas"]) == (
        "detection", "shapes_detection", "map_50", 2)
    assert 0 <= res["map"] <= res["map_50"] <= 100 and res["tasks"] == {"shapes_detection": res["map_50"]}
    assert res["base_model_unchanged"] is True  # checked against the fingerprint before training
    assert res["trained_parts"] == ["delta", "fpn", "rpn", "roi_heads"]
    assert 0 < res["delta_params"] < res["trainable_params"]["shapes_detection"]
    assert Path(res["patch_files"]["shapes_detection"]["path"]).exists()


def test_detection_resnet34_body(make_cfg):
    """Table 7's other detection body: ResNet-34 with ∆-Networks (4), frozen."""
    cfg = make_cfg("scenario=detection", "backbone=resnet34", "n_deltas=4", "base=scratch", *SHAPES, *TINY,
                   fast=False)
    res = run(cfg)
    assert (res["backbone"], res["n_deltas"], res["base_model_unchanged"]) == ("resnet34", 4, True)
    assert res["delta_params"] > 0 and 0 <= res["map_50"] <= 100


def test_detection_on_voc_fixture(make_cfg, tmp_path):
    """The VOC path through the scenario: variable image sizes, 21-way heads, difficult objects."""
    root = fx.write_voc(tmp_path / "voc", "2007")
    cfg = make_cfg("scenario=detection", "dataset=voc_detection", f"dataset.data_dir={root}",
                   "dataset.num_workers=0", "dataset.batch_size=2", "base=scratch", "method=fc", *TINY,
                   "scenario.model.min_size=64", "scenario.model.max_size=96", "scenario.model.fpn_channels=32",
                   "scenario.model.representation_size=64", fast=False)
    res = run(cfg)
    assert res["dataset"] == "voc_detection" and res["n_deltas"] is None and res["trained_parts"][0] == "fpn"
    assert len(res["class_names"]["voc_detection"]) == 20 and 0 <= res["map_50"] <= 100


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])  # resnet50: the paper's DeepLabV3 body
def test_segmentation_scenario_on_shapes(make_cfg, backbone):
    cfg = make_cfg("scenario=segmentation", f"backbone={backbone}", "n_deltas=4", "base=scratch", *SHAPES, *TINY,
                   fast=False)
    res = run(cfg)
    common_keys(res)
    assert (res["scenario"], res["metric"], res["output_stride"], res["backbone"]) == (
        "segmentation", "miou", 8, backbone)
    assert 0 <= res["miou"] <= 100 and len(res["class_iou"]) == 4
    assert res["base_model_unchanged"] is True and res["trained_parts"] == ["delta", "classifier"]
    assert results_of(cfg)["miou"] == res["miou"]


def test_transfer_from_scratch_on_digits(make_cfg):
    common = ["scenario=transfer", "base=scratch", "dataset=digits", "dataset.image_size=16", *SMALL_DIGITS_TEST,
              "dataset.batch_size=32",
              "scenario.sample_rate=0.2", "trainer.limit_val_batches=1", *TINY]
    cfg = make_cfg(*common, "method=finetune_delta", "n_deltas=4", fast=False)
    res = run(cfg)
    common_keys(res)
    assert (res["scenario"], res["metric"], res["base_source"]) == ("transfer", "target_acc", "scratch")
    assert 0 <= res["target_acc"] <= 100 and res["tasks"] == {"digits": res["target_acc"]}
    assert res["sample_rate"] == 0.2 and res["train_samples"] == pytest.approx(0.2 * 0.9 * 1707, abs=10)
    assert res["trainable_params"]["digits"] > 11_000_000  # backbone and ∆-modules train together
    # a frozen random backbone is refused
    with pytest.raises(ConfigError, match="finetune_delta"):
        run(make_cfg(*common, "method=delta", fast=False))


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_transfer_on_cifar10_pack_with_sample_rate(make_cfg, tmp_path):
    """The transfer twin: a base trained here on CIFAR-10 classes 0-4 (from a fixture pack in the
    real archive layout), transferred to classes 5-9 at a sample rate (Table 5's columns)."""
    import fixtures_datasets as fx

    src = tmp_path / "src"
    fx.write_image_folder(src, CIFAR10_CLASSES, n_train=10, n_test=2)
    fx.tar_folder(src, tmp_path / "packs" / "cifar10-jpg.tar.gz", "cifar10")
    common = ["scenario=transfer", "dataset=cifar10_pack", f"paths.packs_dir={tmp_path / 'packs'}",
              f"paths.cache_dir={tmp_path / 'cache'}", "dataset.batch_size=8", "scenario.classes=[5,6,7,8,9]",
              "n_deltas=4", "scenario.sample_rate=0.5", *TINY]
    res = run(make_cfg(*common, "method=finetune_delta", fast=False))
    common_keys(res)
    assert (res["dataset"], res["metric"], res["base_source"]) == ("cifar10_pack", "target_acc", "train")
    assert res["class_names"]["cifar10_pack"] == CIFAR10_CLASSES[5:]
    # 5 classes x 9 training images (10% of each class's 10 held out for val), half of them kept
    assert res["sample_rate"] == 0.5 and 20 <= res["train_samples"] <= 25
    assert 0 <= res["target_acc"] <= 100 and res["base_model_unchanged"] is False  # the backbone trained
    # the base was trained on classes 0-4 of the same pack and cached
    assert len(list((tmp_path / "cache" / "base").glob("resnet18-*.safetensors"))) == 1
    # the vanilla row of Table 5 runs from the same cached base
    vanilla = run(make_cfg(*common, "method=finetune", f"paths.output_dir={tmp_path / 'vanilla'}", fast=False))
    assert vanilla["train_samples"] == res["train_samples"]
    assert vanilla["trainable_params"]["cifar10_pack"] < res["trainable_params"]["cifar10_pack"]


def test_zsda_digits_to_shifted_digits_with_uniform_prior(make_cfg):
    cfg = make_cfg("scenario=zsda", "n_deltas=4", "dataset.image_size=16", "scenario.target.image_size=16",
                   *SMALL_DIGITS_TEST, "+scenario.target.test_fraction=0.05",
                   "+dataset.max_train_samples=64", "scenario.target.shift=rotate",
                   "scenario.uniform_prior.weight=0.1", *TINY, fast=False)
    res = run(cfg)
    common_keys(res)
    assert (res["dataset"], res["target"], res["metric"]) == ("digits", "digits_shifted", "target_acc")
    assert set(res["vanilla"]) == {"source_acc", "target_acc"} and 0 <= res["target_acc"] <= 100
    assert res["base_model_unchanged"] is True  # ∆ on top of the frozen vanilla model
    assert res["uniform_prior"]["weight"] == 0.1 and res["adda"] is False
    assert res["trainable_params"]["patch"] < res["vanilla_trainable_params"]
