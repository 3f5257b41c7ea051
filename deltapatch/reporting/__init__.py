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
from .runs import Run, load_runs
from .tables import build_report, write_report

__all__ = ["Run", "build_report", "load_runs", "write_report"]
