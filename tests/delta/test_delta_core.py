"""∆-Networks core: topology, parameter counts, the base-model invariant, patch files, λ read-out."""

import pytest
import torch
from torch import nn

from deltapatch import (BASE, ConfigError, DeltaNetwork, PatchError, base_fingerprint, create_backbone,
                        load_patch, save_patch)
from deltapatch.backbones import PretrainedWeightsError

from helpers import state_hash


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return create_backbone("resnet18", num_classes=7)


@pytest.mark.parametrize("name,expected", [
    ("resnet18", [3, 3, 3, 3]),
    ("timm/resnet18", [3, 3, 3, 3]),
    ("resnet50", [6, 10, 21, 6]),
    ("convnext_tiny", [6, 6, 45, 6]),
])
def test_skips_per_stage(name, expected):
    net = DeltaNetwork(create_backbone(name, num_classes=10), n_deltas=4)
    assert net.skips_per_stage() == expected
    net.add_task("t", 10)
    # one λ column per skip, one ∆-module per patched stage
    assert [net.tasks["t"].stages[str(i)].n_skips for i in range(4)] == expected


# Paper Tables 2 and 10 "# Parameters": ∆-modules (+ the new head), in millions. ResNet-101 and
# ConvNeXt-S/B/L appear only at ∆(1) (Table 10); we measure ResNet-101 ∆(2)/∆(4) at 8.93M/9.40M.
TABLE2 = [
    ("resnet18", {1: 0.4, 2: 0.6, 4: 0.6}),
    ("resnet34", {1: 0.4, 2: 0.6, 4: 0.6}),
    ("resnet50", {1: 7.1, 2: 8.9, 4: 9.3}),
    ("resnet101", {1: 7.1}),
    ("convnext_tiny", {1: 4.0, 2: 5.0, 4: 5.3}),
    ("convnext_small", {1: 4.0}),
    ("convnext_base", {1: 7.1}),
    ("convnext_large", {1: 15.9}),
]


@pytest.mark.parametrize("name,table", TABLE2)
def test_parameter_counts_match_paper(name, table):
    base = create_backbone(name, num_classes=10)
    for n, millions in table.items():
        net = DeltaNetwork(base, n_deltas=n)
        patch = net.add_task("t", 10)
        delta = sum(p.numel() for k, p in patch.named_parameters() if not k.startswith("head."))
        assert abs(delta / 1e6 - millions) <= 0.1, (name, n, delta)
        assert sum(p.numel() for p in net.trainable_parameters("t")) > delta  # head included


def test_zero_drop_bit_for_bit_after_training(r18):
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    r18.eval()
    before_hash, before_logits = state_hash(r18), r18(x).clone()
    net = DeltaNetwork(r18, n_deltas=2)
    net.add_task("new", 3)
    opt = torch.optim.SGD(net.trainable_parameters("new"), lr=0.1, momentum=0.9)
    net.train()  # as Lightning does every epoch
    assert not r18.training and all(not m.training for m in r18.modules())
    for _ in range(3):
        loss = nn.functional.cross_entropy(net(x, task="new"), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert state_hash(r18) == before_hash
    net.eval()
    assert torch.equal(net(x), before_logits)
    assert torch.equal(net(x, task=BASE), before_logits)
    assert torch.equal(r18(x), before_logits)


def test_gradients_reach_only_the_task(r18):
    net = DeltaNetwork(r18, n_deltas=2)
    net.add_task("a", 4)
    net.add_task("b", 5)
    a_before = {k: v.clone() for k, v in net.tasks["a"].state_dict().items()}
    net.train()
    x = torch.randn(4, 3, 64, 64)
    net(x, task="b").sum().backward()
    assert all(p.grad is None for p in r18.parameters())
    assert all(p.grad is None for p in net.tasks["a"].parameters())
    grads = [p.grad for p in net.tasks["b"].parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    opt = torch.optim.Adam(net.trainable_parameters("b"), lr=0.1)
    opt.step()
    for k, v in net.tasks["a"].state_dict().items():
        assert torch.equal(v, a_before[k]), k
    assert set(map(id, net.trainable_parameters("b"))) == set(map(id, net.tasks["b"].parameters()))


def test_patch_roundtrip_and_refusals(r18, tmp_path):
    net = DeltaNetwork(r18, n_deltas=2)
    net.add_task("cars", 3, class_names=["a", "b", "c"])
    with torch.no_grad():  # move the weights off their init so the check means something
        for p in net.tasks["cars"].parameters():
            p.add_(torch.randn_like(p) * 0.01)
    net.eval()
    x = torch.randn(4, 3, 64, 64)
    want = net(x, task="cars")
    path = save_patch(net, "cars", tmp_path / "cars.patch.safetensors")
    fresh = DeltaNetwork(r18, n_deltas=1)
    assert load_patch(fresh, path) == "cars"
    fresh.eval()
    assert torch.equal(fresh(x, task="cars"), want)
    assert fresh.specs["cars"].class_names == ["a", "b", "c"] and fresh.specs["cars"].n_deltas == 2
    assert path.stat().st_size < 3_000_000

    other = create_backbone("resnet18", num_classes=7)  # same architecture, other weights
    with pytest.raises(PatchError, match="another base model"):
        load_patch(DeltaNetwork(other), path)
    with pytest.raises(PatchError, match="backbone"):
        load_patch(DeltaNetwork(create_backbone("timm/resnet18", num_classes=7)), path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PatchError, match="corrupt or truncated"):
        load_patch(DeltaNetwork(r18), bad)
    assert base_fingerprint(r18) != base_fingerprint(other)


def test_lambdas_shapes_and_range(r18):
    net = DeltaNetwork(r18, n_deltas=4)
    net.add_task("t", 2)
    lam = net.lambdas(torch.randn(5, 3, 64, 64), "t")
    assert sorted(lam) == [0, 1, 2, 3]
    for v in lam.values():
        assert v.shape == (5, 3) and v.min() >= 0 and v.max() <= 1


@pytest.mark.parametrize("name", ["resnet50", "convnext_tiny"])
def test_lambda_zero_gives_base_features(name):
    torch.manual_seed(0)
    base = create_backbone(name, num_classes=10).eval()
    net = DeltaNetwork(base, n_deltas=4, bn_placement="none")
    patch = net.add_task("t", 10)
    with torch.no_grad():
        patch.head.load_state_dict(net.adapter.classifier().state_dict())
        for st in patch.stages.values():
            st.gate.fc.weight.zero_()
            st.gate.fc.bias.fill_(-float("inf"))  # sigmoid(-inf) == 0 exactly
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    assert all((v == 0).all() for v in net.lambdas(x, "t").values())
    assert torch.equal(net(x, task="t"), base(x))
    # and with λ != 0 the patched path really differs (the skips are wired in)
    with torch.no_grad():
        for st in patch.stages.values():
            st.gate.fc.bias.fill_(0.0)
    assert not torch.allclose(net(x, task="t"), base(x))


def test_shared_prefix_matches_single_task_calls(r18):
    net = DeltaNetwork(r18, n_deltas=1).eval()
    net.add_task("a", 3)
    net.add_task("b", 4, n_deltas=3)
    x = torch.randn(3, 3, 64, 64)
    out = net(x, tasks=[None, "a", "b"])
    assert torch.equal(out[BASE], r18(x))
    assert torch.allclose(out["a"], net(x, task="a"), atol=1e-6)
    assert torch.allclose(out["b"], net(x, task="b"), atol=1e-6)
    # without the base, tasks that all start at the last stage (the bench's 4 × ∆(1) case)
    net.add_task("c", 2)
    out = net(x, tasks=["a", "c"])
    assert set(out) == {"a", "c"}
    assert torch.allclose(out["c"], net(x, task="c"), atol=1e-6)


def test_bad_inputs(r18, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="known: .*resnet18"):
        create_backbone("resnet19")
    with pytest.raises(ConfigError, match="n_deltas=5 .* 4 stages"):
        DeltaNetwork(r18, n_deltas=5)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match="not in the cache"):
        create_backbone("resnet18", pretrained=True)


def test_pretrained_from_local_file(r18, tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in r18.state_dict().items()}, f)
    loaded = create_backbone("resnet18", num_classes=7, pretrained=str(f))
    assert base_fingerprint(loaded) == base_fingerprint(r18)
