"""PAINT (Ilharco et al. 2022, "Patching open-vocabulary models by interpolating weights") as
DESIGN.md applies it to CNNs.

Fine-tune the whole backbone and a new head on the task, then for α in {0, 0.1, …, 1} set the
backbone to ``θ_α = (1−α)·θ_0 + α·θ_ft`` — every state_dict entry of the backbone, BN buffers
included, as PAINT's ``src/patch.py`` does for its encoder; the base model's own head is not part
of it — and score the base task (base head) and every task so far (each with its head) on the
validation split. α is chosen there (harmonic mean for single/joint, mean for sequential), the
model is left at ``θ_α``, and the whole sweep goes to results.json (the paper's Table 11).
``θ_0`` is taken in :meth:`add_task`, before the first step, so in a sequential run the next task
starts from (and interpolates back towards) the previous task's chosen ``θ_α``.

Optimiser, from PAINT's ``src/args.py``/``src/finetune.py``: AdamW with weight decay 0.1, warm-up
then cosine to 0 (``warmup_cosine``), gradient-norm clipping at 1.0 — done by
:class:`ClippedAdamW` so that the recipe lives in ``conf/method/paint.yaml`` and not in the
trainer config that every method shares.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..scores import aggregate_fn, aggregate_name
from .base import Scorer, register_method
from .heads import FinetuneMethod

SELECTIONS = ("hmean", "mean", "auto")
DEFAULT_ALPHAS = tuple(i / 10 for i in range(11))


class ClippedAdamW(torch.optim.AdamW):
    """AdamW that clips the global gradient norm of its parameters to ``max_grad_norm`` before
    every step (PAINT's ``clip_grad_norm_(params, 1.0)``).

    Lightning hands ``step`` a closure that runs forward and backward; it is called first so the
    clipping sees this step's gradients.
    """

    def __init__(self, params, max_grad_norm: float = 1.0, **kwargs):
        super().__init__(params, **kwargs)
        self.max_grad_norm = float(max_grad_norm)

    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            torch.nn.utils.clip_grad_norm_(grads, self.max_grad_norm)
        super().step()
        return loss


@register_method
class PaintMethod(FinetuneMethod):
    """``paint``: fine-tuning plus the α sweep in :meth:`end_task`.

    ``selection``: ``hmean``, ``mean``, or ``auto`` (mean when ``scenario`` is ``sequential``,
    harmonic mean otherwise; the YAML passes ``${scenario.name}``). Ties go to the smaller α,
    the one closer to the model the task started from. ``test_sweep=false`` scores the test
    split at the chosen α only (the runner does that anyway), halving the sweep's cost.
    """

    name = "paint"
    keeps_base = False

    def __init__(self, base: nn.Module, alphas: list[float] | None = None, selection: str = "auto",
                 scenario: str = "single", test_sweep: bool = True):
        super().__init__(base)
        if selection not in SELECTIONS:
            raise ConfigError(f"paint selection must be one of {SELECTIONS}, got '{selection}'")
        self.alphas = [float(a) for a in (alphas if alphas is not None else DEFAULT_ALPHAS)]
        if not self.alphas or any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ConfigError(f"paint alphas must be in [0, 1], got {self.alphas}")
        self.test_sweep = test_sweep
        self.selection = aggregate_name(scenario) if selection == "auto" else selection
        head = self.adapter.classifier()
        prefix = next(n for n, m in self.base.named_modules() if m is head)
        # the interpolated state: every backbone entry, the base model's head left out
        self.backbone_keys = [k for k in self.base.state_dict() if not k.startswith(prefix + ".")]
        self.theta_0: dict[str, torch.Tensor] | None = None
        self.theta_ft: dict[str, torch.Tensor] | None = None

    # -- weights -------------------------------------------------------------
    def backbone_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of the backbone's parameters and buffers."""
        sd = self.base.state_dict()
        return {k: sd[k].detach().clone() for k in self.backbone_keys}

    def add_task(self, name: str, num_classes: int, class_names: list[str] | None = None) -> None:
        super().add_task(name, num_classes, class_names)
        self.theta_0 = self.backbone_state()  # before the first step (PAINT saves zeroshot.pt first)
        self.theta_ft = None

    @torch.no_grad()
    def interpolate(self, alpha: float) -> None:
        """Set the backbone to ``(1−α)·θ_0 + α·θ_ft`` in place (parameters keep their identity).
        ``θ_ft`` is the backbone as it is at the first call after training.

        α = 0 and α = 1 copy ``θ_0``/``θ_ft`` exactly rather than computing ``1·a + 0·b``, so the
        end points are bit-for-bit the models they name. Integer buffers (BN's
        ``num_batches_tracked``) are rounded.
        """
        if self.theta_0 is None:
            raise RuntimeError("interpolate() needs θ_0: call add_task() first")
        theta_ft = self.theta_ft if self.theta_ft is not None else self.backbone_state()
        self.theta_ft = theta_ft
        sd = self.base.state_dict()
        for k in self.backbone_keys:
            # θ_0 is taken where the model was at add_task() (CPU, before Lightning moved it) and θ_ft
            # where it is after training: interpolate on the device the backbone is on now
            t0, t1 = self.theta_0[k].to(sd[k].device), theta_ft[k].to(sd[k].device)
            if alpha == 0.0:
                value = t0
            elif alpha == 1.0:
                value = t1
            elif t0.is_floating_point():
                value = torch.lerp(t0, t1, alpha)
            else:
                value = torch.round((1 - alpha) * t0.double() + alpha * t1.double()).to(t0.dtype)
            sd[k].copy_(value)

    # -- α sweep -------------------------------------------------------------
    def _aggregate(self, accs: dict[str, float | None]) -> float | None:
        values = [v for v in accs.values() if v is not None]
        return aggregate_fn(self.selection)(values) if values else None

    def end_task(self, task: str, scorer: Scorer) -> dict[str, Any]:
        """Sweep α, keep the model at the α with the best validation aggregate, return the table.

        Each split's sweep is one evaluation loop (every α, every scored key); the base task must be
        among the keys (the runner refuses PAINT without base data), so α never trades the base
        away unseen.
        """
        self.theta_ft = self.backbone_state()
        variants = [partial(self.interpolate, alpha) for alpha in self.alphas]
        sweeps = {"val": scorer.sweep("val", variants)}
        if self.test_sweep:
            sweeps["test"] = scorer.sweep("test", variants)
        sweep = []
        for i, alpha in enumerate(self.alphas):
            row: dict[str, Any] = {"alpha": alpha}
            for split, results in sweeps.items():
                accs = dict(results[i])
                accs[self.selection] = self._aggregate(accs)
                row[split] = accs
            sweep.append(row)
        scored = [(r["val"][self.selection], r["alpha"]) for r in sweep if r["val"][self.selection] is not None]
        # best aggregate; among equals the smallest α
        best = min(scored, key=lambda s: (-s[0], s[1]))[1] if scored else 1.0
        self.interpolate(best)
        if not self.test_sweep:
            row = next(r for r in sweep if r["alpha"] == best)
            row["test"] = dict(scorer.score("test"))
            row["test"][self.selection] = self._aggregate(row["test"])
        self.theta_0 = self.theta_ft = None  # the next task snapshots its own θ_0
        return {"alpha": best, "selection": self.selection, "alpha_sweep": sweep}
