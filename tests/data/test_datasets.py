"""Every dataset config, loaded from a tiny fixture in the dataset's own on-disk format.

Each test writes the fixture under tmp_path, composes ``conf/dataset/<name>.yaml`` with
``paths.*`` pointing there, instantiates it with ``download: false`` and checks split sizes,
labels (each fixture image's grey level encodes its label), class names and one batch.
No test reads ../shared/data.
"""
from __future__ import annotations

from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from deltapatch.data import ClassificationDataModule, DatasetNotFoundError, extract_once
from deltapatch.data.base import to_rgb_pil
from deltapatch.errors import ConfigError

import fixtures_datasets as fx

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset"
# the classification datasets of deltapatch.data; detection/segmentation/ZSDA datasets
# (deltapatch.scenarios) are covered by tests/scenarios/test_tasks.py
def _classification(path: Path) -> bool:
    target = OmegaConf.load(path).get("_target_", "")
    return target.startswith("deltapatch.data.") and issubclass(hydra.utils.get_class(target), ClassificationDataModule)


ALL_CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml") if _classification(p))


def load_yaml(name: str) -> DictConfig:
    """``conf/dataset/<name>.yaml`` with its defaults list applied, as Hydra composes it."""
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    return OmegaConf.merge(*(cfg if d == "_self_" else OmegaConf.load(CONF / f"{d.split('@')[0]}.yaml")
                             for d in cfg.pop("defaults", ["_self_"])))


def compose(name: str, tmp_path: Path, **overrides) -> DictConfig:
    """``conf/dataset/<name>.yaml`` inside a minimal root config whose paths live under tmp_path."""
    root = OmegaConf.create({
        "seed": 0,
        "backbone": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "paths": {"root_dir": str(tmp_path), "data_dir": str(tmp_path / "data"),
                  "packs_dir": str(tmp_path / "packs"), "cache_dir": str(tmp_path / "cache")},
        "dataset": load_yaml(name),
    })
    for key, value in overrides.items():
        OmegaConf.update(root, f"dataset.{key}", value, merge=False)
    return root.dataset


def make(name: str, tmp_path: Path, **overrides) -> ClassificationDataModule:
    overrides.setdefault("image_size", 8)  # small tensors keep the file fast
    overrides.setdefault("batch_size", 4)
    return hydra.utils.instantiate(compose(name, tmp_path, **overrides))


def split_labels(dm: ClassificationDataModule, split: str) -> list[int]:
    return dm.splits[split].targets()


def assert_paired(dm: ClassificationDataModule, split: str, tol: float = 4.0) -> None:
    """Every image of ``split`` still has the grey level of its (original) label."""
    ds = dm.splits[split]
    for i in ds.indices:
        item = ds.samples[i]
        img = item[0] if isinstance(item, tuple) else item
        got = np.asarray(to_rgb_pil(img), dtype=np.float64).mean()
        assert abs(got - fx.level(ds.labels[i])) <= tol, (split, i, got, ds.labels[i])


def assert_batch(dm: ClassificationDataModule, size: int = 8) -> None:
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (min(4, len(dm.splits["train"])), 3, size, size) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y.max()) < dm.num_classes
    xt, _ = next(iter(dm.test_dataloader()))
    assert xt.shape[1:] == (3, size, size)


def sizes(dm: ClassificationDataModule) -> tuple[int, int, int]:
    return tuple(len(dm.splits[s]) for s in ("train", "val", "test"))


# ================================================================ configs
@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_instantiates(name, tmp_path):
    """Every YAML's _target_ and keys are valid for its class (no data read)."""
    cfg = compose(name, tmp_path)
    for key in ("_target_", "name", "image_size", "batch_size", "num_workers", "seed", "classes", "mean", "std"):
        assert key in cfg, f"{name}.yaml lacks {key}"
    assert cfg.num_workers == 0 and cfg.classes is None
    dm = hydra.utils.instantiate(cfg)
    assert isinstance(dm, ClassificationDataModule)
    assert dm.seed == 0 and dm.mean == (0.485, 0.456, 0.406) and not dm.splits
    if "download" in cfg:
        assert cfg.download is False
    if "data_dir" in cfg and name != "fashion_mnist":
        assert str(dm.data_dir).startswith(str(tmp_path)), "data_dir must come from paths.*"


@pytest.mark.parametrize("name", [n for n in ALL_CONFIGS if n not in ("digits", "digits_shifted", "fashion_mnist")])
def test_missing_data_is_one_line_naming_the_path(name, tmp_path):
    dm = make(name, tmp_path)
    with pytest.raises(DatasetNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and msg.startswith(dm.name), msg
    e = err.value  # no chained traceback wall
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)


# ================================================================ folders
def test_image_folder(tmp_path):
    fx.write_image_folder(tmp_path / "data" / "image_folder", ["cat", "dog", "emu"], n_train=4, n_test=2)
    dm = make("image_folder", tmp_path)
    dm.setup()
    assert dm.class_names == ["cat", "dog", "emu"] and dm.num_classes == 3
    assert sizes(dm) == (11, 1, 6)
    assert split_labels(dm, "test") == [0, 0, 1, 1, 2, 2]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_image_folder_official_val_and_class_subset(tmp_path):
    root = tmp_path / "data" / "image_folder"
    fx.write_image_folder(root, ["a", "b", "c"], n_train=3, n_test=2)
    fx.write_image_folder(root, ["a", "b", "c"], n_train=1, n_test=0, splits=("val", "unused"))
    dm = make("image_folder", tmp_path, val_dir="val", classes=[2, 0])
    dm.setup()
    assert dm.class_names == ["c", "a"]
    assert sizes(dm) == (6, 2, 4)
    assert sorted(split_labels(dm, "val")) == [0, 1]
    assert_paired(dm, "val")


def test_image_folder_test_class_unknown_to_train_is_an_error(tmp_path):
    root = tmp_path / "data" / "image_folder"
    fx.write_image_folder(root, ["a", "b"], n_train=1, n_test=0)
    fx.write_image_folder(root, ["a", "zzz"], n_train=0, n_test=1)
    with pytest.raises(ConfigError, match="zzz"):
        make("image_folder", tmp_path).setup()


def test_imagenet_train_and_val_folders(tmp_path):
    wnids = ["n01440764", "n01443537", "n01484850"]
    fx.write_image_folder(tmp_path / "data" / "imagenet", wnids, n_train=5, n_test=2, ext="JPEG",
                          splits=("train", "val"))
    dm = make("imagenet", tmp_path, val_fraction=0.2)
    dm.setup()
    assert dm.class_names == wnids
    assert sizes(dm) == (12, 3, 6)  # the val folder is the test split
    assert_paired(dm, "test")
    assert_batch(dm)


def test_imagenet_val_folder_alone_gives_the_test_split(tmp_path):
    wnids = ["n01440764", "n01443537"]
    fx.write_image_folder(tmp_path / "data" / "imagenet", wnids, n_train=0, n_test=3, ext="JPEG",
                          splits=("train", "val"))
    dm = make("imagenet", tmp_path, val_from_test=2)  # the YAML holds out 10,000 of ImageNet's 50,000
    dm.setup()
    assert dm.class_names == wnids and sizes(dm) == (0, 2, 4)
    # model selection gets a seeded part of the val folder, disjoint from what scores the base
    val, test = dm.splits["val"], dm.splits["test"]
    assert set(val.indices).isdisjoint(test.indices) and sorted(val.indices + test.indices) == list(range(6))
    assert dm.split_info == {"train": 0, "val": 2, "test": 4, "val_from": "test", "val_from_test_seed": 0}
    again = make("imagenet", tmp_path, val_from_test=2, seed=5)  # the run seed does not move it
    again.setup()
    assert again.splits["val"].indices == val.indices
    next(iter(dm.test_dataloader()))
    with pytest.raises(DatasetNotFoundError, match="imagenet/train"):
        dm.train_dataloader()


def test_resisc45_seeded_per_class_split(tmp_path):
    classes = ["airplane", "beach", "church"]
    fx.write_class_folders(tmp_path / "data" / "NWPU-RESISC45", classes, n=10)
    dm = make("resisc45", tmp_path)
    dm.setup()
    assert dm.class_names == classes
    assert sizes(dm) == (22, 2, 6)
    assert split_labels(dm, "test") == [0, 0, 1, 1, 2, 2]  # 20% of each class
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)
    # the test split is fixed by split_seed: another run seed changes val, never test
    other = make("resisc45", tmp_path, seed=5)
    other.setup()
    assert other.splits["test"].indices == dm.splits["test"].indices
    def files(m, split):
        ds = m.splits[split]
        return {ds.samples.paths[i] for i in ds.indices}

    train_val = files(dm, "train") | files(dm, "val")
    assert dm.splits["val"].indices != other.splits["val"].indices
    assert train_val == files(other, "train") | files(other, "val")
    assert len(train_val) == 24 and not train_val & files(dm, "test")


# ================================================================ torchvision formats
def test_stl10(tmp_path):
    fx.write_stl10(tmp_path / "data" / "stl10", n_train=[3, 3, 4], n_test=[2, 2, 2])
    dm = make("stl10", tmp_path)
    dm.setup()
    assert dm.num_classes == 10 and dm.class_names[:3] == ["airplane", "bird", "car"]
    assert sizes(dm) == (9, 1, 6)
    assert split_labels(dm, "test") == [0, 0, 1, 1, 2, 2]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_gtsrb_official_layout(tmp_path):
    fx.write_gtsrb_official(tmp_path / "data" / "gtsrb", n_train=[4, 3, 3], test_labels=[2, 0, 1, 1])
    dm = make("gtsrb", tmp_path)
    dm.setup()
    assert dm.num_classes == 43 and dm.class_names[14] == "Stop"
    assert sizes(dm) == (9, 1, 4)
    assert split_labels(dm, "test") == [2, 0, 1, 1]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_gtsrb_torchvision_layout_and_class_subset(tmp_path):
    fx.write_gtsrb_torchvision(tmp_path / "data" / "gtsrb", n_train=[2, 3, 3], test_labels=[0, 1, 2, 2])
    dm = make("gtsrb", tmp_path, classes=[1, 2], val_fraction=0.0)
    dm.setup()
    assert dm.num_classes == 2 and dm.class_names == ["Speed limit (30km/h)", "Speed limit (50km/h)"]
    assert sizes(dm) == (6, 0, 3)
    assert split_labels(dm, "test") == [0, 1, 1]
    assert_paired(dm, "test")
    assert_batch(dm)


def test_flowers102_official_splits(tmp_path):
    labels = [0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2]
    fx.write_flowers102(tmp_path / "data" / "flowers102", labels, trn=[1, 3, 5, 2, 4, 6], val=[7, 8, 9],
                        tst=[10, 11, 12])
    dm = make("flowers102", tmp_path)
    dm.setup()
    assert dm.num_classes == 102 and dm.class_names[:2] == ["pink primrose", "hard-leaved pocket orchid"]
    assert sizes(dm) == (6, 3, 3)
    assert split_labels(dm, "train") == [0, 1, 2, 0, 1, 2]
    assert split_labels(dm, "val") == [0, 1, 2]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_stanford_cars_devkit_and_sample_rate(tmp_path):
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    fx.write_stanford_cars(tmp_path / "data" / "stanford_cars", names, train=[0] * 6 + [1] * 6 + [2] * 6,
                           test=[2, 1, 0])
    dm = make("stanford_cars", tmp_path, val_fraction=0.0)
    dm.setup()
    assert dm.class_names == names and sizes(dm) == (18, 0, 3)
    assert split_labels(dm, "test") == [2, 1, 0]
    for s in ("train", "test"):
        assert_paired(dm, s)
    assert_batch(dm)
    half = make("stanford_cars", tmp_path, val_fraction=0.0, sample_rate=0.5)
    half.setup()
    assert np.bincount(split_labels(half, "train")).tolist() == [3, 3, 3]  # class-balanced
    again = make("stanford_cars", tmp_path, val_fraction=0.0, sample_rate=0.5)
    again.setup()
    assert again.splits["train"].indices == half.splits["train"].indices  # seeded


@pytest.mark.parametrize("rate,per_class", [(0.15, 1), (0.3, 2), (0.5, 4), (1.0, 7)])
def test_fgvc_aircraft_variant_files_and_sample_rates(tmp_path, rate, per_class):
    variants = ["707-320", "A300B4", "F/A-18", "Cessna 172"]
    fx.write_fgvc_aircraft(tmp_path / "data" / "fgvc_aircraft", variants,
                           {"train": [0, 1, 2, 3] * 7, "val": [3, 2, 1, 0], "test": [1, 3, 3, 0, 2]})
    dm = make("fgvc_aircraft", tmp_path, sample_rate=rate)
    dm.setup()
    assert dm.class_names == variants
    assert sizes(dm) == (4 * per_class, 4, 5)
    assert np.bincount(split_labels(dm, "train")).tolist() == [per_class] * 4
    assert split_labels(dm, "val") == [3, 2, 1, 0] and split_labels(dm, "test") == [1, 3, 3, 0, 2]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_dtd_labels_files(tmp_path):
    classes = ["banded", "blotchy", "braided"]
    fx.write_dtd(tmp_path / "data" / "dtd", classes,
                 {"train": [0, 1, 2, 0, 1, 2], "val": [0, 1, 2], "test": [0, 2]})  # test lacks "blotchy"
    dm = make("dtd", tmp_path)
    dm.setup()
    assert dm.class_names == classes and sizes(dm) == (6, 3, 2)
    assert split_labels(dm, "test") == [0, 2]  # numbered by the image folders, not by the split's classes
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_svhn_mat_files(tmp_path):
    fx.write_svhn(tmp_path / "data" / "svhn", {"train": [0, 1, 2, 3, 0, 1, 2, 3, 4, 1], "test": [4, 0, 3]})
    dm = make("svhn", tmp_path)
    dm.setup()
    assert dm.class_names == [str(i) for i in range(10)] and sizes(dm) == (9, 1, 3)
    assert split_labels(dm, "test") == [4, 0, 3]  # label 10 in the file is digit 0
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_cifar10_python_batches(tmp_path):
    fx.write_cifar10(tmp_path / "data" / "cifar10", [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1]], test=[3, 2, 1])
    dm = make("cifar10", tmp_path)
    dm.setup()
    assert dm.num_classes == 10 and dm.class_names[:2] == ["airplane", "automobile"]
    assert sizes(dm) == (9, 1, 3) and split_labels(dm, "test") == [3, 2, 1]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_cifar100_fine_labels(tmp_path):
    fine = fx.write_cifar100(tmp_path / "data" / "cifar100", train=[0, 1, 2, 3] * 3, test=[3, 0])
    dm = make("cifar100", tmp_path, classes=[0, 3])
    dm.setup()
    assert dm.class_names == [fine[0], fine[3]] and sizes(dm) == (5, 1, 2)
    assert split_labels(dm, "test") == [1, 0]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_usps_bz2(tmp_path):
    fx.write_usps(tmp_path / "data" / "usps", train=[0, 1, 2] * 4, test=[2, 1, 0, 0])
    dm = make("usps", tmp_path)
    dm.setup()
    assert dm.class_names == [str(i) for i in range(10)] and sizes(dm) == (11, 1, 4)
    assert split_labels(dm, "test") == [2, 1, 0, 0]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_mnist_idx(tmp_path):
    fx.write_mnist_idx(tmp_path / "data" / "mnist", train=[0, 1, 2, 3] * 5, test=[3, 2, 1])
    dm = make("mnist", tmp_path)
    dm.setup()
    assert sizes(dm) == (18, 2, 3) and split_labels(dm, "test") == [3, 2, 1]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_domain_adaptation_mnist_usps_svhn_share_shape_and_classes(tmp_path):
    """Grey 28×28, grey 16×16 and RGB 32×32 digits come out as the same tensors."""
    fx.write_mnist_idx(tmp_path / "data" / "mnist", train=[0, 1] * 5, test=[0, 1])
    fx.write_usps(tmp_path / "data" / "usps", train=[0, 1] * 5, test=[0, 1])
    fx.write_svhn(tmp_path / "data" / "svhn", {"train": [0, 1] * 5, "test": [0, 1]})
    shapes, names = set(), set()
    for name in ("mnist", "usps", "svhn"):
        dm = hydra.utils.instantiate(compose(name, tmp_path, batch_size=4))  # each YAML's own image_size
        dm.setup()
        x, _ = next(iter(dm.train_dataloader()))
        shapes.add(tuple(x.shape[1:]))
        names.add(tuple(dm.class_names))
    assert shapes == {(3, 32, 32)} and len(names) == 1


# ================================================================ own formats
def test_omniglot_from_zips_through_the_pack_config(tmp_path):
    packs = tmp_path / "packs"
    names = fx.write_omniglot_zip(packs / "omniglot-images_background_small1.zip", "images_background_small1",
                                  {"Balinese": 2, "Latin": 1}, n=4)
    names += fx.write_omniglot_zip(packs / "omniglot-images_background_small2.zip", "images_background_small2",
                                   {"Korean": 2, "Latin": 1}, n=4)  # the real small sets share Greek and Latin
    dm = make("omniglot_pack", tmp_path, val_fraction=0.0)
    dm.setup()
    assert dm.class_names == ["Balinese/character01", "Balinese/character02", "Latin/character01",
                              "Korean/character01", "Korean/character02"]  # Latin/character01 once
    assert sorted(dm.class_names) == sorted(set(names))
    assert sizes(dm) == (15, 0, 5)  # 25% of each character's 4 drawings
    assert split_labels(dm, "test") == [0, 1, 2, 3, 4]
    assert_batch(dm)
    assert (tmp_path / "cache" / "data" / "omniglot_pack" / "images_background_small2" / "Korean").is_dir()


def test_omniglot_unzipped_torchvision_layout(tmp_path):
    zips = tmp_path / "zips"
    fx.write_omniglot_zip(zips / "images_background.zip", "images_background", {"Latin": 2}, n=4)
    fx.write_omniglot_zip(zips / "images_evaluation.zip", "images_evaluation", {"Atlantean": 1}, n=4)
    extract_once([zips / "images_background.zip", zips / "images_evaluation.zip"],
                 tmp_path / "data" / "omniglot" / "omniglot-py")
    dm = make("omniglot", tmp_path)
    dm.setup()
    assert dm.class_names == ["Latin/character01", "Latin/character02", "Atlantean/character01"]
    assert len(dm.splits["test"]) == 3 and sum(sizes(dm)) == 12


def test_ucf101_decathlon_annotations(tmp_path):
    root = tmp_path / "data" / "decathlon-1.0"
    fx.write_decathlon(root, "ucf101", ["ApplyEyeMakeup", "ApplyLipstick", "Archery"],
                       {"train": [0, 1, 2] * 4, "val": [2, 0, 1]})
    dm = make("ucf101", tmp_path)
    dm.setup()
    assert dm.class_names == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert sizes(dm) == (11, 1, 3)  # official val = our test
    assert split_labels(dm, "test") == [2, 0, 1]
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)
    with pytest.raises(DatasetNotFoundError, match="ucf101_test.json"):  # only the stripped copy exists
        make("ucf101", tmp_path, test_split="test").load_split("test")
    (root / "annotations" / "ucf101_test_stripped.json").rename(root / "annotations" / "ucf101_test.json")
    with pytest.raises(ValueError, match="unlabelled"):
        make("ucf101", tmp_path, test_split="test").load_split("test")


def test_daimler_pedestrian_decathlon_folders_without_annotations(tmp_path):
    fx.write_decathlon(tmp_path / "data" / "decathlon-1.0", "daimlerpedcls", ["neg", "pos"],
                       {"train": [0, 1] * 5, "val": [1, 0, 1]}, annotations=False)
    dm = make("daimler_pedestrian", tmp_path)
    dm.setup()
    assert dm.class_names == ["0001", "0002"] and sizes(dm) == (9, 1, 3)
    assert split_labels(dm, "test") == [0, 1, 1]
    for s in ("train", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_generic_decathlon_config_names_its_task(tmp_path):
    cfg = compose("decathlon", tmp_path, task="dtd")
    assert cfg.name == "decathlon_dtd"
    with pytest.raises(Exception, match="unknown Decathlon task"):  # hydra wraps the ConfigError
        make("decathlon", tmp_path, task="mnist")


# ================================================================ packs
def test_cifar10_pack_config_extracts_once(tmp_path):
    src = tmp_path / "src"
    fx.write_image_folder(src, ["airplane", "automobile", "bird"], n_train=3, n_test=2)
    fx.tar_folder(src, tmp_path / "packs" / "cifar10-jpg.tar.gz", "cifar10")
    dm = make("cifar10_pack", tmp_path)
    dm.setup()
    assert dm.class_names == ["airplane", "automobile", "bird"] and sizes(dm) == (8, 1, 6)
    for s in ("train", "val", "test"):
        assert_paired(dm, s)
    assert_batch(dm)
    cache = tmp_path / "cache" / "data"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar10_pack"]  # no temp folder left behind
    marker = cache / "cifar10_pack" / "cifar10" / "train" / "bird" / "20000.jpg"
    mtime = marker.stat().st_mtime_ns
    again = make("cifar10_pack", tmp_path)
    again.prepare_data()
    again.setup()
    assert marker.stat().st_mtime_ns == mtime and sizes(again) == sizes(dm)


def test_mnist_pack_config(tmp_path):
    src = tmp_path / "src"
    fx.write_image_folder(src, [str(d) for d in range(3)], n_train=4, n_test=1, ext="png", mode="L")
    fx.tar_folder(src, tmp_path / "packs" / "mnist-png.tar.gz", "mnist")
    dm = make("mnist_pack", tmp_path)
    dm.setup()
    assert dm.class_names == ["0", "1", "2"] and sizes(dm) == (11, 1, 3)
    for s in ("train", "test"):
        assert_paired(dm, s)
    assert_batch(dm)


def test_usps_pack_config_reads_bz2_in_place(tmp_path):
    fx.write_usps(tmp_path / "packs", train=[0, 1] * 5, test=[1, 0])
    dm = make("usps_pack", tmp_path)
    dm.setup()
    assert sizes(dm) == (9, 1, 2) and split_labels(dm, "test") == [1, 0]
    assert not (tmp_path / "cache").exists()


def test_gtsrb_pack_config(tmp_path):
    src = tmp_path / "src"
    fx.write_gtsrb_official(src, n_train=[2, 2, 2], test_labels=[1, 2])
    fx.tar_folder(src / "GTSRB", tmp_path / "packs" / "gtsrb-32px.tar.xz", "GTSRB")
    dm = make("gtsrb_pack", tmp_path, val_fraction=0.0)
    dm.setup()
    assert sizes(dm) == (6, 0, 2) and split_labels(dm, "test") == [1, 2]
    assert_paired(dm, "train")
    assert_batch(dm)


def test_extract_once_is_atomic_on_failure(tmp_path):
    good = tmp_path / "a.tar.gz"
    fx.write_image_folder(tmp_path / "src", ["x"], n_train=1, n_test=0)
    fx.tar_folder(tmp_path / "src", good, "tree")
    bad = tmp_path / "b.tar.gz"
    bad.write_bytes(good.read_bytes()[:40])  # truncated
    with pytest.raises(Exception):
        extract_once([good, bad], tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "dest").exists()
    assert list((tmp_path / "out").iterdir()) == []  # the temp folder is gone too
    with pytest.raises(FileNotFoundError):
        extract_once([tmp_path / "nope.zip"], tmp_path / "out" / "dest")
    assert extract_once([good], tmp_path / "out" / "dest") == tmp_path / "out" / "dest"
    assert (tmp_path / "out" / "dest" / "tree" / "train" / "x").is_dir()
