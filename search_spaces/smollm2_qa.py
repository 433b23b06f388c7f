"""Instruction tuning a causal LM: SmolLM2-135M-Instruct on question → answer pairs.

About 10× MiniLM's compute per token: on CPU keep trials short (20 steps of batch 8 here, a few
minutes each); on a GPU raise ``steps``. Forgetting is the loss increase on held-out tweets.
"""
import pyglove as pg

import automl
from automl import adapters

TASK = "smollm2-qa"
SPACE = automl.Recipe(
    adapter=pg.oneof([
        adapters.LoRA(rank=pg.oneof([4, 16])),
        adapters.DoRA(rank=8),
        adapters.FullFineTune(),
    ]),
    lr=pg.floatv(1e-4, 1e-3, scale="log"),
    steps=20,
    batch_size=8,
)
