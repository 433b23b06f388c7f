"""Search algorithms by name: every one is an Optuna sampler over the PyGlove space.

Defaults tuned on tabular benchmarks (``benchmarks/search_efficiency.py``, on seeds other than
the ones it reports): TPE is multivariate and grouped (conditional spaces), starts modelling after
:func:`startup_trials` random trials and scores :data:`TPE_EI_CANDIDATES` candidates per trial;
regularized evolution's population and tournament follow the space's size
(:func:`evolution_sizes`). ``tpe`` is the default algorithm (:data:`DEFAULT_ALGORITHM`): on seeds
0..19 it needs a median 7 trials to the best recipe of 91 (random 9) and 10.5 to a top-1 % recipe of
1,000 (random 14), the fewest of the algorithms, but not half of random's (README, "Search
efficiency" figures).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import optuna
import pyglove as pg

from automl.errors import SearchSpaceError
from automl.sampling.pyglove_sampler import PyGloveSampler
from automl.sampling.seeded import SeededSampler
from automl.sampling.space import space_size

DEFAULT_ALGORITHM = "tpe"
EVOLUTION_POPULATION = 10
"""Population of ``pyglove-nsga2``, and the smallest of ``evolution``."""
EVOLUTION_TOURNAMENT = 3
TPE_EI_CANDIDATES = 64
"""Candidates TPE draws from its model of the good trials and scores per trial (Optuna's default
is 24): more of them pick the best-looking recipe more surely on categorical spaces."""


def startup_trials(size: float) -> int:
    """Random trials before TPE models the study: Optuna's 10 on a continuous space; on a finite one
    3, fewer for a space of under 33 recipes (⌈size / 16⌉, at least 2). On development seeds of the
    tabular benchmarks (120 seeds on 91 recipes, 80 on 1,000), 2 or 3 needed fewer trials to a
    top-1 % recipe than 4 on 91 recipes (mean 5.9, 6.0 vs 6.6) and 3 as few as 4 on 1,000 (13.9 vs
    13.8); earlier, 4 beat 5 and 8 (91 recipes) and 10 (1,000 recipes)."""
    if math.isinf(size):
        return 10
    return int(min(3, max(2, math.ceil(size / 16))))


def evolution_sizes(size: float) -> tuple[int, int]:
    """Regularized evolution's (population, tournament) for a space of ``size`` recipes: (10, 3) up
    to 400 recipes and on a continuous space; a population of ⌈√size / 2⌉ (at most 32) with a
    tournament of a quarter of it on larger spaces (16 and 4 for 1,000 recipes)."""
    if math.isinf(size):
        return EVOLUTION_POPULATION, EVOLUTION_TOURNAMENT
    population = int(min(32, max(EVOLUTION_POPULATION, math.ceil(math.sqrt(size) / 2))))
    return population, max(EVOLUTION_TOURNAMENT, population // 4)


def _optuna(factory: Callable[[int | None], optuna.samplers.BaseSampler]) -> Callable[..., optuna.samplers.BaseSampler]:
    return lambda space, seed, multi: SeededSampler(factory, seed)


def _pyglove(factory: Callable[[int | None], pg.DNAGenerator]) -> Callable[..., optuna.samplers.BaseSampler]:
    return lambda space, seed, multi: SeededSampler(lambda s: PyGloveSampler(space, factory(s)), seed)


def _tpe(space: Any, seed: int | None, multi: bool) -> optuna.samplers.BaseSampler:
    """TPE over conditional spaces: ``multivariate`` and ``group`` (experimental in Optuna), its
    start-up sized to the space."""
    startup = startup_trials(space_size(space))

    def build(s: int | None) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(multivariate=True, group=True, seed=s, n_startup_trials=startup,
                                              n_ei_candidates=TPE_EI_CANDIDATES)
    return SeededSampler(build, seed)


def _evolution(space: Any, seed: int | None, multi: bool) -> optuna.samplers.BaseSampler:
    """Regularized evolution (Real et al., 2019) with population and tournament sized to the space."""
    population, tournament = evolution_sizes(space_size(space))
    return _pyglove(lambda s: pg.evolution.regularized_evolution(
        population_size=population, tournament_size=tournament, seed=s))(space, seed, multi)


ALGORITHMS: dict[str, Callable[[Any, int | None, bool], optuna.samplers.BaseSampler]] = {
    # Optuna's samplers, driving the space through a define-by-run walk of its DNASpec.
    "tpe": _tpe,
    "random": _optuna(lambda s: optuna.samplers.RandomSampler(seed=s)),
    "nsga2": _optuna(lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=10)),
    "gp": _optuna(lambda s: optuna.samplers.GPSampler(seed=s)),
    "cmaes": _optuna(lambda s: optuna.samplers.CmaEsSampler(seed=s, warn_independent_sampling=False)),
    "qmc": _optuna(lambda s: optuna.samplers.QMCSampler(seed=s, warn_independent_sampling=False)),
    # PyGlove's generators, behind one PyGloveSampler.
    "evolution": _evolution,
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
