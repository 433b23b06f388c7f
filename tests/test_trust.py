"""A study database is untrusted input: malicious payloads × every stored field × every reading
command. Nothing runs (a marker file never appears), each refusal is one clear line (exit 2),
and the database is unchanged."""
import base64
import json
import os
import pickle
import shutil
import sqlite3
import sys

import optuna
import pyglove as pg
import pytest

import automl
from automl import adapters
from automl.cli import main
from automl.errors import AutomlError, StudyError
from automl.study import Study
from automl.symbolic import load_symbolic

SPACE = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2])), adapters.FullFineTune()]),
                      lr=pg.floatv(1e-3, 1e-2, scale="log"), steps=5)
OPAQUE = next(n for n, c in pg.JSONConvertible.registered_types() if c.__name__ == "_OpaqueObject")


class _Opens:
    """Unpickling this opens (creates) the marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def payloads(marker, evil_module):
    """name -> JSON value (a dict/list) or raw text."""
    pickled = base64.encodebytes(pickle.dumps(_Opens(str(marker)))).decode()
    return {
        "pickle": {"_type": OPAQUE, "value": pickled},
        "function": {"_type": "function", "name": "os.system"},
        "type": {"_type": "type", "name": "subprocess.Popen"},
        "method": {"_type": "method", "name": "os.system"},
        "auto-import": {"_type": f"{evil_module}.Evil", "x": 1},
        "automl-prefix": {"_type": f"automl.{evil_module}.Evil"},
        "non-string-type": {"_type": {"_type": OPAQUE, "value": pickled}},
        "not-json": "{'_type': not json",
        "deeply-nested": "[" * 50000,
    }


# field -> (table, key, where the payload goes: None = the whole value, else a key of the valid tree)
FIELDS = {
    "space": ("study_system_attributes", "automl:space", "adapter"),
    "objective": ("study_system_attributes", "automl:objective", "maximize"),
    "recipe": ("trial_system_attributes", "automl:recipe", "adapter"),
    "proposal": ("trial_system_attributes", "automl:proposal", "metadata"),
    "recipe-legacy-user-attr": ("trial_user_attributes", "recipe", "adapter"),
}
COMMANDS = {
    "leaderboard": ["leaderboard", "t"],
    "show": ["show", "t", "0"],
    "report": ["report", "t", "--out", "{out}"],
    "reproduce": ["reproduce", "t", "0"],
    "export": ["export", "t", "0", "{out}"],
    "studies": ["studies"],
    "worker": ["worker", "t", "--trials", "1", "--algorithm", "evolution", "--quiet"],
}
API = {
    "load+recipe": lambda s: s.recipe(0),
    "space": lambda s: s.space,
    "objective": lambda s: s.objective,
    "leaderboard": lambda s: s.leaderboard(),
}


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory):
    """One small real study (2 trials, evolution so a proposal is stored)."""
    folder = tmp_path_factory.mktemp("trust-study")
    old = os.environ.get("AUTOML_STUDIES")
    os.environ["AUTOML_STUDIES"] = str(folder)
    try:
        study = automl.search(SPACE, task="digits", algorithm="evolution", n_trials=2, study_name="t", progress=False)
        study._raw_storage.engine.dispose()
    finally:
        os.environ["AUTOML_STUDIES"] = old
    db = folder / "t.db"
    with sqlite3.connect(db) as c:      # checkpoint WAL into the file, so one file is the whole study
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.execute("PRAGMA journal_mode=DELETE")
    return db


def _dump(db):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return list(c.iterdump())


def _tamper(db, table, key, text):
    with sqlite3.connect(db) as c:
        column = "study_id" if table.startswith("study") else "trial_id"
        if table == "trial_user_attributes":
            c.execute("DELETE FROM trial_system_attributes WHERE key = 'automl:recipe'")
            c.execute("INSERT INTO trial_user_attributes (trial_id, key, value_json) "
                      "SELECT trial_id, 'recipe', 'null' FROM trials")
        rows = c.execute(f"UPDATE {table} SET value_json = ? WHERE key = ?", (json.dumps(text), key)).rowcount
        assert rows, f"no {key} in {table} ({column})"


def _payload_text(valid_text, payload, slot):
    if isinstance(payload, str):
        return payload
    return json.dumps(payload)


def _nested_text(valid_text, payload, slot):
    if isinstance(payload, str):
        return payload
    tree = json.loads(valid_text)
    tree[slot] = [payload] if slot == "maximize" else ({"x": payload} if slot == "metadata" else payload)
    return json.dumps(tree)


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A module on sys.path that creates the marker when imported."""
    marker = tmp_path / "PWNED"
    name = f"evil_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield marker, name
    sys.modules.pop(name, None)


def _read_valid(db, table, key):
    with sqlite3.connect(db) as c:
        if table == "trial_user_attributes":
            table, key = "trial_system_attributes", "automl:recipe"
        return json.loads(c.execute(f"SELECT value_json FROM {table} WHERE key = ?", (key,)).fetchone()[0])


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("payload_name", list(payloads("m", "e")))
@pytest.mark.parametrize("placement", ["whole", "nested"])
def test_malicious_payload_runs_nothing(clean_db, tmp_path, monkeypatch, capsys, evil, field, payload_name,
                                        placement):
    marker, module = evil
    if placement == "nested" and payload_name not in ("pickle", "auto-import", "type"):
        pytest.skip("nesting is checked with a few payloads (the check is one recursive walk)")
    studies = tmp_path / "studies"
    studies.mkdir()
    db = studies / "t.db"
    shutil.copy(clean_db, db)
    monkeypatch.setenv("AUTOML_STUDIES", str(studies))
    table, key, slot = FIELDS[field]
    payload = payloads(marker, module)[payload_name]
    text = (_payload_text if placement == "whole" else _nested_text)(_read_valid(db, table, key), payload, slot)
    _tamper(db, table, key, text)
    refused = []
    for name, argv in COMMANDS.items():
        before = _dump(db)
        argv = [a.replace("{out}", str(tmp_path / f"out-{name}")) for a in argv]
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert not marker.exists(), f"{name}: the payload ran"
        assert code in (0, 2), f"{name}: exit {code}: {err}"
        if code == 2:
            lines = [ln for ln in err.splitlines() if ln.startswith("automl: error:")]
            assert len(lines) == 1 and "Traceback" not in err, f"{name}: {err}"
            refused.append((name, lines[0]))
            assert _dump(db) == before, f"{name}: refused but changed the database"
        elif name != "worker":
            assert _dump(db) == before, f"{name}: a reading command changed the database"
    for name, call in API.items():
        try:
            call(Study.load("t"))
        except AutomlError as e:
            refused.append((f"api:{name}", str(e)))
        assert not marker.exists(), f"api {name}: the payload ran"
    # the field is read by at least one command, which refuses it naming the study, field and problem
    assert refused, f"no command read {field}"
    named = "automl:recipe" if key == "recipe" else key        # the legacy location is read as the same field
    assert any(f"'{named}'" in message and "study 't'" in message for _, message in refused), refused


def test_a_stored_task_reference_is_never_imported(clean_db, tmp_path, monkeypatch, capsys, evil):
    marker, module = evil
    studies = tmp_path / "studies"
    studies.mkdir()
    db = studies / "t.db"
    shutil.copy(clean_db, db)
    monkeypatch.setenv("AUTOML_STUDIES", str(studies))
    for ref in (f"{module}:Evil", "os:abort", "code:interact", "builtins:exec"):
        with sqlite3.connect(db) as c:
            c.execute("UPDATE study_system_attributes SET value_json = ? WHERE key = 'automl:task'",
                      (json.dumps("mytask"),))
            c.execute("DELETE FROM study_system_attributes WHERE key = 'automl:task_ref'")
            c.execute("INSERT INTO study_system_attributes (study_id, key, value_json) SELECT study_id, "
                      "'automl:task_ref', ? FROM studies", (json.dumps(ref),))
        for argv in (["report", "t", "--out", str(tmp_path / "r")], ["reproduce", "t", "0"],
                     ["export", "t", "0", str(tmp_path / "e")], ["worker", "t", "--trials", "1", "--quiet"]):
            before = _dump(db)
            assert main(argv) in (0, 2)
            err = capsys.readouterr().err
            assert not marker.exists() and module not in sys.modules
            if argv[0] != "report":
                assert "never imported from storage" in err and "--task" in err and len(err.strip().splitlines()) == 1
            assert _dump(db) == before
    # ... while the same study runs with the task passed on the command line
    assert main(["reproduce", "t", "0", "--task", "digits"]) == 0


def test_a_tampered_artifact_id_is_never_handed_to_the_store(clean_db, tmp_path, monkeypatch, capsys):
    studies = tmp_path / "studies"
    studies.mkdir()
    db = studies / "t.db"
    shutil.copy(clean_db, db)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    monkeypatch.setenv("AUTOML_STUDIES", str(studies))
    with sqlite3.connect(db) as c:
        c.execute("UPDATE trial_system_attributes SET value_json = ? WHERE key = 'automl:artifact'",
                  (json.dumps(str(victim)),))
    assert main(["export", "t", "0", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is not an artifact id" in err and "'automl:artifact'" in err
    assert main(["worker", "t", "--trials", "1", "--quiet", "--algorithm", "random"]) == 0
    assert victim.read_text() == "keep me"                # pruning never removed the named file


def test_own_classes_load_only_when_trusted(tmp_path, monkeypatch, capsys, studies):
    (tmp_path / "my_adapters.py").write_text(
        "from automl.adapters import LoRA\nclass MyLoRA(LoRA):\n    pass\n")
    (tmp_path / "my_space.py").write_text(
        "import pyglove as pg, automl\nfrom my_adapters import MyLoRA\n"
        "SPACE = automl.Recipe(adapter=MyLoRA(rank=pg.oneof([1, 2])), steps=5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    space = str(tmp_path / "my_space.py")
    # not trusted at create: refused before anything is written
    assert main(["search", space, "--trials", "1", "--quiet", "--study", "mine"]) == 2
    assert "my_adapters.MyLoRA" in capsys.readouterr().err and not (studies / "mine.db").exists()
    assert main(["search", space, "--trials", "1", "--quiet", "--study", "mine", "--trust", "my_adapters"]) == 0
    capsys.readouterr()
    assert main(["show", "mine", "0"]) == 2
    assert "--trust my_adapters" in capsys.readouterr().err
    assert main(["show", "mine", "0", "--trust", "my_adapters"]) == 0
    assert "MyLoRA(" in capsys.readouterr().out


def test_user_task_runs_from_the_cli_with_task_flag(tmp_path, monkeypatch, capsys, studies):
    (tmp_path / "mytask.py").write_text(
        "from automl.tasks.digits import DigitsTask\n"
        "class MyTask(DigitsTask):\n    pass\n"
        "TASK = MyTask(('mirror',), name='my-digits')\n")
    (tmp_path / "space_with_task.py").write_text(
        "import pyglove as pg, automl\nfrom automl import adapters\nfrom mytask import TASK\n"
        "SPACE = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["search", "space_with_task.py", "--trials", "1", "--quiet", "--study", "own"]) == 0
    capsys.readouterr()
    assert main(["worker", "own", "--trials", "1", "--quiet"]) == 2
    assert "--task MODULE:ATTR" in capsys.readouterr().err
    assert main(["worker", "own", "--trials", "1", "--quiet", "--task", "mytask:TASK"]) == 0
    assert main(["reproduce", "own", "0", "--task", "mytask:TASK"]) == 0
    assert main(["reproduce", "own", "0", "--trust", "mytask"]) == 0    # or trust the stored class's module


def test_passwords_are_masked_in_messages(capsys):
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/nodb"
    assert main(["leaderboard", "x", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "s3cret-pw" not in err and "alice:***@" in err and len(err.strip().splitlines()) == 1


def test_loader_checks_exact_classes_before_building():
    assert load_symbolic(SPACE.to_json_str()) == SPACE
    with pytest.raises(StudyError, match=r"type 'os.system' at top level is not trusted"):
        load_symbolic('{"_type": "os.system", "x": 1}')
    with pytest.raises(StudyError, match=r"expected Recipe, found Objective"):
        load_symbolic(automl.Objective().to_json_str(), expect=automl.Recipe)
    # a class of ours in an untrusted subclass's clothing: only registered exact classes count
    with pytest.raises(StudyError, match="not trusted"):
        load_symbolic('{"_type": "automl.recipe.Evil"}')


@pytest.mark.parametrize("table, key", [("study_system_attributes", "automl:space"),
                                        ("trial_system_attributes", "automl:recipe"),
                                        ("trial_user_attributes", "accuracy")])
def test_a_stored_value_that_is_not_json_is_one_line(clean_db, tmp_path, monkeypatch, capsys, table, key):
    studies = tmp_path / "studies"
    studies.mkdir()
    db = studies / "t.db"
    shutil.copy(clean_db, db)
    monkeypatch.setenv("AUTOML_STUDIES", str(studies))
    with sqlite3.connect(db) as c:
        c.execute(f"UPDATE {table} SET value_json = '{{broken' WHERE key = ?", (key,))
    before = _dump(db)
    for argv in (["leaderboard", "t"], ["show", "t", "0"], ["worker", "t", "--trials", "1", "--quiet"]):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code in (0, 2) and "Traceback" not in err
        if code == 2:
            assert len(err.splitlines()) == 1 and err.startswith("automl: error:")
        assert _dump(db) == before or argv[0] == "worker" and code == 0
