"""A report table on pandas: one value per run and cell in, mean ± sample std over seeds out,
rendered as Markdown (``DataFrame.to_markdown``), CSV and LaTeX (``Styler.to_latex``)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

STATS = ("mean", "std", "n")


def fmt_cell(mean: float | None, std: float | None = None, digits: int = 2) -> str:
    """``97.30 ± 0.12``; without the ± part for one value (std None/NaN), ``–`` for none."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarise(obs: pd.DataFrame, label_cols: Sequence[str], columns: Sequence[str] | None = None) -> tuple[
        pd.DataFrame, pd.DataFrame]:
    """Cells from observations.

    ``obs`` has one row per value: ``rank`` (the table row's position), the ``label_cols`` (equal
    within a rank), ``column`` and ``value`` (NaN when the run has none). Returns the label frame
    (one row per rank, in rank order) and the stats frame (columns ``(column, mean|std|n)``, the
    sample std, NaN below two values; n = values counted, 0 for an empty cell).
    """
    columns = list(dict.fromkeys(columns if columns is not None else obs["column"]))
    values = obs.assign(value=pd.to_numeric(obs["value"], errors="coerce"))
    agg = values.groupby(["rank", "column"])["value"].agg(["mean", "std", "count"])
    wide = agg.rename(columns={"count": "n"}).unstack("column")  # columns: (stat, column)
    wide = wide.swaplevel(axis=1).reindex(columns=pd.MultiIndex.from_product([columns, STATS]))
    for col in columns:  # an absent (row, column) pair is an empty cell: 0 values
        wide[(col, "n")] = wide[(col, "n")].fillna(0).astype(int)
    labels = values.groupby("rank")[list(label_cols)].first()
    order = labels.index
    return labels.reset_index(drop=True), wide.reindex(order).reset_index(drop=True)


@dataclass
class Table:
    """A rendered table: label columns beside value cells (mean ± std over seeds)."""

    key: str                    # file stem
    title: str
    labels: pd.DataFrame        # label columns (strings), one row per table row
    stats: pd.DataFrame         # columns (value column, mean|std|n), same rows as ``labels``
    note: str = ""
    meta: pd.DataFrame | None = None  # CSV-only columns (raw names, counts), same rows

    @property
    def label_header(self) -> list[str]:
        return list(self.labels.columns)

    @property
    def columns(self) -> list[str]:
        """The value columns, in order."""
        return list(dict.fromkeys(self.stats.columns.get_level_values(0)))

    def cell(self, column: str, **labels: str) -> dict[str, Any]:
        """``{"mean", "std", "n"}`` of the one row whose labels match (``Method="PAINT"``)."""
        mask = pd.Series(True, index=self.labels.index)
        for name, value in labels.items():
            mask &= self.labels[name] == value
        rows = self.stats.loc[mask, column]
        if len(rows) != 1:
            raise KeyError(f"{len(rows)} rows match {labels} in {self.key}")
        row = rows.iloc[0]
        std = row["std"]
        return {"mean": row["mean"], "std": None if pd.isna(std) else std, "n": int(row["n"])}

    def display(self) -> pd.DataFrame:
        """Labels and formatted cells (``m ± s``), one string per cell."""
        out = self.labels.copy()
        for col in self.columns:
            out[col] = [fmt_cell(m, s) for m, s in zip(self.stats[(col, "mean")], self.stats[(col, "std")])]
        return out

    def markdown(self, heading: bool = True) -> str:
        """The table as Markdown, under a ``###`` heading with its title unless ``heading`` is false."""
        head = (f"### {self.title}\n\n" if heading else "") + (f"{self.note}\n\n" if self.note else "")
        shown = self.display()
        align = ["left"] * len(self.labels.columns) + ["right"] * len(self.columns)
        # disable_numparse: cells are already formatted ("97.30" must not become "97.3")
        return head + shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"

    def csv_frame(self) -> pd.DataFrame:
        """Labels, meta columns, then per value column its mean, ``<col> std`` and ``<col> n``."""
        parts = [self.labels] + ([self.meta] if self.meta is not None else [])
        out = pd.concat(parts, axis=1)
        for col in self.columns:
            out[col] = self.stats[(col, "mean")].round(6)
            out[f"{col} std"] = self.stats[(col, "std")].round(6)
            out[f"{col} n"] = self.stats[(col, "n")]
        return out

    def latex(self) -> str:
        """A ``table`` float (booktabs rules) for a paper; needs ``\\usepackage{booktabs}``."""
        shown = self.display()
        styler = shown.style.hide(axis="index").format(latex_text).format_index(latex_text, axis=1)
        caption = latex_text(self.title + (f". {self.note}" if self.note else ""))
        fmt = "l" * len(self.labels.columns) + "r" * len(self.columns)
        return styler.to_latex(caption=caption, label=f"tab:{self.key}", hrules=True, column_format=fmt,
                               position_float="centering")

    def files(self) -> dict[str, str]:
        """``{<key>.csv: text, <key>.tex: text}``, rendered in memory (written by the caller)."""
        return {f"{self.key}.csv": self.csv_frame().to_csv(index=False), f"{self.key}.tex": self.latex()}


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          # the report's Unicode, as plain LaTeX (no package beyond booktabs needed)
          "∆": r"$\Delta$", "±": r"$\pm$", "→": r"$\rightarrow$", "α": r"$\alpha$", "·": r"$\cdot$", "–": "--",
          "—": "---"}
_LATEX_RE = re.compile("|".join(map(re.escape, _LATEX)))


def latex_text(value: Any) -> str:
    """``value`` as LaTeX text: specials escaped, the report's Unicode symbols in math mode."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group()], str(value))


__all__ = ["STATS", "Table", "fmt_cell", "latex_text", "summarise"]
