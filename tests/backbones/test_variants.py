"""Every supported family, through variants that stress its details: built by name, skips per
stage, zero-drop, patch round trip, and the ∆ parameter count against DESIGN.md's closed form.

Stage shapes are read from the model itself with forward hooks, not from the adapter under test.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deltapatch import DeltaNetwork, create_backbone, load_patch, save_patch
from backbones.variants import VARIANTS
from helpers import state_hash

N_DELTAS = 4  # patch every stage: every stage's ∆-module is built and checked


def block_lists(model: nn.Module) -> list[nn.Sequential]:
    """The sub-block containers of each stage, by the libraries' own module names."""
    if hasattr(model, "layer1"):
        return [getattr(model, f"layer{i}") for i in range(1, 5)]
    return [stage.blocks for stage in model.stages]


def observed_stages(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """Per stage: k, channels of h_0 (input of the first block) and of the block outputs, from hooks."""
    seen, handles = [], []
    for blocks in block_lists(model):
        rec = {"k": len(blocks)}
        seen.append(rec)
        handles += [
            blocks[0].register_forward_pre_hook(lambda m, inp, rec=rec: rec.__setitem__("c_in", inp[0].shape[1])),
            blocks[-1].register_forward_hook(lambda m, inp, out, rec=rec: rec.__setitem__("c_out", out.shape[1])),
        ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def closed_form(c_in: int, c_out: int, n_skips: int) -> int:
    """DESIGN.md: conv3x3 C→h (no bias) + BN(h) + conv3x3 h→h + BN(h) + linear h→#skips (+bias),
    plus the output BN on the stage's C_out channels; h = C//2."""
    h = c_in // 2
    return 9 * c_in * h + 2 * h + 9 * h * h + 2 * h + h * n_skips + n_skips + 2 * c_out


@pytest.fixture(scope="module", params=VARIANTS, ids=[f"{n}{'+small' if s else ''}" for n, s in VARIANTS])
def variant(request):
    name, small = request.param
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=5, small_input=small).eval()
    size = 32 if small else 64
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, x


def test_builds_and_small_stem_halves_once(variant):
    model, x = variant
    assert model(x).shape == (2, 5)
    # small_input: 32 px reach the first stage at 16x16; the usual stems: 64 px -> 16x16 as well
    h = {}
    hook = block_lists(model)[0][0].register_forward_pre_hook(lambda m, inp: h.__setitem__("x", inp[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    assert h["x"].shape[-2:] == (16, 16)


def test_lambda_shapes_per_stage(variant):
    model, x = variant
    net = DeltaNetwork(model, n_deltas=N_DELTAS)
    net.add_task("a", 3)
    lam = net.lambdas(x, "a")
    ks = [s["k"] for s in observed_stages(model, x)]
    assert {i: tuple(v.shape) for i, v in lam.items()} == {i: (2, k * (k + 1) // 2) for i, k in enumerate(ks)}
    assert all(((v >= 0) & (v <= 1)).all() for v in lam.values())


def test_delta_params_equal_closed_form(variant):
    model, x = variant
    net = DeltaNetwork(model, n_deltas=N_DELTAS)
    patch = net.add_task("a", 3)
    for i, s in enumerate(observed_stages(model, x)):
        got = sum(p.numel() for p in patch.stages[str(i)].parameters())
        assert got == closed_form(s["c_in"], s["c_out"], s["k"] * (s["k"] + 1) // 2), f"stage {i}"


def test_zero_drop_and_patch_roundtrip(variant, tmp_path):
    model, x = variant
    with torch.no_grad():
        ref = model(x)
    before = state_hash(model)
    net = DeltaNetwork(model, n_deltas=N_DELTAS)
    net.add_task("a", 3)
    assert torch.equal(net(x), ref)  # no task: the base itself
    net.train()
    opt = torch.optim.SGD(net.trainable_parameters("a"), lr=0.1)
    loss = nn.functional.cross_entropy(net(x, task="a"), torch.tensor([0, 2]))
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in model.parameters())
    assert state_hash(model) == before  # weights and BN statistics, bit for bit
    net.eval()
    assert torch.equal(net(x), ref)
    with torch.no_grad():
        logits = net(x, task="a")
    path = save_patch(net, "a", tmp_path / "a.safetensors")
    fresh = DeltaNetwork(model, n_deltas=1)  # the patch carries its own n_deltas
    load_patch(fresh, path)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x, task="a"), logits)


def test_patched_path_follows_the_recurrence(variant):
    """All skips at weight 1, no BN: the task's logits equal DESIGN.md's recurrence written out here
    from the library's own modules, h̃_j = B_j(h̃_{j-1}) + Σ_{i<j} P_ij(h̃_i), with P_0j the first
    block's frozen ``downsample`` (ResNet; avg-pool + conv in the ``d`` variants) or the identity."""
    model, x = variant
    net = DeltaNetwork(model, n_deltas=N_DELTAS, gate="constant", bn_placement="none")
    patch = net.add_task("a", 3).eval()
    stem_out = {}
    hook = block_lists(model)[0][0].register_forward_pre_hook(lambda m, inp: stem_out.__setitem__("h", inp[0]))
    with torch.no_grad():
        model(x)
        hook.remove()
        h = stem_out["h"]  # ConvNeXt: stage 0's downsample is an Identity, so this is also its input
        convnext = not hasattr(model, "layer1")
        for i, blocks in enumerate(block_lists(model)):
            if convnext:
                h = model.stages[i].downsample(h)
            shortcut = None if convnext else blocks[0].downsample
            nodes = [shortcut(h) if shortcut is not None else h]
            for block in blocks:
                h = block(h) + sum(nodes[1:], nodes[0])
                nodes.append(h)
        if convnext:
            feats = model.forward_head(model.norm_pre(h), pre_logits=True)
        elif hasattr(model, "forward_head"):  # timm ResNet
            feats = model.forward_head(h, pre_logits=True)
        else:
            feats = torch.flatten(model.avgpool(h), 1)
        want = patch.head(feats)
        assert torch.allclose(net(x, task="a"), want, rtol=1e-4, atol=1e-4)
