"""Backbone names, configs and the adapter registry: any ResNet/ConvNeXt by class, data config
from the model's own pretrained config, the 32-px stem, and one-line refusals."""
from __future__ import annotations

import sys
import textwrap

import pytest
import timm
import timm.data
import torch
import torchvision
from torch import nn

import deltapatch.backbones as backbones
from deltapatch import ConfigError, DeltaNetwork, PatchError, base_fingerprint, create_backbone, load_patch, save_patch
from deltapatch.backbones import available_backbones, base, parse_name
from deltapatch.backbones.factory import load_state_dict_file

# conf/backbone/<file> -> (name results.json and cache keys use, library/arch it builds): the
# names runs were recorded under before the configs were derived from the model
HISTORICAL = {
    "resnet18": "torchvision/resnet18", "resnet34": "torchvision/resnet34", "resnet50": "torchvision/resnet50",
    "resnet101": "torchvision/resnet101", "resnext50_32x4d": "torchvision/resnext50_32x4d",
    "wide_resnet50_2": "torchvision/wide_resnet50_2", "convnext_tiny": "timm/convnext_tiny",
    "convnext_small": "timm/convnext_small", "convnext_base": "timm/convnext_base",
    "convnext_large": "timm/convnext_large", "timm_resnet18": "timm/resnet18",
}


@pytest.mark.parametrize("yaml", sorted(HISTORICAL))
def test_existing_configs_keep_their_names(make_cfg, yaml):
    cfg = make_cfg(f"backbone={yaml}")
    assert cfg.backbone.name == yaml
    source, arch, _ = parse_name(cfg.backbone.model.name, cfg.backbone.model.get("source"))
    assert f"{source}/{arch}" == HISTORICAL[yaml]


@pytest.mark.parametrize("overrides,name", [
    (["backbone=timm", "backbone.model.name=convnext_atto"], "convnext_atto"),
    (["backbone=timm", "backbone.model.name=resnet50d"], "resnet50d"),
    (["backbone=timm", "backbone.model.name=resnet18"], "timm_resnet18"),  # torchvision owns the bare name
    (["backbone=timm", "backbone.model.name=timm/resnet50.a1_in1k"], "timm_resnet50.a1_in1k"),
    (["backbone=torchvision", "backbone.model.name=resnext101_64x4d"], "resnext101_64x4d"),
    (["backbone=resnet18", "backbone.model.small_input=true"], "resnet18_small_input"),
    (["backbone=resnet18", "backbone.model.name=timm/convnext_nano"], "convnext_nano"),  # name follows the model
    (["backbone=resnet18", "backbone.model.name=convnext_atto"], "convnext_atto"),  # torchvision has none: timm's
])
def test_generic_configs_derive_their_name(make_cfg, overrides, name):
    assert make_cfg(*overrides).backbone.name == name


def test_data_config_comes_from_the_model(make_cfg):
    # timm: the same numbers timm's own model-based resolver gives (resnet10t was trained at 176 px)
    cfg = make_cfg("backbone=timm", "backbone.model.name=resnet10t")
    want = timm.data.resolve_model_data_config(timm.create_model("resnet10t", pretrained=False))
    assert list(cfg.dataset.mean) == pytest.approx(want["mean"]) and list(cfg.dataset.std) == pytest.approx(want["std"])
    assert list(cfg.backbone.input_size) == list(want["input_size"]) == [3, 176, 176]
    assert cfg.backbone.interpolation == want["interpolation"]
    # torchvision: the weights enum's own transforms (bilinear, evaluated at 224 after a 232 resize)
    cfg = make_cfg("backbone=wide_resnet50_2")
    t = torchvision.models.Wide_ResNet50_2_Weights.DEFAULT.transforms()
    assert list(cfg.dataset.mean) == pytest.approx(t.mean) and list(cfg.dataset.std) == pytest.approx(t.std)
    assert list(cfg.backbone.input_size) == [3, *t.crop_size, *t.crop_size]
    assert cfg.backbone.interpolation == "bilinear"
    # a command-line value wins, and reaches the datasets
    cfg = make_cfg("backbone=convnext_tiny", "backbone.mean=[0.5,0.5,0.5]")
    assert list(cfg.dataset.mean) == [0.5, 0.5, 0.5]


def test_default_library_of_unprefixed_names():
    assert parse_name("resnet18")[0] == "torchvision"  # the paper's official PyTorch ResNets
    assert parse_name("convnext_tiny")[0] == "timm"  # torchvision's ConvNeXt class has no adapter
    assert parse_name("resnet50d")[0] == "timm"
    assert parse_name("resnet18", "timm")[0] == "timm"  # a config's source is tried first...
    assert parse_name("convnext_atto", "torchvision")[0] == "timm"  # ...and the other library otherwise
    assert parse_name("tv/resnet18") == ("torchvision", "resnet18", None)
    assert parse_name("resnet50.a1_in1k") == ("timm", "resnet50", "a1_in1k")


def test_available_backbones_by_class():
    names = set(available_backbones())
    for n in ("timm/resnet10t", "timm/resnet50d", "timm/seresnext26d_32x4d", "timm/res2net50d", "timm/convnext_atto",
              "timm/convnext_xxlarge", "timm/convnextv2_atto", "torchvision/resnet18", "torchvision/wide_resnet101_2"):
        assert n in names, n
    assert "timm/resnext26ts" not in names and "torchvision/convnext_tiny" not in names
    # the listing agrees with the classes the models really have (a sample, built without memory)
    supported = tuple(t for c in base.registered_adapters() for t in c.model_types)
    for n in sorted(names)[::12]:
        source, arch, _ = parse_name(n)
        with torch.device("meta"):
            m = timm.create_model(arch) if source == "timm" else torchvision.models.get_model(arch)
        assert isinstance(m, supported), n


@pytest.mark.parametrize("name,needle", [
    ("resnext26ts", "timm.models.byobnet.ByobNet"),  # a timm "ResNeXt" that is not a ResNet class
    ("vit_tiny_patch16_224", "VisionTransformer"),
    ("torchvision/convnext_tiny", "use timm/convnext_tiny"),
    ("resnet19", "did you mean resnet18"),
])
def test_other_models_get_one_line(name, needle):
    with pytest.raises(ConfigError) as e:
        create_backbone(name)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    if "unknown" not in msg:
        for cls in ("timm.models.resnet.ResNet", "timm.models.convnext.ConvNeXt", "torchvision.models.resnet.ResNet"):
            assert cls in msg


def test_unadapted_module_is_a_type_error_too():
    with pytest.raises(TypeError, match="no backbone adapter for torch.nn.modules.linear.Linear"):
        DeltaNetwork(nn.Linear(3, 3))


def test_small_input_refuses_hub_weights():
    with pytest.raises(ConfigError, match="small_input=true replaces the stem of torchvision/resnet18"):
        create_backbone("resnet18", pretrained=True, small_input=True)


def test_small_input_checkpoints_and_patches_stay_with_their_stem(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    small = create_backbone("timm/resnet10t", num_classes=4, small_input=True).eval()
    f = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, f)
    again = create_backbone("timm/resnet10t", num_classes=4, small_input=True, pretrained=str(f))
    assert base_fingerprint(again) == base_fingerprint(small)
    # a deep stem only changes a stride: the same weights load into the usual stem, so the
    # fingerprint cannot tell them apart, and the patch metadata's backbone name must
    usual = create_backbone("timm/resnet10t", num_classes=4, pretrained=str(f))
    assert base_fingerprint(usual) == base_fingerprint(small)
    net = DeltaNetwork(small)
    net.add_task("a", 2)
    path = save_patch(net, "a", tmp_path / "a.safetensors")
    with pytest.raises(PatchError, match="made for backbone 'timm/resnet10t_small_input'"):
        load_patch(DeltaNetwork(usual), path)
    # a plain stem changes shape: the other stem's checkpoint is refused in one line
    torch.manual_seed(0)
    tv_small = create_backbone("resnet18", num_classes=4, small_input=True)
    assert tuple(tv_small.conv1.weight.shape[-2:]) == (3, 3) and tv_small.conv1.stride == (1, 1)
    g = tmp_path / "tv_small.safetensors"
    save_file({k: v.contiguous() for k, v in tv_small.state_dict().items()}, g)
    with pytest.raises(ConfigError, match="does not fit this backbone: size mismatch for conv1.weight"):
        load_state_dict_file(create_backbone("resnet18", num_classes=4), g)


def test_a_new_family_is_one_module(tmp_path, monkeypatch):
    """Dropping an adapter module into the package registers it: no import line, no name list."""
    (tmp_path / "toy_family.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn
        from deltapatch.backbones.base import BackboneAdapter, Stage, register_adapter

        class ToyNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Conv2d(3, 4, 3, padding=1)
                self.blocks = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(3))
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                h = self.stem(x)
                for b in self.blocks:
                    h = b(h)
                return self.fc(h.mean((2, 3)))

        @register_adapter
        class ToyAdapter(BackboneAdapter):
            model_types = (ToyNet,)
            family = "toy"

            def stem(self, x):
                return self.model.stem(x)

            def stages(self):
                return [Stage(pre=None, blocks=list(self.model.blocks), shortcut=None, in_channels=4, out_channels=4)]

            def pre_logits(self, x):
                return x.mean((2, 3))

            def classifier(self):
                return self.model.fc
    '''))
    monkeypatch.setattr(base, "_ADAPTERS", list(base._ADAPTERS))  # restored after the test
    monkeypatch.setattr(backbones, "__path__", [*backbones.__path__, str(tmp_path)])
    try:
        backbones.import_adapter_modules()  # what importing the package runs
        toy = sys.modules["deltapatch.backbones.toy_family"]
        assert "toy (" in base.supported_families()
        net = DeltaNetwork(toy.ToyNet(), n_deltas=1)
        net.add_task("a", 3)
        assert net.lambdas(torch.zeros(2, 3, 8, 8), "a")[0].shape == (2, 6)
    finally:
        sys.modules.pop("deltapatch.backbones.toy_family", None)
