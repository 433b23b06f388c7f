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

from automl.adapters.lora import LoraLinear
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

    Keys are the base state dict's weight names (``fc1.weight`` for the layer ``fc1``). Only
    plain LoRA layers (and rsLoRA, which differs in ``s`` only) are low-rank task vectors of the
    pretrained weight: a layer whose frozen weight differs from ``base`` (PiSSA's residual) or
    whose merged weight is not ``W + s·B A`` (DoRA's normalisation) raises
    :class:`SearchSpaceError` — merge such models as dense state dicts.
    """
    deltas = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLinear):
            continue
        key = f"{name}.weight"
        if type(module).merged_weight is not LoraLinear.merged_weight:
            raise SearchSpaceError(f"layer {name!r} ({type(module).__name__}) does not compute W + s·B A, so its "
                                   f"update is no low-rank task vector; merge the dense state dicts instead.")
        if key not in base or not torch.equal(module.base.weight.detach(), base[key].to(module.base.weight)):
            raise SearchSpaceError(f"the frozen weight of layer {name!r} differs from the base tensor {key!r} "
                                   f"(e.g. PiSSA's residual); merge the dense state dicts instead.")
        deltas[key] = LowRankDelta(module.scaling * module.lora_B.detach(), module.lora_A.detach())
    if not deltas:
        raise SearchSpaceError(f"{type(model).__name__} has no LoRA layer; apply a LoRA adapter or merge dense "
                               f"state dicts with MergeMethod.merge.")
    return deltas
