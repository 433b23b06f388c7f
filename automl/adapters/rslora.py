"""rsLoRA (Kalajdzievski, 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
arXiv 2312.03732): LoRA with scale ``s = α / √r`` (Theorem 3.2), so that higher ranks keep
learning instead of collapsing as ``α / r`` does. peft: ``LoraConfig(use_rslora=True)``.
"""
from __future__ import annotations

import math

from automl.adapters.lora import LoRA


class RsLoRA(LoRA):
    """LoRA with the rank-stabilized scale ``alpha / sqrt(rank)``."""

    def scaling(self, rank: int) -> float:
        return self.alpha / math.sqrt(rank)

    def peft_options(self) -> dict:
        return {"use_rslora": True}
