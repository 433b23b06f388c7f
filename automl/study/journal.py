"""Optuna's journal-file storage with heartbeats, so a killed worker's trial is re-run."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # Optuna exports it only privately
from optuna.storages.journal import JournalStorage
from optuna.storages.journal._storage import JournalOperation  # the journal's log op codes
from optuna.trial import FrozenTrial, TrialState

from automl.study import records

if TYPE_CHECKING:
    from automl.study.storage import Heartbeat


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """:class:`optuna.storages.JournalStorage` implementing Optuna's heartbeat interface (which
    Optuna implements for RDB storages only): a worker writes the time into its RUNNING trial's
    ``automl:heartbeat`` system attribute every ``interval`` seconds; a RUNNING trial whose last
    heartbeat (or start) is older than ``grace`` seconds is stale. Times are this machine's clock:
    workers sharing a journal file over a network file system need synchronized clocks."""

    def __init__(self, backend: Any, heartbeat: "Heartbeat | None" = None):
        super().__init__(backend)
        self._heartbeat = heartbeat
        self._stale_callback = None
        if heartbeat is not None:
            from automl.study.retry import RetryStaleTrial
            self._stale_callback = RetryStaleTrial(heartbeat.max_retry)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, records.HEARTBEAT, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            pass  # the trial just finished (or was failed as stale by another worker)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self._heartbeat is not None
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(records.HEARTBEAT)
            if not isinstance(beat, (int, float)):
                continue  # not run under a heartbeat (as Optuna's RDB storage: left alone)
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if now - max(float(beat), started) > self._heartbeat.grace:
                stale.append(trial._trial_id)
        records.mark_stale(self, stale, self._heartbeat.grace)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return None if self._heartbeat is None else self._heartbeat.interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_callback

    def set_trial_attrs(self, trial_id: int, user: dict[str, Any], system: dict[str, Any],
                        study: dict[str, Any] | None = None, last: bool = False) -> None:
        """``set_trial_user_attr`` / ``set_trial_system_attr`` for every item, and
        ``set_study_system_attr`` of the trial's study for every item of ``study``, as one append
        to the journal file (one log entry per key, the format every Optuna reader replays) and
        one sync; ``last`` (the trial's last write) changes nothing here."""
        worker = self._replay_result.worker_id
        logs = [{"op_code": JournalOperation.SET_TRIAL_USER_ATTR, "worker_id": worker, "trial_id": trial_id,
                 "user_attr": {key: value}} for key, value in user.items()]
        logs += [{"op_code": JournalOperation.SET_TRIAL_SYSTEM_ATTR, "worker_id": worker, "trial_id": trial_id,
                  "system_attr": {key: value}} for key, value in system.items()]
        if study:
            with self._thread_lock:
                study_id = self._replay_result._trial_id_to_study_id[trial_id]
            logs += [{"op_code": JournalOperation.SET_STUDY_SYSTEM_ATTR, "worker_id": worker, "study_id": study_id,
                      "system_attr": {key: value}} for key, value in study.items()]
        if not logs:
            return
        with self._thread_lock:
            self._backend.append_logs(logs)
            self._sync_with_backend()
