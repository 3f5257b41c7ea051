"""``python -m deltapatch.summary``: every method counted (derived configs included), --json,
∆ counts equal to DeltaNetwork's, and the feature-cache estimate equal to a real cache."""
from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, TensorDataset

from backbones.variants import VARIANTS
from deltapatch import DeltaNetwork, create_backbone
from deltapatch.cache import FeatureCache
import deltapatch.cli  # noqa: F401  (numeric group choices such as n_deltas=2)
from deltapatch.summary import compose_methods, main, summarize
from helpers import CONF


def run_summary(capsys, *overrides: str) -> dict:
    main(["--json", *overrides])
    return json.loads(capsys.readouterr().out)


def summary_of(*overrides: str, methods: bool = True) -> dict:
    ov = list(overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return summarize(compose("summary", overrides=ov), compose_methods(ov) if methods else None)


def test_every_method_counts_with_its_defaults_list(capsys):
    s = run_summary(capsys, "backbone=resnet18", "n_deltas=1", "image_size=32")
    methods = {p.stem for p in (CONF / "method").glob("*.yaml")}
    counts = s["trainable_params"]
    assert set(counts) == methods and s["not_applicable"] == {}
    assert all(isinstance(v, int) and v > 0 for v in counts.values())
    head = s["head_params"]
    assert head == 512 * 10 + 10
    assert counts["fc"] == head
    assert counts["delta"] == s["delta_params"] + head
    # derived configs: their own gate/BN settings over delta.yaml's (n_deltas=1: stage 3, 3 skips, 512 ch)
    assert counts["all_skips_nobn"] == head  # constant gate, no BN: nothing new but the head
    assert counts["all_skips"] == head + 2 * 512  # + the output BN
    assert counts["all_skips_learnable"] == head + 2 * 512 + 3  # + one weight per skip
    assert counts["random_lambda_nobn"] == head
    assert counts["bn_adapt_dua"] == head < counts["bn_adapt"]  # statistics only vs affine too


def test_delta_count_equals_delta_network():
    s = summary_of("backbone=timm", "backbone.model.name=resnet50d", "n_deltas=2", "image_size=32", methods=False)
    torch.manual_seed(0)
    net = DeltaNetwork(create_backbone("timm/resnet50d", num_classes=10), n_deltas=2)
    patch = net.add_task("t", 10)
    assert s["delta_params"] == sum(p.numel() for p in patch.stages.parameters())
    assert s["head_params"] == sum(p.numel() for p in patch.head.parameters())
    assert s["skips_per_stage"] == [6, 10, 21, 6]
    assert [st["patched"] for st in s["stages"]] == [False, False, True, True]


def test_feature_cache_estimate_matches_a_real_cache():
    n = 6
    s = summary_of("backbone=timm", "backbone.model.name=convnext_atto", "n_deltas=2", "image_size=48",
                   f"num_images={n}", methods=False)
    torch.manual_seed(0)
    net = DeltaNetwork(create_backbone("timm/convnext_atto", num_classes=10), n_deltas=2)
    net.add_task("t", 10)
    data = TensorDataset(torch.randn(n, 3, 48, 48), torch.zeros(n, dtype=torch.long))
    cache = FeatureCache.for_task(net, "t", DataLoader(data, batch_size=4))
    est = s["feature_cache"]
    assert est["stage"] == cache.stage == 2
    assert est["shape"] == list(cache.features.shape[1:])
    assert est["total_bytes"] == cache.features.to(torch.float16).nbytes
    assert est["bytes_per_image"] * n == est["total_bytes"]


def test_methods_that_refuse_a_backbone_say_why(capsys):
    s = run_summary(capsys, "backbone=timm", "backbone.model.name=convnext_atto", "image_size=32")
    assert s["trainable_params"]["delta"] == s["delta_params"] + s["head_params"]
    assert s["trainable_params"]["learnable_skip"] is None
    assert "ResNet" in s["not_applicable"]["learnable_skip"]


@pytest.mark.parametrize("name,small", VARIANTS, ids=[n for n, _ in VARIANTS])
def test_every_tested_variant(capsys, name, small):
    source, arch = name.split("/")
    s = run_summary(capsys, f"backbone={'timm' if source == 'timm' else 'torchvision'}", f"backbone.model.name={arch}",
                    f"backbone.model.small_input={str(small).lower()}", "n_deltas=4", "image_size=32", "methods=false")
    assert s["model"] == ("torchvision" if source == "tv" else "timm") + f"/{arch}" + ("_small_input" if small else "")
    assert len(s["skips_per_stage"]) == 4 and all(st["patched"] for st in s["stages"])
    assert s["delta_params"] == sum(st["delta_params"] for st in s["stages"]) > 0
    assert s["feature_cache"]["stage"] == 0  # ∆(4): the cache holds the stem's output
    assert s["feature_cache"]["shape"][-1] == (16 if small else 8)  # 32 px through a stride-2 or -4 stem


def test_bad_backbone_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["backbone=timm", "backbone.model.name=vit_tiny_patch16_224", "methods=false"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: backbone 'vit_tiny_patch16_224' is a ") and "\n" not in err
