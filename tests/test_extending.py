"""docs/architecture.md's promise, checked: a new method is one module plus one YAML, a new
dataset is one module plus one YAML, and nothing in the package changes.

The module and the YAMLs are written into a temporary folder (the YAMLs reach Hydra through
``hydra.searchpath``), then the default experiment runs with them.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from hydra import compose, initialize_config_dir

from deltapatch.scenarios import run

from helpers import CONF, FAST

TOY_METHOD = '''
"""A toy method: a frozen backbone and a two-layer MLP head per task."""
import torch
from torch import nn

from deltapatch.methods.base import Method, freeze, register_method


@register_method
class ToyMLPMethod(Method):
    name = "toy_mlp"

    def __init__(self, base, hidden=16):
        super().__init__(freeze(base))
        self.hidden = hidden
        self.heads = nn.ModuleDict()

    def add_task(self, name, num_classes, class_names=None):
        self.heads[name] = nn.Sequential(nn.Linear(self.adapter.num_features, self.hidden), nn.ReLU(),
                                         nn.Linear(self.hidden, num_classes))
        self.task_classes[name] = class_names

    def forward(self, x, task=None):
        if task is None:
            return self.base(x)
        with torch.no_grad():
            feats = self.adapter.pre_logits(self.adapter.forward_features(x))
        return self.heads[task](feats)

    def head(self, task):
        return self.heads[task][-1]

    def trainable_parameters(self, task):
        return list(self.heads[task].parameters())

    def train(self, mode=True):
        super().train(mode)
        self.base.eval()
        return self
'''

TOY_DATASET = '''
"""A toy dataset: 4 classes of images whose colour channel says the class."""
import numpy as np

from deltapatch.data.base import ClassificationDataModule


class ColourDataModule(ClassificationDataModule):
    name = "colours"

    def load_split(self, split):
        rng = np.random.default_rng({"train": 0, "test": 1}[split])
        labels = [i % 4 for i in range(96 if split == "train" else 40)]
        images = []
        for y in labels:
            img = rng.integers(0, 60, size=(8, 8, 3)).astype(np.uint8)
            img[..., y % 3] += 150 if y < 3 else 0
            images.append(img)
        self.all_class_names = ["red", "green", "blue", "dark"]
        return images, labels
'''


def write_extension(root: Path) -> Path:
    """The two modules on ``root`` (to be put on sys.path) and their YAMLs under ``root/conf``."""
    (root / "toy_method.py").write_text(TOY_METHOD)
    (root / "toy_dataset.py").write_text(TOY_DATASET)
    conf = root / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "dataset").mkdir(parents=True)
    (conf / "method" / "toy_mlp.yaml").write_text(textwrap.dedent("""\
        name: toy_mlp
        module:
          _target_: toy_method.ToyMLPMethod
          hidden: 16
        optimizer:
          _target_: torch.optim.AdamW
          _partial_: true
          lr: 1.0e-2
        scheduler: null
        """))
    (conf / "dataset" / "colours.yaml").write_text(textwrap.dedent("""\
        _target_: toy_dataset.ColourDataModule
        name: colours
        image_size: 16
        batch_size: 16
        num_workers: 0
        seed: ${seed}
        classes: null
        mean: ${backbone.mean}
        std: ${backbone.std}
        """))
    return conf


def test_a_method_and_a_dataset_from_outside_the_package(tmp_path, monkeypatch, base_cache):
    conf = write_extension(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = [f"hydra.searchpath=[file://{conf}]", "method=toy_mlp", "dataset=colours",
                 "base.classes=[0,1]", "scenario.tasks.patch.classes=[2,3]", "logger=csv",
                 f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={base_cache}", *FAST]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    res = run(cfg)
    assert (res["method"], res["dataset"], res["n_deltas"]) == ("toy_mlp", "colours", None)
    assert res["class_names"]["patch"] == ["blue", "dark"]
    assert res["trainable_params"]["patch"] == 512 * 16 + 16 + 16 * 2 + 2  # the MLP head only
    assert res["base_acc_before"] == res["base_acc_after"] and res["base_model_unchanged"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["method"] == "toy_mlp" and set(saved["tasks"]) == {"patch"}
    from deltapatch.methods import available_methods

    assert "toy_mlp" in available_methods()  # registered by its decorator, no edit in deltapatch
