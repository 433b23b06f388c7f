"""The recipe: one fine-tuning configuration, a symbolic object (``pg.Object``).

Any field may hold hyper values (``pg.oneof``, ``pg.floatv``, ``pg.manyof``), which makes the
recipe a search space; ``pg.materialize(space, dna)`` turns a DNA into a concrete recipe.
"""
from __future__ import annotations

import pyglove as pg

from automl.adapters.base import Adapter
from automl.errors import SearchSpaceError
from automl.merge.base import MergeMethod
from automl.merge.linear import Linear
from automl.mitigation import Mitigation
from automl.quant import Quantization


class Recipe(pg.Object):
    """How to fine-tune: adapter, quantization, merge of per-subtask models, intruder mitigation,
    optimizer settings.

    Only ``adapter`` is required: the default is no quantization (fp32), a plain average when a
    task yields several models, no mitigation, AdamW at lr 1e-3 for 300 steps of batch 64, seed 0.
    """

    adapter: Adapter
    quant: Quantization = Quantization()
    merge: MergeMethod = Linear()
    mitigation: Mitigation | None = None
    lr: float = 1e-3
    steps: int = 300
    batch_size: int = 64
    seed: int = 0

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.lr, float) and not self.lr > 0:
            raise SearchSpaceError(f"Recipe.lr must be positive, got {self.lr}.")
        for field in ("steps", "batch_size"):
            value = getattr(self, field)
            if isinstance(value, int) and value <= 0:
                raise SearchSpaceError(f"Recipe.{field} must be a positive integer, got {value}.")

    def labels(self) -> dict[str, str]:
        """Readable labels of the recipe's parts (leaderboard columns)."""
        return {"adapter": self.adapter.label, "quant": self.quant.label, "merge": self.merge.label,
                "mitigation": "none" if self.mitigation is None else self.mitigation.label}
