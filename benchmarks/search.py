"""Search throughput on the digits task: trials per minute, and where a trial's time goes.

Runs the README's space (search_spaces/digits.py) with TPE and with regularized evolution in a
temporary studies folder and prints, per algorithm: trials/minute, the fraction of wall time in
training steps, in the rest of each trial (set-up, merge, deploy, evaluation, spectral report),
and outside trials (sampler, storage, Optuna bookkeeping).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AUTOML_STUDIES", tempfile.mkdtemp(prefix="automl-bench-"))

import optuna  # noqa: E402

import automl  # noqa: E402
from search_spaces.digits import OBJECTIVE, SPACE  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
N = int(os.environ.get("BENCH_TRIALS", "30"))

automl.tasks.get("digits").pretrained_model()  # pretraining is a one-off cost, not per trial
for algorithm in ("tpe", "evolution"):
    start = time.perf_counter()
    study = automl.search(SPACE, task="digits", objective=OBJECTIVE, algorithm=algorithm, n_trials=N,
                          study_name=f"bench-{algorithm}", progress=False)
    wall = time.perf_counter() - start
    done = [t for t in study.trials() if "seconds" in t.user_attrs]
    train = sum(t.user_attrs["train_seconds"] for t in done)
    trial = sum(t.user_attrs["seconds"] for t in done)
    print(f"{algorithm:>10}: {len(done)} trials in {wall:.1f} s = {60 * len(done) / wall:.0f} trials/min; "
          f"training {train / wall:.1%}, rest of trial {(trial - train) / wall:.1%}, "
          f"search+storage {(wall - trial) / wall:.1%} (outside training: {1 - train / wall:.1%})")
