"""``deltapatch-summary`` / ``python -m deltapatch.summary backbone=resnet50 n_deltas=4 [--json]``:
skips, ∆-module sizes, patch size, and the trainable parameters of every method, for one backbone.
A Hydra app on ``conf/summary.yaml`` (Hydra's own flags work); ``--json`` is ``json=true``."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from .cli import CONF_DIR, call_with_argv, guarded, hydra_app
from .delta import DeltaNetwork
from .patch import save_patch


def summarize(cfg: DictConfig) -> dict:
    """The numbers ``deltapatch.summary`` prints, as a dict."""
    torch.manual_seed(cfg.seed)
    n = int(cfg.n_deltas)
    base = instantiate(cfg.backbone.model, num_classes=cfg.num_classes)
    net = DeltaNetwork(base, n_deltas=n)
    patch = net.add_task("task", cfg.num_classes)
    stages = []
    for i, st in enumerate(net.stages):
        ps = patch.stages[str(i)] if str(i) in patch.stages else None
        stages.append({"stage": i, "blocks": len(st.blocks), "skips": st.n_skips, "in_channels": st.in_channels,
                       "patched": ps is not None,
                       "delta_params": sum(p.numel() for p in ps.parameters()) if ps is not None else 0})
    with tempfile.TemporaryDirectory() as tmp:
        patch_bytes = save_patch(net, "task", Path(tmp) / "p.safetensors").stat().st_size
    out = {
        "backbone": cfg.backbone.name,
        "n_deltas": n,
        "skips_per_stage": net.skips_per_stage(),
        "delta_params": sum(s["delta_params"] for s in stages),
        "head_params": sum(p.numel() for p in patch.head.parameters()),
        "base_params": sum(p.numel() for p in base.parameters()),
        "patch_bytes": patch_bytes,
        "num_classes": cfg.num_classes,
        "stages": stages,
    }
    if cfg.methods:
        out["trainable_params"] = method_params(cfg)
    return out


def method_params(cfg: DictConfig) -> dict[str, int]:
    """Trainable parameters for one ``num_classes`` task, per method config in ``conf/method``."""
    counts = {}
    for path in sorted((CONF_DIR / "method").glob("*.yaml")):
        mcfg = OmegaConf.load(path)
        merged = cfg.copy()
        with open_dict(merged):
            merged.method = mcfg
        base = instantiate(cfg.backbone.model, num_classes=cfg.num_classes)
        method = instantiate(merged.method.module, base=base)
        method.add_task("task", cfg.num_classes)
        counts[str(mcfg.name)] = method.num_trainable("task")
    return counts


def _print_table(s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{s['backbone']}  ∆-Networks({s['n_deltas']})")
    for col in ("stage", "blocks", "skips", "in ch", "patched", "∆ params"):
        t.add_column(col, justify="right")
    for st in s["stages"]:
        t.add_row(str(st["stage"]), str(st["blocks"]), str(st["skips"]), str(st["in_channels"]),
                  "yes" if st["patched"] else "", f"{st['delta_params']:,}")
    c = Console()
    c.print(t)
    c.print(f"∆-modules {s['delta_params'] / 1e6:.2f}M + head {s['head_params']:,} "
            f"(base {s['base_params'] / 1e6:.1f}M); patch file {s['patch_bytes'] / 1e6:.2f} MB "
            f"for {s['num_classes']} classes")
    if "trainable_params" in s:
        m = Table(title="trainable parameters per method")
        m.add_column("method")
        m.add_column("trainable", justify="right")
        for k, v in s["trainable_params"].items():
            m.add_row(k, f"{v:,}")
        c.print(m)


@hydra_app("summary")
def _summary(cfg: DictConfig) -> None:
    s = guarded(summarize, cfg)
    if cfg.get("json", False):
        print(json.dumps({k: v for k, v in s.items() if k != "stages"} | {"stages": s["stages"]}), flush=True)
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
