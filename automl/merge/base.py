"""Merge methods: several fine-tuned state dicts (of one architecture) → one."""
from __future__ import annotations

import abc

import pyglove as pg
import torch

from automl.errors import SearchSpaceError


def check_compatible(base: dict[str, torch.Tensor], models: list[dict[str, torch.Tensor]]) -> None:
    """All state dicts must have the base's keys and shapes."""
    if not models:
        raise SearchSpaceError("nothing to merge: pass at least one model state dict.")
    for i, sd in enumerate(models):
        if sd.keys() != base.keys():
            diff = sorted(set(sd) ^ set(base))
            raise SearchSpaceError(f"model {i} has different tensors than the base: {diff[:5]}.")
        for k, v in sd.items():
            if v.shape != base[k].shape:
                raise SearchSpaceError(f"tensor {k!r} of model {i} has shape {tuple(v.shape)}, "
                                       f"the base has {tuple(base[k].shape)}.")


class MergeMethod(pg.Object):
    """Combine fine-tuned models of one architecture; per-tensor methods define merge_tensor."""

    @property
    def label(self) -> str:
        return type(self).__name__

    def merge(self, base: dict[str, torch.Tensor],
              models: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The merged state dict; a single model is returned unchanged."""
        check_compatible(base, models)
        if len(models) == 1:
            return dict(models[0])
        return {k: self.merge_tensor(k, base[k], [m[k] for m in models]) for k in base}

    @abc.abstractmethod
    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The merged value of one tensor."""
