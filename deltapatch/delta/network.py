"""∆-Networks: one frozen base model, any number of tasks, each with its own ∆-modules and head."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..backbones.base import get_adapter
from ..errors import ConfigError
from .stage import PatchedStage

BASE = "base"  # the name under which callers may ask for the untouched base model


@dataclass
class TaskSpec:
    """Everything needed to rebuild a task's modules (stored in patch files)."""

    num_classes: int
    n_deltas: int
    bn_placement: str = "out"
    gate: str = "delta"
    gate_kwargs: dict = field(default_factory=dict)
    class_names: list[str] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class TaskPatch(nn.Module):
    """One task's new weights: a :class:`PatchedStage` per patched stage and a linear head."""

    def __init__(self, stages: dict[int, PatchedStage], head: nn.Linear):
        super().__init__()
        self.stages = nn.ModuleDict({str(i): s for i, s in stages.items()})
        self.head = head

    @property
    def first_stage(self) -> int:
        return min(int(i) for i in self.stages)


class DeltaNetwork(nn.Module):
    """Wraps a base classifier; never copies or changes its tensors.

    ``net(x)`` (or ``task="base"``) is the base model itself; ``net(x, task=name)`` runs the
    patched path of a task; ``net(x, tasks=[...])`` runs several from one pass of the shared prefix.
    With ``freeze_base=True`` (the ∆-Patching setting) the base has ``requires_grad=False`` and
    stays in eval mode whatever ``train()`` is called with, so its BN statistics never move.
    """

    def __init__(
        self,
        base: nn.Module,
        n_deltas: int = 1,
        bn_placement: str = "out",
        gate: str = "delta",
        gate_kwargs: dict | None = None,
        freeze_base: bool = True,
    ):
        super().__init__()
        self.base = base
        self.adapter = get_adapter(base)
        self.stages = self.adapter.stages()
        self.n_stages = len(self.stages)
        self._check_n_deltas(n_deltas)
        self.defaults = dict(n_deltas=n_deltas, bn_placement=bn_placement, gate=gate, gate_kwargs=gate_kwargs or {})
        self.tasks = nn.ModuleDict()
        self.specs: dict[str, TaskSpec] = {}
        self.freeze_base = freeze_base
        if freeze_base:
            base.requires_grad_(False)
            base.eval()

    # ------------------------------------------------------------------ tasks
    @property
    def backbone_name(self) -> str:
        return getattr(self.base, "deltapatch_name", type(self.base).__name__)

    @property
    def n_deltas(self) -> int:
        return self.defaults["n_deltas"]

    def _check_n_deltas(self, n: int) -> None:
        if not 1 <= n <= self.n_stages:
            raise ConfigError(
                f"n_deltas={n} but {type(self.base).__name__} has {self.n_stages} stages; "
                f"choose n_deltas between 1 and {self.n_stages}"
            )

    def add_task(self, name: str, num_classes: int, class_names: list[str] | None = None, **overrides) -> TaskPatch:
        """Create ∆-modules (on the last ``n_deltas`` stages) and a new head for task ``name``.

        ``overrides`` may set ``n_deltas``, ``bn_placement``, ``gate`` or ``gate_kwargs`` for this task.
        """
        if name == BASE or name in self.tasks:
            raise ConfigError(f"task name '{name}' is already taken (existing: {[BASE, *self.tasks]})")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"task '{name}': {len(class_names)} class names for {num_classes} classes")
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise TypeError(f"add_task() got unknown options {sorted(unknown)}")
        spec = TaskSpec(num_classes=num_classes, class_names=class_names, **{**self.defaults, **overrides})
        self._check_n_deltas(spec.n_deltas)
        first = self.n_stages - spec.n_deltas
        stages = {
            i: PatchedStage(self.stages[i], spec.bn_placement, spec.gate, spec.gate_kwargs)
            for i in range(first, self.n_stages)
        }
        patch = TaskPatch(stages, nn.Linear(self.adapter.num_features, num_classes))
        ref = next(self.base.parameters())
        patch.to(device=ref.device, dtype=ref.dtype)
        patch.train(self.training)
        self.tasks[name] = patch
        self.specs[name] = spec
        return patch

    def remove_task(self, name: str) -> None:
        del self.tasks[name]
        del self.specs[name]

    def trainable_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters an optimizer gets for ``task``: its ∆-modules and head (plus the
        backbone when it is not frozen)."""
        params = list(self.tasks[task].parameters())
        if not self.freeze_base:
            params += [p for p in self.base.parameters()]
        return params

    def train(self, mode: bool = True) -> "DeltaNetwork":
        super().train(mode)
        if self.freeze_base:
            self.base.eval()  # Lightning calls train() every epoch: keep BN statistics fixed
        return self

    # ---------------------------------------------------------------- forward
    def _prefix_context(self):
        return torch.no_grad() if self.freeze_base else nullcontext()

    def _run_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.adapter.run_stage(self.stages[i], h)

    def _run_patched(self, task: str, start: int, h: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """From the input of stage ``start`` (base features) to the task's logits."""
        patch = self.tasks[task]
        for i in range(start, self.n_stages):
            ps = patch.stages[str(i)] if str(i) in patch.stages else None
            if ps is None:
                h = self._run_stage(i, h)
                continue
            rec = [] if record is not None else None
            h = ps.run(self.stages[i], h, rec)
            if record is not None:
                record[i] = rec[0]
        return patch.head(self.adapter.pre_logits(h))

    def _check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise KeyError(f"unknown task '{task}'; this network has: {[BASE, *self.tasks]}")

    def forward(self, x: torch.Tensor, task: str | None = None, tasks: list[str | None] | None = None):
        if tasks is not None:
            return self.forward_tasks(x, tasks)
        if task is None or task == BASE:
            return self.base(x)
        self._check_task(task)
        return self._forward_task(x, task)

    def _forward_task(self, x: torch.Tensor, task: str, record: dict | None = None) -> torch.Tensor:
        start = self.tasks[task].first_stage
        with self._prefix_context():
            h = self.adapter.stem(x)
            for i in range(start):
                h = self._run_stage(i, h)
        return self._run_patched(task, start, h, record)

    def forward_tasks(self, x: torch.Tensor, tasks: list[str | None]) -> dict[str, torch.Tensor]:
        """Logits for several tasks (``None``/``"base"`` for the base model) from one prefix pass.

        Base features at each stage boundary are computed once and shared: a task patched from
        stage s starts from the base features entering stage s.
        """
        names = [BASE if t is None else t for t in tasks]
        for t in names:
            if t != BASE:
                self._check_task(t)
        starts = {t: self.tasks[t].first_stage for t in names if t != BASE}
        last = self.n_stages if BASE in names else max(starts.values())
        feats: dict[int, torch.Tensor] = {}
        with self._prefix_context():
            h = self.adapter.stem(x)
            for i in range(last):
                feats[i] = h
                h = self._run_stage(i, h)
            feats[last] = h  # tasks patched from the last stage run start here
            out = {BASE: self.adapter.head(h)} if BASE in names else {}
        for t, s in starts.items():
            out[t] = self._run_patched(t, s, feats[s])
        return out

    @torch.no_grad()
    def lambdas(self, x: torch.Tensor, task: str) -> dict[int, torch.Tensor]:
        """Per-sample skip weights of ``task``: ``{stage_index: [batch, n_skips]}``."""
        self._check_task(task)
        record: dict[int, torch.Tensor] = {}
        self._forward_task(x, task, record)
        return record

    def base_features(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """Frozen-prefix features: the input of stage ``upto`` (for feature caching)."""
        with self._prefix_context():
            h = self.adapter.stem(x)
            for i in range(upto):
                h = self._run_stage(i, h)
        return h

    def forward_from(self, h: torch.Tensor, task: str) -> torch.Tensor:
        """Logits of ``task`` from cached :meth:`base_features` at its first patched stage."""
        self._check_task(task)
        return self._run_patched(task, self.tasks[task].first_stage, h)

    def skips_per_stage(self) -> list[int]:
        return [s.n_skips for s in self.stages]
