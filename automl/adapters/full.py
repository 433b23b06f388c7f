"""Full fine-tuning: every weight of the targeted layers trains."""
from __future__ import annotations

import torch
from torch import nn

from automl.adapters.base import Adapter, select_linears


class FullFineTune(Adapter):
    """Full fine-tuning of the targeted linear layers (weights and biases); the rest is frozen.

    The reference point of "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (Shuttleworth
    et al., 2024): it changes the weight in all directions and creates few intruder dimensions.
    """

    def wrap(self, name: str, linear: nn.Linear) -> nn.Module:
        for p in linear.parameters():
            p.requires_grad_(True)
        return linear

    def apply(self, model: nn.Module) -> nn.Module:
        names = select_linears(model, self.targets)
        for p in model.parameters():
            p.requires_grad_(False)
        for name in names:
            self.wrap(name, model.get_submodule(name))
        return model

    def trained_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The fine-tuned weights and biases of the targeted layers, named ``<layer>.weight``."""
        state: dict[str, torch.Tensor] = {}
        for name in select_linears(model, self.targets):
            for key, tensor in model.get_submodule(name).named_parameters():
                state[f"{name}.{key}"] = tensor.detach()
        return state
