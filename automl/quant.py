"""Quantization of linear weights as a recipe dimension."""
from __future__ import annotations

import pyglove as pg
import torch
from torch import nn

from automl.errors import SearchSpaceError

SUPPORTED_BITS = (32, 16)


class Quantization(pg.Object):
    """Weight precision of the fine-tuned model: 32 = float32 (none), 16 = bfloat16."""

    bits: float = 32

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.bits, (int, float)) and self.bits not in SUPPORTED_BITS:
            raise SearchSpaceError(f"Quantization.bits={self.bits} is not supported; choose one of {SUPPORTED_BITS}.")

    @property
    def label(self) -> str:
        return {32: "fp32", 16: "bf16"}[self.bits]

    def apply(self, model: nn.Module) -> nn.Module:
        """Prepare an adapted model for training at this precision (in place)."""
        return model

    @torch.no_grad()
    def deploy(self, model: nn.Module) -> nn.Module:
        """Round every linear weight of a merged model to the deployed precision (in place)."""
        if self.bits == 16:
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.copy_(m.weight.to(torch.bfloat16).float())
        return model

    def bits_per_parameter(self, model: nn.Module) -> float:
        """Bits per parameter of the deployed model."""
        return float(self.bits)
