"""Reviewing studies: leaderboard (sort, where, top, all, formats, width), Pareto front, show,
compare, reproduce verdicts, export's re-training notice, help texts, paths, Optuna's logging,
and each bad input as one line with exit code 2."""
import io
import json
import os

import optuna
import pandas as pd
import pyglove as pg
import pytest
from optuna.trial import TrialState

import automl
from automl import adapters
from automl.cli import ALGORITHM_HELP, main, parser
from automl.errors import SearchSpaceError, StudyError
from automl.study import Study
from automl.study.query import Where, WhereError
from automl.study.render import render
from automl.study.review import Reproduction

SPACE = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 4]), alpha=pg.oneof([8.0, 16.0])),
                                        adapters.FullFineTune()]),
                      lr=pg.floatv(1e-4, 1e-2, scale="log"), steps=20)
PARETO = automl.Objective(maximize=["accuracy"], minimize=["trainable_params"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two studies shared by this module: 'one' (weighted sum, 5 trials and one failed trial),
    'front' (multi-objective, 5 trials)."""
    patch = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("review")
    patch.setenv("AUTOML_STUDIES", str(path))
    study = automl.search(SPACE, task="digits", algorithm="random", n_trials=5, study_name="one", progress=False)
    study.optuna.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, system_attrs={"fail_reason": "TrainingError: loss is NaN at step 3"}))
    automl.search(SPACE, task="digits", objective=PARETO, algorithm="nsga2", n_trials=5, study_name="front",
                  progress=False)
    yield path
    patch.undo()


@pytest.fixture
def here(folder, monkeypatch):
    monkeypatch.setenv("AUTOML_STUDIES", str(folder))
    return folder


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- leaderboard: the DataFrame -------------------------------------------------------------------
def test_leaderboard_sort_orders_by_the_metric_direction(here):
    study = Study.load("one")
    by_intruders = study.leaderboard(sort="intruders")
    assert list(by_intruders["intruders"]) == sorted(by_intruders["intruders"])         # minimized: ascending
    by_accuracy = study.leaderboard(sort="accuracy")
    assert list(by_accuracy["accuracy"]) == sorted(by_accuracy["accuracy"], reverse=True)
    assert list(study.leaderboard(sort="trial")["trial"]) == [0, 1, 2, 3, 4]


def test_leaderboard_where_filters_rows_and_keeps_their_rank(here):
    study = Study.load("one")
    full = study.leaderboard()
    lora = study.leaderboard(where="adapter==LoRA and accuracy>=0")
    assert set(lora["adapter"]) <= {"LoRA"} and len(lora) == (full["adapter"] == "LoRA").sum()
    assert all(full.loc[rank, "trial"] == row["trial"] for rank, row in lora.iterrows())
    assert len(study.leaderboard(where="rank in [1, 4]")) == full["rank"].isin([1, 4]).sum()
    assert len(study.leaderboard(where="`accuracy` > 2")) == 0


def test_leaderboard_top_and_all_include_failed_trials_with_their_state(here):
    study = Study.load("one")
    assert len(study.leaderboard(top=2)) == 2
    everything = study.leaderboard(all=True)
    assert "state" in everything.columns and "state" not in study.leaderboard().columns
    assert list(everything["state"]).count("FAIL") == 1 and everything.iloc[-1]["state"] == "FAIL"


def test_leaderboard_has_one_readable_recipe_column(here):
    board = Study.load("one").leaderboard()
    lora = board[board["adapter"] == "LoRA"]
    for _, row in lora.iterrows():
        assert row["recipe"].startswith(f"LoRA r={int(row['rank'])} α={int(row['alpha'])} · fp32 · Linear · lr ")


def test_multi_objective_leaderboard_lists_pareto_members_first(here):
    study = Study.load("front")
    board = study.leaderboard()
    flags = list(board["pareto"])
    assert flags == sorted(flags, reverse=True) and any(flags)
    assert set(study.pareto_front()["trial"]) == {t.number for t in study.optuna.best_trials}


# -- leaderboard: rendering -----------------------------------------------------------------------
def test_leaderboard_table_fits_100_columns_and_folds_constant_columns(here, capsys):
    code, out, err = cli(capsys, "leaderboard", "one")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 100
    assert out.splitlines()[0] == "score = accuracy − 0.5·forgetting − 0.01·intruders − 0.001·bits"
    header = out.splitlines()[1]
    assert header.startswith("every row:") and "fp32" in header and "bits 32" in header
    assert "e+0" not in out and "NaN" not in out and "trainable_params" not in out.splitlines()[1]


def test_render_shortens_the_recipe_to_the_width(here):
    board = Study.load("one").leaderboard()
    board["recipe"] = board["recipe"] + " · " + "x" * 150
    text = render(board, Study.load("one").objective, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" in text
    assert max(len(line) for line in render(board, Study.load("one").objective, width=None).splitlines()) > 150


def test_render_prints_integral_columns_as_integers(here):
    study = Study.load("one")
    rows = list(io.StringIO(render(study.leaderboard(), study.objective, "csv")))
    table = pd.read_csv(io.StringIO("".join(rows)))
    assert table["trainable_params"].dtype.kind == "i" and "place" in table.columns
    assert all("e+" not in line for line in rows)


def test_leaderboard_formats_markdown_csv_json(here, capsys):
    code, out, _ = cli(capsys, "leaderboard", "one", "--where", "adapter==LoRA or adapter==FullFineTune",
                       "--format", "markdown")
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert code == 0 and lines[0].startswith("| # | trial | score") and set(lines[1]) <= set("|-:")
    code, out, _ = cli(capsys, "leaderboard", "one", "--format", "json", "--top", "2")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2 and rows[0]["place"] == 1 and isinstance(rows[0]["trainable_params"], int)
    code, out, _ = cli(capsys, "leaderboard", "one", "--format", "csv", "--all")
    assert code == 0 and "FAIL" in out and len(out.strip().splitlines()) == 7


def test_pareto_command_lists_the_marked_front(here, capsys):
    code, out, err = cli(capsys, "pareto", "front")
    lines = out.strip().splitlines()
    assert lines[0] == "Pareto front: maximize accuracy; minimize trainable_params"
    rows = lines[lines.index(next(ln for ln in lines if ln.startswith("#"))) + 1:]
    front = Study.load("front").pareto_front()
    assert code == 0
    assert len(rows) == len(front) and all("*" in r for r in rows)


def test_every_command_says_where_its_study_lives(here, capsys):
    _, _, err = cli(capsys, "show", "one", "0")
    assert err.strip() == f"automl: study 'one' in {here.resolve() / 'one.db'}"


# -- show, compare, reproduce, export -------------------------------------------------------------
def test_trial_record_has_state_score_duration_program_metrics_layers(here, capsys):
    study = Study.load("one")
    best = int(study.leaderboard().iloc[0]["trial"])
    record = study.trial(best)
    assert record.state == "COMPLETE" and record.values["score"] == study.optuna.trials[best].value
    assert record.duration > 0 and record.weights_kept and record.fail_reason is None
    assert record.program.startswith("Recipe(") and "lr = " in record.program
    assert {"fc1", "fc2"} <= set(record.layers.index) and "effective_rank" in record.layers.columns
    assert not any("/" in k and k.split("/")[0] in ("intruders", "drift") for k in record.metrics)
    code, out, _ = cli(capsys, "show", "one", str(best))
    assert code == 0 and "COMPLETE" in out and "trained weights kept" in out and "per layer:" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_show_a_failed_trial_gives_its_reason(here, capsys):
    code, out, _ = cli(capsys, "show", "one", "5")
    assert code == 0 and "FAIL" in out and "failed: TrainingError: loss is NaN" in out
    assert "(no recipe stored)" in out and "trained weights not kept" in out


def test_compare_shows_metrics_side_by_side_and_the_program_diff(here, capsys):
    study = Study.load("one")
    comparison = study.compare(0, 1)
    assert list(comparison.metrics.columns) == ["trial 0", "trial 1", "change"]
    assert "lr = Diff(" in comparison.diff
    assert study.compare(2, 2).diff == "(the same program)"
    code, out, _ = cli(capsys, "compare", "one", "0", "1")
    assert code == 0 and "program diff" in out and "trial 0" in out and "accuracy" in out


def test_reproduce_gives_a_verdict_per_metric(here, capsys):
    study = Study.load("one")
    again = study.reproduce(0)
    verdicts = again.verdicts
    assert again.same and verdicts.loc["accuracy", "verdict"] == "same"
    assert verdicts.loc["seconds", "verdict"] == "timing"
    changed = Reproduction("one", 0, {**again.stored, "accuracy": again.stored["accuracy"] + 0.01}, again.result, 1.0)
    assert not changed.same and changed.different == ["accuracy"] and "NOT reproduced" in str(changed)
    code, out, _ = cli(capsys, "reproduce", "one", "0")
    assert code == 0 and "reproduced: all" in out and "within rel 0.0001 or abs 1e-06" in out


def test_export_says_when_it_retrains_and_how_long_it_took(here, tmp_path, capsys):
    study = Study.load("one")
    kept = study.export(0, tmp_path / "kept")
    assert not kept.retrained and kept and kept[0].exists()
    trial = study.optuna.trials[1]
    study.artifact_store.remove(trial.system_attrs["automl:artifact"])   # as pruning the worst does
    assert not study.trial(1).weights_kept
    code, out, _ = cli(capsys, "export", "one", "1", str(tmp_path / "again"))
    assert code == 0 and "were not kept" in out and "re-trained its recipe in" in out


# -- objective, help, paths, logging --------------------------------------------------------------
def test_objective_repr_shows_only_what_is_used():
    assert repr(automl.Objective()) == "Objective(accuracy=1, forgetting=0.5, intruders=0.01, bits=0.001)"
    assert str(automl.Objective(forgetting=0, bits=0)) == "score = accuracy − 0.01·intruders"
    multi = automl.Objective(maximize=["accuracy"], minimize=["bits"])
    assert repr(multi) == "Objective(maximize=['accuracy'], minimize=['bits'])"
    assert str(multi) == "Pareto front: maximize accuracy; minimize bits"
    assert eval(repr(multi), {"Objective": automl.Objective}) == multi   # noqa: S307 - our own repr


def test_every_command_has_help_with_examples_and_no_rst(capsys):
    commands = parser()._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        text = sub.format_help()
        assert "examples:" in text and "``" not in text, name
        for action in sub._positionals._group_actions:
            assert action.help, (name, action.dest)
    assert "``" not in parser().format_help()
    from automl.sampling.samplers import ALGORITHMS
    assert set(ALGORITHM_HELP) == set(ALGORITHMS)
    assert all(f"  {a} " in commands["search"].format_help() for a in ALGORITHMS)


def test_caches_do_not_follow_the_working_directory(tmp_path, monkeypatch):
    from automl.paths import cache_dir
    monkeypatch.delenv("AUTOML_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    first = cache_dir("svd")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cache_dir("svd") == first == tmp_path / "xdg" / "automl" / "svd"


def test_python_api_quiets_optuna_info_and_restores_the_level(studies, caplog):
    def finished():
        return [r for r in caplog.records if r.name.startswith("optuna") and "finished" in r.getMessage()]

    optuna.logging.set_verbosity(optuna.logging.INFO)                         # Optuna's default
    try:
        automl.search(SPACE, task="digits", algorithm="random", n_trials=1, study_name="q", progress=False)
        assert not finished()
        assert optuna.logging.get_verbosity() == optuna.logging.INFO          # restored
        optuna.logging.set_verbosity(optuna.logging.DEBUG)                    # a user's own choice
        Study.load("q").optimize(1, algorithm="random", progress=False)
        assert len(finished()) == 1
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["leaderboard", "ghost"], "no study 'ghost'"),
    (["show", "one", "99"], "has no trial 99; it has trials 0..5"),
    (["compare", "one", "0", "42"], "has no trial 42"),
    (["reproduce", "one", "-1"], "has no trial -1"),
    (["leaderboard", "one", "--sort", "speed"], "cannot sort by 'speed'; sort by one of ['trial', 'score', 'accuracy'"),
    (["leaderboard", "one", "--where", "accuracy >"], "is not an expression"),
    (["leaderboard", "one", "--where", "acuracy > 0.5"], "unknown column 'acuracy'"),
    (["leaderboard", "one", "--where", "__import__('os').system('true')"], "Call is not allowed"),
    (["leaderboard", "one", "--where", "accuracy.real > 0"], "Attribute is not allowed"),
    (["pareto", "one"], "has a single objective"),
])
def test_bad_input_is_one_line_with_exit_code_2(here, capsys, argv, message):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and err.startswith("automl: error:") and err.count("\n") == 1 and message in err, err


def test_where_is_parsed_never_evaluated(monkeypatch):
    import builtins
    monkeypatch.setattr(builtins, "eval", lambda *a, **k: pytest.fail("eval called"))
    table = pd.DataFrame({"adapter": ["LoRA", "FullFineTune"], "accuracy": [0.95, 0.8]})
    assert list(Where("adapter==LoRA and accuracy>0.9").mask(table)) == [True, False]
    assert list(Where("not adapter in [LoRA]").mask(table)) == [False, True]
    for bad in ("().__class__", "[x for x in accuracy]", "lambda: 1", "accuracy if 1 else 2"):
        with pytest.raises(WhereError):
            Where(bad).mask(table)


def test_python_api_bad_input_raises_typed_errors(here):
    study = Study.load("one")
    with pytest.raises(SearchSpaceError, match="cannot sort by"):
        study.leaderboard(sort="nope")
    with pytest.raises(SearchSpaceError, match="not an expression"):
        study.leaderboard(where="((")
    with pytest.raises(StudyError, match="no trial 77"):
        study.trial(77)
    with pytest.raises(StudyError, match="an integer"):
        study.trial("3")


def test_cli_verbose_shows_optunas_lines(studies, tmp_path, caplog, capsys):
    from automl.study.quiet import quiet_optuna
    space = tmp_path / "tiny.py"
    space.write_text("import pyglove as pg, automl\nfrom automl import adapters\n"
                     "SPACE = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=10)\n")
    try:
        assert main(["search", str(space), "--trials", "1", "--study", "v", "--quiet", "--verbose"]) == 0
        assert any(r.name.startswith("optuna") and "finished" in r.getMessage() for r in caplog.records)
    finally:
        quiet_optuna(True)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
