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

import json
import math
import re
from collections import Counter
from pathlib import Path

import pyglove as pg
import torch
from safetensors.torch import save_file
from torch import nn

from automl.adapters.base import AdapterLayer, RankedAdapter, principal_svd
from automl.constraints import LORA_ALPHA, LORA_DROPOUT
from automl.errors import ExportError, SearchSpaceError

INITS = ("lora", "pissa")
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


class LoraLinear(AdapterLayer):
    """A frozen linear layer plus a trainable low-rank update ``scaling · B A``.

    ``init="lora"`` (kaiming-uniform ``A``, zero ``B``) or ``"pissa"`` (principal singular
    triplets, exact SVD when ``niter`` is ``None``, else the randomized SVD of
    :mod:`automl.adapters.rsvd` with ``niter`` subspace iterations; or the given ``factors``
    ``(U_r, S_r, Vh_r)``, computed with other layers'); ``use_dora`` adds DoRA's magnitude vector.
    Factors live on the base weight's device and dtype; SVDs run in float32.
    """

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float = 0.0, *,
                 init: str = "lora", niter: int | None = None, use_dora: bool = False,
                 factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        super().__init__(base)
        if init not in INITS:
            raise SearchSpaceError(f"LoraLinear init {init!r} is unknown; choose one of {INITS}.")
        self.rank = rank
        self.scaling = scaling
        self.init = init
        w = base.weight
        if init == "lora":
            self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        else:
            self._pissa_init(principal_svd(base.weight, rank, niter) if factors is None else factors)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_magnitude_vector: nn.Parameter | None = None
        if use_dora:
            with torch.no_grad():
                norm = self.weight_norm(self.base.weight + self.delta_weight())
            self.lora_magnitude_vector = nn.Parameter(norm.to(w.dtype))

    @torch.no_grad()
    def _pissa_init(self, factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        """PiSSA Eq. 2–4 from the top-r singular triplets ``factors = (U_r, S_r, V_rᵀ)``:
        ``A = √S_r V_rᵀ``, ``B = U_r √S_r`` (``S_r`` divided by ``s`` so that ``s B A = U_r S_r V_rᵀ``);
        the frozen base becomes the residual ``W − s B A``."""
        weight = self.base.weight
        u, s, vh = factors
        root = (s / self.scaling).sqrt()
        a, b = root[:, None] * vh, u * root[None, :]
        self.lora_A = nn.Parameter(a.to(weight.dtype).contiguous())
        self.lora_B = nn.Parameter(b.to(weight.dtype).contiguous())
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

    def low_rank_delta(self, base_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s·B, A)`` with ``W' = base_weight + s·B A`` — the layer's task vector, factored.

        Only plain LoRA (and rsLoRA, which differs in ``s`` only) is a low-rank update of the
        pretrained weight: PiSSA's frozen weight is a residual and DoRA renormalises the rows, so
        both raise :class:`SearchSpaceError` (merge such models as dense state dicts)."""
        if self.use_dora:
            raise SearchSpaceError("a DoRA layer does not compute W + s·B A, so its update is no low-rank task "
                                   "vector; merge the dense state dicts instead.")
        if not torch.equal(self.base.weight.detach(), base_weight.to(self.base.weight)):
            raise SearchSpaceError("the frozen weight differs from the base tensor (e.g. PiSSA's residual); "
                                   "merge the dense state dicts instead.")
        return self.scaling * self.lora_B.detach(), self.lora_A.detach()

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

    def wrap(self, name: str, linear: nn.Linear, rank: int | None = None) -> nn.Module:
        rank = self.rank_for(name, linear, rank)
        return LoraLinear(linear, rank, self.scaling(rank), self.dropout, **self.layer_options())

    def peft_options(self) -> dict:
        """The ``LoraConfig`` fields that define the variant (overridden by rsLoRA)."""
        return {"use_rslora": False}

    def export(self, trained_state: dict[str, torch.Tensor], base_model: nn.Module, path: Path) -> None:
        """peft's format: ``adapter_config.json`` + ``adapter_model.safetensors``."""
        config, tensors = self.peft_export(trained_state, base_model)
        (path / PEFT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(tensors, str(path / PEFT_WEIGHTS), metadata={"format": "pt"})

    def peft_export(self, state: dict[str, torch.Tensor], base_model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
        """peft's ``LoraConfig`` (as a dict) and adapter tensors for this adapter's trained state.

        Each layer's ``lora_alpha`` is set so that peft's scale (``alpha / r``, or ``alpha / √r``
        with ``use_rslora``) equals ours at the exported rank; ranks or alphas that differ from the
        most common one go to ``rank_pattern`` / ``alpha_pattern`` (exact-name patterns).
        """
        from automl.export import linear_of
        layers = sorted(k[: -len(".lora_A")] for k in state if k.endswith(".lora_A"))
        if not layers:
            raise ExportError("the trained state holds no lora_A tensor; pass adapter.trained_state(model) "
                              "of a model adapted by this LoRA-family adapter.")
        options = self.peft_options()
        use_dora = f"{layers[0]}.lora_magnitude_vector" in state
        tensors: dict[str, torch.Tensor] = {}
        ranks: dict[str, int] = {}
        alphas: dict[str, float] = {}
        for layer in layers:
            linear = linear_of(base_model, layer)
            a, b = state[f"{layer}.lora_A"], state[f"{layer}.lora_B"]
            if a.shape[1] != linear.in_features or b.shape[0] != linear.out_features:
                raise ExportError(f"layer {layer!r}: factors A {tuple(a.shape)}, B {tuple(b.shape)} do not fit the "
                                  f"base layer ({linear.out_features}×{linear.in_features}).")
            scale = self.scaling(a.shape[0])
            if f"{layer}.lora_A0" in state:  # PiSSA → plain LoRA delta of rank 2r
                a = torch.cat([a, state[f"{layer}.lora_A0"]], dim=0)
                b = torch.cat([b, -state[f"{layer}.lora_B0"]], dim=1)
            ranks[layer] = a.shape[0]
            alphas[layer] = scale * (math.sqrt(a.shape[0]) if options["use_rslora"] else a.shape[0])
            prefix = PEFT_PREFIX + layer
            tensors[f"{prefix}.lora_A.weight"] = a.detach().cpu().contiguous()
            tensors[f"{prefix}.lora_B.weight"] = b.detach().cpu().contiguous()
            if use_dora:
                magnitude = state[f"{layer}.lora_magnitude_vector"]
                tensors[f"{prefix}.lora_magnitude_vector"] = magnitude.detach().cpu().contiguous()
        rank = Counter(ranks.values()).most_common(1)[0][0]
        alpha = Counter(alphas.values()).most_common(1)[0][0]
        config = {
            "peft_type": "LORA",
            "task_type": None,
            "base_model_name_or_path": None,
            "target_modules": "|".join(re.escape(layer) for layer in layers),
            "r": rank,
            "lora_alpha": alpha,
            "rank_pattern": {_exact(n): r for n, r in ranks.items() if r != rank},
            "alpha_pattern": {_exact(n): a for n, a in alphas.items() if a != alpha},
            "use_dora": use_dora,
            "lora_dropout": float(self.dropout),
            "bias": "none",
            "fan_in_fan_out": False,
            "init_lora_weights": True,
            "modules_to_save": None,
            "inference_mode": True,
            **options,
        }
        return config, tensors


def _exact(layer: str) -> str:
    """A peft pattern key matching exactly ``layer`` (peft matches ``(.*\\.)?(key)$``)."""
    return "^" + re.escape(layer)
