"""PiSSA (Meng et al., 2024, "Principal Singular values and Singular vectors Adaptation",
arXiv 2404.02948): LoRA whose factors start as the top-r SVD part of ``W`` and whose frozen base
is the residual (Eq. 2–4), so the model's output at initialisation equals the base model's.

``init="svd"`` takes the exact thin SVD (peft ``init_lora_weights="pissa"``), one layer at a
time; ``"svd_lowrank"`` takes a randomized SVD with ``niter`` block Krylov steps (PiSSA §3 "fast
SVD"; the role of peft's ``"pissa_niter_N"``): our randomized block Krylov method
(:mod:`automl.adapters.rsvd`), computed for all target layers together (:meth:`PiSSA.wrap_layers`:
the layers of one shape in batches) before each layer is wrapped with its factors. On
all-MiniLM-L6-v2's 36 matrices at the default ``niter`` 2 it captures 0.94 of the top-8 spectral
energy, gives the same mean first-steps training loss as the exact SVD (over 3 data seeds × 3
sketch seeds), and applies PiSSA to the whole model 18–23× faster than the exact SVD on one CPU
thread, depending on the machine's load (``benchmarks/pissa_init.py``; README). Either way the frozen residual plus the
adapter equal ``W``, so the model's output at initialisation is the base model's.
"""
from __future__ import annotations

from torch import nn

from automl.adapters.lora import LoRA, LoraLinear
from automl.adapters.rsvd import iter_randomized_svds
from automl.errors import SearchSpaceError

PISSA_INITS = ("svd", "svd_lowrank")


class PiSSA(LoRA):
    """Principal-SVD-initialised LoRA with a frozen residual base weight."""

    init: str = "svd"
    niter: int = 2   # block Krylov steps of init="svd_lowrank" (2: the same first-steps loss as exact)

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.init, str) and self.init not in PISSA_INITS:
            raise SearchSpaceError(f"PiSSA.init={self.init!r} is unknown; choose 'svd' (exact) or "
                                   f"'svd_lowrank' (fast, with niter).")
        if isinstance(self.niter, int) and self.niter < 0:
            raise SearchSpaceError(f"PiSSA.niter must be a non-negative number of subspace iterations, "
                                   f"got {self.niter}.")

    @property
    def svd_niter(self) -> int | None:
        """Block Krylov steps of the randomized SVD, or None for the exact SVD."""
        return None if self.init == "svd" else self.niter

    def layer_options(self) -> dict:
        return {"init": "pissa", "niter": self.svd_niter}

    def wrap_layers(self, model: nn.Module, plan: dict[str, int | None]) -> dict[str, nn.Module]:
        """Every planned layer's PiSSA layer. The fast init computes the randomized SVDs of all of
        them together (:func:`automl.adapters.rsvd.iter_randomized_svds` batches the layers of one
        shape) and wraps each layer as its factors come; the exact init wraps one layer at a time."""
        if self.svd_niter is None:
            return super().wrap_layers(model, plan)
        names = list(plan)
        linears = [model.get_submodule(name) for name in names]
        ranks = [self.rank_for(name, linear, plan[name]) for name, linear in zip(names, linears)]
        layers = {}
        for i, factors in iter_randomized_svds([linear.weight for linear in linears], ranks, self.svd_niter):
            layers[names[i]] = LoraLinear(linears[i], ranks[i], self.scaling(ranks[i]), self.dropout, init="pissa",
                                          factors=factors)
        return {name: layers[name] for name in names}
