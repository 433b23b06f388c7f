"""Tabular benchmarks: tabulate a finite space once, replay it as a task, search it as usual."""
import json

import optuna
import pyglove as pg
import pytest

import automl
from automl import adapters
from automl.cli import main
from automl.errors import SearchSpaceError, TrainingError
from automl.sampling import samplers
from automl.study import records
from automl.tasks.tabular import Table, Tabular, recipes, tabulate
from automl.trainer import fit

# 2 LoRA ranks + full fine-tuning, × a working and a diverging learning rate: 6 recipes, LoRA's 2 fail.
SPACE = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2])), adapters.FullFineTune()]),
                      lr=pg.oneof([1e-3, 1e3]), steps=5)
TIMING = ("seconds", "train_seconds")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tabular")
    (folder / "tiny_space.py").write_text(
        "import pyglove as pg, automl\nfrom automl import adapters\n"
        "SPACE = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2])), adapters.FullFineTune()]),\n"
        "                      lr=pg.oneof([1e-3, 1e3]), steps=5)\nTASK = 'digits'\n")
    out = folder / "tiny.json"
    assert main(["tabulate", str(folder / "tiny_space.py"), "--out", str(out), "--quiet"]) == 0
    return out


def test_tabulate_writes_every_recipe_of_the_space_with_study_parameter_names(table_path):
    table = Table.load(table_path)
    assert len(table) == 6 and table.task == "digits"
    assert table.params == ["adapter", "adapter[LoRA].rank", "lr"]
    assert {"accuracy", "forgetting", "intruders", "bits", "seconds"} <= set(table.metrics)
    frame = table.frame()
    assert list(frame.columns[:4]) == ["recipe", "adapter", "adapter[LoRA].rank", "lr"]
    failed = frame[frame["error"].notna()]
    assert len(failed) == 2 and (failed["lr"] == 1e3).all() and failed["accuracy"].isna().all()
    assert frame.loc[frame["adapter"] == "FullFineTune", "adapter[LoRA].rank"].isna().all()


def test_replay_gives_the_metrics_of_training(table_path):
    task = Tabular(table_path)
    recipe = automl.Recipe(adapter=adapters.LoRA(rank=2), lr=1e-3, steps=5)
    trained = fit(recipe, "digits").metrics
    replayed = fit(recipe, task).metrics
    assert set(replayed) == set(trained)
    assert {k: v for k, v in replayed.items() if k not in TIMING} == {k: v for k, v in trained.items() if k not in TIMING}


def test_tabulate_in_worker_processes_gives_the_same_table():
    tiny = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=3)
    one, two = tabulate(tiny, "digits", progress=False), tabulate(tiny, "digits", progress=False, workers=2)
    assert list(one.rows) == list(two.rows)
    for key in one.rows:
        assert {k: v for k, v in one.rows[key].metrics.items() if k not in TIMING} == \
               {k: v for k, v in two.rows[key].metrics.items() if k not in TIMING}


def test_tabular_replays_a_failed_recipe_as_its_training_error(table_path):
    with pytest.raises(TrainingError, match="loss became nan.*replayed from the table"):
        fit(automl.Recipe(adapter=adapters.LoRA(rank=1), lr=1e3, steps=5), Tabular(table_path))


def test_tabular_refuses_a_recipe_not_in_the_table(table_path):
    task = Tabular(table_path)
    for recipe in (automl.Recipe(adapter=adapters.LoRA(rank=4), lr=1e-3, steps=5),     # another rank
                   automl.Recipe(adapter=adapters.LoRA(rank=1), lr=1e-3, steps=6)):    # another step count
        with pytest.raises(SearchSpaceError, match="not one of the 6 recipes in the table"):
            fit(recipe, task)


def test_tabular_refuses_another_space_and_another_task(table_path):
    task = Tabular(table_path)
    task.check_space(SPACE)
    with pytest.raises(SearchSpaceError, match="another search space"):
        task.check_space(SPACE.clone(override={"steps": 6}))
    with pytest.raises(SearchSpaceError, match="made on task 'digits', not 'digits-seeds'"):
        Tabular(table_path, task="digits-seeds")


def _damaged(document):
    yield "not JSON {", "is not JSON"
    yield json.dumps({**document, "format": "other"}), "not an 'automl.tabular/1' document"
    yield json.dumps({**document, "rows": [document["rows"][0][:-1]]}), "row 0 does not have"
    rows = [list(r) for r in document["rows"]]
    rows[1][0] = rows[0][0]
    yield json.dumps({**document, "rows": rows}), "row 1's recipe fingerprint is missing or repeats"
    rows = [list(r) for r in document["rows"]]
    rows[0][5] = "0.9"
    yield json.dumps({**document, "rows": rows}), "row 0 has a metric that is not a finite number"
    rows = [list(r) for r in document["rows"]]
    rows[0][1] = {"_type": "os.system"}
    yield json.dumps({**document, "rows": rows}), "row 0 has a parameter that is not a plain label"
    rows = [list(r) for r in document["rows"]]
    rows[0][-1] = None
    rows[0][4:-1] = [None] * (len(rows[0]) - 5)
    yield json.dumps({**document, "rows": rows}), "row 0 must hold either metrics or an error"
    yield json.dumps({**document, "metrics": document["metrics"] + ["lr"]}), "a column name repeats"


def test_tabular_refuses_a_malformed_table(table_path, tmp_path):
    document = json.loads(table_path.read_text())
    for i, (text, problem) in enumerate(_damaged(document)):
        path = tmp_path / f"bad{i}.json"
        path.write_text(text)
        with pytest.raises(SearchSpaceError, match=problem):
            Tabular(path)
    with pytest.raises(SearchSpaceError, match="cannot read table"):
        Tabular(tmp_path / "missing.json")


def test_tabulate_refuses_an_infinite_space(studies, tmp_path, capsys):
    with pytest.raises(SearchSpaceError, match="only a finite space can be tabulated"):
        next(recipes(SPACE.clone(override={"lr": pg.floatv(1e-4, 1e-2)})))
    space = tmp_path / "continuous.py"
    space.write_text("import pyglove as pg, automl\nfrom automl import adapters\n"
                     "SPACE = automl.Recipe(adapter=adapters.LoRA(rank=4), lr=pg.floatv(1e-4, 1e-2))\n")
    assert main(["tabulate", str(space), "--out", str(tmp_path / "t.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("automl: error: only a finite space") and err.count("\n") == 1
    assert not (tmp_path / "t.json").exists()


def test_search_on_a_tabular_task_stores_trials_as_usual(studies, table_path):
    task = Tabular(table_path)
    study = automl.search(SPACE, task=task, algorithm="random", n_trials=6, progress=False, seed=0)
    assert study.name == "tabular-digits-search"
    trials = study.trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and records.get(t, records.DUPLICATE_OF) is None]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(done) == 4 and len(failed) == 2  # the whole space: 4 recipes train, 2 diverge
    assert all("loss became nan" in records.get(t, records.FAIL_REASON) for t in failed)
    rows = task.table.rows
    for t in done:
        recipe = study.recipe(t.number)
        assert t.user_attrs["accuracy"] == rows[automl.symbolic.fingerprint(recipe)].metrics["accuracy"]
    board = study.leaderboard()
    assert len(board) == 4 and {"score", "accuracy", "adapter"} <= set(board.columns)
    reopened = automl.Study.load(study.name, task=task)
    assert reopened.reproduce(done[0].number).metrics["accuracy"] == done[0].user_attrs["accuracy"]


def test_sampler_defaults_are_the_documented_ones():
    assert samplers.DEFAULT_ALGORITHM == "tpe"
    small, large = SPACE, SPACE.clone(override={"lr": pg.oneof([10 ** (-k / 10) for k in range(20, 60)])})
    tpe = samplers.make_sampler("tpe", small, seed=0).base
    assert (tpe._multivariate, tpe._group) == (True, True)
    assert tpe._n_startup_trials == samplers.startup_trials(6) and tpe._n_ei_candidates == samplers.TPE_EI_CANDIDATES
    assert samplers.make_sampler("tpe", large, seed=0).base._n_startup_trials == samplers.startup_trials(120)
    assert samplers.make_sampler("tpe", small.clone(override={"lr": pg.floatv(1e-4, 1e-2)}),
                                 seed=0).base._n_startup_trials == samplers.startup_trials(float("inf"))
    assert [samplers.startup_trials(n) for n in (6, 40, 91, 1000, float("inf"))] == [2, 3, 3, 3, 10]
    assert [samplers.evolution_sizes(n) for n in (6, 91, 1000, 10**6, float("inf"))] == \
        [(10, 3), (10, 3), (16, 4), (32, 8), (10, 3)]


def test_evolution_population_and_tournament_follow_the_space(monkeypatch):
    built = {}
    real = pg.evolution.regularized_evolution
    monkeypatch.setattr(pg.evolution, "regularized_evolution", lambda **kw: built.update(kw) or real(**kw))
    large = SPACE.clone(override={"lr": pg.oneof([10 ** (-k / 100) for k in range(200, 600)])})
    samplers.make_sampler("evolution", large, seed=0).base  # builds the generator
    assert (built["population_size"], built["tournament_size"]) == samplers.evolution_sizes(1200) == (18, 4)
