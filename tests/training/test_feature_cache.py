"""Feature cache: exact features, memory == memmap, reuse without recompute, corrupt files
recomputed, fp16 storage within its rounding, sorted-index gathers, the cache_features=auto
decision, and training from the cache matches training from images."""
import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deltapatch import ConfigError, DeltaNetwork, create_backbone
from deltapatch.cache import FeatureCache, FeatureDataset

N, BS = 20, 8  # 20 is not a multiple of 8: the last, short batch is covered too
EXACT = {"dtype": None}  # stored as computed (float32): bit-exact comparisons


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(N, 3, 32, 32, generator=g), torch.randint(0, 5, (N,), generator=g))


@pytest.fixture()
def net():
    torch.manual_seed(0)
    net = DeltaNetwork(create_backbone("resnet18", num_classes=7), n_deltas=1)
    net.add_task("t", 5)
    return net


def plain_loader(ds):
    return DataLoader(ds, batch_size=BS, shuffle=False)


class StemCounter:
    """Counts prefix passes: every forward through the frozen prefix runs the stem's conv1 once."""

    def __init__(self, net: DeltaNetwork):
        self.calls = 0
        net.base.conv1.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1


def test_features_equal_base_features(net, data):
    cache = FeatureCache.for_task(net, "t", plain_loader(data), **EXACT)
    assert cache.stage == net.tasks["t"].first_stage == 3
    assert not cache.memmapped and cache.path is None
    want = torch.cat([net.base_features(x, upto=3) for x, _ in plain_loader(data)])
    assert torch.equal(cache.features, want)
    assert torch.equal(cache.labels, data.tensors[1])
    f, y = cache.dataset[4]
    assert torch.equal(f, want[4]) and int(y) == int(data.tensors[1][4])
    fb, yb = cache.dataset[[4, 0, 7]]
    assert torch.equal(fb, want[[4, 0, 7]]) and torch.equal(yb, data.tensors[1][[4, 0, 7]])


def test_memmap_equals_memory_and_is_reused(net, data, tmp_path):
    counter = StemCounter(net)
    mem = FeatureCache(net, 2, plain_loader(data), **EXACT)
    passes = counter.calls
    assert passes == -(-N // BS)
    disk = FeatureCache(net, 2, plain_loader(data), dataset_id="synthetic-20", cache_dir=tmp_path,
                        max_memory_bytes=0, **EXACT)
    assert disk.memmapped and disk.computed and (disk.path / "meta.json").is_file()
    assert counter.calls == 2 * passes
    assert torch.equal(disk.features, mem.features) and torch.equal(disk.labels, mem.labels)
    assert list(tmp_path.iterdir()) == [disk.path]  # no temp folder left behind
    assert sorted(p.name for p in disk.path.iterdir()) == ["features.npy", "labels.npy", "meta.json"]

    again = FeatureCache(net, 2, plain_loader(data), dataset_id="synthetic-20", cache_dir=tmp_path,
                        max_memory_bytes=0, **EXACT)
    assert not again.computed and again.memmapped
    assert counter.calls == 2 * passes  # reused: not one more prefix pass
    assert torch.equal(again.features, mem.features) and torch.equal(again.labels, mem.labels)

    # a file small enough for memory is read into RAM on reuse
    small = FeatureCache(net, 2, plain_loader(data), dataset_id="synthetic-20", cache_dir=tmp_path, **EXACT)
    assert not small.computed and not small.memmapped
    assert torch.equal(small.features, mem.features)

    # another stage, another dataset id, another base: different files
    other = FeatureCache(net, 3, plain_loader(data), dataset_id="synthetic-20", cache_dir=tmp_path, persist=True)
    assert other.computed and other.path != disk.path
    half = FeatureCache(net, 2, plain_loader(data), dataset_id="synthetic-20", cache_dir=tmp_path, persist=True)
    assert half.computed and half.path != disk.path and half.features.dtype == torch.float16
    other_id = FeatureCache(net, 2, plain_loader(data), dataset_id="other", cache_dir=tmp_path, persist=True)
    assert other_id.computed and other_id.path != disk.path
    with torch.no_grad():
        net.base.layer1[0].conv1.weight[0, 0, 0, 0] += 1.0
    changed = FeatureCache(net, 2, plain_loader(data), dataset_id="synthetic-20", cache_dir=tmp_path, persist=True)
    assert changed.computed and changed.path != disk.path


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage_header", "empty", "no_manifest", "labels"])
def test_corrupt_file_is_recomputed(net, data, tmp_path, damage):
    first = FeatureCache(net, 3, plain_loader(data), dataset_id="d", cache_dir=tmp_path, persist=True)
    want = first.features.clone()
    path = first.path / ("labels.npy" if damage == "labels" else "features.npy")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-100]
    elif damage in ("flip_byte", "labels"):
        raw[-5] ^= 0xFF
    elif damage == "garbage_header":
        raw[:64] = b"x" * 64
    elif damage == "empty":
        raw = b""
    path.write_bytes(bytes(raw))
    if damage == "no_manifest":  # as if the writer died before committing (it never renames then)
        (first.path / "meta.json").unlink()
    counter = StemCounter(net)
    again = FeatureCache(net, 3, plain_loader(data), dataset_id="d", cache_dir=tmp_path, persist=True)
    assert again.computed and counter.calls > 0
    assert torch.equal(again.features, want)
    # and the rewritten entry is good again
    third = FeatureCache(net, 3, plain_loader(data), dataset_id="d", cache_dir=tmp_path, persist=True)
    assert not third.computed and torch.equal(third.features, want)
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # the bad copy is gone


def test_fp16_storage_and_sorted_gather(net, data, tmp_path):
    """fp16 rows are float32 features rounded once; batches come back in the order asked for."""
    exact = FeatureCache(net, 3, plain_loader(data), **EXACT)
    half = FeatureCache(net, 3, plain_loader(data), dataset_id="d", cache_dir=tmp_path, max_memory_bytes=0)
    assert half.memmapped and half.features.dtype == torch.float16
    assert np.load(half.path / "features.npy", mmap_mode="r").dtype == np.float16  # fp16 on disk too
    assert half.nbytes * 2 == exact.nbytes
    torch.testing.assert_close(half.features.float(), exact.features, rtol=1e-3, atol=1e-3)
    idx = [17, 2, 9, 2, 0]  # unsorted, with a repeat
    f, y = half.dataset[idx]
    assert f.dtype == torch.float32
    assert torch.equal(f, exact.features[idx].half().float()) and torch.equal(y, data.tensors[1][idx])


def test_auto_feature_cache_decision(net, tmp_path, caplog):
    """Yes only for deterministic transforms, at least two passes, and a size that fits."""
    from types import SimpleNamespace

    from deltapatch.cache import auto_feature_cache, feature_cache_bytes, planned_passes, storage_dtype

    ds = TensorDataset(torch.randn(N, 3, 32, 32), torch.zeros(N, dtype=torch.long))
    dm = SimpleNamespace(name="toy", deterministic_train_transform=True, splits={"train": ds}, batch_size=BS)
    row = net.base_features(ds[0][0][None], upto=3)[0]
    assert feature_cache_bytes(net, 3, N, ds[0][0]) == N * (row.numel() * 2 + 8)
    assert storage_dtype({"precision": "bf16-mixed"}) == torch.float16
    assert storage_dtype({"precision": "32-true"}) is None
    assert planned_passes({"max_epochs": 3}, 10) == 3
    assert planned_passes({"max_epochs": 6, "limit_train_batches": 2}, 10) == pytest.approx(1.2)
    assert planned_passes({"max_epochs": 4, "limit_train_batches": 0.5}, 10) == 2
    assert planned_passes({"max_epochs": -1, "max_steps": 25}, 10) == 2.5
    with caplog.at_level("INFO", logger="deltapatch.cache"):
        assert auto_feature_cache(net, 3, dm, tmp_path, {"max_epochs": 3})
        assert "in memory" in caplog.text and f"{N} samples" in caplog.text
        assert not auto_feature_cache(net, 3, dm, tmp_path, {"max_epochs": 1})
        assert not auto_feature_cache(net, 3, dm, tmp_path, {"max_epochs": 5, "limit_train_batches": 1})
        # too large for memory: goes to disk, which has room for a few kB
        assert auto_feature_cache(net, 3, dm, tmp_path / "new", {"max_epochs": 3}, max_memory_bytes=0)
        assert "on disk" in caplog.text
        dm.deterministic_train_transform = False
        assert not auto_feature_cache(net, 3, dm, tmp_path, {"max_epochs": 3})


def test_dataset_size_change_is_not_reused(net, data, tmp_path):
    FeatureCache(net, 3, plain_loader(data), dataset_id="d", cache_dir=tmp_path, persist=True)
    fewer = TensorDataset(*(t[:12] for t in data.tensors))
    again = FeatureCache(net, 3, plain_loader(fewer), dataset_id="d", cache_dir=tmp_path, persist=True)
    assert again.computed and len(again) == 12


def test_refuses_misuse(net, data):
    with pytest.raises(ConfigError, match="shuffle"):
        FeatureCache(net, 3, DataLoader(data, batch_size=BS, shuffle=True))
    with pytest.raises(ConfigError, match="dataset_id"):
        FeatureCache(net, 3, plain_loader(data), cache_dir="unused")
    with pytest.raises(ConfigError, match="range"):
        FeatureCache(net, 9, plain_loader(data))
    unfrozen = DeltaNetwork(create_backbone("resnet18", num_classes=7), freeze_base=False)
    with pytest.raises(ConfigError, match="frozen"):
        FeatureCache(unfrozen, 3, plain_loader(data))
    with pytest.raises(ValueError):
        FeatureDataset(torch.zeros(3, 2), torch.zeros(2))


def test_loader_batches_match_shuffled_image_loader(net, data):
    cache = FeatureCache.for_task(net, "t", plain_loader(data), **EXACT)
    img = DataLoader(data, batch_size=BS, shuffle=True, generator=torch.Generator().manual_seed(5))
    feat = cache.loader(BS, shuffle=True, generator=torch.Generator().manual_seed(5))
    for epoch in range(2):  # reshuffled each epoch, identically in both
        pairs = list(zip(img, feat, strict=True))
        for (_, y_img), (_, y_feat) in pairs:
            assert torch.equal(y_img, y_feat)
    order = torch.cat([y for _, y in cache.loader(BS, shuffle=False)])
    assert torch.equal(order, data.tensors[1])


@pytest.mark.parametrize("memmap", [False, True])
def test_training_from_cache_matches_training_from_images(net, data, tmp_path, memmap):
    """Same seed, same batches: losses and final logits agree to float tolerance."""
    net_img, net_feat = net, copy.deepcopy(net)
    kwargs = dict(dataset_id="d", cache_dir=tmp_path, max_memory_bytes=0) if memmap else {}
    cache = FeatureCache.for_task(net_feat, "t", plain_loader(data), **kwargs, **EXACT)
    assert cache.memmapped == memmap

    def run(model, batches, forward):
        torch.manual_seed(3)
        opt = torch.optim.SGD(model.trainable_parameters("t"), lr=0.05, momentum=0.9)
        model.train()
        losses = []
        for _ in range(2):
            for x, y in batches():
                loss = nn.functional.cross_entropy(forward(model, x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return torch.tensor(losses)

    g_img, g_feat = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    img_loader = DataLoader(data, batch_size=BS, shuffle=True, generator=g_img)
    feat_loader = cache.loader(BS, shuffle=True, generator=g_feat)
    loss_img = run(net_img, lambda: img_loader, lambda m, x: m(x, task="t"))
    loss_feat = run(net_feat, lambda: feat_loader, lambda m, h: m.forward_from(h, "t"))
    assert len(loss_img) == 2 * -(-N // BS)
    torch.testing.assert_close(loss_feat, loss_img, atol=1e-5, rtol=0)
    assert not torch.equal(loss_img[0], loss_img[-1])  # it did train

    net_img.eval(), net_feat.eval()
    x = data.tensors[0][:8]
    with torch.no_grad():
        torch.testing.assert_close(net_feat(x, task="t"), net_img(x, task="t"), atol=1e-5, rtol=0)
        for (a_name, a), (b_name, b) in zip(net_img.tasks.state_dict().items(), net_feat.tasks.state_dict().items()):
            assert a_name == b_name
            torch.testing.assert_close(b.float(), a.float(), atol=1e-5, rtol=0)


def test_runner_cache_features_auto(make_cfg, caplog):
    """The runner asks auto_feature_cache (whose other answers the test above covers): a run of two
    full epochs trains from cached features and says so with the size."""
    from deltapatch.scenarios import run

    with caplog.at_level("INFO", logger="deltapatch.cache"):
        res = run(make_cfg("cache_features=auto", "+dataset.max_train_samples=64", "trainer.max_epochs=2",
                           "trainer.limit_train_batches=null", "lambda_batches=0"))
    # 32-bit training: exact float32 rows, 4 bytes a value (+ 8 a label) in the logged estimate
    assert "training from cached stage-3 features of digits (64 samples" in caplog.text
    assert f"{64 * (256 * 2 * 2 * 4 + 8) / 1e6:.1f} MB in memory" in caplog.text
    assert res["tasks"]["patch"] is not None


def test_keep_on_reads_a_mapped_cache_into_memory_once(net, data, tmp_path):
    """keep_on(host): a memory-mapped cache becomes an in-memory one with the same rows, and its
    loader gives the same batches in the same order."""
    mem = FeatureCache(net, 3, plain_loader(data), **EXACT)
    disk = FeatureCache(net, 3, plain_loader(data), dataset_id="d", cache_dir=tmp_path, max_memory_bytes=0, **EXACT)
    assert disk.memmapped
    before = [y for _, y in disk.loader(BS, generator=torch.Generator().manual_seed(2))]
    assert disk.keep_on("cpu") is disk and not disk.memmapped
    assert torch.equal(disk.features, mem.features)
    disk.features[0].zero_()  # its own copy: the file on disk is untouched
    assert np.load(disk.path / "features.npy", mmap_mode="r")[0].any()
    after = [y for _, y in disk.loader(BS, generator=torch.Generator().manual_seed(2))]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_cache_features_on_device_setting(make_cfg):
    """Only true, false and auto; auto never moves features on a CPU run."""
    from deltapatch.cache import fits_on_device
    from deltapatch.training.feature_loader import resident_setting, training_device

    assert resident_setting(make_cfg()) == "auto"
    assert resident_setting(make_cfg("cache_features_on_device=false")) is False
    with pytest.raises(ConfigError, match="cache_features_on_device='gpu': use true, false or auto"):
        resident_setting(make_cfg("cache_features_on_device=gpu"))
    assert training_device(make_cfg()) == torch.device("cpu")
    assert fits_on_device(1, "cpu") is False


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh runs it)")
def test_gpu_resident_cache_gathers_on_the_gpu_and_trains_alike(net, data):
    """keep_on("cuda"): rows and labels live on the GPU, batches come out there as float32 equal
    to the host cache's, and training from them matches training from the host cache."""
    from deltapatch.cache import fits_on_device

    net = net.cuda()
    host = FeatureCache(net, 3, plain_loader(data))  # fp16 rows, as a bf16 run stores them
    gpu = FeatureCache(net, 3, plain_loader(data))
    assert gpu.keep_on("cuda") is gpu and gpu.features.is_cuda and gpu.labels.is_cuda
    assert fits_on_device(gpu.nbytes, "cuda") and not fits_on_device(1 << 60, "cuda")
    idx = [17, 2, 9, 2, 0]
    f, y = gpu.dataset[idx]
    assert f.is_cuda and f.dtype == torch.float32 and y.is_cuda
    fh, yh = host.dataset[idx]
    assert torch.equal(f.cpu(), fh) and torch.equal(y.cpu(), yh)

    def train(model, cache):
        torch.manual_seed(3)
        opt = torch.optim.SGD(model.trainable_parameters("t"), lr=0.05, momentum=0.9)
        losses = []
        for x, y in cache.loader(BS, generator=torch.Generator().manual_seed(11)):
            loss = nn.functional.cross_entropy(model.forward_from(x.cuda(), "t"), y.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return torch.tensor(losses)

    net_host, net_gpu = net, copy.deepcopy(net)
    torch.testing.assert_close(train(net_gpu, gpu), train(net_host, host), atol=1e-5, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh runs it)")
def test_runner_builds_the_cache_on_the_gpu_and_keeps_it_there(make_cfg, caplog, tmp_path):
    """trainer=gpu cache_features=true: the prefix pass runs on the GPU, the features stay there
    (auto), and the run trains to what the host-resident cache gives."""
    from deltapatch.scenarios import run

    over = ("trainer=gpu", "cache_features=true", "trainer.max_epochs=2", "lambda_batches=0")
    with caplog.at_level("INFO", logger="deltapatch.training.feature_loader"):
        resident = run(make_cfg(*over))
    assert "features held in cuda:0 memory" in caplog.text
    host = run(make_cfg(*over, "cache_features_on_device=false", f"paths.output_dir={tmp_path / 'host'}"))
    # bf16, non-deterministic kernels: a few of 174 test images may flip
    assert resident["tasks"]["patch"] == pytest.approx(host["tasks"]["patch"], abs=3.5)
    assert resident["base_model_unchanged"] and host["base_model_unchanged"]
