"""Studies: storage, resume, PyGlove evolution recovery, leaderboard, bad input."""
import optuna
import pyglove as pg
import pytest

import automl
from automl import adapters
from automl.errors import SearchSpaceError, StudyError
from automl.sampling.pyglove_sampler import PyGloveSampler
from automl.study import Study

SPACE = automl.Recipe(
    adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2, 4])), adapters.FullFineTune()]),
    lr=pg.floatv(1e-4, 1e-2, scale="log"),
    steps=30,
)


def run(name, n, algorithm="tpe", space=SPACE, **kw):
    return automl.search(space, task="digits", algorithm=algorithm, n_trials=n, study_name=name,
                         progress=False, **kw)


def test_search_stores_recipes_metrics_and_leaderboard(studies):
    study = run("board", 6, algorithm="random")
    assert (studies / "board.db").exists()
    board = study.leaderboard()
    assert list(board.columns[:9]) == ["trial", "score", "accuracy", "forgetting", "intruders", "bits",
                                       "adapter", "rank", "quant"]
    assert list(board.columns[-2:]) == ["seconds", "recipe"] and board.index.name == "rank"
    assert list(board["score"]) == sorted(board["score"], reverse=True)
    lora = board[board["adapter"] == "LoRA"]
    assert lora["rank"].notna().all() and board[board["adapter"] == "FullFineTune"]["rank"].isna().all()
    best = int(board.iloc[0]["trial"])
    recipe = study.recipe(best)
    assert isinstance(recipe, automl.Recipe) and pg.is_deterministic(recipe)
    metrics = study.metrics(best)
    assert metrics["accuracy"] == board.iloc[0]["accuracy"]
    assert automl.Objective().values(metrics) == pytest.approx(board.iloc[0]["score"])


def test_resume_with_another_algorithm_and_refuse_another_space(studies):
    run("resume", 3, algorithm="random")
    study = run("resume", 2, algorithm="tpe")
    assert len(study.trials()) == 5
    other = SPACE.clone(override={"steps": 31})
    with pytest.raises(StudyError, match="different search space"):
        run("resume", 1, space=other)
    assert len(Study.load("resume").trials()) == 5       # nothing lost


def test_evolution_recovers_its_state_from_storage(studies):
    first = run("evo", 6, algorithm="evolution")
    assert all("automl:proposal" in t.system_attrs for t in first.trials())
    # A new process: a fresh Study object and sampler rebuild the population from storage.
    study = Study.load("evo")
    study.optimize(4, algorithm="evolution", progress=False)
    sampler = study.optuna.sampler.base
    assert isinstance(sampler, PyGloveSampler)
    assert sampler._generator.num_feedbacks == 10
    recipes = [t.system_attrs["automl:dna"] for t in study.trials()]
    assert len(set(recipes)) == len(recipes)             # deduplicated: no recipe trained twice


def test_reproduce_gives_the_stored_metrics(studies):
    study = run("repro", 2, algorithm="random")
    again = study.reproduce(0)
    # the contract is the same recipe and seed, not bit-identical floats across code paths
    assert again.metrics["accuracy"] == pytest.approx(study.metrics(0)["accuracy"], abs=1e-6)


def test_a_rank_that_fits_no_targeted_layer_is_refused_before_the_study_is_written(studies):
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([2, 512])), steps=10)
    with pytest.raises(SearchSpaceError, match=r"rank 512 does not fit layer 'fc1'"):
        run("fails", 4, algorithm="random", space=space, seed=3)
    assert not (studies / "fails.db").exists()


@pytest.mark.parametrize("error, reason, propagates", [
    (automl.errors.TrainingError("loss became nan at step 3"), "TrainingError: loss became nan at step 3", False),
    (RuntimeError(), "RuntimeError (no message)", True),
    (KeyboardInterrupt(), "KeyboardInterrupt: interrupted", True),
])
def test_every_failed_trial_stores_its_reason(studies, monkeypatch, error, reason, propagates):
    import automl.study.loop as loop

    def crash(*args, **kwargs):
        raise error
    monkeypatch.setattr(loop, "fit", crash)
    if propagates:
        with pytest.raises(type(error)):
            run("crash", 2, algorithm="random")
    else:
        run("crash", 2, algorithm="random")
    trials = Study.load("crash").trials()
    assert trials and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert all(t.system_attrs["fail_reason"].startswith(reason) for t in trials)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"algorithm": "annealing"}, SearchSpaceError, "unknown algorithm 'annealing'"),
    ({"task": "imagenet"}, SearchSpaceError, "unknown task 'imagenet'"),
    ({"storage": "nosuchdb://x"}, StudyError, "cannot open storage"),
    ({"objective": automl.Objective(maximize=["accuracy"]), "pruner": "median"}, SearchSpaceError, "pruning"),
])
def test_bad_input(studies, kwargs, error, match):
    args = dict(task="digits", n_trials=1, study_name="bad", progress=False)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        automl.search(SPACE, **args)


def test_unknown_objective_metric_lists_choices():
    with pytest.raises(SearchSpaceError, match="unknown metric 'speed'.*accuracy"):
        automl.Objective(maximize=["speed"])


def test_loading_a_missing_study_names_existing_ones(studies):
    run("present", 1, algorithm="random")
    with pytest.raises(StudyError, match=r"no study 'absent'.*present"):
        Study.load("absent")


@pytest.mark.parametrize("algorithm", ["nsga2", "pyglove-nsga2"])
def test_multi_objective_pareto_front(studies, algorithm):
    objective = automl.Objective(maximize=["accuracy"], minimize=["trainable_params"])
    study = run("pareto", 6, algorithm=algorithm, objective=objective)
    front = study.pareto_front()
    assert len(front) >= 1
    for _, row in front.iterrows():
        dominated = study.leaderboard()[(study.leaderboard()["accuracy"] > row["accuracy"])
                                        & (study.leaderboard()["trainable_params"] < row["trainable_params"])]
        assert dominated.empty
    with pytest.raises(StudyError, match="single objective"):
        run("single", 1, algorithm="random").pareto_front()


def test_single_objective_algorithm_refuses_multi_objective_study(studies):
    objective = automl.Objective(maximize=["accuracy"], minimize=["intruders"])
    with pytest.raises(SearchSpaceError, match="optimizes one objective"):
        run("mo-evo", 1, algorithm="evolution", objective=objective)
    with pytest.raises(SearchSpaceError, match="optimizes one objective"):
        run("mo-pg", 1, algorithm=pg.geno.Random(seed=0), objective=objective)
    assert not (studies / "mo-pg.db").exists() and not (studies / "mo-evo.db").exists()  # refused before writing


def test_median_pruner_prunes_bad_trials(studies):
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2, 4, 8])),
                          lr=pg.floatv(1e-6, 1e-2, scale="log"), steps=50)
    study = run("pruned", 14, algorithm="random", space=space, pruner="median", seed=1)
    states = [t.state for t in study.trials()]
    assert optuna.trial.TrialState.PRUNED in states
    pruned = [t for t in study.trials() if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.intermediate_values for t in pruned)


def test_exhausted_space_stops_with_a_reason_and_resume_adds_nothing(studies):
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=10)
    with pytest.raises(StudyError, match=r"exhausted: all 2 of its recipes.*2 of the 5 requested"):
        run("tiny", 5, algorithm=pg.geno.Sweeping(), space=space)
    study = Study.load("tiny")
    assert [t.state for t in study.trials()] == [optuna.trial.TrialState.COMPLETE] * 2
    with pytest.raises(StudyError, match=r"exhausted.*0 of the 1 requested"):
        run("tiny", 1, algorithm="random", space=space)
    assert len(Study.load("tiny").trials()) == 2          # nothing written


def test_intruder_mitigation_is_a_searchable_step(studies):
    from automl.mitigation import Mitigation
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([2, 8])), lr=3e-3, steps=100,
                          mitigation=pg.oneof([None, Mitigation(scale=pg.floatv(0.5, 1.0))]))
    study = run("mitigate", 6, algorithm="random", space=space)
    board = study.leaderboard()
    assert set(board["mitigation"]) <= {"none", "Mitigation"} and "scale" in board.columns
    mitigated = board[board["mitigation"] == "Mitigation"]
    assert not mitigated.empty and mitigated["scale"].between(0.5, 1.0).all()
    recipe = study.recipe(int(mitigated.iloc[0]["trial"]))
    assert isinstance(recipe.mitigation, Mitigation)


def test_searched_bits_do_not_hide_the_bits_metric(studies):
    from automl import quant
    space = automl.Recipe(adapter=adapters.FullFineTune(), steps=20,
                          quant=quant.Quantization(bits=pg.oneof([8, 4, 1.58])))
    board = run("bits", 3, algorithm="random", space=space).leaderboard()
    assert "quant.bits" in board.columns
    assert (board["bits"] > board["quant.bits"]).all()     # scales count: int4 ≈ 4.27 bits/parameter
    assert set(board["quant"]) <= {"int8", "int4", "b1.58"}


def test_a_repeated_recipe_is_not_trained_again(studies, monkeypatch):
    import automl.study.loop as loop
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2, 4])), steps=20)
    study = run("dupes", 2, algorithm="random", space=space)
    first = study.trials()[0]
    study.optuna.enqueue_trial(dict(first.params))        # force a repeat of trial 0
    trained = []
    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda recipe, *a, **k: trained.append(recipe) or real_fit(recipe, *a, **k))
    study.optimize(1, algorithm="random", progress=False)
    repeat = study.trials()[2]
    assert repeat.system_attrs["automl:duplicate_of"] == 0 and repeat.value == first.value
    assert len(trained) == 1                              # repeats are reused, only the new recipe trains
    assert len(study.leaderboard()) == 3
