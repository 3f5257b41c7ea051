"""Mean skip weights λ of a ∆-Network over a data set (the paper's Figures 3–6).

:func:`mean_lambdas` works on a live :class:`~deltapatch.delta.DeltaNetwork`; the runner can call
it right after training a task and keep the result in results.json. :func:`lambdas_from_run`
rebuilds the network of a finished run from its folder (saved Hydra config, cached or hub base
model, patch files) for runs that did not keep them.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..allowlist import check_targets
from ..errors import ReportError
from ..training.evaluation import mean_lambdas


def lambdas_from_run(run_dir: str | Path, device: str = "cpu", max_batches: int | None = None,
                     allow_base_training: bool = False) -> dict[str, dict[int, list[float]]]:
    """Mean λ per task of a finished ∆ run, on each task's test split.

    Needs the run's ``.hydra/config.yaml`` (Hydra writes it; a run started from Python can save its
    config there), its ``patches/`` and the base model it was patched on: the cache entry for
    ``base=train`` (never retrained unless ``allow_base_training``), hub weights for
    ``base=pretrained``. Paths in the config are resolved from the current directory, as in the run.
    A config naming a ``_target_`` outside :mod:`deltapatch.allowlist` is refused before anything
    is built (:class:`~deltapatch.errors.UnsafeTargetError`).
    """
    from omegaconf import OmegaConf

    from ..delta import DeltaNetwork
    from ..patch import load_patch, read_patch_metadata
    from ..scenarios.common import build_tasks
    from ..training.base_model import base_cache_key, obtain_base

    run_dir = Path(run_dir)
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.exists():
        raise ReportError(f"{run_dir}: no .hydra/config.yaml to rebuild the run from")
    cfg = OmegaConf.load(cfg_path)
    # the folder may come from anyone: instantiate nothing outside the allow-list
    check_targets(cfg, str(cfg_path))
    cfg.paths.output_dir = str(run_dir)  # the saved value refers to Hydra's runtime
    results = json.loads((run_dir / "results.json").read_text())
    if cfg.base.source == "train" and not allow_base_training:
        cached = Path(cfg.base.cache_dir) / f"{cfg.backbone.name}-{base_cache_key(cfg)}.safetensors"
        if not cached.exists():
            raise ReportError(f"{run_dir}: its base model is not in the cache ({cached}); run from the "
                              f"folder the run was started in, or pass allow_base_training")
    if cfg.base.source == "scratch":
        raise ReportError(f"{run_dir}: a from-scratch base is trained with the patch; λ are not rebuildable")
    base = obtain_base(cfg)
    tasks = build_tasks(cfg)
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


__all__ = ["ReportError", "lambdas_from_run", "mean_lambdas"]  # mean_lambdas re-exported for plots
