"""The adapter family on digits: which method, rank and learning rate fine-tune best while
keeping intruder dimensions and forgetting low."""
import pyglove as pg

import automl
from automl import adapters

TASK = "digits"
SPACE = automl.Recipe(
    adapter=pg.oneof([
        adapters.LoRA(rank=pg.oneof([1, 2, 4, 8])),
        adapters.RsLoRA(rank=pg.oneof([4, 8])),
        adapters.PiSSA(rank=pg.oneof([2, 4, 8])),
        adapters.DoRA(rank=pg.oneof([2, 4])),
        adapters.SORSA(rank=pg.oneof([4, 8])),
        adapters.SVFit(rank=pg.oneof([8, 10])),
        adapters.LoRA(rank=8, ranks=adapters.WeLoreRanks(keep=pg.floatv(0.5, 0.95))),
        adapters.FullFineTune(),
    ]),
    lr=pg.floatv(1e-4, 1e-1, scale="log"),
)
OBJECTIVE = automl.Objective()
