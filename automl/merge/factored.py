"""Low-rank task vectors: merging LoRA models without materialising dense deltas.

A LoRA fine-tune changes a weight by ``τ = s · B A`` (Hu et al., 2021, Eq. 3). A merge that is
linear in the task vectors, ``θ = θ_base + Σ_t c_t τ_t`` (Linear, TaskArithmetic), is again
low-rank: ``Σ_t c_t s_t B_t A_t = [c_1 s_1 B_1 … c_T s_T B_T] · [A_1; …; A_T]``, a LoRA of rank
``Σ_t r_t`` (the ``"cat"`` combination of peft's ``add_weighted_adapter``). Its dense value is
one ``out × Σr`` by ``Σr × in`` product per layer instead of ``T`` dense task vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from automl.errors import SearchSpaceError


@dataclass(frozen=True)
class LowRankDelta:
    """A weight update ``Δ = B A`` with ``B`` (out × r) and ``A`` (r × in); the scale is in ``B``."""

    B: torch.Tensor
    A: torch.Tensor

    def __post_init__(self) -> None:
        if self.B.dim() != 2 or self.A.dim() != 2 or self.B.shape[1] != self.A.shape[0]:
            raise SearchSpaceError(f"a low-rank delta needs B (out × r) and A (r × in) with one r; got "
                                   f"B {tuple(self.B.shape)} and A {tuple(self.A.shape)}.")

    @property
    def shape(self) -> torch.Size:
        """Shape of the dense update (out × in)."""
        return torch.Size((self.B.shape[0], self.A.shape[1]))

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def dense(self) -> torch.Tensor:
        """``B A`` (out × in)."""
        return self.B @ self.A

    @staticmethod
    def combine(terms: list[tuple[float, "LowRankDelta"]]) -> "LowRankDelta":
        """``Σ c_t Δ_t`` as one delta of rank ``Σ r_t``: ``B = [c_1 B_1 …]``, ``A = [A_1; …]``."""
        return LowRankDelta(torch.cat([c * d.B for c, d in terms], dim=1),
                            torch.cat([d.A for _, d in terms], dim=0))


def lora_task_vectors(model: nn.Module, base: dict[str, torch.Tensor]) -> dict[str, LowRankDelta]:
    """The low-rank task vectors ``s · B A`` of ``model``'s LoRA layers, keyed by weight name.

    Keys are the base state dict's weight names (``fc1.weight`` for the layer ``fc1``). Each
    adapter layer gives its own factors (``low_rank_delta``); a layer whose update is not a
    low-rank task vector of the base (PiSSA's residual, DoRA's normalisation, an SVD-family
    layer) raises :class:`SearchSpaceError` — merge such models as dense state dicts.
    """
    deltas = {}
    for name, module in model.named_modules():
        factors = getattr(module, "low_rank_delta", None)
        if factors is None:
            continue
        key = f"{name}.weight"
        if key not in base:
            raise SearchSpaceError(f"layer {name!r} has no base tensor {key!r}; pass the pretrained state dict.")
        try:
            b, a = factors(base[key])
        except SearchSpaceError as e:
            raise SearchSpaceError(f"layer {name!r}: {e}") from None
        deltas[key] = LowRankDelta(b, a)
    if not deltas:
        raise SearchSpaceError(f"{type(model).__name__} has no LoRA layer; apply a LoRA adapter or merge dense "
                               f"state dicts with MergeMethod.merge.")
    return deltas
