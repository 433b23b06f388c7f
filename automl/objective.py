"""Objectives: the value(s) a search optimizes, computed from a trial's metrics."""
from __future__ import annotations

import pyglove as pg

from automl.errors import SearchSpaceError
from automl.metrics import lookup


def check_metric(name: str) -> None:
    """``name`` must be a stored metric (see :data:`automl.metrics.METRICS`), e.g. ``accuracy``,
    ``accuracy/<subtask>``, ``intruders/<layer>``, ``drift/<layer>``, ``merge/barrier``."""
    lookup(name)


class Objective(pg.Object):
    """A weighted sum ``accuracy·a − forgetting·f − intruders·i − bits·b`` (the default), or,
    with ``maximize``/``minimize``, several objectives optimized for a Pareto front.

    Default weights: an intruder dimension costs 0.01 accuracy, a point of forgetting 0.5 point
    of accuracy, one bit per parameter 0.001 (fp32 vs int4: 0.028).
    """

    accuracy: float = 1.0
    forgetting: float = 0.5
    intruders: float = 0.01
    bits: float = 0.001
    maximize: list[str] = []
    minimize: list[str] = []

    def _on_bound(self) -> None:
        super()._on_bound()
        for name in list(self.maximize) + list(self.minimize):
            check_metric(name)
        both = set(self.maximize) & set(self.minimize)
        if both:
            raise SearchSpaceError(f"metrics {sorted(both)} are both maximized and minimized; pick one.")

    @property
    def multi(self) -> bool:
        """True for a multi-objective (Pareto) study."""
        return bool(self.maximize or self.minimize)

    @property
    def names(self) -> list[str]:
        """Names of the optimized values, in order."""
        return list(self.maximize) + list(self.minimize) if self.multi else ["score"]

    @property
    def directions(self) -> list[str]:
        """Optuna directions of the optimized values."""
        if not self.multi:
            return ["maximize"]
        return ["maximize"] * len(self.maximize) + ["minimize"] * len(self.minimize)

    @property
    def weights(self) -> dict[str, float]:
        """The weighted sum's metrics and their weights, zero weights left out (empty for a
        multi-objective study)."""
        if self.multi:
            return {}
        weights = {"accuracy": self.accuracy, "forgetting": self.forgetting, "intruders": self.intruders,
                   "bits": self.bits}
        return {name: w for name, w in weights.items() if w != 0}

    @property
    def formula(self) -> str:
        """What is optimized, in words: ``score = accuracy − 0.5·forgetting − 0.01·intruders −
        0.001·bits`` or ``Pareto front: maximize accuracy; minimize intruders, bits``."""
        if self.multi:
            sides = [f"{verb} {', '.join(names)}" for verb, names in (("maximize", self.maximize),
                                                                     ("minimize", self.minimize)) if names]
            return "Pareto front: " + "; ".join(sides)
        terms = []
        for name, weight in self.weights.items():
            sign = "+" if (weight > 0) == (name == "accuracy") else "−"
            term = name if abs(weight) == 1 else f"{abs(weight):g}·{name}"
            terms.append((sign, term))
        if not terms:
            return "score = 0"
        text = ("" if terms[0][0] == "+" else "−") + terms[0][1]
        return "score = " + text + "".join(f" {sign} {term}" for sign, term in terms[1:])

    def __repr__(self) -> str:
        """Evaluable, and only what the objective uses: the four weights of a weighted sum, or
        the lists of a multi-objective one (``str()`` is :attr:`formula`)."""
        if self.multi:
            args = [f"{k}={list(v)!r}" for k, v in (("maximize", self.maximize), ("minimize", self.minimize)) if v]
        else:
            args = [f"{name}={getattr(self, name):g}" for name in ("accuracy", "forgetting", "intruders", "bits")]
        return f"Objective({', '.join(args)})"

    def __str__(self) -> str:
        return self.formula

    def score(self, metrics: dict[str, float]) -> float:
        """The weighted sum."""
        return (self.accuracy * metrics["accuracy"] - self.forgetting * metrics["forgetting"]
                - self.intruders * metrics["intruders"] - self.bits * metrics["bits"])

    def values(self, result) -> float | tuple[float, ...]:
        """What Optuna optimizes from a :class:`automl.Result` (or its metrics dict): one score,
        or one value per objective."""
        metrics = getattr(result, "metrics", result)
        if not self.multi:
            return self.score(metrics)
        missing = [n for n in self.names if n not in metrics]
        if missing:
            raise SearchSpaceError(f"metrics {missing} were not measured; measured: {sorted(metrics)}.")
        return tuple(float(metrics[n]) for n in self.names)
