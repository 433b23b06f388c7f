"""Full fine-tuning: every weight of the targeted layers trains."""
from __future__ import annotations

import torch
from torch import nn

from automl.adapters.base import Adapter


class FullFineTune(Adapter):
    """Full fine-tuning of the targeted linear layers (weights and biases); the rest is frozen.

    The reference point of "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (Shuttleworth
    et al., 2024): it changes the weight in all directions and creates few intruder dimensions.
    """

    def wrap(self, name: str, linear: nn.Linear, rank: int | None = None) -> nn.Module:
        for p in linear.parameters():
            p.requires_grad_(True)
        return linear

    def trained_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The fine-tuned weights and biases of the trained linear layers, named ``<layer>.weight``."""
        state: dict[str, torch.Tensor] = {}
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and module.weight.requires_grad:
                for key, tensor in module.named_parameters():
                    state[f"{name}.{key}"] = tensor.detach()
        return state
