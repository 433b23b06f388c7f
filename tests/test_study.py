"""Studies: storage, resume, PyGlove evolution recovery, leaderboard, bad input."""
import os
import subprocess
import sys

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
    assert board.columns[-1] == "seconds" and board.index.name == "rank"
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
    assert all("automl:proposal" in t.user_attrs for t in first.trials())
    # A new process: a fresh Study object and sampler rebuild the population from storage.
    study = Study.load("evo")
    study.optimize(4, algorithm="evolution", progress=False)
    sampler = study.optuna.sampler
    assert isinstance(sampler, PyGloveSampler)
    assert sampler._generator.num_feedbacks == 10
    recipes = [t.user_attrs["automl:dna"] for t in study.trials()]
    assert len(set(recipes)) == len(recipes)             # deduplicated: no recipe trained twice


def test_reproduce_gives_the_stored_metrics(studies):
    study = run("repro", 2, algorithm="random")
    again = study.reproduce(0)
    assert again.metrics["accuracy"] == study.metrics(0)["accuracy"]


def test_failed_trials_store_their_reason(studies):
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([2, 512])), steps=10)
    study = run("fails", 4, algorithm="random", space=space, seed=3)
    failed = [t for t in study.trials() if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("does not fit layer" in t.user_attrs["fail_reason"] for t in failed)
    assert len(study.leaderboard()) == 4 - len(failed)


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


def test_untrusted_types_are_not_rebuilt():
    from automl.symbolic import load_symbolic
    with pytest.raises(StudyError, match="untrusted"):
        load_symbolic('{"_type": "os.system", "x": 1}')


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
    assert Study.load("mo-pg").trials() == []            # refused before any trial started


def _storages():
    yield pytest.param("journal", id="journal-file")
    yield pytest.param("postgres", id="postgresql", marks=pytest.mark.skipif(
        not os.environ.get("AUTOML_TEST_POSTGRES"), reason="set AUTOML_TEST_POSTGRES (.ci/run starts a server)"))


@pytest.mark.parametrize("kind", list(_storages()))
def test_parallel_workers_share_one_storage(tmp_path, studies, kind):
    if kind == "journal":
        storage = f"journal:{tmp_path / 'journal.log'}"
    else:
        storage = os.environ["AUTOML_TEST_POSTGRES"]
        for name in optuna.get_all_study_names(storage):
            optuna.delete_study(study_name=name, storage=storage)
    run("shared", 1, algorithm="random", storage=storage)
    code = ("import sys; from automl.cli import main; sys.exit(main(['worker', 'shared', '--storage', "
            "sys.argv[1], '--trials', '2', '--algorithm', 'random', '--seed', sys.argv[2], '--quiet']))")
    procs = [subprocess.Popen([sys.executable, "-c", code, storage, str(s)]) for s in (1, 2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    study = Study.load("shared", storage=storage)
    assert len(study.trials((optuna.trial.TrialState.COMPLETE,))) == 5
    assert len(study.leaderboard()) == 5


def test_median_pruner_prunes_bad_trials(studies):
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2, 4, 8])),
                          lr=pg.floatv(1e-6, 1e-2, scale="log"), steps=50)
    study = run("pruned", 14, algorithm="random", space=space, pruner="median", seed=1)
    states = [t.state for t in study.trials()]
    assert optuna.trial.TrialState.PRUNED in states
    pruned = [t for t in study.trials() if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.intermediate_values for t in pruned)


def test_exhausted_pyglove_space_stops_with_a_reason(studies):
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=10)
    with pytest.raises(StudyError, match="exhausted"):
        run("tiny", 5, algorithm=pg.geno.Sweeping(), space=space)
    study = Study.load("tiny")
    states = [t.state for t in study.trials()]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE] * 2 and states[2] == optuna.trial.TrialState.FAIL
    assert "exhausted" in study.trials()[2].user_attrs["fail_reason"]
    assert optuna.trial.TrialState.RUNNING not in states


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
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=20)
    study = run("dupes", 6, algorithm="random", space=space)
    trials = study.trials()
    originals = {t.number for t in trials if "automl:duplicate_of" not in t.user_attrs}
    assert len(originals) == 2 and len(study.leaderboard()) == 2
    for t in trials:
        if t.number not in originals:
            first = study._trial(t.user_attrs["automl:duplicate_of"])
            assert t.params == first.params and t.value == first.value
    import automl.study as study_module
    monkeypatch.setattr(study_module, "fit", lambda *a, **k: pytest.fail("a known recipe was re-trained"))
    study.optimize(2, algorithm="random", progress=False)
