"""The leaderboard: trials as a pandas DataFrame, best first.

Columns: trial, (state, with ``all``), score (or each objective, and ``pareto`` for a
multi-objective study), the head metrics of :mod:`automl.metrics`, the recipe's labels (adapter,
quant, merge, mitigation) each followed by its searched values, other searched values,
per-subtask accuracies, the tail metrics, seconds, and ``recipe``: one readable line
(``LoRA r=4 α=16 · fp32 · Linear · lr 4.2e-4``). Inactive searched values are NaN.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from automl.errors import SearchSpaceError
from automl.metrics import LEADERBOARD_HEAD, LEADERBOARD_TAIL, is_metric
from automl.metrics import direction as metric_direction
from automl.objective import Objective
from automl.study import records

if TYPE_CHECKING:
    import pandas as pd   # imported where a table is built: a worker never needs pandas

LABEL_KEYS = ("adapter", "quant", "merge", "mitigation")
# short names in the recipe line; a searched value the label already shows is left out
_ABBREVIATION = {"rank": "r", "alpha": "α"}
_IN_LABEL = {"quant": {"bits"}}
SEP = " · "
FORMATS = ("table", "csv", "markdown", "json")
"""Output formats of a table (:func:`automl.study.render.render`)."""


def _short(name: str) -> str:
    """``adapter[LoRA].rank`` → ``rank``."""
    return re.sub(r"\[[^\]]*\]", "", name).split(".")[-1]


def _field_short(name: str) -> str:
    """``quant[Quantization#2].bits`` → ``quant.bits``."""
    parts = re.sub(r"\[[^\]]*\]", "", name).split(".")
    return f"{parts[0]}.{parts[-1]}" if len(parts) > 1 else parts[0]


def column_names(trials: list[FrozenTrial]) -> dict[str, str]:
    """Searched values under short names (``adapter[LoRA].rank`` → ``rank``) where no trial has
    two active parameters of that short name and no metric has that name; else under the recipe
    field and short name (``quant[Quantization#2].bits`` → ``quant.bits``, since ``bits`` is the
    bits-per-parameter metric); else the full name."""
    params = sorted({p for t in trials for p in t.params})
    reserved = {"trial", "state", "score", "pareto", "recipe", "seconds", *LEADERBOARD_HEAD, *LEADERBOARD_TAIL,
                *LABEL_KEYS}
    short: dict[str, str] = {}
    for naming in (_short, _field_short, str):
        for p in params:
            if p in short:
                continue
            name = naming(p)
            clash = name in reserved or any(sum(1 for q in t.params if naming(q) == name) > 1 for t in trials)
            if not clash or naming is str:
                short[p] = name
    return short


def _under(param: str, key: str) -> bool:
    return param.startswith(key + "[") or param.startswith(key + ".")


def number(value: Any) -> str:
    """A searched value, short: ``16``, ``0.5``, ``4.2e-4``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    if value != 0 and not 1e-2 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3g}"


def recipe_line(trial: FrozenTrial) -> str:
    """``LoRA r=4 α=16 · int8 · Linear · lr 4.2e-4``: each part's label with its searched values,
    then the other searched values (from the trial's labels and parameters, no rebuilding)."""
    labels = records.get(trial, records.LABELS) or {}
    labels = labels if isinstance(labels, dict) else {}
    parts = []
    for key in LABEL_KEYS:
        label = labels.get(key)
        if label is None or (key == "mitigation" and label == "none"):
            continue
        values = [f"{_ABBREVIATION.get(_short(p), _short(p))}={number(v)}" for p, v in trial.params.items()
                  if _under(p, key) and _short(p) not in _IN_LABEL.get(key, ()) and v is not None]
        parts.append(" ".join([str(label), *values]))
    for p, v in trial.params.items():
        if p not in LABEL_KEYS and not any(_under(p, k) for k in LABEL_KEYS):
            parts.append(f"{_short(p)} {number(v)}")
    return SEP.join(parts)


def frame(trials: list[FrozenTrial], objective: Objective, pareto: set[int] = frozenset(),
          with_state: bool = False) -> pd.DataFrame:
    """One row per trial (unsorted)."""
    short = column_names(trials)
    params = sorted(short)
    subtask_metrics = sorted({k for t in trials for k in records.metrics(t) if k.startswith("accuracy/")})
    rows = []
    for t in trials:
        metrics = records.metrics(t)
        row: dict[str, Any] = {"trial": t.number}
        if with_state:
            row["state"] = t.state.name
        if objective.multi:
            values = t.values or [math.nan] * len(objective.names)
            row.update({f"objective:{n}" if n in LEADERBOARD_HEAD else n: v
                        for n, v in zip(objective.names, values) if n not in LEADERBOARD_HEAD})
            row["pareto"] = t.number in pareto
        else:
            row["score"] = t.value if t.value is not None else math.nan
        for m in LEADERBOARD_HEAD:
            row[m] = metrics.get(m, math.nan)
        labels = records.get(t, records.LABELS) or {}
        labels = labels if isinstance(labels, dict) else {}
        for key in LABEL_KEYS:
            row[key] = labels.get(key)
            for p in params:
                if _under(p, key):
                    row[short[p]] = t.params.get(p, row.get(short[p], math.nan))
        for p in params:
            if p not in LABEL_KEYS and not any(_under(p, k) for k in LABEL_KEYS):
                row[short[p]] = t.params.get(p, row.get(short[p], math.nan))
        for m in subtask_metrics + list(LEADERBOARD_TAIL):
            row[m] = metrics.get(m, math.nan)
        row["seconds"] = metrics.get("seconds", math.nan)
        row["recipe"] = recipe_line(t)
        rows.append(row)
    import pandas as pd
    table = pd.DataFrame(rows)
    if len(subtask_metrics) <= 1 and not table.empty:
        table = table.drop(columns=subtask_metrics)
    if not table.empty and (table["mitigation"].isna() | (table["mitigation"] == "none")).all():
        table = table.drop(columns=["mitigation"])
    return table


def ascending(column: str, objective: Objective) -> bool:
    """Sort order of a column, best first: a metric's or objective's direction; other columns
    (searched values, labels) ascending."""
    if column == "score":
        return False
    name = column.removeprefix("objective:")
    if objective.multi and name in objective.names:
        return objective.directions[objective.names.index(name)] == "minimize"
    if is_metric(name):
        return metric_direction(name) == "minimize"
    return True


def sort_keys(table: pd.DataFrame, objective: Objective, sort: str | None) -> tuple[list[str], list[bool]]:
    """Columns and orders of the default order (score; or Pareto members first, then the first
    objective) or of ``sort``, each ended by ``trial``. An unknown ``sort`` lists the choices."""
    if sort is not None:
        choices = [c for c in table.columns if c not in ("recipe", "state")]
        if sort not in choices:
            raise SearchSpaceError(f"cannot sort by {sort!r}; sort by one of {choices}.")
        return ([sort], [True]) if sort == "trial" else ([sort, "trial"], [ascending(sort, objective), True])
    if objective.multi:
        first = objective.names[0]
        column = f"objective:{first}" if f"objective:{first}" in table else first
        return ["pareto", column, "trial"], [False, ascending(column, objective), True]
    return ["score", "trial"], [False, True]


def leaderboard(trials: list[FrozenTrial], objective: Objective, top: int | None = None, sort: str | None = None,
                pareto: set[int] = frozenset(), with_state: bool = False) -> pd.DataFrame:
    """Rows of ``trials`` best first (by score; a multi-objective study: Pareto members first,
    then by the first objective; or by ``sort``), indexed by ``rank`` (1 = best). Rows without
    the sorted value (failed, pruned) come last, by trial number."""
    import pandas as pd
    table = frame(trials, objective, pareto, with_state)
    if table.empty:
        return table
    columns, orders = sort_keys(table, objective, sort)
    table = table.sort_values(columns, ascending=orders, na_position="last", kind="stable")
    table.index = pd.RangeIndex(1, len(table) + 1, name="rank")
    return table.head(top) if top else table
