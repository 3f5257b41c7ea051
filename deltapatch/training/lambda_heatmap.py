"""The λ heatmap (the paper's Figures 3–6): mean λ per patched stage, from node × into node.

It lives here, below the scenarios, so that a run can send it to W&B itself
(:mod:`deltapatch.training.wandb_run`); :mod:`deltapatch.reporting.plots` draws it for reports.
matplotlib runs on the Agg backend (no display needed).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..delta.stage import skip_pairs


def pyplot():
    """pyplot on the Agg backend, chosen before pyplot is first imported so no display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as an image at ``path`` (folders made) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path


def _nodes(n_skips: int) -> int:
    """k such that k(k+1)/2 == n_skips (skips of a k-block stage)."""
    k = int(round((math.sqrt(8 * n_skips + 1) - 1) / 2))
    if k * (k + 1) // 2 != n_skips:
        raise ValueError(f"{n_skips} skips is not k(k+1)/2 for any k")
    return k


def lambda_matrix(values: Sequence[float]) -> list[list[float]]:
    """λ of one stage as a k × k matrix: row j-1 = into node h_j, column i = from node h_i
    (NaN above the diagonal, where no skip exists). Order as in ``skip_pairs``: j ascending, then i."""
    k = _nodes(len(values))
    m = [[math.nan] * k for _ in range(k)]
    for (i, j), v in zip(skip_pairs(k), values):
        m[j - 1][i] = float(v)
    return m


def lambda_figure(lambdas: Mapping[Any, Sequence[float]], title: str = "", annotate: bool | None = None):
    """A matplotlib figure with one heatmap per patched stage of mean λ (0..1).

    ``lambdas``: ``{stage_index: [mean λ per skip]}`` (stage keys may be strings, as read from JSON).
    The caller closes it (:func:`save_figure` does).
    """
    plt = pyplot()
    stages = sorted(lambdas.items(), key=lambda kv: int(kv[0]))
    if not stages:
        raise ValueError("no λ to plot")
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages) + 0.8, 3.4), squeeze=False)
    image = None
    for ax, (stage, values) in zip(axes[0], stages):
        m = lambda_matrix(values)
        k = len(m)
        image = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"stage {int(stage) + 1}")
        ax.set_xticks(range(k), [f"h{i}" for i in range(k)], fontsize=7)
        ax.set_yticks(range(k), [f"h{j}" for j in range(1, k + 1)], fontsize=7)
        ax.set_xlabel("from node")
        if ax is axes[0][0]:  # one y label: the next panel's would run into this one
            ax.set_ylabel("into node")
        if annotate if annotate is not None else k <= 8:  # numbers stay legible up to 8 blocks
            for j in range(k):
                for i in range(j + 1):
                    ax.text(i, j, f"{m[j][i]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if m[j][i] < 0.6 else "black")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="mean λ")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_lambda_heatmap(lambdas: Mapping[Any, Sequence[float]], path: str | Path, title: str = "",
                        annotate: bool | None = None) -> Path:
    """:func:`lambda_figure` written to ``path`` (PNG)."""
    return save_figure(lambda_figure(lambdas, title, annotate), path)
