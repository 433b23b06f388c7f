"""Rendering a leaderboard DataFrame for people (a table that fits the terminal, Markdown) or
for programs (CSV, JSON). The DataFrame itself is :meth:`automl.Study.leaderboard`'s.

The table and Markdown show: ``#`` (the rank), trial, (state), the objective's values (a
Pareto member marked ``*``), the metrics the objective uses, the one-line recipe, seconds.
Columns and recipe parts equal in every row are folded into one header line; integral
columns print as integers; the table is fitted to ``width`` by shortening the recipe, then
dropping the least important columns.
"""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from automl.errors import SearchSpaceError
from automl.objective import Objective
from automl.study.leaderboard import FORMATS, SEP

MIN_RECIPE = 24


def _integral(series: pd.Series) -> bool:
    values = pd.to_numeric(series, errors="coerce")
    present = values.dropna()
    return (series.dtype.kind in "if" and not present.empty
            and bool(((present % 1) == 0).all()) and bool((present.abs() < 2**53).all()))


def with_integers(table: pd.DataFrame) -> pd.DataFrame:
    """Columns whose values are all whole numbers as nullable integers (``84618``, not ``8.5e+04``)."""
    out = table.copy()
    for column in out.columns:
        if _integral(out[column]):
            out[column] = out[column].astype("Int64")
    return out


def objective_columns(table: pd.DataFrame, objective: Objective) -> list[str]:
    """The columns that show the objective: score and the metrics of the weighted sum with a
    non-zero weight; or each objective."""
    if objective.multi:
        names = [f"objective:{n}" if f"objective:{n}" in table else n for n in objective.names]
    else:
        names = ["score", *objective.weights]
    return [n for n in names if n in table.columns]


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "*" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Board:
    """One leaderboard prepared for people: its shown columns, the folded constants, the rows."""

    def __init__(self, table: pd.DataFrame, objective: Objective, extra: list[str] = ()):
        self.objective = objective
        columns = ["trial", *(["state"] if "state" in table else [])]
        columns += (["pareto"] if "pareto" in table else []) + objective_columns(table, objective)
        columns += [c for c in extra if c in table.columns and c not in columns]
        columns += ["recipe"] + (["seconds"] if "seconds" in table else [])
        shown = with_integers(table[columns])
        self.constant: list[str] = []
        if len(shown) > 1:
            for c in columns:
                if c in ("trial", "recipe", "pareto", "state") or c in extra:
                    continue
                if shown[c].nunique(dropna=False) == 1:
                    self.constant.append(f"{c.removeprefix('objective:')} {_cell(shown[c].iloc[0])}")
                    shown = shown.drop(columns=[c])
            parts = [r.split(SEP) if r else [] for r in shown["recipe"]]
            common = [p for p in parts[0] if all(p in row for row in parts[1:])]
            self.constant = common + self.constant
            shown["recipe"] = [SEP.join(p for p in row if p not in common) for row in parts]
        self.cells = pd.DataFrame({c.removeprefix("objective:"): [_cell(v) for v in shown[c]] for c in shown.columns},
                                  index=[str(i) for i in shown.index])
        self.cells.index.name = "#"
        self.drop_order = ["seconds", *[c.removeprefix("objective:") for c in reversed(columns)
                                        if c not in ("trial", "recipe", "pareto", "state")]]

    def header(self) -> str:
        return ("every row: " + SEP.join(self.constant)) if self.constant else ""

    def table(self, width: int | None) -> str:
        cells = self.cells.copy()
        text = self._text(cells)
        while width and _width(text) > width:
            if "recipe" in cells and cells["recipe"].str.len().max() > MIN_RECIPE:
                room = cells["recipe"].str.len().max() - (_width(text) - width)
                cells["recipe"] = [_clip(r, max(room, MIN_RECIPE)) for r in cells["recipe"]]
            else:
                droppable = [c for c in self.drop_order if c in cells.columns]
                if not droppable or len(cells.columns) <= 3:
                    break
                cells = cells.drop(columns=[droppable[0]])
            text = self._text(cells)
        header = _clip(self.header(), width) if width else self.header()
        return "\n".join(line for line in (header, text) if line)

    def markdown(self) -> str:
        cells = self.cells.reset_index()
        lines = ["| " + " | ".join(cells.columns) + " |",
                 "|" + "|".join("---:" if _numeric(cells[c]) else "---" for c in cells.columns) + "|"]
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in cells.itertuples(index=False)]
        return "\n".join(([self.header(), ""] if self.constant else []) + lines)

    @staticmethod
    def _text(cells: pd.DataFrame) -> str:
        return text_table(cells.reset_index())


def text_table(cells: pd.DataFrame) -> str:
    """A DataFrame of strings as aligned text: numbers right-aligned, text left-aligned, two
    spaces between columns, no trailing spaces."""
    columns = [str(c) for c in cells.columns]
    rows = [[str(v) for v in row] for row in cells.itertuples(index=False)]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    right = [_numeric(cells.iloc[:, i].astype(str)) for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    return "\n".join([line(columns), *(line(r) for r in rows)])


def _numeric(column: pd.Series) -> bool:
    values = [v for v in column if v]
    return bool(values) and all(_is_number(v) for v in values)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(table: pd.DataFrame, objective: Objective, fmt: str = "table", width: int | None = 100,
           extra: list[str] = ()) -> str:
    """``table`` (a leaderboard DataFrame) as text: ``table`` (fitted to ``width``; ``None``:
    as wide as it is), ``markdown``, or every column as ``csv`` / ``json`` (records)."""
    if fmt not in FORMATS:
        raise SearchSpaceError(f"unknown format {fmt!r}; choose one of {list(FORMATS)}.")
    if table.empty:
        return "[]" if fmt == "json" else "" if fmt == "csv" else "(no trials)"
    if fmt == "csv":
        return with_integers(table).rename_axis("place").to_csv().rstrip("\n")
    if fmt == "json":
        records = json.loads(with_integers(table).rename_axis("place").reset_index().to_json(orient="records"))
        return json.dumps(records, indent=1, ensure_ascii=False)
    board = Board(table, objective, list(extra))
    return board.markdown() if fmt == "markdown" else board.table(width)
