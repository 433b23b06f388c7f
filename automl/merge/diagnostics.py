"""Merge diagnostics, stored per trial.

- Loss barrier along the linear path (Frankle et al., 2020; Ainsworth et al., 2023, Eq. 1 as in
  reference.md): ``B = max_t L((1−t)θ_a + tθ_b) − ½(L(θ_a) + L(θ_b))``.
- Singular-vector alignment (Ito et al., "Analysis of Linear Mode Connectivity via Permutation-
  Based Weight Matching"): weight matching aligns the left singular vectors of large singular
  values between models while leaving each model's singular values unchanged; measured per
  weight as the mean ``|cos|`` of the top singular vectors matched by rank.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from automl.errors import SearchSpaceError
from automl.merge.base import MergeMethod, check_compatible


def _layer(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _matrices(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.dim() == 2 and v.is_floating_point()}


def interpolate(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                t: float) -> dict[str, torch.Tensor]:
    """``(1−t)θ_a + tθ_b`` for floating tensors; integer buffers are taken from ``θ_a``."""
    return {k: torch.lerp(a, state_b[k].to(a), t) if a.is_floating_point() else a for k, a in state_a.items()}


def interpolation_losses(model: nn.Module, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                         loss_fn: Callable[[nn.Module], float], points: int = 5) -> list[float]:
    """``L((1−t)θ_a + tθ_b)`` at ``points`` evenly spaced ``t`` from 0 to 1 (``model`` is untouched)."""
    check_compatible(state_a, [state_b])
    if not isinstance(points, int) or points < 2:
        raise SearchSpaceError(f"points must be an integer ≥ 2 (the two endpoints at least), got {points!r}.")
    probe = copy.deepcopy(model)
    losses = []
    for t in torch.linspace(0, 1, points).tolist():
        probe.load_state_dict(interpolate(state_a, state_b, t))
        losses.append(float(loss_fn(probe)))
    return losses


def loss_barrier(model: nn.Module, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                 loss_fn: Callable[[nn.Module], float], points: int = 5) -> float:
    """``max_t L((1−t)θ_a + tθ_b) − mean(L(θ_a), L(θ_b))`` over ``points`` values of ``t``."""
    losses = interpolation_losses(model, state_a, state_b, loss_fn, points)
    return max(losses) - (losses[0] + losses[-1]) / 2


def singular_alignment(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                       top: int = 5) -> dict[str, float]:
    """Per weight matrix (layer name), the mean ``|⟨u_i^a, u_i^b⟩|`` over the ``top`` left singular
    vectors of largest singular value, matched by rank ``i``."""
    if not isinstance(top, int) or top < 1:
        raise SearchSpaceError(f"top must be a positive integer, got {top!r}.")
    check_compatible(state_a, [state_b])
    out = {}
    for key, a in _matrices(state_a).items():
        u_a = torch.linalg.svd(a.detach().to("cpu", torch.float64), full_matrices=False).U
        u_b = torch.linalg.svd(state_b[key].detach().to("cpu", torch.float64), full_matrices=False).U
        k = min(top, u_a.shape[1])
        out[_layer(key)] = float((u_a[:, :k] * u_b[:, :k]).sum(0).abs().mean())
    return out


def singular_value_change(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per weight matrix, ``max_i |σ_i^a − σ_i^b| / σ_1^a`` (0 when permutation alone relates them)."""
    check_compatible(state_a, [state_b])
    out = {}
    for key, a in _matrices(state_a).items():
        s_a = torch.linalg.svdvals(a.detach().to("cpu", torch.float64))
        s_b = torch.linalg.svdvals(state_b[key].detach().to("cpu", torch.float64))
        out[_layer(key)] = float((s_a - s_b).abs().max() / s_a[0].clamp(min=torch.finfo(torch.float64).tiny))
    return out


def merge_metrics(method: MergeMethod, model: nn.Module, states: list[dict[str, torch.Tensor]],
                  loss_fn: Callable[[nn.Module], float], points: int = 5, top: int = 5) -> dict[str, float]:
    """Diagnostics of merging the first two of ``states`` (``model`` gives the architecture):

    ``merge/barrier`` (linear path as trained), ``merge/alignment/<layer>`` (top-``top``
    singular-vector ``|cos|``), then the method's own (:meth:`MergeMethod.diagnose`; e.g.
    :class:`~automl.merge.rebasin.WeightMatching` adds the barrier and alignment after matching).
    """
    if len(states) < 2:
        return {}
    a, b = states[0], states[1]
    metrics = {"merge/barrier": loss_barrier(model, a, b, loss_fn, points)}
    metrics.update({f"merge/alignment/{k}": v for k, v in singular_alignment(a, b, top).items()})
    metrics.update(method.diagnose(model, a, b, loss_fn, points, top))
    return metrics
