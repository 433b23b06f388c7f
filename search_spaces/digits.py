"""LoRA ranks vs full fine-tuning on the digits task: the README's main job.

Searches adapter type, LoRA rank and scale, and learning rate; scored by the default objective
(accuracy − 0.5·forgetting − 0.01·intruders − 0.001·bits).
"""
import pyglove as pg

import automl
from automl import adapters

TASK = "digits"
SPACE = automl.Recipe(
    adapter=pg.oneof([
        adapters.LoRA(rank=pg.oneof([1, 2, 4, 8]), alpha=pg.oneof([8.0, 16.0, 32.0])),
        adapters.FullFineTune(),
    ]),
    lr=pg.floatv(1e-4, 1e-2, scale="log"),
    steps=300,
)
OBJECTIVE = automl.Objective()
