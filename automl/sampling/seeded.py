"""A sampler seeded per worker: ``(seed, the first trial number this worker gets)``.

Trial numbers are handed out by the storage, so two workers started with the same ``--seed``
(or a resumed search) never share a random stream, yet a single sequential run is reproducible:
its first trial number is the number of trials the study had.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


def derive_seed(seed: int, first_trial: int) -> int:
    """A 32-bit seed from the user's seed and the worker's first trial number."""
    digest = hashlib.sha256(f"automl:{seed}:{first_trial}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class SeededSampler(optuna.samplers.BaseSampler):
    """Builds ``factory(seed)`` at this worker's first trial with :func:`derive_seed`, then
    delegates every call to it (``seed=None``: unseeded)."""

    def __init__(self, factory: Callable[[int | None], optuna.samplers.BaseSampler], seed: int | None):
        self._factory = factory
        self._seed = seed
        self._base: optuna.samplers.BaseSampler | None = None
        self.worker_seed: int | None = None

    @property
    def base(self) -> optuna.samplers.BaseSampler:
        if self._base is None:
            self._build(-1)
        return self._base

    def _build(self, first_trial: int) -> None:
        self.worker_seed = None if self._seed is None else derive_seed(self._seed, first_trial)
        self._base = self._factory(self.worker_seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._base is None:
            self._build(trial.number)
        self._base.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
