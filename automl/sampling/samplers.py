"""Search algorithms by name: every one is an Optuna sampler over the PyGlove space."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import optuna
import pyglove as pg

from automl.errors import SearchSpaceError
from automl.sampling.pyglove_sampler import PyGloveSampler
from automl.sampling.seeded import SeededSampler

EVOLUTION_POPULATION = 10
EVOLUTION_TOURNAMENT = 3


def _optuna(factory: Callable[[int | None], optuna.samplers.BaseSampler]) -> Callable[..., optuna.samplers.BaseSampler]:
    return lambda space, seed, multi: SeededSampler(factory, seed)


def _pyglove(factory: Callable[[int | None], pg.DNAGenerator]) -> Callable[..., optuna.samplers.BaseSampler]:
    return lambda space, seed, multi: SeededSampler(lambda s: PyGloveSampler(space, factory(s)), seed)


def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE over conditional spaces: ``multivariate`` and ``group`` (experimental in Optuna)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed, n_startup_trials=8)


ALGORITHMS: dict[str, Callable[[Any, int | None, bool], optuna.samplers.BaseSampler]] = {
    # Optuna's samplers, driving the space through a define-by-run walk of its DNASpec.
    "tpe": _optuna(_tpe),
    "random": _optuna(lambda s: optuna.samplers.RandomSampler(seed=s)),
    "nsga2": _optuna(lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=10)),
    "gp": _optuna(lambda s: optuna.samplers.GPSampler(seed=s)),
    "cmaes": _optuna(lambda s: optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False)),
    "qmc": _optuna(lambda s: optuna.samplers.QMCSampler(seed=s, warn_independent_sampling=False)),
    # PyGlove's generators, behind one PyGloveSampler.
    "evolution": _pyglove(lambda s: pg.evolution.regularized_evolution(
        population_size=EVOLUTION_POPULATION, tournament_size=EVOLUTION_TOURNAMENT, seed=s)),
    "pyglove-random": _pyglove(lambda s: pg.geno.Random(seed=s)),
    "pyglove-nsga2": _pyglove(lambda s: pg.evolution.nsga2(population_size=EVOLUTION_POPULATION, seed=s)),
}


def check_algorithm(algorithm: Any, multi_objective: bool = False) -> None:
    """Refuse an unknown algorithm, or a single-objective one for a multi-objective study."""
    if isinstance(algorithm, PyGloveSampler) or isinstance(algorithm, pg.DNAGenerator):
        single = not (algorithm.multi_objective)
        if multi_objective and single:
            raise SearchSpaceError("this PyGlove algorithm optimizes one objective but the study has several; "
                                   "use 'pyglove-nsga2' or 'nsga2'.")
        return
    if isinstance(algorithm, optuna.samplers.BaseSampler):
        return
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise SearchSpaceError(f"unknown algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}, "
                               f"a pg.DNAGenerator, or an optuna sampler.")
    if multi_objective and algorithm in ("evolution", "cmaes", "gp"):
        raise SearchSpaceError(f"algorithm {algorithm!r} optimizes one objective; for a "
                               f"multi-objective study use 'nsga2', 'pyglove-nsga2', 'tpe' or 'random'.")


def make_sampler(algorithm: str | pg.DNAGenerator | optuna.samplers.BaseSampler, space: Any,
                 seed: int | None = None, multi_objective: bool = False) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``algorithm``: a name from :data:`ALGORITHMS` (seeded per worker
    from ``seed``, see :class:`SeededSampler`), a PyGlove ``DNAGenerator`` (run behind
    :class:`PyGloveSampler`), or an Optuna sampler (used as is). :func:`check_algorithm` first."""
    check_algorithm(algorithm, multi_objective)
    if isinstance(algorithm, pg.DNAGenerator):
        return PyGloveSampler(space, algorithm)
    if isinstance(algorithm, optuna.samplers.BaseSampler):
        return algorithm
    return ALGORITHMS[algorithm](space, seed, multi_objective)

DEFAULT_ALGORITHM = "tpe"
