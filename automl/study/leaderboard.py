"""The leaderboard: completed trials as a pandas DataFrame, best first.

Columns: trial, score (or each objective), the head metrics of :mod:`automl.metrics`, the
recipe's labels (adapter, quant, merge, mitigation) each followed by its searched values,
other searched values, per-subtask accuracies, the tail metrics, seconds.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from automl.metrics import LEADERBOARD_HEAD, LEADERBOARD_TAIL
from automl.objective import Objective
from automl.study import records

if TYPE_CHECKING:
    import pandas as pd   # imported where a table is built: a worker never needs pandas

LABEL_KEYS = ("adapter", "quant", "merge", "mitigation")


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
    reserved = {"trial", "score", "seconds", *LEADERBOARD_HEAD, *LEADERBOARD_TAIL, *LABEL_KEYS}
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


def frame(trials: list[FrozenTrial], objective: Objective) -> pd.DataFrame:
    """One row per trial (unsorted)."""
    short = column_names(trials)
    params = sorted(short)
    subtask_metrics = sorted({k for t in trials for k in records.metrics(t) if k.startswith("accuracy/")})
    rows = []
    for t in trials:
        metrics = records.metrics(t)
        row: dict[str, Any] = {"trial": t.number}
        if objective.multi:
            row.update({f"objective:{n}" if n in LEADERBOARD_HEAD else n: v
                        for n, v in zip(objective.names, t.values) if n not in LEADERBOARD_HEAD})
        else:
            row["score"] = t.value
        for m in LEADERBOARD_HEAD:
            row[m] = metrics.get(m, math.nan)
        labels = records.get(t, records.LABELS) or {}
        labels = labels if isinstance(labels, dict) else {}
        for key in LABEL_KEYS:
            row[key] = labels.get(key)
            for p in params:
                if _under(p, key):
                    row[short[p]] = t.params.get(p, row.get(short[p]))
        for p in params:
            if p not in LABEL_KEYS and not any(_under(p, k) for k in LABEL_KEYS):
                row[short[p]] = t.params.get(p, row.get(short[p]))
        for m in subtask_metrics + list(LEADERBOARD_TAIL):
            row[m] = metrics.get(m, math.nan)
        row["seconds"] = metrics.get("seconds", math.nan)
        rows.append(row)
    import pandas as pd
    table = pd.DataFrame(rows)
    if len(subtask_metrics) <= 1 and not table.empty:
        table = table.drop(columns=subtask_metrics)
    if not table.empty and (table["mitigation"] == "none").all():
        table = table.drop(columns=["mitigation"])
    return table


def leaderboard(trials: list[FrozenTrial], objective: Objective, top: int | None = None) -> pd.DataFrame:
    """Rows of ``trials`` best first (by score, or by the first objective), indexed by ``rank``."""
    import pandas as pd
    table = frame(trials, objective)
    if table.empty:
        return table
    if objective.multi:
        first = objective.names[0]
        column = f"objective:{first}" if first in LEADERBOARD_HEAD and f"objective:{first}" in table else first
        table = table.sort_values([column, "trial"], ascending=[objective.directions[0] == "minimize", True])
    else:
        table = table.sort_values(["score", "trial"], ascending=[False, True])
    table.index = pd.RangeIndex(1, len(table) + 1, name="rank")
    return table.head(top) if top else table
