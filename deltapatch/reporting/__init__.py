"""From finished runs to the paper's tables and figures.

:mod:`.tables` reads every ``results.json`` under a folder and writes Markdown/CSV tables shaped
like the paper's; :mod:`.plots` draws the λ heatmaps, PAINT α curves and accuracy-vs-parameters
plots; :mod:`.lambdas` computes the mean λ of a ∆-Network over a data set. ``scripts/report.py`` and
``scripts/plots.py`` are thin command lines around them.
"""
from .tables import Run, build_report, load_runs, write_report

__all__ = ["Run", "build_report", "load_runs", "write_report"]
