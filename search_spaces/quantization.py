"""Bit-width as a searchable dimension: what accuracy each deployed precision keeps, and at
how many bits per parameter (scales included)."""
import pyglove as pg

import automl
from automl import adapters, quant

TASK = "digits"
SPACE = automl.Recipe(
    adapter=pg.oneof([adapters.FullFineTune(), adapters.LoRA(rank=8)]),
    quant=quant.Quantization(bits=pg.oneof([32, 16, 8, 4, 2, 1.58])),
    lr=pg.oneof([3e-4, 1e-3, 3e-3]),
)
OBJECTIVE = automl.Objective(bits=0.005)
