"""Search efficiency on tabular benchmarks: trials each algorithm needs to find a top recipe.

Every recipe of two finite digits spaces was trained once (``automl tabulate``, tables under
``benchmarks/data/``); a :class:`automl.tasks.tabular.Tabular` task replays them, so each
algorithm runs unchanged through ``automl.search`` (stored trials, the normal study loop) over
many seeds in minutes. Per space and algorithm this prints the median, over the seeds, of the
number of trials (new recipes tried, repeats not counted) until a recipe in the top 1 % and in
the top 5 % of the table (by the space's objective score) was found, and the ratio of random's
median to it (> 1: fewer trials than random). A run stops at its first top-1 % recipe, or after
``--cap`` trials (then it counts as not found: "> cap"). Studies go to Optuna journal files in a temporary folder
(in memory under /dev/shm where there is one).

    python benchmarks/search_efficiency.py                      # the evaluation seeds 0..19
    python benchmarks/search_efficiency.py --first-seed 1000    # other seeds, for tuning defaults

Algorithms: every one of ``ALGORITHMS`` that applies to a single-objective, all-categorical space;
``cmaes`` and ``qmc`` are left out: on categorical parameters they fall back to independent
random sampling (Optuna warns so), which the ``random`` row already measures.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "AUTOML_STUDIES" not in os.environ:  # a temporary folder, removed at exit
    _STUDIES = tempfile.TemporaryDirectory(prefix="automl-efficiency-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    os.environ["AUTOML_STUDIES"] = _STUDIES.name

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

import automl  # noqa: E402
from automl.cli import load_space_module  # noqa: E402
from automl.errors import StudyError  # noqa: E402
from automl.result import Result  # noqa: E402
from automl.sampling.samplers import ALGORITHMS, DEFAULT_ALGORITHM  # noqa: E402
from automl.study import records  # noqa: E402
from automl.tasks.tabular import Tabular  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
SPACES = {"digits_grid": ROOT / "benchmarks/data/digits_grid.json",
          "digits_large": ROOT / "benchmarks/data/digits_large.json"}
SKIPPED = ("cmaes", "qmc")
LEVELS = (0.01, 0.05)
CHUNK = 5


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
            f"(load {load:.1f}), Python {platform.python_version()}, torch {torch.__version__}, "
            f"optuna {optuna.__version__}")


def targets(task: Tabular, objective: automl.Objective) -> dict[float, float]:
    """The score a recipe needs to be in the top ``level`` of the table, per level."""
    sign = 1.0 if objective.directions[0] == "maximize" else -1.0
    scores = sorted((sign * objective.values(Result(row.metrics)) for row in task.table.rows.values()
                     if row.metrics is not None), reverse=True)
    return {level: sign * scores[math.ceil(level * len(task.table)) - 1] for level in LEVELS}


def trials_to(study: automl.Study, target: float, maximize: bool) -> float:
    """1 + the number of new recipes tried before the first one scoring ``target`` or better."""
    tried = 0
    for t in sorted(study.trials(), key=lambda t: t.number):
        if records.get(t, records.DUPLICATE_OF) is not None:
            continue
        tried += 1
        if t.value is not None and (t.value >= target if maximize else t.value <= target):
            return tried
    return math.inf


def run(space, task: Tabular, objective, algorithm: str, seed: int, cap: int, goal: float, name: str) -> automl.Study:
    """Search in chunks of ``CHUNK`` trials until a recipe reaches ``goal``, ``cap`` recipes
    were tried, or the space is exhausted (resuming a study keeps its history)."""
    maximize = objective.directions[0] == "maximize"
    storage = f"journal:{os.environ['AUTOML_STUDIES']}/{name}.log"  # Optuna's journal file: fast appends
    study = automl.Study.create(name, space, task, objective, storage=storage)
    while True:
        tried = sum(records.get(t, records.DUPLICATE_OF) is None for t in study.trials())
        if tried >= cap or trials_to(study, goal, maximize) < math.inf:
            return study
        try:
            study.optimize(min(CHUNK, cap - tried), algorithm=algorithm, seed=seed, progress=False)
        except StudyError:  # the space is exhausted (or the algorithm only repeats itself)
            return study


def median(values: list[float]) -> float:
    return float(np.median(values))  # inf when more than half the runs found nothing


def shown(value: float, cap: int) -> str:
    return f"> {cap}" if math.isinf(value) else f"{value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--algorithms", nargs="+", default=None, help="default: every applicable one")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="0: the evaluation seeds; tune on others")
    parser.add_argument("--cap", type=int, default=300, help="most trials per run")
    args = parser.parse_args()
    first, last = ["random", "pyglove-random", "tpe", "evolution"], ["gp"]  # GP's trials are the slowest
    algorithms = args.algorithms or first + [a for a in ALGORITHMS if a not in SKIPPED + tuple(first + last)] + last
    print(machine())
    print(f"default algorithm: {DEFAULT_ALGORITHM}; seeds {args.first_seed}..{args.first_seed + args.seeds - 1}; "
          f"cap {args.cap} trials; times are wall seconds on this (shared) machine")
    for space_name in args.spaces:
        module = load_space_module(space_name)
        task = Tabular(SPACES[space_name])
        task.check_space(module.SPACE)
        objective = getattr(module, "OBJECTIVE", None) or automl.Objective()
        maximize = objective.directions[0] == "maximize"
        goal = targets(task, objective)
        cap = min(args.cap, len(task.table))
        print(f"\n{space_name}: {len(task.table)} recipes; top 1 % = score >= {goal[0.01]:.4f}, "
              f"top 5 % = score >= {goal[0.05]:.4f}")
        print(f"{'algorithm':>15} {'top 1 %':>8} {'top 5 %':>8} {'random/top1':>11} {'random/top5':>11} {'s/run':>6}")
        medians: dict[str, dict[float, float]] = {}
        for algorithm in algorithms:
            reached: dict[float, list[float]] = {level: [] for level in LEVELS}
            start = time.perf_counter()
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                study = run(module.SPACE, task, objective, algorithm, seed, cap, goal[0.01],
                            f"{space_name}-{algorithm}-{seed}")
                for level in LEVELS:
                    reached[level].append(trials_to(study, goal[level], maximize))
            medians[algorithm] = {level: median(v) for level, v in reached.items()}
            base = medians.get("random", medians[algorithm])
            ratios = [base[level] / medians[algorithm][level] if math.isfinite(medians[algorithm][level]) else 0.0
                      for level in LEVELS]
            print(f"{algorithm:>15} {shown(medians[algorithm][0.01], cap):>8} {shown(medians[algorithm][0.05], cap):>8} "
                  f"{ratios[0]:>10.2f}x {ratios[1]:>10.2f}x {(time.perf_counter() - start) / args.seeds:>6.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
