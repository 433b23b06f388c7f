"""Reviewing trials: one trial's record, two trials compared, a re-run's verdicts, an export.

Each is a small frozen record built from what the study stores (nothing is trained here but in
:meth:`automl.Study.reproduce` / :meth:`automl.Study.export`); ``str()`` gives the text the CLI
prints, at most 100 columns wide.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyglove as pg
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from automl.errors import AutomlError
from automl.objective import Objective
from automl.result import Result
from automl.study import records
from automl.study.leaderboard import number
from automl.study.render import text_table

# per-layer metric families (``intruders/<layer>`` ...), shown as one table
LAYER_FAMILIES = ("intruders", "effective_rank", "drift", "overlap")
# wall-clock metrics: a re-run never takes the same time, so they are shown, not judged
TIMINGS = ("seconds", "train_seconds")
RTOL, ATOL = 1e-4, 1e-6


def _value(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else number(v) if v.is_integer() else f"{v:.6g}"
    return "" if v is None else str(v)


def split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Scalar metrics, and the per-layer ones as a table (a row per layer, a column per family)."""
    scalars, layers = {}, {}
    for name, value in metrics.items():
        family, sep, layer = name.partition("/")
        if sep and family in LAYER_FAMILIES:
            layers.setdefault(layer, {})[family] = value
        else:
            scalars[name] = value
    table = pd.DataFrame.from_dict(layers, orient="index")
    if not table.empty:
        table = table[[f for f in LAYER_FAMILIES if f in table.columns]]
        table.index.name = "layer"
    return dict(sorted(scalars.items())), table


def weights_kept(store: Any, study_name: str, trial: FrozenTrial) -> bool:
    """Whether the trial's trained weights are in the artifact store (only the best trials keep
    theirs); a stored id that is not an artifact id counts as none."""
    try:
        artifact_id = records.artifact_id(study_name, trial)
    except AutomlError:
        return False
    if not artifact_id:
        return False
    try:
        store.open_reader(artifact_id).close()
    except (ArtifactNotFound, FileNotFoundError):
        return False
    return True


def program(recipe: Any) -> str:
    """A recipe as its symbolic program (PyGlove's format, every field)."""
    return pg.format(recipe, compact=False, verbose=False)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: state, optimized value(s), duration, recipe, metrics, per-layer
    metrics, failure reason, whether its trained weights are kept."""

    study: str
    number: int
    state: str
    values: dict[str, float]
    duration: float | None
    recipe: Any
    metrics: dict[str, Any]
    layers: pd.DataFrame = field(repr=False)
    fail_reason: str | None
    weights_kept: bool
    duplicate_of: int | None = None

    @classmethod
    def build(cls, study_name: str, trial: FrozenTrial, objective: Objective, recipe: Any, kept: bool) -> "TrialRecord":
        values = dict(zip(objective.names, trial.values)) if trial.values else {}
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        scalars, layers = split_metrics(records.metrics(trial))
        duplicate = records.get(trial, records.DUPLICATE_OF)
        reason = records.get(trial, records.FAIL_REASON)
        return cls(study_name, trial.number, trial.state.name, values, duration, recipe, scalars, layers,
                   str(reason) if reason is not None else None, kept,
                   duplicate if isinstance(duplicate, int) else None)

    @property
    def program(self) -> str:
        return program(self.recipe) if self.recipe is not None else "(no recipe stored)"

    def __str__(self) -> str:
        values = ", ".join(f"{k} {_value(v)}" for k, v in self.values.items()) or "none"
        took = f"{self.duration:.1f} s" if self.duration is not None else "not finished"
        lines = [f"trial {self.number} of study {self.study!r}: {self.state}",
                 f"  {values}; ran {took}; trained weights {'kept' if self.weights_kept else 'not kept'}"]
        if self.duplicate_of is not None:
            lines.append(f"  repeated the recipe of trial {self.duplicate_of}")
        if self.fail_reason:
            lines.append(f"  failed: {self.fail_reason}")
        lines += ["", "recipe:", *("  " + line for line in self.program.splitlines())]
        if self.metrics:
            width = max(len(k) for k in self.metrics)
            lines += ["", "metrics:", *(f"  {k:<{width}}  {_value(v)}" for k, v in self.metrics.items())]
        if not self.layers.empty:
            table = text_table(self.layers.map(_value).reset_index())
            lines += ["", "per layer:", *("  " + line for line in table.splitlines())]
        return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    """Two trials side by side: their metrics and the diff of their programs (``pg.diff``)."""

    a: TrialRecord
    b: TrialRecord

    @property
    def metrics(self) -> pd.DataFrame:
        """A row per metric: trial A, trial B, and the change from A to B."""
        names = sorted(set(self.a.metrics) | set(self.b.metrics))
        rows = {}
        for name in names:
            va, vb = self.a.metrics.get(name), self.b.metrics.get(name)
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
            rows[name] = {f"trial {self.a.number}": va, f"trial {self.b.number}": vb,
                          "change": vb - va if numeric else None}
        return pd.DataFrame.from_dict(rows, orient="index")

    @property
    def diff(self) -> str:
        """What differs between the two programs (PyGlove's ``pg.diff``, only the differences)."""
        if self.a.recipe is None or self.b.recipe is None:
            return "(a trial without a stored recipe: nothing to diff)"
        d = pg.diff(self.a.recipe, self.b.recipe)
        return pg.format(d, compact=False, verbose=False) if d else "(the same program)"

    def __str__(self) -> str:
        table = text_table(self.metrics.map(_value).rename_axis("metric").reset_index())
        values = [f"trial {r.number}: {r.state}, " + ", ".join(f"{k} {_value(v)}" for k, v in r.values.items())
                  for r in (self.a, self.b)]
        return "\n".join([*values, "", table, "",
                          f"program diff (left: trial {self.a.number}, right: trial {self.b.number}):",
                          *("  " + line for line in self.diff.splitlines())])


@dataclass(frozen=True)
class Reproduction:
    """A trial re-run from its stored recipe: per metric, the stored value, the new one, and a
    verdict: ``same`` within ``rtol``/``atol`` (``math.isclose``), ``different``, ``timing``
    (wall-clock, not judged), ``new`` or ``missing``."""

    study: str
    number: int
    stored: dict[str, Any]
    result: Result = field(repr=False)
    seconds: float
    rtol: float = RTOL
    atol: float = ATOL

    @property
    def metrics(self) -> dict[str, float]:
        """The re-run's metrics."""
        return self.result.metrics

    def verdict(self, name: str) -> str:
        if name in TIMINGS:
            return "timing"
        if name not in self.stored:
            return "new"
        if name not in self.metrics:
            return "missing"
        a, b = self.stored[name], self.metrics[name]
        try:
            same = math.isclose(float(a), float(b), rel_tol=self.rtol, abs_tol=self.atol) or (
                math.isnan(float(a)) and math.isnan(float(b)))
        except (TypeError, ValueError):
            same = a == b
        return "same" if same else "different"

    @property
    def verdicts(self) -> pd.DataFrame:
        """A row per metric: stored, reproduced, verdict."""
        names = sorted(set(self.stored) | set(self.metrics))
        return pd.DataFrame({"stored": [self.stored.get(n) for n in names],
                             "reproduced": [self.metrics.get(n) for n in names],
                             "verdict": [self.verdict(n) for n in names]},
                            index=pd.Index(names, name="metric"))

    @property
    def different(self) -> list[str]:
        """Metrics that did not reproduce (timings aside)."""
        return [n for n in sorted(set(self.stored) | set(self.metrics)) if self.verdict(n) in ("different", "missing")]

    @property
    def same(self) -> bool:
        return not self.different

    def __str__(self) -> str:
        table = self.verdicts
        table = table.assign(stored=table["stored"].map(_value), reproduced=table["reproduced"].map(_value))
        judged = (table["verdict"] != "timing").sum()
        summary = (f"reproduced: all {judged} metrics the same" if self.same
                   else f"NOT reproduced: {len(self.different)} of {judged} metrics differ ({', '.join(self.different)})")
        return "\n".join([f"trial {self.number} of study {self.study!r} re-run in {self.seconds:.1f} s; "
                          f"same = within rel {self.rtol:g} or abs {self.atol:g}; timings not judged",
                          text_table(table.reset_index()), summary])


class Exported(list):
    """The paths an export wrote (a list), and how: ``retrained`` when the trial's weights were
    not kept and the recipe was trained again (seeded: the same weights), in ``seconds``."""

    def __init__(self, paths: list[Path], retrained: bool, seconds: float):
        super().__init__(paths)
        self.retrained = retrained
        self.seconds = seconds
