"""The baselines and ablations as methods: the base-model invariant, where gradients go, trainable
parameter counts, task isolation, PAINT's α sweep, and each conf/method YAML through the runner."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deltapatch import ConfigError, create_backbone
from deltapatch.methods import (BNAdaptMethod, ClippedAdamW, DeltaMethod, FCMethod, LearnableSkipMethod,
                                LoRAMethod, PaintMethod, ParallelAdapterMethod, SeriesAdapterMethod)
from deltapatch.methods.adapters import conv3x3_bn_pairs

from helpers import state_hash

CONF = Path(__file__).resolve().parents[2] / "conf"
HEAD = 512 * 3 + 3  # a new 3-class head on resnet18's 512 features


def r18() -> nn.Module:
    torch.manual_seed(0)
    return create_backbone("resnet18", num_classes=5)


def batch(seed: int = 1, n: int = 8, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, classes, (n,), generator=g)


def train_steps(method, task: str, steps: int = 3, seed: int = 1, lr: float = 1e-2) -> None:
    """A few optimizer steps in train mode, as TaskModule takes them."""
    method.train()
    params = [p for p in method.trainable_parameters(task) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr) if params else None
    for i in range(steps):
        x, y = batch(seed + i)
        loss = nn.functional.cross_entropy(method(x, task), y)
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    method.eval()


# -- expected trainable parameter counts on resnet18 (3-class head) --------------------------
def _convs3(base):
    return [conv for _, conv, _ in conv3x3_bn_pairs(base)]


def n_series(base):
    return sum(c.out_channels ** 2 + 4 * c.out_channels for c in _convs3(base)) + HEAD


def n_parallel(base):
    return sum(c.in_channels * c.out_channels + 2 * c.out_channels for c in _convs3(base)) + HEAD


def n_bn(base):
    return sum(2 * m.num_features for m in base.modules() if isinstance(m, nn.BatchNorm2d)) + HEAD


def n_lora(base, r=4):
    return sum(r * (m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels)
               for m in base.modules() if isinstance(m, nn.Conv2d)) + HEAD


OUT_BN = 2 * 512  # the ∆ output BN of resnet18's last stage
METHODS = {
    # name: (factory, expected trainable count on resnet18 given the base)
    "fc": (FCMethod, lambda b: HEAD),
    "delta": (DeltaMethod, lambda b: 444291 + HEAD),
    "series_adapter": (SeriesAdapterMethod, n_series),
    "parallel_adapter": (ParallelAdapterMethod, n_parallel),
    "series_adapter_rebuffi_init": (lambda b: SeriesAdapterMethod(b, zero_init=False), n_series),
    "bn_adapt": (BNAdaptMethod, n_bn),
    "bn_adapt_dua": (lambda b: BNAdaptMethod(b, train_affine=False), lambda b: HEAD),
    "lora": (lambda b: LoRAMethod(b, r=4), n_lora),
    "learnable_skip": (LearnableSkipMethod, lambda b: 8 + HEAD),  # 8 blocks
    "learnable_skip_1": (lambda b: LearnableSkipMethod(b, n_stages=1), lambda b: 2 + HEAD),
    "all_skips": (lambda b: DeltaMethod(b, gate="constant"), lambda b: OUT_BN + HEAD),
    "all_skips_nobn": (lambda b: DeltaMethod(b, gate="constant", bn_placement="none"), lambda b: HEAD),
    "all_skips_learnable": (lambda b: DeltaMethod(b, gate="static"), lambda b: 3 + OUT_BN + HEAD),
    "all_skips_learnable_nobn": (lambda b: DeltaMethod(b, gate="static", bn_placement="none"), lambda b: 3 + HEAD),
    "random_lambda": (lambda b: DeltaMethod(b, gate="random"), lambda b: OUT_BN + HEAD),
    "random_lambda_nobn": (lambda b: DeltaMethod(b, gate="random", bn_placement="none"), lambda b: HEAD),
}
KEEPS_BASE = sorted(METHODS)


@pytest.mark.parametrize("name", KEEPS_BASE)
def test_base_untouched_after_training(name):
    factory, _ = METHODS[name]
    base = r18().eval()
    x, _ = batch(0)
    with torch.no_grad():
        logits = base(x).clone()
    before = state_hash(base)
    method = factory(base)
    assert method.keeps_base
    method.add_task("a", 3)
    train_steps(method, "a")
    assert state_hash(base) == before
    with torch.no_grad():
        assert torch.equal(method(x, None), logits)
        assert torch.equal(base(x), logits)
    assert not any(p.requires_grad for p in base.parameters())


@pytest.mark.parametrize("name", KEEPS_BASE)
def test_gradients_reach_only_the_task(name):
    factory, expected = METHODS[name]
    base = r18()
    method = factory(base)
    method.add_task("a", 3)
    method.add_task("b", 3)
    trainable = {id(p) for p in method.trainable_parameters("a")}
    assert method.num_trainable("a") == expected(base)
    method.train()
    x, y = batch(2)
    nn.functional.cross_entropy(method(x, "a"), y).backward()
    got = {id(p) for p in method.parameters() if p.grad is not None}
    assert got == {id(p) for p in method.trainable_parameters("a") if p.requires_grad}
    assert got <= trainable
    assert all(p.grad is None for p in base.parameters())
    assert all(p.grad is None for p in method.trainable_parameters("b"))


@pytest.mark.parametrize("name", KEEPS_BASE)
def test_second_task_leaves_first_alone(name):
    factory, _ = METHODS[name]
    base = r18()
    method = factory(base)
    method.add_task("a", 3)
    train_steps(method, "a")
    x, _ = batch(0)
    with torch.no_grad():
        a_logits = method(x, "a").clone()
        base_logits = method(x, None).clone()
    method.add_task("b", 4)
    train_steps(method, "b", seed=10)
    with torch.no_grad():
        assert torch.equal(method(x, "a"), a_logits)
        assert torch.equal(method(x, None), base_logits)
        assert method(x, "b").shape == (8, 4)


@pytest.mark.parametrize("name", ["series_adapter", "parallel_adapter", "bn_adapt", "bn_adapt_dua", "lora",
                                  "learnable_skip"])
def test_new_task_starts_as_the_base(name):
    """Zero-initialised adapters/LoRA, copied BNs and unit skip scales: before training, a task's
    path gives the base model's logits once it is given the base head."""
    base = r18().eval()
    method = METHODS[name][0](base)
    method.add_task("a", 5)
    method.heads["a"].load_state_dict(base.fc.state_dict())
    method.eval()
    x, _ = batch(0)
    with torch.no_grad():
        assert torch.allclose(method(x, "a"), base(x), atol=1e-6, rtol=0)


def test_adapters_follow_rebuffi():
    """Series: BN_out(z + conv1x1(BN_in(z))); parallel: BN_task(conv3x3(x) + conv1x1(x)), stride kept."""
    base = r18().eval()
    x = torch.randn(2, 64, 8, 8)
    for cls in (SeriesAdapterMethod, ParallelAdapterMethod):
        method = cls(base)
        method.add_task("a", 3)
        mods = method.tasks["a"]
        for m in mods.modules():  # make every new piece non-trivial
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                nn.init.normal_(m.weight)
            if isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.bias)
        method.eval()
        blk = base.layer2[0]  # conv1 has stride 2
        ad, bn = mods["layer2__0__conv1__adapter"], mods["layer2__0__conv1__bn"]
        with torch.no_grad(), method.routing("a"):
            got = blk.bn1(blk.conv1(x))
        z = blk.conv1(x)
        with torch.no_grad():
            want = bn(z + ad.conv(ad.bn(z))) if cls is SeriesAdapterMethod else bn(z + ad(x))
        assert torch.allclose(got, want, atol=1e-5)
        if cls is ParallelAdapterMethod:
            assert ad.stride == (2, 2) and ad.kernel_size == (1, 1)
        method.remove_hooks()
    # 3x3 convs of resnet18's stages: 2 per BasicBlock, the 7x7 stem excluded
    assert len(conv3x3_bn_pairs(base)) == 16


def test_learnable_skip_scales_the_residual():
    base = r18().eval()
    method = LearnableSkipMethod(base)
    method.add_task("a", 3)
    method.eval()
    scales = method.tasks["a"]["scales"].weight
    with torch.no_grad():
        scales.copy_(torch.linspace(0.2, 1.6, 8))
    for i, blk in ((0, base.layer1[0]), (2, base.layer2[0])):  # identity and projection shortcut
        x = torch.randn(2, blk.conv1.in_channels, 8, 8)
        with torch.no_grad():
            with method.routing("a"):
                got = blk(x)
            f = blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(x)))))
            sc = blk.downsample(x) if blk.downsample is not None else x
            want = torch.relu(f + scales[i] * sc)
        assert torch.allclose(got, want, atol=1e-5)


def test_bn_adapt_dua_momentum_and_statistics():
    base = r18()
    method = BNAdaptMethod(base, train_affine=False)
    method.add_task("a", 3)
    bns = list(method.tasks["a"].values())
    affine = [bn.weight.clone() for bn in bns]
    stats = [bn.running_mean.clone() for bn in bns]
    train_steps(method, "a", steps=3)
    assert all(bn.momentum == pytest.approx(0.1 * 0.94 ** 3 + 0.005) for bn in bns)
    assert all(torch.equal(bn.weight, w) for bn, w in zip(bns, affine))  # no backprop into BN
    assert all(not torch.equal(bn.running_mean, s) for bn, s in zip(bns, stats))  # statistics adapted
    # train_affine: the standard BN momentum, affine parameters move
    method = BNAdaptMethod(r18())
    method.add_task("a", 3)
    train_steps(method, "a")
    assert all(bn.momentum == 0.1 for bn in method.tasks["a"].values())


def test_convnext_refused_where_there_is_no_bn():
    base = create_backbone("convnext_tiny", num_classes=5)
    for cls in (SeriesAdapterMethod, ParallelAdapterMethod, BNAdaptMethod):
        with pytest.raises(ConfigError):
            cls(base)


def test_lora_targets_exact_names():
    base = r18()
    method = LoRAMethod(base, r=2, target_modules=["conv1"])  # the stem only, not layerN.M.conv1
    method.add_task("a", 3)
    assert method.num_trainable("a") == 2 * (3 * 49 + 64) + HEAD
    with pytest.raises(ConfigError):
        LoRAMethod(base, target_modules=["fc"])


# -- PAINT -----------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(method, data: DataLoader, task, num_classes: int) -> float:
    """Top-1 in percent, by hand (independent of deltapatch.training.evaluation)."""
    was = method.training
    method.eval()
    hits = total = 0
    for x, y in data:
        hits += int((method(x, task).argmax(1) == y).sum())
        total += len(y)
    method.train(was)
    return 100.0 * hits / total


class DictScorer:
    """A Scorer over plain functions ``split -> method -> {key: acc}`` (what end_task may ask)."""

    def __init__(self, method, evaluate):
        self.method, self.evaluate = method, evaluate

    def score(self, split):
        return self.evaluate[split](self.method)

    def sweep(self, split, variants):
        out = []
        for apply in variants:
            apply()
            out.append(self.evaluate[split](self.method))
        return out


def loader(seed: int, classes: int) -> DataLoader:
    x, y = batch(seed, n=16, classes=classes)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def test_paint_alpha_end_points():
    base = r18().eval()
    before = state_hash(base)
    x, _ = batch(0)
    base_loader = loader(5, 5)
    with torch.no_grad():
        base_logits = base(x).clone()
    base_acc = accuracy(FCMethod(r18()), base_loader, None, 5)  # same weights, another object
    method = PaintMethod(base)
    assert not method.keeps_base
    method.add_task("a", 3)
    assert method.num_trainable("a") == sum(p.numel() for p in base.parameters()) - (512 * 5 + 5) + HEAD
    train_steps(method, "a")
    assert state_hash(base) != before  # fine-tuning moved weights and BN statistics
    with torch.no_grad():
        ft_task, ft_base = method(x, "a").clone(), method(x, None).clone()

    method.interpolate(0.0)
    assert state_hash(base) == before  # bit for bit, BN buffers included
    with torch.no_grad():
        assert torch.equal(method(x, None), base_logits)
    assert accuracy(method, base_loader, None, 5) == base_acc

    method.interpolate(0.5)
    with torch.no_grad():
        assert not torch.equal(method(x, "a"), ft_task)

    method.interpolate(1.0)
    with torch.no_grad():
        assert torch.equal(method(x, "a"), ft_task)
        assert torch.equal(method(x, None), ft_base)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh runs it)")
def test_paint_interpolates_where_the_model_is_now():
    """θ_0 is taken on the CPU (add_task before Lightning moves the model), θ_ft on the GPU: the
    sweep runs on the GPU and α = 0.5 is the midpoint of the two (found by gpu_check's first run)."""
    base = r18().eval()
    method = PaintMethod(base)
    method.add_task("a", 3)
    theta_0 = {k: v.clone() for k, v in method.theta_0.items()}
    method.cuda()
    with torch.no_grad():  # "fine-tuning", on the GPU
        for p in method.base.parameters():
            p.add_(torch.randn_like(p))
    method.theta_ft = method.backbone_state()
    method.interpolate(0.5)
    k = next(k for k in method.backbone_keys if k.endswith("conv1.weight"))
    now = method.base.state_dict()[k]
    assert now.is_cuda
    torch.testing.assert_close(now.cpu(), torch.lerp(theta_0[k], method.theta_ft[k].cpu(), 0.5))


def test_paint_sweep_chooses_alpha_on_validation():
    base = r18().eval()
    method = PaintMethod(base)
    method.add_task("a", 3)
    theta_0 = state_hash(base)
    theta_0_state = method.backbone_state()
    train_steps(method, "a", steps=4)
    theta_ft_state = method.backbone_state()
    evaluate = {
        "val": lambda m: {"base": accuracy(m, loader(5, 5), None, 5), "a": accuracy(m, loader(6, 3), "a", 3)},
        "test": lambda m: {"base": accuracy(m, loader(7, 5), None, 5), "a": accuracy(m, loader(8, 3), "a", 3)},
    }
    out = method.end_task("a", DictScorer(method, evaluate))
    assert out["selection"] == "hmean"
    sweep = out["alpha_sweep"]
    assert [r["alpha"] for r in sweep] == [i / 10 for i in range(11)]
    best = max(r["val"]["hmean"] for r in sweep)
    assert out["alpha"] == min(r["alpha"] for r in sweep if r["val"]["hmean"] == best)
    for r in sweep:
        assert set(r["val"]) == set(r["test"]) == {"base", "a", "hmean"}
    # the model is left at the chosen α: scoring it again gives that row
    chosen = next(r for r in sweep if r["alpha"] == out["alpha"])
    assert evaluate["test"](method) | {"hmean": chosen["test"]["hmean"]} == chosen["test"]
    # the Lightning scorer (one evaluation loop over every α) gives the same table
    from deltapatch.training.evaluation import EvalSet, LightningScorer
    import pytorch_lightning as pl

    class Split:
        def __init__(self, val, test):
            self.val_dataloader, self.test_dataloader = val, test

    evalset = EvalSet()
    evalset.add("base", None, 5, Split(lambda: loader(5, 5), lambda: loader(7, 5)))
    evalset.add("a", "a", 3, Split(lambda: loader(6, 3), lambda: loader(8, 3)))
    trainer = lambda: pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,  # noqa: E731
                                 enable_checkpointing=False, enable_model_summary=False)
    method.theta_0, method.theta_ft = theta_0_state, theta_ft_state
    method.interpolate(1.0)  # back to the fine-tuned model the first sweep started from
    lightning = method.end_task("a", LightningScorer(trainer, method, evalset))
    assert lightning["alpha"] == out["alpha"]
    for mine, theirs in zip(lightning["alpha_sweep"], sweep):
        assert mine["val"] == pytest.approx(theirs["val"]) and mine["test"] == pytest.approx(theirs["test"])
    # the next task's θ_0 is the chosen model
    method.add_task("b", 3)
    method.interpolate(0.0)
    assert (state_hash(base) == theta_0) == (out["alpha"] == 0.0)


def test_paint_selection():
    assert PaintMethod(r18(), scenario="sequential").selection == "mean"
    assert PaintMethod(r18(), scenario="joint").selection == "hmean"
    assert PaintMethod(r18(), selection="mean", scenario="single").selection == "mean"
    with pytest.raises(ConfigError):
        PaintMethod(r18(), selection="max")
    # ties go to the smaller α; a constant evaluator makes every α tie
    method = PaintMethod(r18(), alphas=[0.7, 0.3, 1.0])
    method.add_task("a", 3)
    out = method.end_task("a", DictScorer(method, {"val": lambda m: {"base": 50.0, "a": 50.0},
                                                   "test": lambda m: {"base": 1.0, "a": 1.0}}))
    assert out["alpha"] == 0.3
    # test_sweep=false: the test split is scored at the chosen α only
    method = PaintMethod(r18(), alphas=[0.0, 1.0], test_sweep=False)
    method.add_task("a", 3)
    out = method.end_task("a", DictScorer(method, {"val": lambda m: {"base": 50.0, "a": 50.0},
                                                   "test": lambda m: {"base": 1.0, "a": 2.0}}))
    assert [set(r) for r in out["alpha_sweep"]] == [{"alpha", "val", "test"}, {"alpha", "val"}]
    assert out["alpha_sweep"][0]["test"] == {"base": 1.0, "a": 2.0, "hmean": pytest.approx(4 / 3)}


def test_clipped_adamw_clips_before_stepping():
    p = nn.Parameter(torch.zeros(4))
    opt = ClippedAdamW([p], lr=0.1, max_grad_norm=1.0, weight_decay=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * torch.tensor([100.0, 0.0, 0.0, 0.0])).sum()
        loss.backward()
        return loss

    assert opt.step(closure) is not None
    assert p.grad.norm() == pytest.approx(1.0)
    assert p[0] < 0 and torch.all(p[1:] == 0)


# -- the YAMLs through Hydra and the runner --------------------------------------------------
NEW_YAMLS = ["paint", "series_adapter", "parallel_adapter", "bn_adapt", "bn_adapt_dua", "lora", "learnable_skip",
             "all_skips", "all_skips_nobn", "all_skips_learnable", "all_skips_learnable_nobn", "random_lambda",
             "random_lambda_nobn"]


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("name", NEW_YAMLS)
def test_method_yaml_instantiates(name):
    cfg = compose_cfg(f"method={name}", "scenario=sequential")
    assert cfg.method.name == name
    method = instantiate(cfg.method.module, base=r18())
    method.add_task("t", 3)
    assert method.keeps_base == (name != "paint")
    opt = instantiate(cfg.method.optimizer)(method.trainable_parameters("t"))
    if cfg.method.get("scheduler"):
        instantiate(cfg.method.scheduler)(opt, total_steps=10)
    if name == "paint":
        assert isinstance(opt, ClippedAdamW) and method.selection == "mean"
        assert opt.defaults["weight_decay"] == 0.1


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("base_cache")  # the base trains once for the module


@pytest.mark.parametrize("name", ["paint", "series_adapter", "lora"])
def test_runner_end_to_end(name, tmp_path, base_cache):
    """One short run through the scenario runner: results.json has what the issue asks."""
    from deltapatch.scenarios import run

    res = run(compose_cfg(f"method={name}", f"paths.output_dir={tmp_path}", f"paths.cache_dir={base_cache}",
                          "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.enable_progress_bar=false",
                          "base.epochs=1", "dataset.batch_size=32", "logger=none", "callbacks=none"))
    assert res["method"] == name
    assert res["trainable_params"]["patch"] > 0
    if name == "paint":
        extra = res["extra"]["patch"]
        assert len(extra["alpha_sweep"]) == 11 and extra["alpha"] in [r["alpha"] for r in extra["alpha_sweep"]]
        chosen = next(r for r in extra["alpha_sweep"] if r["alpha"] == extra["alpha"])
        assert chosen["test"]["patch"] == res["tasks"]["patch"]
        assert chosen["test"]["base"] == res["base_acc_after"]
        zero = extra["alpha_sweep"][0]
        assert zero["alpha"] == 0.0 and zero["test"]["base"] == res["base_acc_before"]
    else:
        assert res["base_acc_after"] == res["base_acc_before"] and res["base_model_unchanged"]
