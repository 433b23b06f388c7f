"""Merges on task vectors ``τ_t = θ_t − θ_base``: task arithmetic, TIES and DARE.

- Task arithmetic (Ilharco et al., 2023, "Editing Models with Task Arithmetic", §2):
  ``θ = θ_base + λ Σ_t τ_t``.
- TIES (Yadav et al., 2023, "TIES-Merging", Alg. 1): trim each ``τ_t`` to its top-``density``
  fraction by magnitude, elect a sign per entry ``γ = sgn(Σ_t τ̂_t)`` ("sum"; or the majority
  of signs, "count"), take the disjoint mean over the models agreeing with ``γ``, scale by λ.
- DARE (Yu et al., 2024, "Language Models are Super Mario", Eq. 2): drop each entry of ``τ_t``
  with probability ``p`` and rescale the rest by ``1/(1 − p)``, so ``E[τ̃_t] = τ_t``; then
  merge the sparse vectors linearly or with TIES' sign election and disjoint mean.
Trimming and dropping act per tensor, as in mergekit and peft's ``merge_utils``.
"""
from __future__ import annotations

import math
import zlib

import torch

from automl.errors import SearchSpaceError
from automl.merge.base import MergeMethod

SIGN_METHODS = ("sum", "count")
DARE_THEN = ("linear", "ties")


def _check_finite(owner: str, field: str, value: object) -> None:
    if isinstance(value, (int, float)) and not math.isfinite(value):
        raise SearchSpaceError(f"{owner}.{field} must be a finite number, got {value}.")


def trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``k = max(1, round(density·n))`` entries of largest magnitude (TIES step 1)."""
    k = max(1, round(density * tau.numel()))
    if k >= tau.numel():
        return tau
    flat = tau.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().topk(k).indices] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).view_as(tau)


def elect_sign(taus: torch.Tensor, method: str) -> torch.Tensor:
    """``γ`` per entry of the stacked task vectors (T × …): sign of the total mass ("sum") or the
    majority of signs ("count"); a tie counts as positive (as in peft and mergekit)."""
    votes = taus.sum(0) if method == "sum" else taus.sign().sum(0)
    return torch.where(votes >= 0, 1.0, -1.0).to(taus.dtype)


def disjoint_mean(taus: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Mean over the models whose (nonzero) entry agrees with the elected sign; 0 where none does."""
    agree = (taus.sign() == sign).to(taus.dtype)
    return (taus * agree).sum(0) / agree.sum(0).clamp(min=1.0)


def dare_drop(tau: torch.Tensor, drop: float, rescale: bool, generator: torch.Generator) -> torch.Tensor:
    """``(1 − m) ⊙ τ`` with ``m ~ Bernoulli(drop)``, divided by ``1 − drop`` when rescaling."""
    keep = torch.rand(tau.shape, generator=generator) >= drop
    kept = torch.where(keep.to(tau.device), tau, torch.zeros_like(tau))
    return kept / (1.0 - drop) if rescale else kept


class TaskArithmetic(MergeMethod):
    """``θ_base + λ Σ_t τ_t`` (Ilharco et al., 2023); a negative λ negates tasks."""

    uses_base = True

    scale: float = 1.0

    def _on_bound(self) -> None:
        super()._on_bound()
        _check_finite("TaskArithmetic", "scale", self.scale)

    def task_coefficients(self, n: int) -> list[float]:
        return [float(self.scale)] * n

    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        return base + self.scale * sum(t - base for t in tensors)


class TIES(MergeMethod):
    """TIES-Merging (Yadav et al., 2023, Alg. 1): trim, elect sign, disjoint mean, scale by λ."""

    uses_base = True
    density: float = 0.2
    scale: float = 1.0
    sign: str = "sum"

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.density, (int, float)) and not 0.0 < self.density <= 1.0:
            raise SearchSpaceError(f"TIES.density is the fraction of each task vector kept and must lie in "
                                   f"(0, 1], got {self.density}.")
        _check_finite("TIES", "scale", self.scale)
        if isinstance(self.sign, str) and self.sign not in SIGN_METHODS:
            raise SearchSpaceError(f"TIES.sign must be one of {SIGN_METHODS}, got {self.sign!r}.")

    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        taus = torch.stack([trim(t - base, self.density) for t in tensors])
        return base + self.scale * disjoint_mean(taus, elect_sign(taus, self.sign))


class DARE(MergeMethod):
    """DARE (Yu et al., 2024): random drop-and-rescale of each task vector, then a merge.

    ``then="linear"``: ``θ_base + λ · mean_t τ̃_t`` (the Linear merge of the sparsified models;
    λ = T gives the paper's task-arithmetic sum). ``then="ties"``: TIES' sign election
    (``sign``) and disjoint mean on ``τ̃_t``, scaled by λ (mergekit's ``dare_ties``). The masks
    come from ``seed``, the tensor's name and the model's index, so a merge is reproducible.
    """

    uses_base = True
    drop: float = 0.5
    rescale: bool = True
    then: str = "linear"
    scale: float = 1.0
    sign: str = "sum"
    seed: int = 0

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.drop, (int, float)) and not 0.0 <= self.drop < 1.0:
            raise SearchSpaceError(f"DARE.drop is the probability of dropping an entry and must lie in "
                                   f"[0, 1), got {self.drop}.")
        if isinstance(self.then, str) and self.then not in DARE_THEN:
            raise SearchSpaceError(f"DARE.then must be one of {DARE_THEN}, got {self.then!r}.")
        if isinstance(self.sign, str) and self.sign not in SIGN_METHODS:
            raise SearchSpaceError(f"DARE.sign must be one of {SIGN_METHODS}, got {self.sign!r}.")
        _check_finite("DARE", "scale", self.scale)

    def generator(self, name: str, index: int) -> torch.Generator:
        """The mask generator of model ``index``'s tensor ``name``."""
        return torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/{name}/{index}".encode()))

    def sparsify(self, name: str, tau: torch.Tensor, index: int) -> torch.Tensor:
        """Model ``index``'s ``τ̃`` for tensor ``name``."""
        return dare_drop(tau, self.drop, self.rescale, self.generator(name, index))

    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        taus = torch.stack([self.sparsify(name, t - base, i) for i, t in enumerate(tensors)])
        merged = taus.mean(0) if self.then == "linear" else disjoint_mean(taus, elect_sign(taus, self.sign))
        return base + self.scale * merged
