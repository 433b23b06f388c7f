"""LoRA (Hu et al., 2021, arXiv 2106.09685) as one layer whose variants are options.

``W' = W + s · B A`` with ``A`` (r × in) kaiming-uniform(a=√5), ``B`` (out × r) zero, so the
adapted model equals the base model at initialisation (LoRA §4.1, Eq. 3).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from automl.adapters.base import Adapter, AdapterLayer
from automl.errors import SearchSpaceError


class LoraLinear(AdapterLayer):
    """A frozen linear layer plus a trainable low-rank update ``scaling · B A``."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float = 0.0):
        super().__init__(base)
        self.rank = rank
        self.scaling = scaling
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> torch.Tensor:
        """``scaling · B A`` (out × in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.delta_weight()

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lora_A.to(x.dtype)
        b = self.lora_B.to(x.dtype)
        return self.base(x) + (self.dropout(x) @ a.t() @ b.t()) * self.scaling


def check_rank(rank: int, name: str, linear: nn.Linear) -> None:
    """A rank must lie in ``[1, min(in, out)]`` of the layer it adapts."""
    limit = min(linear.in_features, linear.out_features)
    if not 1 <= rank <= limit:
        raise SearchSpaceError(f"rank {rank} does not fit layer {name!r} "
                               f"({linear.out_features}×{linear.in_features}): "
                               f"choose a rank in [1, {limit}].")


class LoRA(Adapter):
    """Low-rank adaptation with scale ``s = alpha / rank``."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.rank, int) and self.rank <= 0:
            raise SearchSpaceError(f"{type(self).__name__}.rank must be a positive integer, got {self.rank}.")
        if isinstance(self.dropout, float) and not 0.0 <= self.dropout < 1.0:
            raise SearchSpaceError(f"{type(self).__name__}.dropout must lie in [0, 1), got {self.dropout}.")

    def scaling(self) -> float:
        """The update's scale ``s``: ``alpha / rank`` (LoRA §4.1)."""
        return self.alpha / self.rank

    def wrap(self, name: str, linear: nn.Linear) -> nn.Module:
        check_rank(self.rank, name, linear)
        return LoraLinear(linear, self.rank, self.scaling(), self.dropout)
