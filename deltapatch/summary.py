"""``deltapatch-summary`` / ``python -m deltapatch.summary backbone=resnet50 n_deltas=4 [--json]``:
skips, ∆-module sizes, patch size, the feature cache a run would need, and the trainable parameters
of every method, for one backbone (any of ``conf/backbone`` or ``backbone=timm
backbone.model.name=<any>``). A Hydra app on ``conf/summary.yaml`` (Hydra's own flags work);
``--json`` is ``json=true``."""
from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from .cli import CONF_DIR, call_with_argv, guarded, hydra_app, user_error
from .delta import DeltaNetwork
from .patch import save_patch

CACHE_DTYPE = torch.float16  # what the feature cache estimate assumes on disk


def summarize(cfg: DictConfig, methods: dict[str, DictConfig] | None = None) -> dict:
    """The numbers ``deltapatch.summary`` prints, as a dict; ``methods`` (name -> composed method
    config, see :func:`compose_methods`) adds each method's trainable parameter count."""
    torch.manual_seed(cfg.seed)
    n = int(cfg.n_deltas)
    base = instantiate(cfg.backbone.model, num_classes=cfg.num_classes)
    net = DeltaNetwork(base, n_deltas=n)
    patch = net.add_task("task", cfg.num_classes)
    stages = []
    for i, st in enumerate(net.stages):
        ps = patch.stages[str(i)] if str(i) in patch.stages else None
        stages.append({"stage": i, "blocks": len(st.blocks), "skips": st.n_skips, "in_channels": st.in_channels,
                       "out_channels": st.out_channels, "patched": ps is not None,
                       "delta_params": sum(p.numel() for p in ps.parameters()) if ps is not None else 0})
    with tempfile.TemporaryDirectory() as tmp:
        patch_bytes = save_patch(net, "task", Path(tmp) / "p.safetensors").stat().st_size
    out = {
        "backbone": cfg.backbone.name,
        "model": net.backbone_name,
        "n_deltas": n,
        "skips_per_stage": net.skips_per_stage(),
        "delta_params": sum(s["delta_params"] for s in stages),
        "head_params": sum(p.numel() for p in patch.head.parameters()),
        "base_params": sum(p.numel() for p in base.parameters()),
        "patch_bytes": patch_bytes,
        "num_classes": cfg.num_classes,
        "feature_cache": feature_cache_estimate(net, patch.first_stage, cfg.image_size, cfg.num_images),
        "stages": stages,
    }
    if methods:
        out["trainable_params"], out["not_applicable"] = method_params(cfg, methods)
    return out


def feature_cache_estimate(net: DeltaNetwork, stage: int, image_size: int, num_images: int) -> dict:
    """Size of the frozen-prefix features a feature cache holds for a task patched from ``stage``:
    one dummy image of ``image_size`` px through the frozen prefix gives the shape."""
    x = torch.zeros(1, 3, image_size, image_size, dtype=next(net.base.parameters()).dtype)
    h = net.base_features(x, upto=stage)
    per_image = h[0].numel() * torch.empty((), dtype=CACHE_DTYPE).element_size()
    return {"stage": stage, "image_size": image_size, "shape": list(h.shape[1:]), "dtype": str(CACHE_DTYPE)[6:],
            "bytes_per_image": per_image, "num_images": num_images, "total_bytes": per_image * num_images}


def compose_methods(overrides: list[str]) -> dict[str, DictConfig]:
    """Every ``conf/method`` option composed through Hydra (so a method's ``defaults:`` list is
    applied), with the command line's overrides except those of the method itself.
    Called inside the Hydra app (Hydra's compose API is initialised there)."""
    from hydra import compose

    rest = [o for o in overrides if not o.lstrip("+~").startswith("method") and o.lstrip("+~") not in ("json=true",)]
    names = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
    return {name: compose("summary", overrides=[*rest, f"method={name}"]).method for name in names}


def method_params(cfg: DictConfig, methods: dict[str, DictConfig]) -> tuple[dict[str, int | None], dict[str, str]]:
    """Trainable parameters for one ``num_classes`` task per method; a method that refuses or
    fails on this backbone (e.g. learnable_skip on ConvNeXt) gets ``None`` and the reason."""
    counts: dict[str, int | None] = {}
    reasons: dict[str, str] = {}
    torch.manual_seed(cfg.seed)
    pristine = instantiate(cfg.backbone.model, num_classes=cfg.num_classes)
    for name, mcfg in methods.items():
        try:  # a copy per method: methods freeze or wrap the base they are given
            method = instantiate(mcfg.module, base=copy.deepcopy(pristine))
            method.add_task("task", cfg.num_classes)
        except Exception as e:  # noqa: BLE001 - one method failing on a backbone is a row, not a crash
            counts[name], reasons[name] = None, _reason(e)
            continue
        counts[name] = method.num_trainable("task")
    return counts, reasons


def _reason(exc: BaseException) -> str:
    """The user-facing message behind ``exc`` (Hydra's instantiate wraps it), on one line."""
    err = user_error(exc)
    if err is None:
        while exc.__cause__ is not None or exc.__context__ is not None:
            exc = exc.__cause__ or exc.__context__
        err = f"{type(exc).__name__}: {exc}"
    return str(err).strip().splitlines()[0]


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _print_table(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{s['backbone']} ({s['model']})  ∆-Networks({s['n_deltas']})")
    for col in ("stage", "blocks", "skips", "in ch", "out ch", "patched", "∆ params"):
        t.add_column(col, justify="right")
    for st in s["stages"]:
        t.add_row(str(st["stage"]), str(st["blocks"]), str(st["skips"]), str(st["in_channels"]),
                  str(st["out_channels"]), "yes" if st["patched"] else "", f"{st['delta_params']:,}")
    c = Console()
    c.print(t)
    c.print(f"∆-modules {s['delta_params'] / 1e6:.2f}M + head {s['head_params']:,} "
            f"(base {s['base_params'] / 1e6:.1f}M); patch file {s['patch_bytes'] / 1e6:.2f} MB "
            f"for {s['num_classes']} classes")
    fc = s["feature_cache"]
    shape = "×".join(map(str, fc["shape"]))
    c.print(f"feature cache: input of stage {fc['stage']} at {fc['image_size']} px is {shape} "
            f"= {fc['bytes_per_image'] / 1e3:.1f} KB per image in {fc['dtype']}; "
            f"{_mb(fc['total_bytes'])} for {fc['num_images']:,} images")
    if "trainable_params" in s:
        m = Table(title="trainable parameters per method")
        m.add_column("method")
        m.add_column("trainable", justify="right")
        for k, v in s["trainable_params"].items():
            m.add_row(k, f"{v:,}" if v is not None else f"n/a: {s['not_applicable'][k]}")
        c.print(m)


@hydra_app("summary")
def _summary(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    methods = guarded(compose_methods, list(HydraConfig.get().overrides.task)) if cfg.methods else None
    s = guarded(summarize, cfg, methods)
    if cfg.get("json", False):
        print(json.dumps(s), flush=True)
    else:
        _print_table(s)


def main(argv: list[str] | None = None) -> None:
    """Console script ``deltapatch-summary``; ``argv`` defaults to the command line. ``--json``
    (not a Hydra flag) is turned into the override ``json=true``."""
    args = list(sys.argv[1:] if argv is None else argv)
    # in place: argparse takes overrides in one run, so `a=1 --json --cfg job` -> `a=1 json=true --cfg job`
    call_with_argv(_summary, ["json=true" if a == "--json" else a for a in args])


if __name__ == "__main__":
    main()
