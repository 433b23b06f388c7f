"""A PyGlove search space as Optuna parameters: a define-by-run walk of its DNASpec.

Only *active* decisions are suggested: a conditional ``rank`` under ``adapter=LoRA`` is asked for
only when LoRA is chosen, so Optuna records it as absent (NaN in data frames) otherwise.
Parameter names and categorical choices are short stable labels: a decision is named by its
path, with the label of each enclosing choice (``adapter[LoRA].rank``); a choice between
objects is labelled by class name (``LoRA``), between literals by the literal (``4``, ``1.58``).
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Protocol

import pyglove as pg

from automl.errors import SearchSpaceError

_PRIMITIVES = (bool, int, float, str, type(None))
MAX_COMBINATIONS = 10_000


def candidate_labels(candidates: list[Any]) -> list[Any]:
    """Short stable labels of a choice's candidates: literals as themselves, objects by class."""
    labels: list[Any] = []
    for c in candidates:
        labels.append(c if isinstance(c, _PRIMITIVES) else type(c).__name__)
    counts: dict[Any, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    if all(n == 1 for n in counts.values()):
        return labels
    seen: dict[Any, int] = {}
    out = []
    for lab in labels:                      # two candidates of one class: number them
        if counts[lab] > 1:
            seen[lab] = seen.get(lab, 0) + 1
            out.append(f"{lab}#{seen[lab]}")
        else:
            out.append(lab)
    return out


class Chooser(Protocol):
    """What the walk asks at each active decision."""

    def choose(self, name: str, labels: list[Any], path: str) -> int: ...

    def choose_many(self, name: str, combos: list[tuple[int, ...]], labels: list[Any], path: str) -> int: ...

    def float_value(self, name: str, low: float, high: float, log: bool, path: str) -> float: ...


def _combinations(n: int, k: int, distinct: bool, ordered: bool) -> list[tuple[int, ...]]:
    if distinct:
        combos = itertools.combinations(range(n), k) if ordered else itertools.permutations(range(n), k)
    else:
        combos = itertools.combinations_with_replacement(range(n), k) if ordered else itertools.product(range(n), repeat=k)
    return list(itertools.islice(combos, MAX_COMBINATIONS + 1))


def walk(spec: pg.geno.Space, value: Any, chooser: Chooser, prefix: str = "") -> pg.DNA:
    """Walk the active decisions of ``spec`` (whose hyper values live in ``value``) and return the
    DNA of the choices ``chooser`` makes."""
    children = [_walk_decision(e, value, chooser, prefix) for e in spec.elements]
    return pg.DNA(None, children)


def _sub(e_spec: pg.geno.Space, value: Any, chooser: Chooser, name: str, label: Any) -> list[pg.DNA]:
    """The decisions inside the chosen candidate, named under ``name[label]``."""
    return [_walk_decision(e, value, chooser, f"{name}[{label}].") for e in e_spec.elements]


def _walk_decision(e: Any, owner: Any, chooser: Chooser, prefix: str) -> pg.DNA:
    name = f"{prefix}{e.location}"
    hyper = e.location.query(owner)
    if isinstance(e, pg.geno.Float):
        return pg.DNA(chooser.float_value(name, e.min_value, e.max_value, e.scale == "log", e.id))
    if isinstance(e, pg.geno.Choices):
        labels = candidate_labels(list(hyper.candidates))
        if e.num_choices == 1:
            i = chooser.choose(name, labels, str(e.id))
            return pg.DNA(i, _sub(e.candidates[i], hyper.candidates[i], chooser, name, labels[i]))
        combos = _combinations(len(labels), e.num_choices, e.distinct, e.sorted)
        if len(combos) > MAX_COMBINATIONS:
            raise SearchSpaceError(f"decision {name!r} has more than {MAX_COMBINATIONS} combinations; "
                                   f"use a PyGlove algorithm ('evolution', 'pyglove-random') for it.")
        j = chooser.choose_many(name, combos, labels, str(e.id))
        return pg.DNA(None, [pg.DNA(i, _sub(e.candidates[i], hyper.candidates[i], chooser,
                                             f"{name}.{k}", labels[i]))
                             for k, i in enumerate(combos[j])])
    raise SearchSpaceError(f"decision {e.id!r} is a {type(e).__name__}, which Optuna samplers cannot "
                           f"drive; use a PyGlove algorithm ('evolution', 'pyglove-random') or a "
                           f"pg.oneof / pg.manyof / pg.floatv instead.")


def combo_label(combo: tuple[int, ...], labels: list[Any]) -> str:
    return "+".join(str(labels[i]) for i in combo)


class TrialChooser:
    """Asks an Optuna trial for each active decision (``suggest_categorical`` / ``suggest_float``)."""

    def __init__(self, trial: Any):
        self.trial = trial

    def choose(self, name: str, labels: list[Any], path: str) -> int:
        return labels.index(self.trial.suggest_categorical(name, labels))

    def choose_many(self, name: str, combos: list[tuple[int, ...]], labels: list[Any], path: str) -> int:
        names = [combo_label(c, labels) for c in combos]
        return names.index(self.trial.suggest_categorical(name, names))

    def float_value(self, name: str, low: float, high: float, log: bool, path: str) -> float:
        return self.trial.suggest_float(name, low, high, log=log)


class DNAChooser:
    """Replays a given DNA, recording the Optuna parameters it corresponds to."""

    def __init__(self, dna: pg.DNA):
        self._by_id = {str(k): v for k, v in dna.to_dict(key_type="id", value_type="value").items()}
        self.params: dict[str, Any] = {}

    def _value(self, path: str) -> Any:
        return self._by_id[path]

    def choose(self, name: str, labels: list[Any], path: str) -> int:
        i = self._value(path)
        self.params[name] = labels[i]
        return i

    def choose_many(self, name: str, combos: list[tuple[int, ...]], labels: list[Any], path: str) -> int:
        combo = tuple(self._value(f"{path}[{k}]") for k in range(len(combos[0])))
        self.params[name] = combo_label(combo, labels)
        return combos.index(combo)

    def float_value(self, name: str, low: float, high: float, log: bool, path: str) -> float:
        v = float(self._value(path))
        self.params[name] = v
        return v


def dna_spec(space: Any) -> pg.geno.Space:
    """The DNASpec of a search space; a space without decisions is refused."""
    spec = pg.dna_spec(space)
    if not spec.decision_points:
        raise SearchSpaceError("the search space has no decisions: put pg.oneof / pg.floatv / "
                               "pg.manyof values in it (e.g. adapter=pg.oneof([...])), or use "
                               "automl.evaluate for one fixed recipe.")
    return spec


def space_size(space: Any, spec: pg.geno.Space | None = None) -> float:
    """How many recipes ``space`` holds (``inf`` with a continuous decision); ``spec``: its
    DNASpec, when the caller has it."""
    size = (spec or dna_spec(space)).space_size
    return math.inf if size is None or size < 0 else float(size)


def suggest(trial: Any, space: Any, spec: pg.geno.Space | None = None) -> pg.DNA:
    """Ask ``trial`` for every active decision of ``space``; return the DNA (spec attached)."""
    spec = spec or dna_spec(space)
    dna = walk(spec, space, TrialChooser(trial))
    dna.use_spec(spec)
    return dna


def dna_params(space: Any, spec: pg.geno.Space, dna: pg.DNA) -> dict[str, Any]:
    """The Optuna parameters (name → label or float) that ``dna`` corresponds to."""
    chooser = DNAChooser(dna)
    walk(spec, space, chooser)
    return chooser.params
