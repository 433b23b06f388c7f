"""The recipe: one fine-tuning configuration, a symbolic object (``pg.Object``).

Any field may hold hyper values (``pg.oneof``, ``pg.floatv``, ``pg.manyof``), which makes the
recipe a search space; ``pg.materialize(space, dna)`` turns a DNA into a concrete recipe.
"""
from __future__ import annotations

import re

import pyglove as pg

from automl.adapters.base import Adapter
from automl.constraints import positive_float, positive_int
from automl.errors import SearchSpaceError
from automl.merge.base import MergeMethod
from automl.merge.linear import Linear
from automl.mitigation import Mitigation
from automl.quant import Quantization


@pg.members([("lr", positive_float("Recipe.lr").set_default(1e-3), "AdamW learning rate (> 0 in every candidate)"),
             ("steps", positive_int("Recipe.steps").set_default(300), "training steps per subtask"),
             ("batch_size", positive_int("Recipe.batch_size").set_default(64), "examples per step")])
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

    @pg.explicit_method_override
    def __init__(self, *args, **kwargs):
        # PyGlove's own type errors (a pg.floatv range outside a field's bounds, a wrong type)
        # become one-line SearchSpaceErrors, like ours.
        try:
            super().__init__(*args, **kwargs)
        except SearchSpaceError:
            raise
        except (ValueError, TypeError) as e:
            message = " ".join(str(e).split())
            bound = re.match(r"Float\.(min|max)_value \((\S+)\) should be no (?:less|greater) than the \w+ value "
                             r"\((\S+)\).*\(path=(\S+)\)", message)
            if bound:
                side, given, limit, path = bound.groups()
                message = (f"{path}: a pg.floatv range with {side} {given} goes outside the field's bounds "
                           f"({side} allowed: {limit}); narrow the range.")
            raise SearchSpaceError("Recipe: " + message) from None

    def labels(self) -> dict[str, str]:
        """Readable labels of the recipe's parts (leaderboard columns)."""
        return {"adapter": self.adapter.label, "quant": self.quant.label, "merge": self.merge.label,
                "mitigation": "none" if self.mitigation is None else self.mitigation.label}
