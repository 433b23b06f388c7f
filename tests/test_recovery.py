"""Recovery: a SIGKILLed worker's trial comes back, workers and resumes try new recipes,
concurrent creation of one SQLite study succeeds. Worker processes run one torch thread each."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pyglove as pg
import pytest
from optuna.trial import TrialState

import automl
from automl import adapters
from automl.study import Heartbeat, Study

FAST = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2, 4, 8]), alpha=pg.oneof([8.0, 16.0])),
                                       adapters.FullFineTune()]), steps=20)
SLOW = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2, 4])), lr=pg.floatv(1e-3, 1e-2, scale="log"),
                     steps=1500)
WORKER = ("import sys, torch; torch.set_num_threads(1); from automl.cli import main; "
          "sys.exit(main(['worker', *sys.argv[1:]]))")
TIMEOUT = 400  # generous: two loaded cores shared with other processes


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _worker(*args):
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _storages():
    yield pytest.param("journal", id="journal-file")
    yield pytest.param("sqlite", id="sqlite")
    yield pytest.param("postgres", id="postgresql", marks=pytest.mark.skipif(
        not os.environ.get("AUTOML_TEST_POSTGRES"), reason="set AUTOML_TEST_POSTGRES (.ci/run starts a server)"))


def _storage(kind, tmp_path):
    if kind == "journal":
        return f"journal:{tmp_path / 'journal.log'}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url = os.environ["AUTOML_TEST_POSTGRES"]
    for name in optuna.get_all_study_names(url):
        optuna.delete_study(study_name=name, storage=url)
    return url


@pytest.mark.parametrize("kind", list(_storages()))
def test_a_killed_workers_trial_is_rerun_by_another_worker(tmp_path, studies, kind):
    storage = _storage(kind, tmp_path)
    beat = ["--heartbeat", "1", "--grace", "4"]
    Study.create("kill", SLOW, "digits", automl.Objective(), storage=storage, heartbeat=Heartbeat(1, 4))
    victim = _worker("kill", "--storage", storage, "--trials", "3", "--algorithm", "random", "--quiet", *beat)
    study = Study.load("kill", storage=storage)
    deadline = time.monotonic() + TIMEOUT
    while not [t for t in study.trials((TrialState.RUNNING,)) if t.params]:
        assert victim.poll() is None and time.monotonic() < deadline, victim.stderr.read() if victim.stderr else ""
        time.sleep(0.2)
    time.sleep(1.0)                                                   # mid-trial
    killed = study.trials((TrialState.RUNNING,))[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = time.time()
    time.sleep(2.0)  # the rescuer's first trial then starts after the grace period (4 s) has passed
    rescuer = _worker("kill", "--storage", storage, "--trials", "2", "--algorithm", "random", "--quiet", *beat)
    assert rescuer.wait(timeout=TIMEOUT) == 0, rescuer.stderr.read()
    trials = Study.load("kill", storage=storage).trials()
    dead = next(t for t in trials if t.number == killed.number)
    assert dead.state == TrialState.FAIL and "no heartbeat" in dead.system_attrs["fail_reason"]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == killed.params
    print(f"{kind}: trial {killed.number} re-run {retry[0].datetime_start.timestamp() - killed_at:.1f} s after SIGKILL")
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    # 0 completed trials lost: every trial the victim finished, plus the rescuer's two (one re-run)
    assert len(completed) == len([t for t in trials if t.number < killed.number]) + 2


def test_two_workers_with_the_same_seed_try_distinct_recipes(tmp_path, studies):
    storage = f"journal:{tmp_path / 'journal.log'}"
    Study.create("pair", FAST, "digits", automl.Objective(), storage=storage)
    procs = [_worker("pair", "--storage", storage, "--trials", "3", "--algorithm", "random", "--seed", "0",
                     "--quiet") for _ in range(2)]
    assert [p.wait(timeout=TIMEOUT) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    study = Study.load("pair", storage=storage)
    trained = [t for t in study.trials((TrialState.COMPLETE,)) if "automl:duplicate_of" not in t.system_attrs]
    keys = [tuple(sorted(t.params.items())) for t in trained]
    assert len(keys) == 6 and len(set(keys)) == 6
    assert len(study.leaderboard()) == 6


def test_resume_adds_new_recipes(studies):
    first = automl.search(FAST, algorithm="random", n_trials=2, study_name="again", seed=0, progress=False)
    before = {tuple(sorted(t.params.items())) for t in first.trials()}
    again = automl.search(FAST, algorithm="random", n_trials=2, study_name="again", seed=0, progress=False)
    trained = [t for t in again.trials((TrialState.COMPLETE,)) if "automl:duplicate_of" not in t.system_attrs]
    keys = {tuple(sorted(t.params.items())) for t in trained}
    assert len(trained) == 4 and len(keys) == 4 and before < keys
    seeds = {again.optuna.sampler.worker_seed, first.optuna.sampler.worker_seed}
    assert len(seeds) == 2                                  # (seed, trials so far) gave another stream


def test_processes_creating_one_new_sqlite_study_at_once_all_succeed(tmp_path, studies):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = ("import sys, automl, pyglove as pg; from automl import adapters; from automl.study import Study; "
            "space = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2])), steps=5); "
            "Study.create('race', space, 'digits', automl.Objective(), storage=sys.argv[1])")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], env=_env(), stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    results = [(p.wait(timeout=TIMEOUT), p.stderr.read()) for p in procs]
    errors = ["\n".join(ln for ln in e.splitlines() if not ln.startswith("[I"))[-600:] for r, e in results if r]
    assert [r for r, _ in results] == [0] * 6, errors
    assert optuna.get_all_study_names(url) == ["race"]
