"""Merge strategies on digits-multitask: one LoRA model per subtask, combined into one model
by the searched method; the leaderboard has one accuracy column per subtask."""
import pyglove as pg

import automl
from automl import adapters, merge

TASK = "digits-multitask"
SPACE = automl.Recipe(
    adapter=adapters.LoRA(rank=4),
    merge=pg.oneof([
        merge.Linear(),
        merge.TaskArithmetic(scale=pg.floatv(0.3, 1.0)),
        merge.TIES(density=pg.floatv(0.1, 0.9), sign=pg.oneof(["sum", "count"])),
        merge.DARE(drop=pg.oneof([0.3, 0.5, 0.7]), then=pg.oneof(["linear", "ties"])),
    ]),
    lr=3e-3,
)
OBJECTIVE = automl.Objective()
