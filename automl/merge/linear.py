"""Linear merging: a (weighted) mean of the models' weights (Wortsman et al., 2022, model soups)."""
from __future__ import annotations

import math

import torch

from automl.errors import SearchSpaceError
from automl.merge.base import MergeMethod


class Linear(MergeMethod):
    """``θ = Σ_t w_t θ_t / Σ_t w_t``; equal weights by default.

    In task vectors: ``θ = θ_base + Σ_t (w_t / Σ w) τ_t``, so LoRA models merge on their factors.
    """

    weights: tuple | None = None

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.weights, tuple):
            if not self.weights or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0
                                           for w in self.weights) or sum(self.weights) <= 0:
                raise SearchSpaceError(f"Linear.weights must be non-negative numbers with a positive sum, "
                                       f"one per model; got {self.weights}.")

    def check_count(self, n: int) -> None:
        if self.weights is not None and len(self.weights) != n:
            raise SearchSpaceError(f"Linear has {len(self.weights)} weights for {n} models; give one weight "
                                   f"per model or none for a plain mean.")

    def task_coefficients(self, n: int) -> list[float]:
        weights = self.weights or (1.0,) * n
        total = float(sum(weights))
        return [w / total for w in weights]

    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        return sum(c * t for c, t in zip(self.task_coefficients(len(tensors)), tensors))
