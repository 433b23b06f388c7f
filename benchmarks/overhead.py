"""Per-trial overhead and worker scaling on the digits search (issue 11), measured in one run.

Prints, for this checkout (and, with ``--against PATH``, for another checkout of the repository,
e.g. ``git worktree add /tmp/base 0a59f56``, run the same way in the same run):

1. the share of a digits trial's wall time outside training steps, TPE on SQLite, split into
   search + storage + bookkeeping (wall time outside ``fit``), measurement (the final
   evaluation and spectral report: ``automl.trainer.measure``) and the trial's set-up (adapter,
   merge, deploy: the rest of ``fit``); for automl's search and for plain Optuna running the same
   ``fit`` on the same space (the floor);
2. trials/minute of 2 workers ÷ 1 worker on one journal file, start-up included, for searches of
   each ``--worker-trials`` count (default 12 and 40): each worker a fresh ``automl worker``
   process with its default threads, started at once on a study created beforehand (digits, LoRA
   r=4, the learning rate searched: every trial costs the same); wall time from the start to the
   last exit; and the same ratio once started (first trial's start to last trial's end). Start-up (about the same with 1 or 2 workers) weighs on the ratio
   of a short search: with start-up S and trials of t seconds, (S + n·t) / (S + n·t/2);
3. a new worker's start to its first trial finished (``automl worker --trials 1``), wall and
   CPU seconds;
4. the machine: ``platform``, cores, load average before and after.

Every checkout runs as subprocesses with ``PYTHONPATH=<checkout>`` and its own studies folder
(the digits model is pretrained there first, untimed). Wall times on a loaded machine are
inflated: compare the figures of one run (the ratios), not across runs.

    python benchmarks/overhead.py [--trials 20] [--worker-trials 12 40] [--against PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = "overhead"


# -- inside a checkout (child processes) ------------------------------------------------------
def child_shares(trials: int) -> dict:
    """Shares of wall time for automl's TPE search and for plain Optuna with the same fit."""
    import optuna
    import torch

    import automl
    import automl.trainer as trainer
    from automl import adapters
    from search_spaces.digits import OBJECTIVE, SPACE

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    measuring: list[float] = []
    real_measure = trainer.measure

    def timed_measure(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real_measure(*args, **kwargs)
        finally:
            measuring.append(time.perf_counter() - start)

    trainer.measure = timed_measure   # fit looks it up in its module: the final evaluation + spectral report
    warm = automl.Recipe(adapter=adapters.LoRA(rank=2), lr=1e-3, steps=SPACE.steps)
    automl.evaluate(warm, "digits")   # pretrained model, first-use imports: not per trial

    def shares(wall: float, fits: list[dict]) -> dict:
        train = sum(m["train_seconds"] for m in fits)
        fit = sum(m["seconds"] for m in fits)
        measure = sum(measuring)
        return {"trials": len(fits), "wall": wall, "per_min": 60 * len(fits) / wall, "training": train / wall,
                "measurement": measure / wall, "setup": (fit - train - measure) / wall,
                "search_storage": (wall - fit) / wall}

    out = {"automl": __import__("automl").__file__}
    measuring.clear()
    study = automl.Study.create("tpe", SPACE, "digits", OBJECTIVE)   # a one-off, not per trial: untimed
    start = time.perf_counter()
    study.optimize(trials, algorithm="tpe", seed=0, progress=False)
    wall = time.perf_counter() - start
    fits = [study.metrics(t.number) for t in study.trials()
            if "seconds" in t.user_attrs and "automl:duplicate_of" not in t.system_attrs]
    out["tpe_sqlite"] = shares(wall, fits)

    fits = []

    def objective(trial: optuna.Trial) -> float:   # what a plain Optuna user writes for the same space
        if trial.suggest_categorical("adapter", ["LoRA", "FullFineTune"]) == "LoRA":
            adapter = adapters.LoRA(rank=trial.suggest_categorical("rank", [1, 2, 4, 8]),
                                    alpha=trial.suggest_categorical("alpha", [8.0, 16.0, 32.0]))
        else:
            adapter = adapters.FullFineTune()
        recipe = automl.Recipe(adapter=adapter, lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True), steps=SPACE.steps)
        result = trainer.fit(recipe, "digits")
        fits.append(result.metrics)
        return OBJECTIVE.score(result.metrics)

    storage = f"sqlite:///{os.environ['AUTOML_STUDIES']}/plain.db"
    plain = optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")
    measuring.clear()
    start = time.perf_counter()
    plain.optimize(objective, n_trials=trials)
    out["plain_optuna"] = shares(time.perf_counter() - start, fits)
    return out


def child_create(storage: str) -> None:
    """The study the workers join (created before any timing): the digits space with one adapter,
    LoRA r=4, and its learning rate searched, so that every trial costs the same and the ratio
    measures the workers, not the mix of recipes each drew."""
    import pyglove as pg

    import automl
    from automl import adapters
    from automl.study import Study
    from search_spaces.digits import OBJECTIVE, SPACE
    automl.tasks.get("digits").pretrained_model()
    fixed_cost = automl.Recipe(adapter=adapters.LoRA(rank=4), lr=pg.floatv(1e-4, 1e-2, scale="log"), steps=SPACE.steps)
    Study.create(STUDY, fixed_cost, "digits", OBJECTIVE, storage=storage)


def child_steady(storage: str) -> dict:
    """Trials/minute of a finished worker run once started: trials ÷ (last finish − first start)."""
    import optuna

    from automl.study.storage import open_storage
    trials = [t for t in optuna.load_study(study_name=STUDY, storage=open_storage(storage, write=False)).trials
              if t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return {"per_min": 60 * len(trials) / span}


# -- the driver ----------------------------------------------------------------------------------
class Checkout:
    """One checkout of the repository, measured through subprocesses."""

    def __init__(self, path: Path):
        self.path = path.resolve()
        self.studies = Path(tempfile.mkdtemp(prefix="automl-overhead-"))
        self.env = {**os.environ, "PYTHONPATH": str(self.path), "AUTOML_STUDIES": str(self.studies),
                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def python(self, *args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=self.path, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{self.path}: {' '.join(args[:4])} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def _bench(self, mode: str, *args: str) -> str:
        return self.python(str(Path(__file__).resolve()), "--child", mode, *args)

    def shares(self, trials: int) -> dict:
        return json.loads(self._bench("shares", "--trials", str(trials)).strip().splitlines()[-1])

    def _fresh_study(self) -> str:
        storage = f"journal:{tempfile.mkdtemp(dir=self.studies)}/study.journal"
        self._bench("create", "--storage", storage)
        return storage

    def _workers(self, storage: str, shares: list[int]) -> tuple[float, float]:
        """Start one ``automl worker`` per share at once; wall seconds to the last exit, and the
        CPU seconds of them all."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        processes = [subprocess.Popen([sys.executable, "-m", "automl.cli", "worker", STUDY, "--storage", storage,
                                       "--trials", str(share), "--quiet"], cwd=self.path, env=self.env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for share in shares]
        for p in processes:
            _, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"{self.path}: a worker failed:\n{err[-3000:]}")
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    def _steady(self, storage: str) -> float:
        return json.loads(self._bench("steady", "--storage", storage).strip().splitlines()[-1])["per_min"]

    def scaling(self, trials: int) -> dict:
        one_study, two_study = self._fresh_study(), self._fresh_study()
        one, _ = self._workers(one_study, [trials])
        two, _ = self._workers(two_study, [trials - trials // 2, trials // 2])
        return {"trials": trials, "one_per_min": 60 * trials / one, "two_per_min": 60 * trials / two,
                "ratio": one / two, "steady": self._steady(two_study) / self._steady(one_study)}

    def first_trial(self) -> dict:
        wall, cpu = self._workers(self._fresh_study(), [1])
        return {"wall": wall, "cpu": cpu}


def measure(path: Path, trials: int, worker_trials: list[int]) -> dict:
    checkout = Checkout(path)
    print(f"measuring {checkout.path} ...", file=sys.stderr, flush=True)
    out = checkout.shares(trials)
    out["scaling"] = [checkout.scaling(n) for n in worker_trials]
    out["first_trial"] = checkout.first_trial()
    return out


def report(name: str, r: dict) -> None:
    print(f"\n== {name}  (automl from {Path(r['automl']).parent})")
    for key, label in (("tpe_sqlite", "automl TPE on SQLite"), ("plain_optuna", "plain Optuna, same fit")):
        s = r[key]
        outside = 1 - s["training"]
        print(f"{label:>24}: {s['trials']} trials, {s['per_min']:.0f}/min; outside training steps {outside:.1%} = "
              f"search+storage+bookkeeping {s['search_storage']:.1%} + measurement (evaluation+spectral) "
              f"{s['measurement']:.1%} + trial set-up (adapter, merge, deploy) {s['setup']:.1%}")
    for w in r["scaling"]:
        print(f"{'2 workers / 1 worker':>24}: {w['ratio']:.2f} ({w['two_per_min']:.1f} vs {w['one_per_min']:.1f} trials/min, "
              f"{w['trials']} trials, journal file, start-up included, default threads); once started "
              f"{w['steady']:.2f}")
    f = r["first_trial"]
    print(f"{'new worker':>24}: start to first trial finished {f['wall']:.1f} s wall, {f['cpu']:.1f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per search for the shares (default 20)")
    parser.add_argument("--worker-trials", type=int, nargs="+", default=[12, 40],
                        help="trials of each search for the worker scaling (default 12 40)")
    parser.add_argument("--against", type=Path, default=None, help="another checkout, measured in the same run")
    parser.add_argument("--child", choices=["shares", "create", "steady"], help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "shares":
        print(json.dumps(child_shares(args.trials)))
        return
    if args.child == "create":
        child_create(args.storage)
        return
    if args.child == "steady":
        print(json.dumps(child_steady(args.storage)))
        return
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
    results = {"this checkout": measure(ROOT, args.trials, args.worker_trials)}
    if args.against is not None:
        results[f"against {args.against}"] = measure(args.against, args.trials, args.worker_trials)
    for name, r in results.items():
        report(name, r)
    print(f"\nload average after: {os.getloadavg()[0]:.1f} (a loaded machine inflates wall times; compare "
          f"figures within this run)")


if __name__ == "__main__":
    main()
