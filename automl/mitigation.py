"""Intruder-dimension mitigation: a searchable post-training step of a recipe.

Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (arXiv 2410.21228,
§6 and Fig. 8), as ported to peft (``reduce_intruder_dimension``): with the thin SVD
``W = U S Vᵀ`` of a fine-tuned (merged) weight and its intruder indices ``I`` (see
:mod:`automl.spectral`), scale the intruders' singular values by ``λ``::

    W' = W + (λ − 1) · U_I S_I V_Iᵀ

Every other singular value and every singular vector is unchanged. ``λ = 1`` is the identity;
smaller ``λ`` recovers pretraining knowledge (less forgetting) at some cost in task accuracy.
Unlike peft, which refits the result into a rank-``r`` LoRA (an approximation), this acts on the
merged weight, so the formula holds exactly for any adapter.
"""
from __future__ import annotations

from typing import Sequence

import pyglove as pg
import torch
from torch import nn

from automl.errors import SearchSpaceError
from automl.spectral import (DEFAULT_CACHE, SVDCache, check_epsilon, check_top_k, intruder_indices,
                             linear_weights)


class Mitigation(pg.Object):
    """Scale the intruder singular values of each adapted layer by ``scale`` (λ ∈ (0, 1]).

    ``top_k`` and ``epsilon`` define the intruders as in :func:`automl.spectral.intruder_dimensions`
    (paper and peft defaults: λ = 0.75, k = 10, ε = 0.5). Searchable, e.g.
    ``Recipe(mitigation=pg.oneof([None, Mitigation(scale=pg.floatv(0.5, 1.0))]))``.
    """

    scale: float = 0.75
    top_k: int = 10
    epsilon: float = 0.5

    def _on_bound(self) -> None:
        super()._on_bound()
        hyper = pg.hyper.HyperValue
        if not isinstance(self.scale, hyper) and not 0.0 < self.scale <= 1.0:
            raise SearchSpaceError(f"Mitigation.scale (λ) must lie in (0, 1], got {self.scale!r}: 1 keeps "
                                   f"the intruders, smaller values shrink them (paper default 0.75).")
        try:
            if not isinstance(self.top_k, hyper):
                check_top_k(self.top_k)
            if not isinstance(self.epsilon, hyper):
                check_epsilon(self.epsilon)
        except SearchSpaceError as e:
            raise SearchSpaceError(f"Mitigation.{e}") from None

    @property
    def label(self) -> str:
        """Short stable name shown in leaderboards."""
        return type(self).__name__

    @torch.no_grad()
    def apply(self, base_model: nn.Module, tuned_model: nn.Module, layers: Sequence[str] | None = None,
              cache: SVDCache | None = None) -> nn.Module:
        """Mitigate the intruders of ``tuned_model``'s ``layers`` (default: every linear layer of
        ``base_model``) in place, relative to ``base_model``; returns ``tuned_model``.

        Adapters must be merged first (plain ``nn.Linear`` layers). Layers whose smaller side is at
        most ``top_k`` are left alone: their top-k is every singular vector, so the test for new
        directions is void (the trainer keeps them out of the ``intruders`` sum likewise). The
        SVD runs in float32 on the weight's device; the result is written back in its dtype."""
        w0s = linear_weights(base_model, layers, tuned_model)
        w1s = linear_weights(tuned_model, list(w0s))
        bases = (cache or DEFAULT_CACHE).svd_many(list(w0s.values()))
        for (name, w1), (u0, _, _) in zip(w1s.items(), bases):
            if w1.shape != w0s[name].shape:
                raise SearchSpaceError(f"layer {name!r} has shape {tuple(w1.shape)} in the tuned model "
                                       f"but {tuple(w0s[name].shape)} in the base model.")
            if min(w1.shape) <= self.top_k:
                continue   # the top-k is every singular vector (e.g. a 10-class head): nothing intrudes
            w = w1.detach().to(torch.float32)
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            index = intruder_indices(u0, u, self.top_k, self.epsilon)
            if not index:
                continue
            i = torch.tensor(index, device=w.device)
            w += (self.scale - 1.0) * (u[:, i] * s[i]) @ vh[i]
            w1.copy_(w.to(w1.dtype))
        return tuned_model
