"""The paper's names and orders: which row and column a run belongs to, and how they are labelled
(``ResNet-18``, ``∆-Networks (4)``, ``mnist→usps``, ``cifar10 15%``...)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple, Sequence

if TYPE_CHECKING:
    from .runs import Run

# The paper's row names (Tables 1, 2, 5, 8); unknown methods keep their config name.
METHOD_NAMES = {
    "vanilla": "Vanilla", "paint": "PAINT", "fc": "FC", "finetune": "Fine-tuning",
    "finetune_delta": "Fine-tuning + ∆-Networks", "delta": "∆-Networks", "parallel_adapter": "Parallel Adapters",
    "series_adapter": "Series Adapters", "bn_adapt": "BatchNormAdapt", "bn_adapt_dua": "BatchNormAdapt (DUA)",
    "lora": "LoRA", "learnable_skip": "Learnable Skip connections", "all_skips_learnable_nobn": "All Skips (Learnable)",
    "all_skips_learnable": "All Skips (Learnable) + BN", "all_skips_nobn": "All Skips", "all_skips": "All Skips + BN",
    "random_lambda_nobn": "All Skips + Random", "random_lambda": "All Skips + BN + Random",
    "target_only": "Target only",
}
# Row order within a backbone: baselines first, ∆-Networks last (as in every table of the paper).
METHOD_ORDER = ["vanilla", "fc", "finetune", "paint", "parallel_adapter", "series_adapter", "bn_adapt", "bn_adapt_dua",
                "lora", "learnable_skip", "all_skips_learnable_nobn", "all_skips_learnable", "all_skips_nobn",
                "all_skips", "random_lambda_nobn", "random_lambda", "delta", "finetune_delta", "target_only"]
BACKBONE_NAMES = {
    "resnet18": "ResNet-18", "timm_resnet18": "ResNet-18 (timm)", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
    "resnet101": "ResNet-101", "resnext50_32x4d": "ResNeXt-50", "wide_resnet50_2": "WideResNet-50",
    "convnext_tiny": "ConvNeXt-Tiny", "convnext_small": "ConvNeXt-Small", "convnext_base": "ConvNeXt-Base",
    "convnext_large": "ConvNeXt-Large",
}
BACKBONE_ORDER = list(BACKBONE_NAMES)


class RowKey(NamedTuple):
    """What sets a table row apart: backbone, method, n_deltas (None without ∆-modules), variant."""

    backbone: str
    method: str
    n_deltas: int | None
    variant: str


def order(seq: Sequence[str], value: str) -> tuple[int, str]:
    """Sort key: position in ``seq``, unknown values after the known ones, alphabetically."""
    return (seq.index(value), value) if value in seq else (len(seq), value)


def method_label(method: str, n_deltas: Any = None) -> str:
    """The paper's row name: ``∆-Networks (2)``, ``PAINT``…; ``n_deltas`` None for methods
    without ∆-modules."""
    name = METHOD_NAMES.get(method, method)
    return name if n_deltas is None else f"{name} ({n_deltas})"


def backbone_label(backbone: str) -> str:
    return BACKBONE_NAMES.get(backbone, backbone)


# Table 6 (zero-shot domain adaptation): the model a row starts from, in the paper's order, and the
# "Target only" upper bound last.
ZSDA_VARIANTS = ["Vanilla", "Vanilla + Uniform prior", "ADDA", "ADDA + Uniform prior", "Target only"]


def zsda_variant(results: Mapping[str, Any]) -> str:
    """The model a zero-shot domain adaptation run starts from (its Table 6 row group): Vanilla,
    ADDA, either with the uniform prior, or Target only."""
    if results.get("method") == "target_only":
        return "Target only"
    prior = results.get("uniform_prior")
    with_prior = isinstance(prior, Mapping) and float(prior.get("weight") or 0) > 0
    name = "ADDA" if results.get("adda") else "Vanilla"
    return f"{name} + Uniform prior" if with_prior else name


def row_variant(run: Run) -> str:
    """What else sets a row apart beside backbone, method and n_deltas: the starting model of
    zero-shot domain adaptation (Table 6's Vanilla / Uniform prior / ADDA rows, :func:`zsda_variant`),
    training from scratch (Tables 12-13)."""
    if run.results.get("scenario") == "zsda":
        return zsda_variant(run.results)
    prior = run.results.get("uniform_prior")
    if isinstance(prior, Mapping) and float(prior.get("weight") or 0) > 0:
        return "Uniform prior"
    # Tables 12-13: no pre-training. Not zsda: Table 6's vanilla model always learns the source from
    # random weights (base=scratch), and its rows are "Vanilla" / "+∆-Networks (4)"
    if run.results.get("base_source") == "scratch" and run.scenario != "zsda":
        return "from scratch"
    return ""


def row_key(run: Run) -> RowKey:
    return RowKey(run.backbone, run.method, run.n_deltas, row_variant(run))


def row_sort_key(key: RowKey) -> tuple:
    backbone, method, n, variant = key
    zsda = order(ZSDA_VARIANTS, variant) if variant in ZSDA_VARIANTS else (-1, "")
    return (order(BACKBONE_ORDER, backbone), zsda, variant, order(METHOD_ORDER, method), -1 if n is None else int(n))


def row_label(key: RowKey) -> str:
    """``∆-Networks (4)``, ``Vanilla + Uniform prior``, ``ADDA + ∆-Networks (4)``, ``∆-Networks (1),
    from scratch``…"""
    _, method, n, variant = key
    label = method_label(method, n)
    if variant in ZSDA_VARIANTS:  # Table 6: the starting model, then what was added on top of it
        if method in ("vanilla", "target_only"):
            return variant
        if method == "finetune_delta":  # the ∆ network trained in the vanilla model's place
            return f"{variant} + {method_label('delta', n)}, joint"
        return f"{variant} + {label}"
    if variant == "from scratch":
        return f"{label}, from scratch"
    return f"{label} + {variant}" if variant else label


def task_names(results: Mapping[str, Any], key: str = "tasks") -> list[str]:
    """The keys of the run's per-task object ``key`` (``tasks``, ``tasks_when_trained``, ``extra``)
    in the order the scenario took them: results.json's ``task_order``. Those objects are written
    with sorted keys, so files without the list give that order."""
    tasks = list(results.get(key) or {})
    order = [t for t in (results.get("task_order") or []) if t in tasks]
    return order + [t for t in tasks if t not in order]


def column_of(run: Run) -> str:
    """The column a run belongs to: its dataset (single; with the sample rate when below 1), its
    task set (joint, sequential: task names joined by '-'), its domain pair (zsda), or what
    results.json names."""
    res = run.results
    if res.get("column"):
        return str(res["column"])
    if run.scenario in ("joint", "sequential"):
        return "-".join(task_names(res)) or str(res.get("dataset"))
    name = str(res.get("dataset"))
    if res.get("target"):
        name = f"{name}→{res['target']}"
    # transfer runs name their sample rate (100% included: it is a column of Table 5); other runs
    # only show a reduced dataset.sample_rate
    explicit = res.get("sample_rate") is not None
    rate = res.get("sample_rate") if explicit else run.cfg("dataset.sample_rate")
    try:
        if rate is not None and (explicit or float(rate) < 1.0):
            name = f"{name} {float(rate):.0%}"
    except (TypeError, ValueError):
        pass
    return name


def format_params(counts: Iterable[int]) -> str:
    """``0.45M``; a range when the head size differs between columns (``0.45–0.46M``)."""
    counts = sorted(set(counts))
    if not counts:
        return "–"
    unit = "M" if counts[-1] >= 100_000 else "K"

    def one(n: int) -> str:
        return f"{n / 1e6:.2f}" if unit == "M" else f"{n / 1e3:.1f}"

    lo, hi = one(counts[0]), one(counts[-1])
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def slug(*parts: str) -> str:
    """A file stem from ``parts`` (``x_single_alpha_resnet18_digits``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "_".join(p for p in parts if p)).strip("_")


__all__ = ["BACKBONE_NAMES", "BACKBONE_ORDER", "METHOD_NAMES", "METHOD_ORDER", "RowKey", "backbone_label",
           "ZSDA_VARIANTS", "column_of", "format_params", "method_label", "order", "row_key", "row_label",
           "row_sort_key", "row_variant", "slug", "task_names", "zsda_variant"]
