"""The SVD family: the top-r singular triplets of ``W`` become adapter parameters over a frozen
residual, ``W' = W_res + U_p diag(S_p) V_pᵀ`` with ``W_res = W − U_r S_r V_rᵀ`` (so the model at
initialisation equals the base model up to rounding).

- SORSA (Cao, 2024, "Singular Values and Orthonormal Regularized Singular Vectors Adaptation",
  arXiv 2409.00055, Eq. 3–5): ``U_p``, ``S_p``, ``V_p`` all train; an orthonormality regulariser
  ``γ (‖U_pᵀU_p − I‖_F + ‖V_pᵀV_p − I‖_F)`` joins the loss.
- SVFit (Sun et al., 2024, arXiv 2409.05926): only the top-r singular values ``Σ_r`` train;
  ``U_r``, ``V_r`` and the residual ``W_e`` stay frozen (r numbers per layer).
"""
from __future__ import annotations

import torch
from torch import nn

from automl.adapters.base import AdapterLayer, RankedAdapter, principal_svd
from automl.errors import SearchSpaceError


class SvdLinear(AdapterLayer):
    """A frozen residual linear layer plus the principal part ``U_p diag(S_p) V_pᵀ``.

    ``U_p`` (out × r) and ``V_pᵀ`` (r × in) train when ``train_vectors`` (SORSA), else only
    ``S_p`` (r) trains (SVFit). The SVD runs in float32 on the base weight's device; the
    parameters take the base weight's dtype.
    """

    def __init__(self, base: nn.Linear, rank: int, train_vectors: bool):
        super().__init__(base)
        self.rank = rank
        weight = base.weight
        with torch.no_grad():
            u, s, vh = principal_svd(weight, rank)
            weight.copy_(torch.addmm(weight.float(), u * s, vh, alpha=-1.0).to(weight.dtype))
        self.svd_U = nn.Parameter(u.to(weight.dtype), requires_grad=train_vectors)
        self.svd_S = nn.Parameter(s.to(weight.dtype))
        self.svd_Vh = nn.Parameter(vh.to(weight.dtype), requires_grad=train_vectors)

    def delta_weight(self) -> torch.Tensor:
        """``U_p diag(S_p) V_pᵀ`` (out × in)."""
        return (self.svd_U * self.svd_S) @ self.svd_Vh

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.delta_weight()

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = nn.functional.linear
        principal = linear(linear(x, self.svd_Vh.to(x.dtype)) * self.svd_S.to(x.dtype), self.svd_U.to(x.dtype))
        return self.base(x) + principal

    def orthonormality(self) -> torch.Tensor:
        """``‖U_pᵀU_p − I‖_F + ‖V_pᵀV_p − I‖_F`` (SORSA Eq. 5, before the factor γ)."""
        eye = torch.eye(self.rank, device=self.svd_U.device, dtype=self.svd_U.dtype)
        return (torch.linalg.matrix_norm(self.svd_U.t() @ self.svd_U - eye)
                + torch.linalg.matrix_norm(self.svd_Vh @ self.svd_Vh.t() - eye))

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The merged weight (and the untouched bias): what a deployed model loads."""
        state = {"weight": self.merged_weight()}
        if self.base.bias is not None:
            state["bias"] = self.base.bias
        return state


class SvdAdapter(RankedAdapter):
    """An adapter of the SVD family (shared wrapping)."""

    train_vectors = True  # class constant: whether the singular vectors train too

    def wrap(self, name: str, linear: nn.Linear, rank: int | None = None) -> nn.Module:
        rank = self.rank_for(name, linear, rank)
        return SvdLinear(linear, rank, train_vectors=self.train_vectors)


class SORSA(SvdAdapter):
    """Trainable principal singular triplets with an orthonormality regulariser of weight ``gamma``.

    The penalty is ``gamma`` times the mean over adapted layers of
    ``‖U_pᵀU_p − I‖_F + ‖V_pᵀV_p − I‖_F``. (The reference code ``calc_ortho`` averages over the
    2·L matrices instead, i.e. half this value; ``gamma`` absorbs the factor.) Default ``gamma``
    is the reference script's 4e-4.
    """

    gamma: float = 4e-4

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.gamma, (int, float)) and self.gamma < 0:
            raise SearchSpaceError(f"SORSA.gamma must be non-negative (0 disables the orthonormal "
                                   f"regulariser), got {self.gamma}.")

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        terms = [m.orthonormality() for m in model.modules() if isinstance(m, SvdLinear)]
        if not terms or self.gamma == 0:
            return 0.0
        return self.gamma * torch.stack(terms).mean()


class SVFit(SvdAdapter):
    """Only the top-``rank`` singular values of each adapted weight train."""

    train_vectors = False
