"""Mean skip weights λ of a ∆-Network over a data set (the paper's Figures 3–6).

:func:`mean_lambdas` works on a live :class:`~deltapatch.delta.DeltaNetwork`; the runner can call
it right after training a task and keep the result in results.json. :func:`lambdas_from_run`
rebuilds the network of a finished run from its folder (saved Hydra config, cached or hub base
model, patch files) for runs that did not keep them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch

from ..errors import DeltaPatchError


class ReportError(DeltaPatchError):
    """A finished run cannot be turned into what was asked (missing config, base or patch)."""


@torch.no_grad()
def mean_lambdas(net, loader: Iterable, task: str, device: torch.device | str = "cpu",
                 max_batches: int | None = None) -> dict[int, list[float]]:
    """``{stage_index: [mean λ per skip]}`` of ``task`` over ``loader`` (λ column order of
    :func:`deltapatch.delta.stage.skip_pairs`: j ascending, then i)."""
    was_training = net.training
    net.eval()  # λ at inference: random_lambda's gate gives 0.5, the others are deterministic
    sums: dict[int, torch.Tensor] = {}
    count = 0
    try:
        for b, batch in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            record = net.lambdas(x.to(device), task)
            for stage, lam in record.items():
                total = lam.detach().float().sum(0).cpu()
                sums[int(stage)] = sums[int(stage)] + total if int(stage) in sums else total
            count += x.shape[0]
    finally:
        net.train(was_training)
    if count == 0:
        raise ReportError(f"no samples to average λ of task '{task}' over")
    return {stage: (s / count).tolist() for stage, s in sorted(sums.items())}


def lambdas_from_run(run_dir: str | Path, device: str = "cpu", max_batches: int | None = None,
                     allow_base_training: bool = False) -> dict[str, dict[int, list[float]]]:
    """Mean λ per task of a finished ∆ run, on each task's test split.

    Needs the run's ``.hydra/config.yaml`` (Hydra writes it; a run started from Python can save its
    config there), its ``patches/`` and the base model it was patched on: the cache entry for
    ``base=train`` (never retrained unless ``allow_base_training``), hub weights for
    ``base=pretrained``. Paths in the config are resolved from the current directory, as in the run.
    """
    from omegaconf import OmegaConf

    from ..delta import DeltaNetwork
    from ..experiment import build_tasks
    from ..patch import load_patch, read_patch_metadata
    from ..training.base_model import base_cache_key, obtain_base

    run_dir = Path(run_dir)
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.exists():
        raise ReportError(f"{run_dir}: no .hydra/config.yaml to rebuild the run from")
    cfg = OmegaConf.load(cfg_path)
    cfg.paths.output_dir = str(run_dir)  # the saved value refers to Hydra's runtime
    results = json.loads((run_dir / "results.json").read_text())
    if cfg.base.source == "train" and not allow_base_training:
        cached = Path(cfg.base.cache_dir) / f"{cfg.backbone.name}-{base_cache_key(cfg)}.safetensors"
        if not cached.exists():
            raise ReportError(f"{run_dir}: its base model is not in the cache ({cached}); run from the "
                              f"folder the run was started in, or pass allow_base_training")
    if cfg.base.source == "scratch":
        raise ReportError(f"{run_dir}: a from-scratch base is trained with the patch; λ are not rebuildable")
    base = obtain_base(cfg, trainer_kwargs={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False})
    tasks = build_tasks(cfg)
    if cfg.scenario.name == "joint":
        from ..data.joint import JointDataModule

        tasks = {str(cfg.scenario.get("joint_name", "joint")): JointDataModule(tasks)}
    net = DeltaNetwork(base.model).to(device)
    out: dict[str, dict[int, list[float]]] = {}
    for name, dm in tasks.items():
        path = run_dir / "patches" / f"{name}.patch.safetensors"
        if not path.exists():
            recorded = (results.get("patch_files") or {}).get(name, {}).get("path")
            path = Path(recorded) if recorded else path
        if not path.exists():
            continue
        meta = read_patch_metadata(path)
        if "spec" not in meta:
            continue
        load_patch(net, path, task=name)
        net.to(device)
        dm.setup()
        out[name] = mean_lambdas(net, dm.test_dataloader(), name, device, max_batches)
    if not out:
        raise ReportError(f"{run_dir}: no ∆ patch files to compute λ from (method {results.get('method')})")
    return out


__all__ = ["ReportError", "lambdas_from_run", "mean_lambdas"]
