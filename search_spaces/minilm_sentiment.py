"""Adapters on a real transformer: all-MiniLM-L6-v2 fine-tuned on 3-class tweet sentiment.

``automl search minilm-sentiment --trials 4`` runs in a few minutes on 2 CPU cores: 60 steps of
batch 16 per trial (about 0.5 s a step on one core), then accuracy on 1,000 held-out tweets,
forgetting of the question → answer retrieval skill, and intruder dimensions of the 36 encoder
matrices. With a GPU, raise ``steps`` (200 steps of batch 32 reach 0.75–0.77).
"""
import pyglove as pg

import automl
from automl import adapters

TASK = "minilm-sentiment"
SPACE = automl.Recipe(
    adapter=pg.oneof([
        adapters.LoRA(rank=pg.oneof([1, 8, 64]), alpha=16.0),
        adapters.RsLoRA(rank=pg.oneof([8, 64])),
        adapters.DoRA(rank=8),
        adapters.PiSSA(rank=8, init="svd_lowrank", niter=2),
        adapters.FullFineTune(),
    ]),
    lr=pg.floatv(1e-4, 1e-3, scale="log"),   # full fine-tuning collapses to the majority class above ~5e-4
    steps=60,
    batch_size=16,
)
OBJECTIVE = automl.Objective()
