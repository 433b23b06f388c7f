"""LoRA (Hu et al., 2021, arXiv 2106.09685) as one layer whose variants are options.

``W' = W + s · B A`` with ``A`` (r × in) kaiming-uniform(a=√5), ``B`` (out × r) zero, so the
adapted model equals the base model at initialisation (LoRA §4.1, Eq. 3). The same layer
carries the variants that only change the scale, the initialisation or the weight's
decomposition, like peft's ``tuners/lora/layer.py``:

- rsLoRA (Kalajdzievski, 2023, arXiv 2312.03732): ``s = α / √r`` (a different ``scaling``);
- PiSSA (Meng et al., 2024, arXiv 2404.02948, Eq. 2–4): ``init="pissa"`` — ``B A`` starts as
  the top-r SVD part of ``W`` and the frozen base holds the residual ``W − s B A``;
- DoRA (Liu et al., 2024, arXiv 2402.09353, Eq. 5): ``use_dora=True`` — a trainable magnitude
  ``m`` per output row, ``W' = m ⊙ (W + s B A) / ‖W + s B A‖_row`` with the norm detached (§4.3).
"""
from __future__ import annotations

import math

import pyglove as pg
import torch
from torch import nn

from automl.adapters.base import AdapterLayer, RankedAdapter, principal_svd
from automl.constraints import LORA_ALPHA, LORA_DROPOUT
from automl.errors import SearchSpaceError

INITS = ("lora", "pissa")


class LoraLinear(AdapterLayer):
    """A frozen linear layer plus a trainable low-rank update ``scaling · B A``.

    ``init="lora"`` (kaiming-uniform ``A``, zero ``B``) or ``"pissa"`` (principal singular
    triplets, exact SVD when ``niter`` is ``None``, else ``torch.svd_lowrank`` with ``niter``
    subspace iterations); ``use_dora`` adds DoRA's magnitude vector. Factors live on the base
    weight's device and dtype; SVDs run in float32.
    """

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float = 0.0, *,
                 init: str = "lora", niter: int | None = None, use_dora: bool = False):
        super().__init__(base)
        if init not in INITS:
            raise SearchSpaceError(f"LoraLinear init {init!r} is unknown; choose one of {INITS}.")
        self.rank = rank
        self.scaling = scaling
        self.init = init
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        if init == "lora":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        else:
            self._pissa_init(niter)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_magnitude_vector: nn.Parameter | None = None
        if use_dora:
            with torch.no_grad():
                norm = self.weight_norm(self.base.weight + self.delta_weight())
            self.lora_magnitude_vector = nn.Parameter(norm.to(w.dtype))

    @torch.no_grad()
    def _pissa_init(self, niter: int | None) -> None:
        """PiSSA Eq. 2–4: ``A = √S_r V_rᵀ``, ``B = U_r √S_r`` (``S_r`` divided by ``s`` so that
        ``s B A = U_r S_r V_rᵀ``); the frozen base becomes the residual ``W − s B A``."""
        weight = self.base.weight
        u, s, vh = principal_svd(weight, self.rank, niter)
        root = (s / self.scaling).sqrt()
        a, b = root[:, None] * vh, u * root[None, :]
        self.lora_A.copy_(a)
        self.lora_B.copy_(b)
        if weight.dtype == torch.float32:
            weight.addmm_(b, a, alpha=-self.scaling)  # in place: no out × in temporaries
        else:
            weight.copy_(torch.addmm(weight.float(), b, a, alpha=-self.scaling).to(weight.dtype))
        self.register_buffer("lora_A0", self.lora_A.detach().clone(), persistent=False)
        self.register_buffer("lora_B0", self.lora_B.detach().clone(), persistent=False)

    @property
    def use_dora(self) -> bool:
        return self.lora_magnitude_vector is not None

    @staticmethod
    def weight_norm(weight: torch.Tensor) -> torch.Tensor:
        """DoRA's ``‖W‖_c``: the L2 norm of each output row (out,), detached (DoRA §4.3)."""
        return torch.linalg.vector_norm(weight.detach(), dim=1)

    def delta_weight(self) -> torch.Tensor:
        """``scaling · B A`` (out × in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def merged_weight(self) -> torch.Tensor:
        weight = self.base.weight + self.delta_weight()
        if self.use_dora:
            weight = (self.lora_magnitude_vector / self.weight_norm(weight))[:, None] * weight
        return weight

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        dropped = self.dropout(x)
        hidden = nn.functional.linear(dropped, self.lora_A.to(x.dtype))
        if not self.use_dora:
            # y + s · h Bᵀ as one GEMM that accumulates into y (no separate scale and add passes)
            fused = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, self.rank).to(result.dtype),
                                self.lora_B.t().to(result.dtype), alpha=self.scaling)
            return fused.view_as(result)
        lora = nn.functional.linear(hidden, self.lora_B.to(x.dtype))
        # DoRA Eq. 5: y = m/‖W'‖ ⊙ (W x + s B A x) + b, the norm a constant (§4.3)
        with torch.no_grad():
            norm = self.weight_norm(torch.addmm(self.base.weight, self.lora_B, self.lora_A, alpha=self.scaling))
        scale = (self.lora_magnitude_vector / norm).to(result.dtype)
        bias = self.base.bias
        if isinstance(self.dropout, nn.Identity):
            base_out = result if bias is None else result - bias.to(result.dtype)
            out = torch.add(base_out, lora, alpha=self.scaling) * scale
            return out if bias is None else out + bias.to(out.dtype)
        # with dropout (as peft): y = W x + b + (m/‖W'‖ − 1) ⊙ W x̃ + m/‖W'‖ ⊙ s B A x̃, x̃ = dropout(x)
        base_out = nn.functional.linear(dropped, self.base.weight.to(x.dtype))
        return result + (scale - 1) * base_out + scale * lora * self.scaling

    def trained_state(self) -> dict[str, torch.Tensor]:
        """``lora_A``, ``lora_B``; DoRA adds ``lora_magnitude_vector``; PiSSA adds the initial
        factors ``lora_A0``, ``lora_B0``, which turn it into a plain LoRA delta on the original
        weight: ``W_res + s B A = W + s (B A − B₀ A₀)`` (PiSSA §3, peft's conversion)."""
        state = {"lora_A": self.lora_A, "lora_B": self.lora_B}
        if self.use_dora:
            state["lora_magnitude_vector"] = self.lora_magnitude_vector
        if self.init == "pissa":
            state["lora_A0"], state["lora_B0"] = self.lora_A0, self.lora_B0
        return state


@pg.members([("alpha", LORA_ALPHA.set_default(16.0), "scale numerator (typed: > 0 in every candidate)"),
             ("dropout", LORA_DROPOUT.set_default(0.0), "dropout on the adapter input (typed: in [0, 1))")])
class LoRA(RankedAdapter):
    """Low-rank adaptation with scale ``s = alpha / rank``.

    Subclasses (rsLoRA, PiSSA, DoRA) change :meth:`scaling` or :meth:`layer_options`;
    :meth:`layer_rank` may choose a rank per layer (e.g. from its spectrum, as WeLore does).
    """

    alpha: float = 16.0
    dropout: float = 0.0

    def scaling(self, rank: int) -> float:
        """The update's scale ``s`` at ``rank``: ``alpha / rank`` (LoRA §4.1)."""
        return self.alpha / rank

    def layer_options(self) -> dict:
        """Keyword options of :class:`LoraLinear` that define the variant (none for LoRA)."""
        return {}

    def wrap(self, name: str, linear: nn.Linear) -> nn.Module:
        rank = self.layer_rank(name, linear)
        return LoraLinear(linear, rank, self.scaling(rank), self.dropout, **self.layer_options())
