"""The paper's direction on the digits task, and an accuracy-vs-intruders Pareto front.

1. Shuttleworth et al. (arXiv 2410.21228): at matched fine-tune accuracy, low-rank LoRA creates
   more intruder dimensions in the hidden layers than full fine-tuning, and forgets more.
   Learning rates follow reference.md ("Verified on the digits setting"); means over 5 seeds.
2. A multi-objective search (PyGlove NSGA-II) maximizing accuracy and minimizing intruders:
   the size of its Pareto front.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AUTOML_STUDIES", tempfile.mkdtemp(prefix="automl-bench-"))

import optuna  # noqa: E402
import pyglove as pg  # noqa: E402

import automl  # noqa: E402
from automl import adapters  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SEEDS = range(5)
CONFIGS = [("full fine-tuning", adapters.FullFineTune(), 3e-4),
           ("LoRA r=1", adapters.LoRA(rank=1), 3e-3),
           ("LoRA r=2", adapters.LoRA(rank=2), 3e-3),
           ("LoRA r=8", adapters.LoRA(rank=8), 1e-3)]

print(f"{'method':<18} {'accuracy':>8} {'intruders':>9} {'fc1':>5} {'fc2':>5} {'forgetting':>10}   (mean of {len(SEEDS)} seeds)")
for name, adapter, lr in CONFIGS:
    runs = [automl.evaluate(automl.Recipe(adapter=adapter, lr=lr, steps=600, seed=s), "digits").metrics
            for s in SEEDS]
    mean = {k: statistics.mean(r[k] for r in runs)
            for k in ("accuracy", "intruders", "intruders/fc1", "intruders/fc2", "forgetting")}
    print(f"{name:<18} {mean['accuracy']:>8.3f} {mean['intruders']:>9.2f} {mean['intruders/fc1']:>5.2f} "
          f"{mean['intruders/fc2']:>5.2f} {mean['forgetting']:>10.3f}")

space = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2, 4, 8])), adapters.FullFineTune()]),
                      lr=pg.floatv(1e-4, 1e-2, scale="log"), steps=300)
study = automl.search(space, task="digits", objective=automl.Objective(maximize=["accuracy"], minimize=["intruders"]),
                      algorithm="pyglove-nsga2", n_trials=30, study_name="bench-pareto", progress=False)
front = study.pareto_front()
print(f"\nPareto front (accuracy ↑, intruders ↓) after 30 NSGA-II trials: {len(front)} points")
print(front[["trial", "accuracy", "intruders", "forgetting", "adapter", "rank", "lr"]].to_string())
