"""Accuracy against intruder dimensions and bits: a multi-objective search (Pareto front),
with intruder mitigation as a searchable post-training step."""
import pyglove as pg

import automl
from automl import adapters, quant
from automl.mitigation import Mitigation

TASK = "digits"
SPACE = automl.Recipe(
    adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2, 4, 8])), adapters.PiSSA(rank=pg.oneof([2, 4, 8])),
                      adapters.FullFineTune()]),
    quant=quant.Quantization(bits=pg.oneof([32, 8, 4])),
    mitigation=pg.oneof([None, Mitigation(scale=pg.floatv(0.5, 1.0))]),
    lr=pg.floatv(1e-4, 1e-2, scale="log"),
)
OBJECTIVE = automl.Objective(maximize=["accuracy"], minimize=["intruders", "bits"])
