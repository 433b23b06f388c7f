"""Per-layer adapter ranks from the pretrained spectrum (WeLore, Jaiswal et al., 2024,
arXiv 2407.11239).

WeLore observes that weight matrices differ in how low-rank they are: a *low-rank component*
(LRC) has a heavy-tailed spectrum — few singular values carry most of it — and its fine-tuning
updates are low-rank too, so it needs a small adapter; a matrix with a flat spectrum needs more
directions. ``WeLoreRanks`` sizes each adapted layer accordingly.
"""
from __future__ import annotations

import pyglove as pg
from torch import nn

from automl.errors import SearchSpaceError
from automl.spectral import DEFAULT_CACHE, welore_ranks


class WeLoreRanks(pg.Object):
    """Rank per layer ∝ its WeLore rank ``k_l`` (singular values keeping ``keep`` of the
    spectrum's sum): ``r_l = max(1, round(rank · k_l / max_j k_j))``, so the layer needing the
    most directions gets the adapter's full ``rank``. With ``only_low_rank``, only WeLore's
    low-rank components (``1 − k_l / min(m, n) > min_reduction``) are adapted, the rest stay
    frozen (WeLore-COFT fine-tunes only LRCs)."""

    keep: float = 0.9
    only_low_rank: bool = False
    min_reduction: float = 0.5

    def _on_bound(self) -> None:
        super()._on_bound()
        for field in ("keep", "min_reduction"):
            value = getattr(self, field)
            if isinstance(value, float) and not 0.0 < value < 1.0:
                raise SearchSpaceError(f"WeLoreRanks.{field} must lie in (0, 1), got {value}.")

    def ranks(self, model: nn.Module, layers: list[str], rank: int) -> dict[str, int]:
        """The rank of each adapted layer (layers left out stay frozen)."""
        spectral = welore_ranks(model, keep=self.keep, layers=layers, cache=DEFAULT_CACHE)
        if self.only_low_rank:
            full = {n: min(model.get_submodule(n).weight.shape) for n in layers}
            spectral = {n: k for n, k in spectral.items() if 1 - k / full[n] > self.min_reduction}
            if not spectral:
                raise SearchSpaceError(f"no targeted layer is a low-rank component at keep={self.keep}, "
                                       f"min_reduction={self.min_reduction}; lower min_reduction or keep, "
                                       f"or set only_low_rank=False. Layers: {layers}.")
        top = max(spectral.values())
        return {n: max(1, round(rank * k / top)) for n, k in spectral.items()}
