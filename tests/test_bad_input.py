"""Bad input and bad state: one line (``automl: error: ...``), exit code 2, nothing stored
changed, no file created. Read-only commands create nothing."""
import io
import sqlite3

import optuna
import pyglove as pg
import pytest
import torch

import automl
from automl import adapters, quant
from automl.cli import main
from automl.errors import DeviceError, SearchSpaceError, StudyError

SPACE = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2])), adapters.FullFineTune()]), steps=5)
GOOD_SPACE = ("import pyglove as pg, automl\nfrom automl import adapters\n"
              "SPACE = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=5)\n")
BAD_SPACES = {
    "syntax.py": ("SPACE = (\n", "syntax error at line 1"),
    "name_error.py": ("import automl\nSPACE = automl.Recipe(adapter=LoRA())\n", "NameError: name 'LoRA'"),
    "bits.py": ("import pyglove as pg, automl\nfrom automl import adapters, quant\n"
                "SPACE = automl.Recipe(adapter=adapters.FullFineTune(), quant=quant.Quantization(bits=pg.oneof([8, 3])))\n",
                "Quantization.bits=3.0 is not supported"),
    "negative_lr.py": ("import pyglove as pg, automl\nfrom automl import adapters\n"
                       "SPACE = automl.Recipe(adapter=adapters.LoRA(), lr=pg.floatv(-1e-3, 1e-2))\n",
                       "lr: a pg.floatv range with min -0.001 goes outside the field's bounds"),
    "big_rank.py": ("import pyglove as pg, automl\nfrom automl import adapters\n"
                    "SPACE = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([4, 300])), steps=5)\n",
                    "rank 300 does not fit layer"),
    "no_space.py": ("X = 1\n", "defines no SPACE"),
}


def _files(*roots):
    return sorted(str(p) for root in roots if root.exists() for p in root.rglob("*"))


def _one_line_error(capsys, expected):
    err = capsys.readouterr().err.strip()
    assert err.startswith("automl: error:") and "\n" not in err, err
    assert expected in err, err
    return err


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    studies = tmp_path / "studies"
    monkeypatch.setenv("AUTOML_STUDIES", str(studies))
    return tmp_path


@pytest.mark.parametrize("name", list(BAD_SPACES))
def test_a_bad_space_file_is_one_line_and_creates_nothing(cwd, capsys, name):
    text, expected = BAD_SPACES[name]
    (cwd / name).write_text(text)
    before = _files(cwd)
    assert main(["search", name, "--trials", "1", "--quiet"]) == 2
    _one_line_error(capsys, expected)
    assert _files(cwd) == before


@pytest.mark.parametrize("argv, expected", [
    (["--device", "foo"], "is not a torch device"),
    (["--device", "cuda"], "needs CUDA"),
    (["--device", "cuda:7"], "cuda"),
    (["--trials", "0"], "must be a positive integer"),
    (["--trials", "-3"], "must be a positive integer"),
    (["--top", "-1"], "must be a positive integer"),
    (["--task", "mnist"], "unknown task 'mnist'"),
    (["--task", "no_such_module:TASK"], "cannot import trusted module 'no_such_module'"),
    (["--heartbeat", "30", "--grace", "10"], "must exceed its interval"),
    (["--storage", "bogus://nowhere"], "cannot open storage"),
    (["--storage", "postgresql://bob:hunter2@127.0.0.1:1/db"], "bob:***@"),
    (["--trust", "os"], "can't be trusted wholesale"),
])
def test_search_refuses_bad_arguments_before_writing(cwd, capsys, argv, expected):
    if "cuda" in argv[-1] and torch.cuda.is_available() and argv[-1] == "cuda":
        pytest.skip("this machine has CUDA")
    (cwd / "good.py").write_text(GOOD_SPACE)
    before = _files(cwd)
    assert main(["search", "good.py", "--trials", "1", "--quiet", *argv]) == 2
    err = _one_line_error(capsys, expected)
    assert "hunter2" not in err
    assert _files(cwd) == before


def test_api_refusals_happen_before_anything_is_written(cwd):
    cases = [(dict(algorithm="no-such-algo"), SearchSpaceError, "unknown algorithm"),
             (dict(n_trials=0), SearchSpaceError, "positive integer"),
             (dict(device="foo"), DeviceError, "not a torch device"),
             (dict(pruner="sometimes"), SearchSpaceError, "unknown pruner"),
             (dict(objective="accuracy"), SearchSpaceError, "automl.Objective")]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            automl.search(SPACE, **{"n_trials": 1, "study_name": "never", "progress": False, **kwargs})
    assert _files(cwd) == []


def test_read_only_commands_create_nothing(cwd, capsys):
    assert main(["studies"]) == 0 and "(no studies)" in capsys.readouterr().out
    assert main(["leaderboard", "typo", "--storage", "sqlite:///typo.db"]) == 2
    _one_line_error(capsys, "does not exist")
    assert main(["leaderboard", "ghost"]) == 2
    _one_line_error(capsys, "no study 'ghost'")
    assert main(["show", "ghost", "0", "--storage", f"journal:{cwd / 'j.log'}"]) == 2
    _one_line_error(capsys, "no journal file")
    assert _files(cwd) == []


def test_a_plain_optuna_file_is_only_read(cwd, capsys):
    path = cwd / "plain.db"
    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{path}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    del study
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    dump = list(sqlite3.connect(path).iterdump())
    assert main(["leaderboard", "plain", "--storage", f"sqlite:///{path}"]) == 2
    _one_line_error(capsys, "was not created by automl")
    assert main(["studies", "--storage", f"sqlite:///{path}"]) == 0
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == mode == "delete"
    assert list(sqlite3.connect(path).iterdump()) == dump


@pytest.mark.parametrize("damage, expected", [
    (lambda data: b"this is not a database" * 100, "not a readable SQLite database"),
    (lambda data: data[: len(data) // 2], "SQLite database"),
    (lambda data: data[:100], "SQLite database"),
])
def test_a_corrupt_or_truncated_sqlite_file_is_one_line(cwd, capsys, damage, expected):
    study = automl.search(SPACE, algorithm="random", n_trials=1, study_name="hurt", progress=False)
    study._raw_storage.engine.dispose()
    path = cwd / "studies" / "hurt.db"
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path.write_bytes(damage(path.read_bytes()))
    for wal in path.parent.glob("hurt.db-*"):
        wal.unlink()
    data = path.read_bytes()
    for argv in (["leaderboard", "hurt"], ["show", "hurt", "0"], ["worker", "hurt", "--trials", "1", "--quiet"],
                 ["studies"]):
        assert main(argv) == 2, argv
        err = _one_line_error(capsys, expected)
        assert "use a valid URL" not in err.lower() and "SELECT" not in err
        assert path.read_bytes() == data


def test_a_missing_trial_and_an_unknown_trial_number(cwd, capsys):
    automl.search(SPACE, algorithm="random", n_trials=1, study_name="one", progress=False)
    assert main(["show", "one", "7"]) == 2
    _one_line_error(capsys, "has no trial 7; it has trials 0..0")


def test_leaderboard_into_a_closed_pipe_is_quiet(cwd, capsys, monkeypatch):
    automl.search(SPACE, algorithm="random", n_trials=1, study_name="piped", progress=False)

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["leaderboard", "piped"]) == 0
    assert capsys.readouterr().err == ""


def test_leaderboard_top_must_be_positive(cwd):
    study = automl.search(SPACE, algorithm="random", n_trials=1, study_name="top", progress=False)
    with pytest.raises(SearchSpaceError, match="positive integer"):
        study.leaderboard(top=-1)


def test_unresolvable_study_storage_messages_are_masked():
    with pytest.raises(StudyError) as info:
        automl.Study.load("x", storage="postgresql://carol:pa55word@127.0.0.1:1/db")
    assert "pa55word" not in str(info.value) and "carol:***@" in str(info.value)


def test_typed_fields_refuse_bad_candidates_when_written():
    for make, match in [(lambda: quant.Quantization(bits=pg.oneof([8, 3])), "bits=3"),
                        (lambda: adapters.LoRA(rank=pg.oneof([0, 2])), "rank must be a positive integer"),
                        (lambda: adapters.LoRA(dropout=pg.oneof([0.1, 1.0])), "dropout must lie in"),
                        (lambda: automl.Recipe(adapter=adapters.LoRA(), lr=pg.floatv(-1e-3, 1e-2)), "outside the field.s bounds"),
                        (lambda: automl.Recipe(adapter=adapters.LoRA(), steps=pg.oneof([10, 0])), "steps")]:
        with pytest.raises((SearchSpaceError, ValueError), match=match):
            make()
