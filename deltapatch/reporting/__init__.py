"""From finished runs to the paper's tables, figures and a check of its claims.

:mod:`.runs` reads every ``results.json`` under a folder; :mod:`.labels` and :mod:`.values` say
which row, column and number a run gives; :mod:`.frame` turns values into mean ± std cells
(pandas) rendered as Markdown, CSV and LaTeX; :mod:`.tables` and :mod:`.alpha` build the paper's
table shapes; :mod:`.plots` draws the λ heatmaps, PAINT α curves and accuracy-vs-parameters plots;
:mod:`.lambdas` computes the mean λ of a ∆-Network over a data set; :mod:`.claims` checks the
paper's claims against the runs (:mod:`.verdicts`: pairing, paired test, rendering).
``deltapatch-report`` (:mod:`deltapatch.report`), ``scripts/plots.py`` and ``scripts/claims.py``
are thin command lines around them.
"""
from importlib import import_module
from typing import Any

# Imported on first use: the runner imports .lambdas, and should not pay for pandas with it.
_EXPORTS = {"Run": "runs", "load_runs": "runs", "build_report": "tables", "write_report": "tables"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Run", "build_report", "load_runs", "write_report"]
