"""The define-by-run walk of a PyGlove DNASpec for Optuna samplers."""
import random

import optuna
import pyglove as pg
import pytest

import automl
from automl import adapters, quant
from automl.errors import SearchSpaceError
from automl.sampling.space import candidate_labels, dna_params, dna_spec, suggest

SPACE = automl.Recipe(
    adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2, 4])), adapters.FullFineTune()]),
    quant=pg.oneof([quant.Quantization(bits=32), quant.Quantization(bits=pg.oneof([32, 16]))]),
    lr=pg.floatv(1e-4, 1e-2, scale="log"),
)


def test_only_active_decisions_are_suggested():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        dna = suggest(trial, SPACE)
        recipe = pg.materialize(SPACE, dna)
        params = trial.params
        if recipe.adapter.label == "LoRA":
            assert params["adapter"] == "LoRA" and params["adapter[LoRA].rank"] == recipe.adapter.rank
        else:
            assert params["adapter"] == "FullFineTune" and "adapter[LoRA].rank" not in params
        assert ("quant[Quantization#2].bits" in params) == (params["quant"] == "Quantization#2")
        assert 1e-4 <= params["lr"] <= 1e-2 and recipe.lr == params["lr"]
        seen.add(params["adapter"])
        study.tell(trial, 0.0)
    assert seen == {"LoRA", "FullFineTune"}


def test_dna_and_params_round_trip():
    spec = dna_spec(SPACE)
    for seed in range(20):
        dna = pg.random_dna(spec, random.Random(seed))
        params = dna_params(SPACE, spec, dna)
        fixed = optuna.trial.FixedTrial(params)
        assert suggest(fixed, SPACE, spec) == dna


def test_manyof_is_one_categorical_over_combinations():
    space = automl.Recipe(adapter=adapters.LoRA(targets=pg.manyof(2, ["fc1", "fc2", "head"], sorted=True)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    recipe = pg.materialize(space, suggest(trial, space))
    assert trial.params["adapter.targets"] == "+".join(recipe.adapter.targets)
    assert trial.distributions["adapter.targets"].choices == ("fc1+fc2", "fc1+head", "fc2+head")


def test_labels_are_short_and_stable():
    assert candidate_labels([1, 2.5, "x", None]) == [1, 2.5, "x", None]
    assert candidate_labels([adapters.LoRA(), adapters.FullFineTune()]) == ["LoRA", "FullFineTune"]
    assert candidate_labels([adapters.LoRA(rank=1), adapters.LoRA(rank=2)]) == ["LoRA#1", "LoRA#2"]


def test_space_without_decisions_is_refused():
    with pytest.raises(SearchSpaceError, match="no decisions"):
        dna_spec(automl.Recipe(adapter=adapters.LoRA(rank=2)))


def test_custom_decision_points_are_refused_for_optuna():
    space = automl.Recipe(adapter=pg.evolve(adapters.LoRA(rank=2), lambda v: v))
    trial = optuna.create_study().ask()
    with pytest.raises(SearchSpaceError, match="PyGlove algorithm"):
        suggest(trial, space)
