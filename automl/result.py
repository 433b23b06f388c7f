"""The outcome of one recipe on one task."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Result:
    """Metrics of a fine-tuned, deployed model, plus the model itself.

    ``metrics`` is a plain dict with the contract's names (``accuracy``, ``accuracy/<subtask>``,
    ``pretrain_accuracy``, ``forgetting``, ``intruders``, ``intruders/<layer>``, ``bits``,
    ``trainable_params``, ``seconds``, ``train_seconds``); each is also an attribute.
    """

    metrics: dict[str, float]
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    trained_states: list[dict[str, torch.Tensor]] = field(default_factory=list, repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"Result has no metric {name!r}; metrics: {sorted(metrics)}")
