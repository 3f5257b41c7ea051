"""ADDA in the zero-shot domain adaptation runner (Table 6): what the adversarial stage may read,
where the target encoder starts, that it adapts, and the Target-only row."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from deltapatch.backbones import get_adapter
from deltapatch.errors import ConfigError
from deltapatch.scenarios import adda as adda_mod
from deltapatch.scenarios import run, zsda
from deltapatch.training.evaluation import EvalSet, LightningScorer
from deltapatch.training.trainer import eval_trainer

from helpers import state_hash

# digits -> digits rotated by 30° at 16 px: a shift a source-trained net half survives (~50 % on
# the target), which ADDA reliably repairs; inverted digits start near chance and ADDA cannot
# recover which class is which from marginals alone (docs/zsda.md)
PAIR = ["scenario=zsda", "n_deltas=4", "dataset.image_size=16", "scenario.target.image_size=16",
        "scenario.target.shift=rotate", "+dataset.test_fraction=0.1", "+scenario.target.test_fraction=0.1"]
QUIET = ["trainer.enable_progress_bar=false", "callbacks=none", "logger=none"]
TINY_ADDA = ["base.epochs=1", "+base.limit_train_batches=3", "scenario.adda.enabled=true", "scenario.adda.epochs=1",
             "scenario.adda.steps_per_epoch=2", "scenario.adda.batch_size=16"]


class NoTouch(list):
    """A sequence whose items must never be read (labels, a split the stage may not see)."""

    def __getitem__(self, i):
        raise AssertionError("read a forbidden item")

    def __iter__(self):
        raise AssertionError("iterated a forbidden sequence")


class Recorder(list):
    """A sample list that records which positions were read."""

    def __init__(self, items):
        super().__init__(items)
        self.read: set[int] = set()

    def __getitem__(self, i):
        self.read.add(i)
        return super().__getitem__(i)


def _data(cfg):
    source, target = instantiate(cfg.dataset), instantiate(cfg.scenario.target)
    source.setup()
    target.setup()
    return source, target


def test_discriminator_sees_only_unlabelled_target_training_images(make_cfg, monkeypatch, tmp_path):
    cfg = make_cfg(*PAIR, *QUIET, *TINY_ADDA, f"base.cache_dir={tmp_path / 'own'}", fast=False)  # ADDA trains here
    source, target = _data(cfg)
    vanilla, _, key = zsda.obtain_vanilla(cfg, source, [])
    train = target.splits["train"]
    samples = Recorder(train.samples)
    train.samples, train.labels = samples, NoTouch(train.labels)  # a label read fails the test
    for split in ("val", "test"):  # the adversarial stage may not read these at all
        target.splits[split].samples = NoTouch(target.splits[split].samples)
        target.splits[split].labels = NoTouch(target.splits[split].labels)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):  # labelled loaders: not used
        monkeypatch.setattr(target, loader, lambda: pytest.fail("ADDA asked the target for a labelled loader"))
    seen: list[torch.Tensor] = []
    real_step = adda_mod.ADDAModule.training_step
    monkeypatch.setattr(adda_mod.ADDAModule, "training_step",
                        lambda self, batch, i: (seen.append(batch["target"]), real_step(self, batch, i))[1])
    model, info = zsda.obtain_adda(cfg, vanilla, key, source, target, [])
    # two steps of 16 target images, each a plain image tensor (no label travels with it)
    assert [tuple(b.shape) for b in seen] == [(16, 3, 16, 16)] * 2
    assert len(samples.read) == 32 and samples.read <= set(train.indices)  # training images only
    assert info["target_split"] == "train" and info["target_images"] == len(train.indices)


def test_target_encoder_starts_from_source_encoder(make_cfg, monkeypatch, tmp_path):
    cfg = make_cfg(*PAIR, *QUIET, *TINY_ADDA, f"base.cache_dir={tmp_path / 'own'}", fast=False)  # not cached
    source, target = _data(cfg)
    vanilla, _, key = zsda.obtain_vanilla(cfg, source, [])
    vanilla_hash = state_hash(vanilla)
    at_start = {}

    def check(self):
        src, tgt = self.source.state_dict(), self.target.state_dict()
        at_start["equal"] = src.keys() == tgt.keys() and all(torch.equal(src[k], tgt[k]) for k in src)
        at_start["same_object"] = any(a is b for a, b in zip(self.source.parameters(), self.target.parameters()))

    monkeypatch.setattr(adda_mod.ADDAModule, "on_train_start", check, raising=False)
    model, _ = zsda.obtain_adda(cfg, vanilla, key, source, target, [])
    assert at_start == {"equal": True, "same_object": False}  # an equal copy, not the same tensors
    assert state_hash(vanilla) == vanilla_hash  # the source model is not written
    head, van_head = get_adapter(model).classifier(), get_adapter(vanilla).classifier()
    assert torch.equal(head.weight, van_head.weight) and torch.equal(head.bias, van_head.bias)  # classifier kept
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, vanilla.state_dict()[k])]
    assert any(k.startswith("conv1") or k.startswith("layer") for k in moved)  # the encoder adapted


def _target_acc(cfg, model, target) -> float:
    evalset = EvalSet()
    evalset.add("target", None, target.num_classes, target)
    return LightningScorer(lambda: eval_trainer(cfg), zsda._Plain(model), evalset).score("test")["target"]


def test_adda_improves_target_accuracy_on_rotated_digits(make_cfg):
    """A run of seconds: the vanilla model (4 epochs of 20 batches on digits) reaches 40–60 % of the
    rotated test digits, ADDA (20 steps) more than 10 points above that (measured: +23 and +44 points with
    2 and 1 threads); the ∆ stage runs on the frozen ADDA model."""
    cfg = make_cfg(*PAIR, *QUIET, "base.epochs=4", "+base.limit_train_batches=20", "scenario.adda.enabled=true",
                   "scenario.adda.epochs=1", "scenario.adda.steps_per_epoch=20", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=2", fast=False)
    res = run(cfg)
    source, target = _data(cfg)
    vanilla, _, _ = zsda.obtain_vanilla(cfg, source, [])  # the cached source model the ADDA run started from
    before = _target_acc(cfg, vanilla, target)
    assert res["adda"] is True and res["adda_info"]["selection"] == "last step"
    assert res["vanilla"]["target_acc"] > before + 10, (before, res["vanilla"])
    assert res["base_model_unchanged"] is True and res["n_deltas"] == 4  # ∆ on the frozen ADDA model
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["adda"] is True and saved["vanilla"] == res["vanilla"]


def test_target_only_row_and_its_refusals(make_cfg):
    cfg = make_cfg(*PAIR, *QUIET, "base.epochs=1", "+base.limit_train_batches=2", "scenario.target_only=true",
                   "scenario.source_test_images=40", fast=False)
    res = run(cfg)
    assert res["source_test_images"] == 40  # a fixed subset of the source's 180 test images; the target: all
    assert res["method"] == "target_only" and res["n_deltas"] is None and "vanilla" not in res
    assert (res["dataset"], res["target"]) == ("digits", "digits_shifted")  # the pair's column
    assert 0 <= res["target_acc"] <= 100 and res["tasks"] == {"patch": res["target_acc"]}
    cached = {p.name for p in (Path(cfg.base.cache_dir) / "zsda").glob("*.json")}
    assert cached, "the target-only model is cached like a vanilla model"
    for bad in (["scenario.adda.enabled=true"], ["scenario.uniform_prior.weight=0.1"]):
        with pytest.raises(ConfigError, match="target_only"):
            run(make_cfg(*PAIR, *QUIET, "scenario.target_only=true", *bad, fast=False))
    with pytest.raises(ConfigError, match="source_test_images"):
        run(make_cfg(*PAIR, *QUIET, "scenario.source_test_images=0", fast=False))
    with pytest.raises(ConfigError, match="adda.epochs"):
        run(make_cfg(*PAIR, *QUIET, *TINY_ADDA[:2], "scenario.adda.enabled=true", "scenario.adda.epochs=0",
                     fast=False))


ROWS = {"zsda_vanilla": (False, 0.0, False), "zsda_uniform_prior": (False, 0.1, False),
        "zsda_adda": (True, 0.0, False), "zsda_adda_uniform_prior": (True, 0.1, False),
        "zsda_target_only": (False, 0.0, True)}


@pytest.mark.parametrize("preset, pairs", [
    ("real/table6", {"mnist_pack_usps_pack": ("mnist_pack", "usps_pack"),
                     "usps_pack_mnist_pack": ("usps_pack", "mnist_pack")}),
    ("table6", {"mnist_usps": ("mnist", "usps"), "usps_mnist": ("usps", "mnist"), "svhn_mnist": ("svhn", "mnist")}),
])
def test_table6_presets_give_every_row_on_every_pair(preset, pairs):
    """One sweep: every pair × the five row kinds (eight Table 6 rows + Target only) × 3 seeds, both
    domains at 32 px, every seed its own vanilla model."""
    from hydra import compose, initialize_config_dir

    from helpers import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        top = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
        params = top.hydra.sweeper.params
        assert set(str(params["experiment/pair"]).split(",")) == set(pairs)
        assert set(str(params["experiment/row"]).split(",")) == set(ROWS) and str(params.seed) == "0,1,2"
        for pair, (src, tgt) in pairs.items():
            for row, (adda, weight, target_only) in ROWS.items():
                cfg = compose("config", overrides=[f"experiment={preset}", f"experiment/pair={pair}",
                                                   f"experiment/row={row}", "seed=2"])
                sc = cfg.scenario
                assert (cfg.dataset.name, sc.target.name) == (src, tgt)
                assert cfg.dataset.image_size == sc.target.image_size == 32
                assert (sc.adda.enabled, sc.uniform_prior.weight, sc.target_only) == (adda, weight, target_only)
                assert cfg.base.source == "scratch" and cfg.base.seed == 2 and cfg.n_deltas == 4
                assert cfg.method.name == "delta" and cfg.experiment_name == preset.replace("/", "_")


def test_joint_reading_trains_the_delta_network_from_the_vanilla_init_and_adapts_it(make_cfg, monkeypatch, tmp_path):
    """scenario.delta=joint: backbone + ∆(4) + head trained from the vanilla model's initialisation
    with its recipe (not on top of it); ADDA then adapts that network, its head kept."""
    import pytorch_lightning as pl

    from deltapatch.scenarios import uniform_prior

    cfg = make_cfg(*PAIR, *QUIET, *TINY_ADDA, "scenario.delta=joint", "method=finetune_delta",
                   f"base.cache_dir={tmp_path / 'own'}", fast=False)
    start = {}
    monkeypatch.setattr(uniform_prior.JointSourceModule, "on_train_start",
                        lambda self: start.update({k: v.clone() for k, v in self.method.base.state_dict().items()}),
                        raising=False)
    res = run(cfg)
    pl.seed_everything(cfg.base.seed)  # how the vanilla model's backbone is drawn (train_cached)
    ref = instantiate(cfg.backbone.model, pretrained=False, num_classes=10).state_dict()
    assert start.keys() == ref.keys() and all(torch.equal(start[k], ref[k]) for k in ref)
    assert (res["method"], res["delta_reading"], res["n_deltas"], res["adda"]) == ("finetune_delta", "joint", 4, True)
    assert res["adda_info"]["target_split"] == "train" and 0 <= res["target_acc"] <= 100
    assert res["vanilla"]["target_acc"] is not None  # the ADDA-adapted vanilla model, scored beside it
    assert len(list((tmp_path / "own" / "zsda" / "adda").glob("*.safetensors"))) == 2  # vanilla's and ∆'s
    with pytest.raises(ConfigError, match="finetune_delta"):
        run(make_cfg(*PAIR, *QUIET, *TINY_ADDA, "scenario.delta=joint", f"base.cache_dir={tmp_path / 'own2'}",
                     fast=False))
    with pytest.raises(ConfigError, match="scenario.delta"):
        run(make_cfg(*PAIR, *QUIET, "scenario.delta=sideways", fast=False))


def _result(root: Path, name: str, **res) -> None:
    d = root / name
    d.mkdir(parents=True)
    base = {"method": "delta", "backbone": "resnet18", "scenario": "zsda", "n_deltas": 4, "experiment": "t6",
            "dataset": "mnist_pack", "target": "usps_pack", "metric": "target_acc", "trainable_params": {}}
    (d / "results.json").write_text(json.dumps(base | res))


def test_report_and_claims_have_table6_shape(tmp_path):
    """Eight rows in the paper's order plus Target only last, from 4 ∆ runs and a target-only run
    per seed; the ADDA claim pairs ADDA + ∆(4) with the ADDA model of the same run."""
    from deltapatch.reporting.claims import claim_zsda
    from deltapatch.reporting.runs import load_runs
    from deltapatch.reporting.tables import build_report

    for seed in (0, 1, 2):
        for i, (adda, weight) in enumerate(((False, 0.0), (False, 0.1), (True, 0.0), (True, 0.1))):
            start = 50.0 + 10 * i + seed
            _result(tmp_path, f"{seed}_{i}", seed=seed, adda=adda, uniform_prior={"weight": weight, "t": 2.0},
                    target_acc=start + 1, tasks={"patch": start + 1}, vanilla={"target_acc": start, "source_acc": 99})
        _result(tmp_path, f"{seed}_t", seed=seed, method="target_only", n_deltas=None, target_acc=98.0,
                tasks={"patch": 98.0}, adda=False, uniform_prior={"weight": 0.0, "t": 2.0})
    table = build_report(load_runs(tmp_path), per_task=False).tables[0]
    assert list(table.labels["Method"]) == [
        "Vanilla", "Vanilla + ∆-Networks (4)", "Vanilla + Uniform prior",
        "Vanilla + Uniform prior + ∆-Networks (4)", "ADDA", "ADDA + ∆-Networks (4)", "ADDA + Uniform prior", "ADDA + Uniform prior + ∆-Networks (4)",
        "Target only"]
    assert table.cell("mnist_pack→usps_pack", Method="ADDA") == {"mean": 71.0, "std": 1.0, "n": 3}
    assert table.cell("mnist_pack→usps_pack", Method="Target only")["mean"] == 98.0
    verdicts = {v.claim: v for v in claim_zsda(load_runs(tmp_path, derived=False))}
    adda = verdicts["zsda: ADDA + ∆(4) ≥ ADDA"]
    assert adda.verdict == "PASS" and adda.numbers["n_pairs"] == 3
    assert verdicts["zsda: +∆(4) ≥ uniform prior alone"].verdict == "FAIL"  # 51..53 vs 60..62
