"""DoRA (Liu et al., 2024, "Weight-Decomposed Low-Rank Adaptation", arXiv 2402.09353): the weight
is split into a magnitude ``m`` (one number per output row, initialised to ``‖W‖_row``) and a
direction updated by LoRA, ``W' = m ⊙ (W + s B A) / ‖W + s B A‖_row`` (Eq. 5); the norm is
treated as a constant in backpropagation (§4.3). peft: ``LoraConfig(use_dora=True)``.
"""
from __future__ import annotations

from automl.adapters.lora import LoRA


class DoRA(LoRA):
    """LoRA on the direction plus a trainable magnitude per output row."""

    def layer_options(self) -> dict:
        return {"use_dora": True}
