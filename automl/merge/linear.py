"""Linear merging: a (weighted) mean of the models' weights (Wortsman et al., model soups)."""
from __future__ import annotations

import torch

from automl.errors import SearchSpaceError
from automl.merge.base import MergeMethod


class Linear(MergeMethod):
    """``θ = Σ_t w_t θ_t / Σ_t w_t``; equal weights by default."""

    weights: tuple | None = None

    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        weights = self.weights or (1.0,) * len(tensors)
        if len(weights) != len(tensors):
            raise SearchSpaceError(f"Linear has {len(weights)} weights for {len(tensors)} models.")
        total = float(sum(weights))
        return sum(w * t.float() for w, t in zip(weights, tensors)) / total
