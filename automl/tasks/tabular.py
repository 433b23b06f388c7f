"""A tabular benchmark: every recipe of a finite space trained once, then replayed.

:func:`tabulate` trains each recipe of a finite search space (every decision a ``pg.oneof``) on
a task and returns a :class:`Table`: one row per recipe with the recipe's fingerprint, its
parameters in the study's naming (``adapter``, ``adapter[LoRA].rank``, ``lr``...), every metric
``fit`` returned, and the error of a recipe whose training failed. ``Table.save`` writes JSON
(never pickle); ``Table.load`` checks a file before trusting any of it.

A :class:`Tabular` task answers each recipe from its table instead of training it
(:meth:`automl.Task.replay`, which ``fit`` asks first), so search algorithms run unchanged through
``automl.search`` and are compared over many seeds in seconds (the idea of NAS-Bench-101, Ying et
al., 2019, arXiv 1902.09635). A recipe outside the table is a :class:`SearchSpaceError`.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from automl.errors import AutomlError, SearchSpaceError, TrainingError
from automl.recipe import Recipe
from automl.result import Result
from automl.sampling.decode import Decoder
from automl.sampling.space import dna_params, dna_spec
from automl.symbolic import fingerprint
from automl.tasks import resolve
from automl.tasks.base import Subtask, Task

FORMAT = "automl.tabular/1"
_LABEL = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Row:
    """One tabulated recipe: its parameters, and its metrics or the error its training raised."""

    params: dict[str, Any]
    metrics: dict[str, float] | None
    error: str | None = None


@dataclass(frozen=True)
class Table:
    """Every recipe of one space on one task: rows by recipe fingerprint (:func:`fingerprint`)."""

    task: str
    space: str
    rows: dict[str, Row]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def params(self) -> list[str]:
        """Parameter names, in the order the rows first use them."""
        return list(dict.fromkeys(k for row in self.rows.values() for k in row.params))

    @property
    def metrics(self) -> list[str]:
        """Metric names (the union over the rows that trained)."""
        return list(dict.fromkeys(k for row in self.rows.values() for k in (row.metrics or {})))

    def frame(self) -> pd.DataFrame:
        """One row per recipe: ``recipe`` (fingerprint), the parameters (NaN where inactive), the
        metrics (NaN where training failed) and ``error``."""
        params, metrics = self.params, self.metrics
        records = [{"recipe": key, **{p: row.params.get(p) for p in params},
                    **{m: (row.metrics or {}).get(m) for m in metrics}, "error": row.error}
                   for key, row in self.rows.items()]
        return pd.DataFrame(records, columns=["recipe", *params, *metrics, "error"])

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (``format``, ``task``, ``space``, ``params``, ``metrics``, and
        ``rows`` of ``[recipe, *params, *metrics, error]``), atomically."""
        params, metrics = self.params, self.metrics
        rows = [[key, *(row.params.get(p) for p in params), *((row.metrics or {}).get(m) for m in metrics), row.error]
                for key, row in self.rows.items()]
        document = {"format": FORMAT, "task": self.task, "space": self.space, "params": params,
                    "metrics": metrics, "rows": rows}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(document, allow_nan=False, separators=(",", ":")) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Table":
        """Read a table written by :meth:`save`; anything malformed is a :class:`SearchSpaceError`."""
        try:
            document = json.loads(Path(path).read_text())
        except OSError as e:
            raise SearchSpaceError(f"cannot read table {str(path)!r}: {e.strerror or e}; make it with "
                                   f"`automl tabulate SPACE --out FILE`.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SearchSpaceError(f"table {str(path)!r} is not JSON ({e}); it is damaged: tabulate again.") from None
        return cls.from_document(document, where=f"table {str(path)!r}")

    @classmethod
    def from_document(cls, document: Any, where: str = "table") -> "Table":
        """A table from its parsed JSON, checked field by field (the file is untrusted)."""
        def bad(problem: str) -> SearchSpaceError:
            return SearchSpaceError(f"{where} is malformed: {problem}; write it with `automl tabulate`.")

        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise bad(f"it is not an {FORMAT!r} document")
        for key in ("task", "space"):
            if not isinstance(document.get(key), str):
                raise bad(f"{key!r} is not a string")
        names = {}
        for key in ("params", "metrics"):
            names[key] = document.get(key)
            if not isinstance(names[key], list) or not all(isinstance(n, str) for n in names[key]):
                raise bad(f"{key!r} is not a list of names")
        params, metrics = names["params"], names["metrics"]
        if len(set(params + metrics)) != len(params) + len(metrics):
            raise bad("a column name repeats")
        rows_in = document.get("rows")
        if not isinstance(rows_in, list) or not rows_in:
            raise bad("'rows' is not a non-empty list")
        width = 2 + len(params) + len(metrics)
        rows: dict[str, Row] = {}
        for i, row in enumerate(rows_in):
            if not isinstance(row, list) or len(row) != width:
                raise bad(f"row {i} does not have {width} values")
            key, error = row[0], row[-1]
            values = row[1:1 + len(params)]
            scores = row[1 + len(params):-1]
            if not isinstance(key, str) or key in rows:
                raise bad(f"row {i}'s recipe fingerprint is missing or repeats")
            if not all(isinstance(v, _LABEL) for v in values):
                raise bad(f"row {i} has a parameter that is not a plain label")
            if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
                       for v in scores):
                raise bad(f"row {i} has a metric that is not a finite number")
            if error is not None and not isinstance(error, str):
                raise bad(f"row {i}'s error is not a string")
            trained = {m: float(v) for m, v in zip(metrics, scores) if v is not None}
            if (error is None) == (not trained):
                raise bad(f"row {i} must hold either metrics or an error")
            rows[key] = Row({p: v for p, v in zip(params, values) if v is not None},
                            trained if error is None else None, error)
        return cls(document["task"], document["space"], rows)


def recipes(space: Recipe) -> Iterator[tuple[Recipe, dict[str, Any]]]:
    """Every recipe of a finite ``space`` with its Optuna parameters, in DNA order."""
    spec = dna_spec(space)
    if spec.space_size is None or spec.space_size < 0:
        raise SearchSpaceError("only a finite space can be tabulated: make every decision a pg.oneof "
                               "(e.g. lr=pg.oneof([1e-4, 1e-3, 1e-2]) instead of pg.floatv).")
    decoder = Decoder(space, spec)
    for dna in spec.iter_dna():
        yield decoder.decode(dna), dna_params(space, spec, dna)


def tabulate(space: Recipe, task: str | Task, device: str | torch.device | None = None,
             progress: bool = True, workers: int = 1, reuse: Table | None = None) -> Table:
    """Train every recipe of the finite ``space`` once on ``task`` (``fit``) into a :class:`Table`,
    in ``workers`` forked processes (CPU). A recipe whose training raises an
    :class:`AutomlError` is kept with that error. ``reuse``: a table of the same task whose rows
    are taken as they are for the recipes it holds (after a change to the space, only new
    recipes train)."""
    task = resolve(task)
    if reuse is not None and reuse.task != task.name:
        raise SearchSpaceError(f"the table to reuse was made on task {reuse.task!r}, not {task.name!r}.")
    known = reuse.rows if reuse is not None else {}
    every = [(fingerprint(recipe), recipe, params) for recipe, params in recipes(space)]
    todo = [(recipe, params) for key, recipe, params in every if key not in known]
    task.pretrained_model()  # built once, before any recipe (and any fork), so `seconds` are the recipe's own
    _JOB[:] = [todo, task, device]
    try:
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                outcomes = list(tqdm(pool.imap(_train, range(len(todo))), total=len(todo), disable=not progress,
                                     desc="tabulate", unit="recipe"))
        else:
            outcomes = [_train(i) for i in tqdm(range(len(todo)), disable=not progress, desc="tabulate", unit="recipe")]
    finally:
        _JOB.clear()
    trained = {fingerprint(recipe): Row(params, metrics, error) for (recipe, params), (metrics, error) in zip(todo, outcomes)}
    rows = {key: trained[key] if key in trained else Row(params, known[key].metrics, known[key].error)
            for key, _, params in every}
    return Table(task.name, fingerprint(space), rows)


_JOB: list = []  # (recipes, task, device) of the running tabulation, inherited by forked workers


def _train(i: int) -> tuple[dict[str, float] | None, str | None]:
    from automl.trainer import fit  # the trainer imports the tasks package, which holds this module
    recipes_, task, device = _JOB
    try:
        return dict(fit(recipes_[i][0], task, device=device).metrics), None
    except AutomlError as e:
        return None, f"{type(e).__name__}: {' '.join(str(e).split())}"


class Tabular(Task):
    """A task that replays a :class:`Table` instead of training: ``fit`` returns the table's
    metrics of a recipe (a failed recipe raises its :class:`TrainingError` again).

    ``table``: a :class:`Table` or the path of one; ``task``: the task it was made on (default:
    the built-in task the table names), which still provides the model architecture a study
    checks its space against and the subtask names."""

    def __init__(self, table: str | Path | Table, task: str | Task | None = None):
        self.table = table if isinstance(table, Table) else Table.load(table)
        try:
            source = resolve(task if task is not None else self.table.task)
        except SearchSpaceError:
            raise SearchSpaceError(f"the table was made on task {self.table.task!r}, which is not built in; "
                                   f"pass that task: Tabular(table, task=...).") from None
        if source.name != self.table.task:
            raise SearchSpaceError(f"the table was made on task {self.table.task!r}, not {source.name!r}; "
                                   f"pass the task it was made on.")
        self.source = source
        self.name = f"tabular-{source.name}"
        self.trainable_modules = source.trainable_modules
        self.export_prefix = source.export_prefix

    def check_space(self, space: Recipe) -> None:
        """Refuse a space other than the one the table was made from."""
        if fingerprint(space) != self.table.space:
            raise SearchSpaceError(f"the table holds another search space than this one (fingerprint "
                                   f"{self.table.space}, not {fingerprint(space)}); tabulate this space "
                                   f"with `automl tabulate`.")

    def replay(self, recipe: Recipe) -> Result:
        row = self.table.rows.get(fingerprint(recipe))
        if row is None:
            raise SearchSpaceError(f"recipe {recipe.labels()} (lr={recipe.lr:g}, steps={recipe.steps}) is not "
                                   f"one of the {len(self.table)} recipes in the table of task "
                                   f"{self.table.task!r}; search the space the table was made from, or "
                                   f"tabulate this space with `automl tabulate`.")
        if row.error is not None:
            raise TrainingError(f"{row.error} (replayed from the table)")
        return Result(metrics=dict(row.metrics))

    # -- the task it was made on: the architecture a study checks, and the subtasks ----------
    def pretrained_model(self) -> nn.Module:
        return self.source.pretrained_model()

    def build_model(self) -> nn.Module:
        return self.source.build_model()

    def adaptable_layers(self, model: nn.Module) -> list[str]:
        return self.source.adaptable_layers(model)

    def trained_modules(self, subtask: Subtask) -> tuple[str, ...]:
        return self.source.trained_modules(subtask)

    def owned_modules(self, subtask: Subtask) -> tuple[str, ...]:
        return self.source.owned_modules(subtask)

    @property
    def subtasks(self) -> list[Subtask]:
        return self.source.subtasks
