"""Every metric a trial stores, in one table: name (or ``family/<part>``), direction, description.

The trainer's :class:`automl.Result`, :class:`automl.Objective`, the leaderboard and the report
all read this table, so any stored metric can be an objective and has one direction.
"""
from __future__ import annotations

from dataclasses import dataclass

from automl.errors import SearchSpaceError


@dataclass(frozen=True)
class Metric:
    """One metric (``family=True``: a family ``name/<part>``, e.g. ``intruders/<layer>``)."""

    name: str
    direction: str  # "maximize" | "minimize"
    description: str
    family: bool = False

    @property
    def pattern(self) -> str:
        return f"{self.name}/<{self.description.split(' ', 1)[0].strip('<>')}>" if self.family else self.name


METRICS: tuple[Metric, ...] = (
    Metric("accuracy", "maximize", "mean accuracy of the deployed model over subtasks"),
    Metric("accuracy", "maximize", "subtask: accuracy on one subtask", family=True),
    Metric("pretrain_accuracy", "maximize", "accuracy on the pretraining distribution"),
    Metric("forgetting", "minimize", "drop of the pretrained skill (accuracy points; nats/token for language models)"),
    Metric("intruders", "minimize", "intruder dimensions summed over hidden layers"),
    Metric("intruders", "minimize", "layer: intruder dimensions of one layer", family=True),
    Metric("effective_rank", "maximize", "layer: effective rank of the tuned weight", family=True),
    Metric("drift", "minimize", "layer: spectral drift from the pretrained weight", family=True),
    Metric("overlap", "maximize", "layer: subspace overlap with the pretrained weight", family=True),
    Metric("merge", "minimize", "diagnostic: merge diagnostics (barrier, alignment, ...)", family=True),
    Metric("bits", "minimize", "bits per parameter as deployed, scales included"),
    Metric("trainable_params", "minimize", "number of trained parameters"),
    Metric("seconds", "minimize", "wall-clock seconds of the trial"),
    Metric("train_seconds", "minimize", "seconds spent in training steps"),
    Metric("loss", "minimize", "evaluation loss on the subtasks' held-out data (mean over subtasks)"),
    Metric("loss", "minimize", "subtask: evaluation loss on one subtask", family=True),
    Metric("perplexity", "minimize", "evaluation perplexity (language-model tasks)"),
    Metric("perplexity", "minimize", "subtask: perplexity on one subtask", family=True),
    Metric("pretrain_loss", "minimize", "loss on the pretraining distribution"),
)
_EXACT = {m.name: m for m in METRICS if not m.family}
_FAMILIES = {m.name: m for m in METRICS if m.family}
# merge diagnostics where larger is better
_MAXIMIZED_MERGE = ("merge/alignment",)


def lookup(name: str) -> Metric:
    """The table entry of ``name`` (an exact metric or a member of a family); unknown names are a
    :class:`SearchSpaceError` listing the choices."""
    if not isinstance(name, str):
        raise SearchSpaceError(f"a metric name is a string, got {type(name).__name__}.")
    if name in _EXACT:
        return _EXACT[name]
    family, sep, part = name.partition("/")
    if sep and part and family in _FAMILIES:
        metric = _FAMILIES[family]
        if any(name.startswith(p) for p in _MAXIMIZED_MERGE):
            return Metric(name, "maximize", metric.description)
        return Metric(name, metric.direction, metric.description)
    choices = sorted(_EXACT) + sorted(f"{m.name}/<...>" for m in _FAMILIES.values())
    raise SearchSpaceError(f"unknown metric {name!r}; choose from {choices}.")


def direction(name: str) -> str:
    """``"maximize"`` or ``"minimize"`` for a metric name."""
    return lookup(name).direction


def is_metric(name: str) -> bool:
    try:
        lookup(name)
    except SearchSpaceError:
        return False
    return True


# The leaderboard's metric columns: these first (after the score), the rest at the end.
LEADERBOARD_HEAD = ("accuracy", "forgetting", "intruders", "bits")
LEADERBOARD_TAIL = ("pretrain_accuracy", "trainable_params")
