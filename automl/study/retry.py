"""Re-running a dead worker's trial: Optuna's retry callback, minus our per-run bookkeeping."""
from __future__ import annotations

import copy
import warnings

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from automl.study import records


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's :class:`RetryHeartbeatStaleTrialCallback` (at most ``max_retry`` re-runs of one
    trial, as a WAITING trial with the same parameters that the next worker picks up); the copy
    leaves out what belongs to the dead run (its failure reason, heartbeat, artifact)."""

    def __init__(self, max_retry: int | None = 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = copy.deepcopy(trial)
        clean.system_attrs = {k: v for k, v in trial.system_attrs.items() if k not in records.PER_RUN}
        clean.user_attrs = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__call__(study, clean)
