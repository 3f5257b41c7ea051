"""Image cache: the same pixels reach the model as from the JPEGs, an epoch from the cache gives
the JPEG epoch's accuracy, batched crops/flips equal torchvision's per image, corrupt files are
rebuilt, and transforms the cache cannot reproduce are refused."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as T

from deltapatch.data import ImageFolderDataModule
from deltapatch.data import image_cache as ic
from deltapatch.data.joint import JointDataModule
from deltapatch.data.base import ClassificationDataModule
from deltapatch.errors import ConfigError

# the Lightning package the datamodules are built on (a Trainer of the other one refuses them)
import pytorch_lightning as pl  # noqa: E402
SIZE = 24


def write_jpegs(root, n_classes=3, n_train=6, n_test=3, seed=0):
    """Textured JPEGs of varied sizes and aspect ratios (so resizing does real work), one tint per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for y in range(n_classes):
            for k in range(n):
                w, h = int(rng.integers(40, 73)), int(rng.integers(30, 61))
                coarse = rng.integers(0, 256, (4, 5, 3)).astype(np.uint8)
                img = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
                arr = np.asarray(img).astype(np.int16)
                arr[..., y % 3] = np.clip(arr[..., y % 3] + 60, 0, 255)
                arr += rng.integers(-20, 21, arr.shape)
                path = root / split / f"c{y}" / f"{k:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_jpegs(tmp_path_factory.mktemp("jpegs"))


def make(folder, cache_dir=None, **kw):
    kw = {"image_size": SIZE, "batch_size": 4, "seed": 0, "val_fraction": 0.2, **kw}
    return ImageFolderDataModule(data_dir=folder, image_cache=cache_dir is not None,
                                 image_cache_dir=cache_dir or "unused", **kw)


def loader(dm, split):
    return {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()


def assert_same_batches(a, b):
    pairs = list(zip(a, b, strict=True))
    assert pairs
    for (xa, ya), (xb, yb) in pairs:
        assert xa.dtype == xb.dtype == torch.float32 and xa.shape == xb.shape
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_same_pixels_as_jpeg_path(folder, tmp_path, monkeypatch):
    jpeg, cached = make(folder), make(folder, tmp_path)
    for split in ("train", "val", "test"):
        assert_same_batches(loader(jpeg, split), loader(cached, split))
    # the next epoch reshuffles, identically on both paths
    a, b = jpeg.train_dataloader(), cached.train_dataloader()
    a.sampler.set_epoch(1), b.sampler.set_epoch(1)
    assert_same_batches(a, b)
    entries = sorted(p for p in tmp_path.iterdir())
    assert len(entries) == 3 and not any(p.name.startswith(".") for p in entries)  # one per split, no temp left
    sizes = sorted(np.load(p / "images.npy", mmap_mode="r").shape for p in entries)
    assert sizes == sorted((len(jpeg.splits[s]), 3, SIZE, SIZE) for s in ("train", "val", "test"))
    assert all(np.load(p / "images.npy", mmap_mode="r").dtype == np.uint8 for p in entries)

    # a second run reuses the files: nothing is decoded again
    monkeypatch.setattr(ic, "_build", lambda *a, **k: pytest.fail("rebuilt a valid cache"))
    again = make(folder, tmp_path)
    assert_same_batches(loader(jpeg, "test"), loader(again, "test"))
    # another class subset or image size is another cache, never a reused one
    monkeypatch.undo()
    make(folder, tmp_path, classes=[0, 2]).test_dataloader()
    make(folder, tmp_path, image_size=16).test_dataloader()
    assert len(list(tmp_path.iterdir())) == 5


def test_workers_read_the_same_pixels(folder, tmp_path):
    jpeg = make(folder)
    cached = make(folder, tmp_path, num_workers=2, prefetch_factor=2)
    assert_same_batches(jpeg.train_dataloader(), cached.train_dataloader())


class Tiny(pl.LightningModule):
    def __init__(self, n_classes=3):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, n_classes))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("acc", (self.net(x).argmax(1) == y).float().mean(), on_epoch=True, batch_size=len(y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def fit_epoch(dm):
    pl.seed_everything(0, verbose=False)
    model = Tiny()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", deterministic=True, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    acc = trainer.validate(model, dataloaders=dm.test_dataloader(), verbose=False)[0]["acc"]
    return acc, model.net.state_dict()


def test_epoch_from_cache_matches_jpeg_epoch(folder, tmp_path):
    acc_jpeg, w_jpeg = fit_epoch(make(folder))
    acc_cache, w_cache = fit_epoch(make(folder, tmp_path))
    assert acc_cache == acc_jpeg
    for k in w_jpeg:  # the same batches, so the same steps: the same weights bit for bit
        assert torch.equal(w_cache[k], w_jpeg[k]), k
    assert not torch.equal(w_jpeg["4.weight"], Tiny().net.state_dict()["4.weight"])  # it did train


@pytest.mark.parametrize("random", [True, False])
def test_batch_crop_flip_equals_torchvision_per_image(random):
    x = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    op = ic.BatchCropFlip(16, padding=(3, 3, 3, 3) if random else (0, 0, 0, 0), fill=0, flip_p=0.5 if random else 0,
                          random=random)
    g = torch.Generator().manual_seed(1)
    padded = T.functional.pad(x, [3, 3, 3, 3], fill=0) if random else x
    top, left, flip = op.params(6, *padded.shape[-2:], generator=g)
    out = op(x, params=(top, left, flip))
    for i in range(6):
        want = T.functional.crop(padded[i], int(top[i]), int(left[i]), 16, 16)
        if flip[i]:
            want = T.functional.horizontal_flip(want)
        assert torch.equal(out[i], want)
    if random:
        assert flip.any() and not flip.all() and len(set(top.tolist())) > 1  # per sample, not one for the batch
    else:
        assert torch.equal(out, T.CenterCrop(16)(x))


def test_augmented_batches_are_seeded_per_epoch(folder, tmp_path):
    dm = make(folder, tmp_path, augment=True)
    assert not dm.deterministic_train_transform
    plan = ic.plan_of(dm)
    assert plan.train_crop.padding == [SIZE // 8] * 4 and plan.train_crop.flip_p == 0.5
    first = [x for x, _ in dm.train_dataloader()]
    again = [x for x, _ in dm.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # same seed and epoch: same crops
    nxt = dm.train_dataloader()
    nxt.sampler.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(first, (x for x, _ in nxt)))
    assert first[0].shape == (4, 3, SIZE, SIZE)
    # evaluation stays exact
    assert_same_batches(make(folder, augment=True).test_dataloader(), dm.test_dataloader())


def test_larger_cache_size_crops_to_image_size(folder, tmp_path):
    dm = make(folder, tmp_path, image_cache_size=32)
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, SIZE, SIZE)
    (entry,) = list(tmp_path.iterdir())
    assert np.load(entry / "images.npy", mmap_mode="r").shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "no_manifest"])
def test_corrupt_cache_is_rebuilt(folder, tmp_path, caplog, damage):
    make(folder, tmp_path).test_dataloader()
    (entry,) = list(tmp_path.iterdir())
    images = entry / "images.npy"
    raw = bytearray(images.read_bytes())
    if damage == "flip_byte":
        raw[-10] ^= 0xFF
    elif damage == "truncate":
        raw = raw[:len(raw) // 2]
    images.write_bytes(bytes(raw))
    if damage == "no_manifest":
        (entry / "meta.json").unlink()
    with caplog.at_level(logging.WARNING, logger="deltapatch.data.image_cache"):
        again = make(folder, tmp_path)
        assert_same_batches(make(folder).test_dataloader(), again.test_dataloader())
    assert "rebuilding" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # the bad copy is gone


def test_joint_tasks_concatenate_their_caches(folder, tmp_path):
    def joint(cache):
        return JointDataModule({"a": make(folder, cache, classes=[0, 1]), "b": make(folder, cache, classes=[2])})

    jpeg, cached = joint(None), joint(tmp_path)
    jpeg.setup(), cached.setup()
    assert_same_batches(jpeg.train_dataloader(), cached.train_dataloader())
    assert_same_batches(jpeg.test_dataloader(), cached.test_dataloader())


def test_refuses_transforms_it_cannot_reproduce(folder, tmp_path):
    class Jitter(ImageFolderDataModule):
        def transform(self, train):
            ops = list(super().transform(train).transforms)
            return T.Compose(ops[:2] + [T.ColorJitter(0.5)] + ops[2:] if train else ops)

    dm = Jitter(data_dir=folder, image_size=SIZE, image_cache=True, image_cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="image_cache"):
        dm.train_dataloader()


def test_batch_work_runs_on_the_batch_device(folder, tmp_path):
    """Crop, flip and normalisation follow the batch to its device (meta here: any CPU round trip of
    the data would fail there), and the datamodule sends it to its Trainer's GPU."""
    from types import SimpleNamespace

    dm = make(folder, tmp_path, augment=True)
    plan = ic.plan_of(dm)
    x = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8)
    out = ic.finish_batch(x, plan, True, torch.Generator().manual_seed(0), torch.device("meta"))
    assert out.device.type == "meta" and out.shape == (4, 3, SIZE, SIZE) and out.dtype == torch.float32
    assert ic.batch_device(dm) is None  # no Trainer: batches stay where the loader puts them
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 1)))
    assert ic.batch_device(dm) == torch.device("cuda", 1)
    assert dm.train_dataloader().device == torch.device("cuda", 1)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    assert ic.batch_device(dm) is None
