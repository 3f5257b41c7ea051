"""The backbone variants the tests build (tests/backbones/test_variants.py, tests/test_summary.py)."""

# (name, small_input stem): deep stems, avg-pool shortcuts, SE/SK/split-attention blocks, GRN,
# conv-MLP, overlapping and patchify stems, torchvision's ResNet and ResNeXt
VARIANTS = [
    ("timm/resnet10t", True),  # tiered deep stem, one block per stage, avg-pool shortcut
    ("timm/resnet18", False),
    ("timm/resnet26", True),  # deep stem, bottlenecks
    ("timm/resnet50d", True),  # deep stem + avg-pool downsample in the first block's shortcut
    ("timm/seresnet18", False),  # SE inside the block
    ("timm/seresnext26d_32x4d", True),
    ("timm/skresnet18", False),  # selective-kernel blocks: no plain conv1/conv2 to read widths from
    ("timm/resnest14d", True),  # split-attention blocks
    ("timm/convnext_atto", True),  # conv-MLP blocks, patchify stem, stage 0 downsample is Identity
    ("timm/convnext_atto_ols", False),  # overlapping 3x3 stem
    ("timm/convnextv2_atto", True),  # GRN
    ("tv/resnet18", True),
    ("tv/resnext50_32x4d", False),  # grouped bottlenecks (wide_resnet50_2 is the same code, 3x the weights)
]
