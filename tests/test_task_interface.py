"""The batch-based task interface keeps the digits numbers: seeded recipes give the metrics pinned
before the interface was introduced (tests/data/digits_pinned_metrics.json). One deliberate change
since: on digits-multitask the merge diagnostics' linear path runs between trunks that both carry
every subtask's trained head, so its ``merge/barrier`` and head alignments were re-pinned."""
import json
from pathlib import Path

import pytest

import automl
from automl import adapters, merge, quant

PINNED = json.loads((Path(__file__).parent / "data" / "digits_pinned_metrics.json").read_text())
RECIPES = {
    "lora": ("digits", automl.Recipe(adapter=adapters.LoRA(rank=4), steps=60, seed=1)),
    "full-int4": ("digits", automl.Recipe(adapter=adapters.FullFineTune(), quant=quant.Quantization(bits=4), steps=60)),
    "dora-b158": ("digits", automl.Recipe(adapter=adapters.DoRA(rank=2), quant=quant.Quantization(bits=1.58),
                                          steps=40)),
    "pissa": ("digits", automl.Recipe(adapter=adapters.PiSSA(rank=4), steps=40, lr=3e-3)),
    "ties-multitask": ("digits-multitask", automl.Recipe(adapter=adapters.LoRA(rank=4), merge=merge.TIES(density=0.5),
                                                         steps=30)),
    "rebasin-seeds": ("digits-seeds", automl.Recipe(adapter=adapters.FullFineTune(), merge=merge.WeightMatching(),
                                                    steps=30)),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_seeded_digits_metrics_are_unchanged_by_the_task_interface(name):
    task, recipe = RECIPES[name]
    metrics = automl.evaluate(recipe, task=task).metrics
    for key, value in PINNED[name].items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
