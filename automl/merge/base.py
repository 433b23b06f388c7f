"""Merge methods: several fine-tuned state dicts (of one architecture) → one.

A method is a ``pg.Object`` (its fields are searchable). Per-tensor methods define
:meth:`MergeMethod.merge_tensor`; methods linear in the task vectors ``τ_t = θ_t − θ_base``
(Ilharco et al., 2023) also give their coefficients, so LoRA models merge on their factors
(:mod:`automl.merge.factored`).
"""
from __future__ import annotations

import abc
from typing import Callable

import pyglove as pg
import torch
from torch import nn

from automl.errors import SearchSpaceError
from automl.merge.factored import LowRankDelta


def check_compatible(base: dict[str, torch.Tensor], models: list[dict[str, torch.Tensor]]) -> None:
    """All state dicts must have the base's keys and shapes."""
    if not models:
        raise SearchSpaceError("nothing to merge: pass at least one model state dict.")
    for i, sd in enumerate(models):
        if sd.keys() != base.keys():
            missing, extra = sorted(set(base) - set(sd)), sorted(set(sd) - set(base))
            raise SearchSpaceError(f"model {i} has different tensors than the base (missing {missing[:5]}, "
                                   f"extra {extra[:5]}); merge only models of one architecture.")
        for k, v in sd.items():
            if v.shape != base[k].shape:
                raise SearchSpaceError(f"tensor {k!r} of model {i} has shape {tuple(v.shape)}, "
                                       f"the base has {tuple(base[k].shape)}; merge only models of one "
                                       f"architecture.")


def check_deltas(base: dict[str, torch.Tensor], deltas: list[dict[str, LowRankDelta]]) -> None:
    """Every low-rank delta must update a tensor of the base with the base's shape."""
    if not deltas:
        raise SearchSpaceError("nothing to merge: pass at least one model's low-rank deltas.")
    for i, model in enumerate(deltas):
        for k, d in model.items():
            if k not in base:
                raise SearchSpaceError(f"model {i} has a low-rank delta for {k!r}, which the base lacks; "
                                       f"key deltas by the base's weight names (e.g. 'fc1.weight').")
            if d.shape != base[k].shape:
                raise SearchSpaceError(f"the low-rank delta of {k!r} in model {i} has shape {tuple(d.shape)}, "
                                       f"the base tensor has {tuple(base[k].shape)}.")


class MergeMethod(pg.Object):
    """Combine fine-tuned models of one architecture; per-tensor methods define merge_tensor.

    ``uses_base``: whether the method reads the base's values (task vectors ``θ_t − θ_base``);
    such a method refuses ``base=None`` — models trained from different random inits share no
    base, and any stand-in would be unrelated to them.
    """

    uses_base = False

    @property
    def label(self) -> str:
        return type(self).__name__

    def check_count(self, n: int) -> None:
        """Raise :class:`SearchSpaceError` if the method cannot merge ``n`` models."""

    def task_coefficients(self, n: int) -> list[float] | None:
        """``c_t`` when the merge is ``θ_base + Σ_t c_t τ_t`` (linear in task vectors), else None."""
        return None

    def merge(self, base: dict[str, torch.Tensor] | None,
              models: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The merged state dict; a single model is returned unchanged. ``base=None``: the models
        share no pretrained base (methods that read it refuse)."""
        if base is None:
            if self.uses_base and len(models) > 1:
                raise SearchSpaceError(f"{self.label} merges task vectors θ_t − θ_base, but these models were "
                                       f"trained from different random inits and share no base; merge them with "
                                       f"Linear, SLERP or WeightMatching(then=Linear()).")
            base = models[0] if models else {}
        check_compatible(base, models)
        self.check_count(len(models))
        if len(models) == 1:
            return dict(models[0])
        return self.merge_models(base, models)

    def merge_models(self, base: dict[str, torch.Tensor],
                     models: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Merge two or more validated state dicts; per tensor unless a method needs all at once."""
        return {k: self.merge_one(k, base[k], [m[k] for m in models]) for k in base}

    def merge_one(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`merge_tensor` in (at least) float32, returned in the base's dtype; integer buffers
        (counters) are taken from the first model."""
        if not base.is_floating_point():
            return tensors[0]
        dtype = torch.promote_types(base.dtype, torch.float32)
        merged = self.merge_tensor(name, base.to(dtype), [t.to(dtype) for t in tensors])
        return merged.to(base.dtype)

    @abc.abstractmethod
    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The merged value of one tensor."""

    def diagnose(self, model: nn.Module, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                 loss_fn: Callable[[nn.Module], float], points: int = 5, top: int = 5) -> dict[str, float]:
        """Diagnostics particular to this method of merging ``state_b`` into ``state_a`` (named
        ``merge/<what>``; ``model`` gives the architecture, ``loss_fn`` the loss, ``points`` and
        ``top`` the path resolution and singular vectors as in
        :func:`automl.merge.diagnostics.merge_metrics`, which adds them to the common ones).
        None by default; a method overrides it to reuse what its merge computed."""
        return {}

    def merge_low_rank(self, base: dict[str, torch.Tensor],
                       deltas: list[dict[str, LowRankDelta]]) -> dict[str, torch.Tensor]:
        """The merged state dict of models ``θ_t = θ_base + Δ_t`` given by low-rank deltas.

        ``deltas[t]`` maps weight names to model ``t``'s update (tensors it lacks equal the
        base). A method linear in task vectors merges the factors (rank ``Σ r_t``, one product
        per layer); any other per-tensor method materialises one layer's dense deltas at a time.
        Tensors no model updates stay the base's (every method merges identical models to them).
        """
        check_deltas(base, deltas)
        self.check_count(len(deltas))
        merged = dict(base)
        coefficients = self.task_coefficients(len(deltas)) if len(deltas) > 1 else [1.0]
        for k in sorted({k for model in deltas for k in model}):
            if coefficients is not None:
                delta = LowRankDelta.combine([(c, m[k]) for c, m in zip(coefficients, deltas) if k in m])
                dtype = torch.promote_types(base[k].dtype, torch.float32)
                merged[k] = (base[k].to(dtype) + delta.dense().to(base[k].device, dtype)).to(base[k].dtype)
            else:
                tensors = [base[k] + m[k].dense().to(base[k]) if k in m else base[k] for m in deltas]
                merged[k] = self.merge_one(k, base[k], tensors)
        return merged

    def merged_low_rank(self, deltas: list[dict[str, LowRankDelta]]) -> dict[str, LowRankDelta]:
        """The merged task vector itself, still factored (a LoRA of rank ``Σ r_t`` per layer).

        Only for methods linear in the task vectors (Linear, TaskArithmetic): sparsifying or
        sign-electing methods do not keep a low rank.
        """
        if not deltas:
            raise SearchSpaceError("nothing to merge: pass at least one model's low-rank deltas.")
        self.check_count(len(deltas))
        coefficients = self.task_coefficients(len(deltas))
        if coefficients is None:
            raise SearchSpaceError(f"{self.label} is not linear in the task vectors, so its merge of LoRA "
                                   f"deltas is not low-rank; use merge_low_rank for the dense state dict.")
        keys = sorted({k for model in deltas for k in model})
        return {k: LowRankDelta.combine([(c, m[k]) for c, m in zip(coefficients, deltas) if k in m]) for k in keys}
