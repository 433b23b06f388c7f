"""Git Re-Basin on digits-seeds: two models trained from different random inits, merged
naively or after weight matching (which aligns their hidden units first)."""
import pyglove as pg

import automl
from automl import adapters, merge

TASK = "digits-seeds"
SPACE = automl.Recipe(
    adapter=adapters.FullFineTune(),
    merge=pg.oneof([merge.Linear(), merge.SLERP(t=0.5), merge.WeightMatching()]),
    lr=pg.oneof([1e-3, 3e-3]),
)
OBJECTIVE = automl.Objective()
