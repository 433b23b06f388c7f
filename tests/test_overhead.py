"""Cutting per-trial overhead changes no result: a small fixed-seed digits study stores the same
metrics, objective values, bookkeeping and leaderboard as the fixture recorded from the code
before the rewrite (``python tests/test_overhead.py`` re-records it — only ever from a
trusted, unchanged checkout); a trial's metrics (one user attribute each, as before) and its
bookkeeping are one storage write."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import optuna
import pyglove as pg
import pytest

import automl
from automl import adapters

FIXTURE = Path(__file__).parent / "data" / "overhead_study.json"
SPACE = automl.Recipe(
    adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2])), adapters.FullFineTune()]),
    lr=pg.oneof([1e-3, 3e-3]),
    steps=30,
)
N_TRIALS = 5
TIMINGS = {"seconds", "train_seconds"}                 # wall-clock metrics: never reproducible
PER_RUN = {"automl:artifact", "automl:heartbeat"}      # random ids and times (and "artifacts:<id>")


def snapshot(study) -> dict:
    """What the study stored, minus timings and random ids, as JSON-ready data."""
    trials = []
    for t in study.trials():
        trials.append({
            "number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
            "metrics": {k: v for k, v in study.metrics(t.number).items() if k not in TIMINGS},
            "system_attrs": {k: v for k, v in sorted(t.system_attrs.items()) 
                             if k not in PER_RUN and not k.startswith("artifacts:")},
            "intermediate": {str(k): v for k, v in t.intermediate_values.items()},
        })
    # the leaderboard's display-only "recipe" column (issue 12) came after the fixture
    board = study.leaderboard().drop(columns=["seconds", "recipe"], errors="ignore").reset_index(names="position")
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in board.to_dict(orient="records")]
    return {"trials": trials, "leaderboard_columns": list(board.columns), "leaderboard": rows}


def run_study(name: str):
    return automl.search(SPACE, task="digits", algorithm="tpe", n_trials=N_TRIALS, study_name=name,
                         seed=0, progress=False)


def _close(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(b, (int, float)) and abs(a - b) <= 1e-12, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_a_fixed_seed_study_stores_what_it_stored_before_the_rewrite(studies, monkeypatch):
    # TPE as it was configured when the fixture was recorded (8 start-up trials, Optuna's 24 EI
    # candidates); the defaults tuned since (tests/test_tabular.py) change which recipes it picks
    from automl.sampling import samplers
    monkeypatch.setattr(samplers, "startup_trials", lambda size: 8)
    monkeypatch.setattr(samplers, "TPE_EI_CANDIDATES", 24)
    expected = json.loads(FIXTURE.read_text())
    got = json.loads(json.dumps(snapshot(run_study("overhead"))))   # the same JSON round trip
    _close(got, expected, "study")


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trials_metrics_and_bookkeeping_are_one_storage_write(tmp_path, kind):
    from automl.study import open_storage, records
    url = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/s.log"
    storage = open_storage(url, write=True)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    writes = []
    if kind == "sqlite":
        from sqlalchemy import event
        event.listen(storage.engine, "commit", lambda *_: writes.append(1))
    else:
        append = storage._backend.append_logs
        storage._backend.append_logs = lambda logs: writes.append(1) or append(logs)
    metrics = {f"metric{i}": i / 7 for i in range(25)}
    records.put_many(storage, trial, {records.DNA: "[1]", records.LABELS: {"adapter": "LoRA"}}, metrics,
                     study={"dashboard:artifacts:x": "listed"})
    assert len(writes) == 1
    stored = storage.get_trial(trial._trial_id)
    assert records.metrics(stored) == metrics and stored.user_attrs == metrics
    assert records.get(stored, records.LABELS) == {"adapter": "LoRA"}
    assert storage.get_study_system_attrs(study._study_id)["dashboard:artifacts:x"] == "listed"
    records.put_many(storage, trial, metrics={"metric0": -1.0})          # a key written again is replaced
    assert storage.get_trial(trial._trial_id).user_attrs["metric0"] == -1.0
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):     # a finished trial is frozen
        records.put_many(storage, trial, metrics={"metric1": 0.0})


def test_a_disabled_progress_bar_costs_nothing_and_a_shown_one_reports_the_best(studies, monkeypatch, capsys):
    import tqdm.auto

    def no_bar(*args, **kwargs):
        raise AssertionError("a progress bar was built with progress=False")
    space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=10)
    with monkeypatch.context() as patch:
        patch.setattr(tqdm.auto, "tqdm", no_bar)
        automl.search(space, task="digits", n_trials=1, study_name="bar", progress=False)
    study = automl.search(space, task="digits", n_trials=1, study_name="bar", progress=True)
    best = max(t.value for t in study.trials())
    assert f"best={best:.4f}" in capsys.readouterr().err


def test_workers_split_the_trials_and_the_cores():
    from automl.errors import SearchSpaceError
    from automl.study.workers import LocalWorkers
    assert LocalWorkers(3, 10, 8).shares == [4, 3, 3] and LocalWorkers(3, 10, 8).threads == 2
    assert LocalWorkers(4, 2, 16).shares == [1, 1] and LocalWorkers(4, 2, 16).threads == 8
    assert LocalWorkers(2, 5, 1).threads == 1                            # at least one thread each
    with pytest.raises(SearchSpaceError, match="workers must be a positive integer"):
        LocalWorkers(0, 5, 2)


def test_search_with_two_workers_runs_two_processes_on_one_journal_study(tmp_path):
    import os
    import subprocess

    from optuna.storages.journal._storage import JournalOperation

    from automl.study import Study
    automl.tasks.get("digits").pretrained_model()       # cached for the workers (session studies folder)
    space = tmp_path / "two_workers.py"
    space.write_text("import pyglove as pg\nimport automl\nfrom automl import adapters\n"
                     "SPACE = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2, 4, 8])), "
                     "lr=pg.floatv(1e-3, 1e-2, scale='log'), steps=10)\n")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run([sys.executable, "-m", "automl.cli", "search", str(space), "--workers", "2",
                           "--trials", "3", "--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    journal = Path(os.environ["AUTOML_STUDIES"]) / "two_workers.journal"
    assert f"journal:{journal}" in done.stdout
    assert len(Study.load("two_workers", storage=f"journal:{journal}").leaderboard()) == 3   # 2 + 1 new recipes
    assert len(Study.load("two_workers").leaderboard()) == 3      # found by name alone, as `automl leaderboard`
    assert "two_workers" in {row["study"] for row in automl.list_studies()}   # and listed by `automl studies`
    logs = [json.loads(line) for line in journal.read_text().splitlines()]
    creators = {log["worker_id"] for log in logs if log["op_code"] == JournalOperation.CREATE_TRIAL}
    assert len(creators) == 2                             # both processes ran trials


if __name__ == "__main__":   # re-record the fixture (from a trusted, unchanged checkout only)
    import tempfile
    os.environ["AUTOML_STUDIES"] = tempfile.mkdtemp()
    import torch
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    FIXTURE.write_text(json.dumps(snapshot(run_study("overhead")), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}", file=sys.stderr)


def test_a_worker_imports_nothing_it_does_not_run(studies):
    """A journal worker that runs a digits trial leaves out pandas, scipy, scikit-learn,
    matplotlib and transformers (review and reports import them), sqlalchemy (RDB storages do)
    and torch._dynamo (torch.optim's optimizers would import it on their first step): each costs
    start-up seconds (benchmarks/overhead.py)."""
    import subprocess
    storage = f"journal:{studies}/w.journal"
    automl.Study.create("w", SPACE, "digits", automl.Objective(), storage=storage)
    code = ("import sys\n"
            "from automl.cli import main\n"
            f"assert main(['worker', 'w', '--storage', {storage!r}, '--trials', '1', '--quiet']) == 0\n"
            "print(sorted(m for m in ('pandas', 'scipy', 'sklearn', 'matplotlib', 'transformers', 'sqlalchemy',\n"
            "                         'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
    assert len(automl.Study.load("w", storage=storage).trials()) == 1


def _stored(storage, trial_id: int):
    """The trial as the database holds it (a read that bypasses every copy)."""
    return optuna.storages.RDBStorage.get_trial(storage, trial_id)


def _as_dict(t) -> dict:
    return {"number": t.number, "state": t.state, "values": t.values, "start": t.datetime_start,
            "end": t.datetime_complete, "params": t.params, "distributions": t.distributions, "user": t.user_attrs,
            "system": t.system_attrs, "intermediate": t.intermediate_values}


def test_a_running_trial_reads_back_as_the_database_holds_it(tmp_path):
    """get_trial of a trial this process runs comes from its copy (no queries): it equals what the
    database holds once the trial's parameters are written, which happens with its next write, in
    one transaction; finishing the trial, or a worker failing it elsewhere, ends the copy."""
    from automl.study import records
    from automl.study.storage import open_storage
    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url, write=True)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    checks = []

    def check():
        checks.append(_as_dict(storage.get_trial(trial._trial_id)) == _as_dict(_stored(storage, trial._trial_id)))

    check()
    commits = []
    sqlalchemy = pytest.importorskip("sqlalchemy")
    sqlalchemy.event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    trial.suggest_categorical("adapter", ["LoRA", "FullFineTune"])
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.suggest_int("rank", 1, 8)
    # the parameters wait for the trial's next write; its copy has them already
    assert _stored(storage, trial._trial_id).params == {}
    assert storage.get_trial(trial._trial_id).params == trial.params and len(trial.params) == 3
    commits.clear()
    records.put_many(storage, trial, {"automl:dna": [1, 2], "automl:labels": {"adapter": "LoRA"}},
                     {"accuracy": 0.5, "intruders": 3, "per_layer": (1, 2), "nan": float("nan")})
    assert len(commits) == 1 and _stored(storage, trial._trial_id).params == trial.params   # one transaction
    trial.report(0.25, 1)
    trial.report(float("inf"), 2)
    trial.set_user_attr("note", {"a": (1, 2)})
    storage.set_trial_system_attr(trial._trial_id, "automl:artifact", "x")
    assert math.isnan(storage.get_trial(trial._trial_id).user_attrs.pop("nan"))
    storage.set_trial_user_attr(trial._trial_id, "nan", 0.0)
    check()
    assert storage._running
    study.tell(trial, 0.75)
    check()
    assert storage._running == {}

    other = study.ask()
    assert other._trial_id in storage._running
    other.suggest_int("rank", 1, 8)
    assert _stored(storage, other._trial_id).params == {}
    assert study.get_trials()[-1].params == other.params      # Optuna's reads: from the copy, ...
    assert _stored(storage, other._trial_id).params == {}     # ... which holds what waits
    storage.get_all_trials(study._study_id)   # a read of all trials from the database writes it first
    assert _stored(storage, other._trial_id).params == other.params
    elsewhere = open_storage(url, write=True)       # another worker fails it (e.g. as stale)
    elsewhere.set_trial_state_values(other._trial_id, optuna.trial.TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attr(other._trial_id, "late", 1)
    assert other._trial_id not in storage._running
    assert storage.get_trial(other._trial_id).state == optuna.trial.TrialState.FAIL
    assert all(checks) and len(checks) == 3


def _open(tmp_path, kind: str = "sqlite", **kwargs):
    """A fresh RDB storage: a SQLite file, or the PostgreSQL database of ``AUTOML_TEST_POSTGRES``
    emptied of studies."""
    from automl.study.storage import open_storage
    url = f"sqlite:///{tmp_path}/s.db"
    if kind == "postgresql":
        url = os.environ["AUTOML_TEST_POSTGRES"]
        for name in optuna.get_all_study_names(url):
            optuna.delete_study(study_name=name, storage=url)
    return open_storage(url, write=True, **kwargs)


RDBS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not os.environ.get("AUTOML_TEST_POSTGRES"), reason="set AUTOML_TEST_POSTGRES (.ci/run starts a server)"))]


def _count(storage, event: str) -> list:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    seen: list = []
    sqlalchemy.event.listen(storage.engine, event, lambda *_: seen.append(1))
    return seen


@pytest.mark.parametrize("kind", RDBS)
def test_a_trials_last_write_goes_with_its_end_and_reads_of_our_trials_are_one_query(tmp_path, kind):
    """What a trial is given while its space is walked (parameters, TPE's attributes) is stored
    with its first write; its last write (its metrics and where its weights are) waits for its
    state change and is stored in that transaction; Optuna's reads of the trials that changed (its cache's, the
    sampler's) take one query while our trial runs and once it has finished, and give what the
    database holds (times included)."""
    from automl.study import records
    storage = _open(tmp_path, kind)
    study = optuna.create_study(storage=storage, study_name="s")
    first = study.ask()
    study.tell(first, 0.5)
    study.get_trials()                    # Optuna's cache now reads only what changes
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    storage.set_trial_system_attr(trial._trial_id, "tpe:relative_params:0", "{}")   # as TPE, while sampling
    assert "tpe:relative_params:0" not in _stored(storage, trial._trial_id).system_attrs   # it waits ...
    commits = _count(storage, "commit")
    records.put_many(storage, trial, {records.DNA: "[1]"})
    assert len(commits) == 1 and _stored(storage, trial._trial_id).system_attrs["tpe:relative_params:0"] == "{}"
    statements = _count(storage, "before_cursor_execute")
    running = study.get_trials()[-1]
    assert len(statements) == 1 and _as_dict(running) == _as_dict(_stored(storage, trial._trial_id))
    commits.clear()
    records.put_many(storage, trial, {records.ARTIFACT: "weights"}, {"accuracy": 0.9},
                     study={"dashboard:artifacts:1:weights": "listed"}, last=True)
    assert commits == [] and _stored(storage, trial._trial_id).user_attrs == {}        # it waits ...
    assert storage.get_trial(trial._trial_id).user_attrs == {"accuracy": 0.9}          # ... in the copy
    commits.clear()
    study.tell(trial, 0.9)
    assert len(commits) == 1                                                          # one transaction
    stored = _stored(storage, trial._trial_id)
    assert stored.user_attrs == {"accuracy": 0.9} and stored.system_attrs[records.ARTIFACT] == "weights"
    assert storage.get_study_system_attrs(study._study_id)["dashboard:artifacts:1:weights"] == "listed"
    statements.clear()
    finished = study.get_trials()[-1]
    assert len(statements) == 1 and _as_dict(finished) == _as_dict(stored) and stored.datetime_complete
    assert _as_dict(study.get_trials()[0]) == _as_dict(_stored(storage, first._trial_id))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")   # Optuna's: heartbeats outside optimize
def test_a_trials_first_heartbeat_goes_with_its_first_write(tmp_path):
    """The heartbeat thread's first beat for a trial not yet written to is stored with the
    trial's first write, in its transaction (not as a concurrent one); any later beat, or the
    first of a trial written to already, is stored at once; the beat makes a dead trial stale."""
    from automl.study import Heartbeat, records
    storage = _open(tmp_path, heartbeat=Heartbeat(interval=1, grace=2))
    study = optuna.create_study(storage=storage, study_name="s")

    def beats(trial) -> int:
        sqlalchemy = pytest.importorskip("sqlalchemy")
        with storage.engine.connect() as c:
            return c.execute(sqlalchemy.text("SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :t"),
                             {"t": trial._trial_id}).scalar()

    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)    # what Optuna's heartbeat thread does first
    assert beats(trial) == 0
    commits = _count(storage, "commit")
    records.put_many(storage, trial, {records.DNA: "[1]"})
    assert len(commits) == 1 and beats(trial) == 1
    storage.record_heartbeat(trial._trial_id)
    assert len(commits) == 2 and beats(trial) == 1
    early = study.ask()
    records.put_many(storage, early, {records.DNA: "[2]"})
    storage.record_heartbeat(early._trial_id)
    assert beats(early) == 1
    silent = study.ask()                         # an objective that writes nothing: beats all the same
    storage.record_heartbeat(silent._trial_id)
    assert beats(silent) == 0
    storage.record_heartbeat(silent._trial_id)   # the next beat, still no write: stored now
    assert beats(silent) == 1
    storage.record_heartbeat(silent._trial_id)
    records.put_many(storage, silent, {records.DNA: "[3]"})
    assert beats(silent) == 1 and storage._first_beat == set()
    study.tell(silent, 1.0)
    assert storage._get_stale_trial_ids(study._study_id) == []      # beaten just now
    sqlalchemy = pytest.importorskip("sqlalchemy")
    with storage.engine.begin() as c:            # as if both workers had died a minute ago
        c.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-60 seconds')"))
    assert set(storage._get_stale_trial_ids(study._study_id)) == {trial._trial_id, early._trial_id}


@pytest.mark.parametrize("kind", RDBS)
def test_parameters_written_together_are_checked_as_optuna_checks_each(tmp_path, kind):
    """A trial's parameters go to the database in one INSERT with its next write; one whose name
    the study already holds with an incompatible distribution (which the caller did not know
    of) is refused there, as Optuna refuses it, and nothing of that write is stored."""
    from automl.study import records
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    storage = _open(tmp_path, kind)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_int("rank", 1, 8)
    study.tell(trial, 1.0)
    assert _stored(storage, trial._trial_id).params == trial.params
    fine, wrong = study.ask(), study.ask()
    storage._set_trial_param(fine._trial_id, "x", 0.25, FloatDistribution(0.0, 1.0), None)
    records.put_many(storage, fine, {records.DNA: "[1]"})
    assert _stored(storage, fine._trial_id).params == {"x": 0.25}
    storage._set_trial_param(wrong._trial_id, "x", 0, CategoricalDistribution(["a", "b"]), None)
    with pytest.raises(ValueError, match="distribution"):
        records.put_many(storage, wrong, {records.DNA: "[2]"})
    assert _stored(storage, wrong._trial_id).params == {} and records.DNA not in _stored(storage, wrong._trial_id).system_attrs
