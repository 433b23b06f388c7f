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

    def formula(self) -> str:
        """What is optimized, in words: ``score = 1·accuracy − 0.5·forgetting − ...`` (terms of
        weight 0 left out), or ``maximize accuracy; minimize intruders, bits (Pareto front)``."""
        if self.multi:
            parts = [f"{verb} {', '.join(names)}" for verb, names in
                     (("maximize", self.maximize), ("minimize", self.minimize)) if names]
            return "; ".join(parts) + " (Pareto front)"
        terms = [(w, name) for w, name in ((self.accuracy, "accuracy"), (-self.forgetting, "forgetting"),
                                            (-self.intruders, "intruders"), (-self.bits, "bits")) if w != 0]
        if not terms:
            return "score = 0"
        text = "".join(f"{' − ' if w < 0 else ' + '}{abs(w):g}·{name}" for w, name in terms)
        text = text[3:] if text.startswith(" + ") else "−" + text[3:]
        return f"score = {text}"

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
