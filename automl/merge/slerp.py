"""Spherical linear interpolation between two models, per tensor (Shoemake, 1985; as in mergekit).

For flattened tensors ``v0, v1`` at angle ``Ω = arccos(⟨v0/‖v0‖, v1/‖v1‖⟩)``:
``slerp(t) = sin((1−t)Ω)/sin Ω · v0 + sin(tΩ)/sin Ω · v1``. Nearly parallel (or zero) tensors,
where ``sin Ω`` vanishes, fall back to ``lerp(t) = (1−t) v0 + t v1``.
"""
from __future__ import annotations

import math

import torch

from automl.errors import SearchSpaceError
from automl.merge.base import MergeMethod

PARALLEL = 0.9995   # |cos Ω| above which the tensors count as parallel (mergekit's DOT_THRESHOLD)


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, parallel: float = PARALLEL) -> torch.Tensor:
    """Spherical interpolation from ``v0`` (t=0) to ``v1`` (t=1), lerp for near-parallel tensors."""
    n0, n1 = v0.norm(), v1.norm()
    if n0 == 0 or n1 == 0:
        return (1 - t) * v0 + t * v1
    cos = float((v0.flatten() @ v1.flatten()) / (n0 * n1))
    if abs(cos) > parallel:
        return (1 - t) * v0 + t * v1
    omega = math.acos(max(-1.0, min(1.0, cos)))
    return (math.sin((1 - t) * omega) * v0 + math.sin(t * omega) * v1) / math.sin(omega)


class SLERP(MergeMethod):
    """Per-tensor spherical interpolation of exactly two models at ``t`` ∈ [0, 1] (0 = the first)."""

    t: float = 0.5

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.t, (int, float)) and not 0.0 <= self.t <= 1.0:
            raise SearchSpaceError(f"SLERP.t must lie in [0, 1] (0 = first model, 1 = second), got {self.t}.")

    def check_count(self, n: int) -> None:
        if n != 2:
            raise SearchSpaceError(f"SLERP interpolates exactly 2 models, got {n}; use Linear, TaskArithmetic, "
                                   f"TIES or DARE to merge {n} models.")

    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        return slerp(self.t, tensors[0], tensors[1])
