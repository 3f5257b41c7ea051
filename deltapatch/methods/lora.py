"""``lora``: LoRA (Hu et al. 2021) on the backbone's convolutions through Hugging Face ``peft``,
per task, base untouched — a modern parameter-efficient baseline the paper does not have.

peft injects LoRA by replacing the target ``nn.Conv2d`` modules inside the model it is given,
which would change the base model's structure and state_dict keys. So each task gets a
*structural* copy of the base: new module objects that share every parameter and buffer tensor
with the base (``copy.deepcopy`` with a memo mapping each tensor to itself), and peft rewrites
that copy. The shared tensors are frozen, and the copy stays in eval mode whatever ``train()`` is
called with, so the base's BN statistics never move (peft itself would let them drift, and it does
not save them). peft's LoRA ``Conv2d``: ``A`` = conv(C_in → r, the layer's kernel and stride),
``B`` = 1×1 conv(r → C_out, zero-initialised), output ``W·x + (α/r)·B(A(x))``.

Needs the optional dependency: ``pip install 'deltapatch[lora]'`` (peft).
"""
from __future__ import annotations

import copy
import itertools
import re

import torch
from torch import nn

from ..errors import ConfigError
from .base import Method, freeze, register_method


def _import_peft():
    try:
        import peft
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("method=lora needs Hugging Face peft: pip install 'deltapatch[lora]'") from e
    return peft


def shared_copy(model: nn.Module) -> nn.Module:
    """New module objects over the *same* parameter and buffer tensors as ``model``."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


@register_method
class LoRAMethod(Method):
    """LoRA on every ungrouped ``nn.Conv2d`` of the backbone (or the modules named in ``target_modules``;
    the base head is never a target) and a new head, per task. The head takes the place of the
    classifier in the task's copy, so the task's logits are the copy's forward.

    Trainable per task: Σ over targeted convs of ``r·(C_in·k_h·k_w + C_out/groups)`` plus the head.
    """

    name = "lora"
    keeps_base = True

    def __init__(self, base: nn.Module, r: int = 8, lora_alpha: float = 16, lora_dropout: float = 0.0,
                 target_modules: list[str] | None = None):
        super().__init__(freeze(base))
        self.peft = _import_peft()
        self.r, self.lora_alpha, self.lora_dropout = int(r), lora_alpha, float(lora_dropout)
        # peft's LoRA Conv2d has no grouped form (ConvNeXt's depthwise 7x7 convs): dense convs only
        convs = [n for n, m in self.base.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
        self.target_modules = list(target_modules) if target_modules is not None else convs
        missing = sorted(set(self.target_modules) - set(convs))
        if missing:
            raise ConfigError(f"lora target_modules {missing[:5]} are not ungrouped Conv2d modules of the backbone "
                              f"(peft's LoRA cannot wrap grouped or depthwise convolutions)")
        if not self.target_modules:
            raise ConfigError(f"{type(self.base).__name__} has no Conv2d to put LoRA on")
        head = self.adapter.classifier()
        self.head_name = next(n for n, m in self.base.named_modules() if m is head)
        self.nets = nn.ModuleDict()  # task -> peft-rewritten structural copy of the base
        self.heads = nn.ModuleDict()

    def add_task(self, name: str, num_classes: int, class_names: list[str] | None = None) -> None:
        if name in self.nets:
            raise ConfigError(f"task name '{name}' is already taken (existing: {list(self.nets)})")
        # a regex (peft full-matches it against module names): a list would also match by suffix,
        # so "conv1" (the stem) would catch every "layerN.M.conv1"
        pattern = "|".join(re.escape(n) for n in self.target_modules)
        config = self.peft.LoraConfig(r=self.r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                                      target_modules=f"(?:{pattern})", bias="none")
        net = self.peft.inject_adapter_in_model(config, shared_copy(self.base))
        ref = next(self.base.parameters())
        head = nn.Linear(self.adapter.num_features, num_classes).to(ref.device, ref.dtype)
        # the copy's own classifier becomes the task's head, so the copy's forward is the task's
        # (the backbone adapter cannot read peft-wrapped convs: they hide in_channels)
        parent, _, attr = self.head_name.rpartition(".")
        setattr(net.get_submodule(parent), attr, head)
        net.to(ref.device)
        self.nets[name] = net
        self.heads[name] = head
        self.task_classes[name] = class_names
        self.train(self.training)

    def forward(self, x: torch.Tensor, task: str | None = None) -> torch.Tensor:
        if task is None:
            return self.base(x)
        return self.nets[task](x)

    def head(self, task: str) -> nn.Linear:
        return self.heads[task]

    def lora_parameters(self, task: str) -> list[nn.Parameter]:
        return [p for n, p in self.nets[task].named_parameters() if "lora_" in n]

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        return self.lora_parameters(task) + list(self.heads[task].parameters())

    def train(self, mode: bool = True) -> "LoRAMethod":
        super().train(mode)
        self.base.eval()
        for net in self.nets.values():
            net.eval()  # shared BN buffers: eval mode or the base's statistics drift
            for n, m in net.named_modules():
                if isinstance(m, nn.Dropout) and "lora_dropout" in n:
                    m.train(mode)  # LoRA's own dropout is the only thing that trains
        return self
