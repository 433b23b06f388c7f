"""A 1,000-recipe conditional space on the digits task: the tabular benchmark's large space.

Adapter type with per-adapter ranks and scales, quantization with its bit width, intruder
mitigation on or off, and a learning-rate grid; every decision is a ``pg.oneof``, so the space is
finite and ``automl tabulate digits_large --task digits`` trains each recipe once
(``benchmarks/data/digits_large.json``). Merging is not searched: the digits task has one subtask,
so a merge method would change nothing and only repeat rows. 100 steps keep a recipe under 1 s on CPU.
"""
import pyglove as pg

import automl
from automl import adapters, quant
from automl.mitigation import Mitigation

TASK = "digits"
SPACE = automl.Recipe(
    adapter=pg.oneof([
        adapters.LoRA(rank=pg.oneof([1, 2, 4, 8]), alpha=pg.oneof([4.0, 16.0, 64.0])),   # 12
        adapters.RsLoRA(rank=pg.oneof([2, 8]), alpha=pg.oneof([4.0, 16.0])),              # 4
        adapters.PiSSA(rank=pg.oneof([2, 4, 8])),                                         # 3
        adapters.DoRA(rank=pg.oneof([2, 4, 8])),                                          # 3
        adapters.SVFit(rank=pg.oneof([4, 8])),                                            # 2 (≤ 10: the head is 10 wide)
        adapters.FullFineTune(),                                                          # 1
    ]),
    quant=pg.oneof([quant.Quantization(), quant.Quantization(bits=pg.oneof([8, 4, 1.58]))]),  # 4
    mitigation=pg.oneof([None, Mitigation(scale=0.5)]),                                   # 2
    lr=pg.oneof([3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),                                          # 5
    steps=100,
)
OBJECTIVE = automl.Objective()
