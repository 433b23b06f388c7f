"""Optuna's RDB storage (SQLite, PostgreSQL, MySQL) whose stale trials say why they failed, and
that writes a trial's attributes in one transaction."""
from __future__ import annotations

from typing import Any

import optuna
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session  # Optuna's own session helper

from automl.study import records


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """:class:`optuna.storages.RDBStorage`; a trial found stale (no heartbeat for the grace
    period) gets its ``fail_reason`` before Optuna fails it; :meth:`set_trial_attrs` stores many
    attributes in one commit (a trial's 25 metrics were 25 commits)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        records.mark_stale(self, stale, self.grace_period or 2 * (self.heartbeat_interval or 0))
        return stale

    def set_trial_attrs(self, trial_id: int, user: dict[str, Any], system: dict[str, Any]) -> None:
        """``set_trial_user_attr`` / ``set_trial_system_attr`` for every item, in one transaction
        (the same rows, checks and upserts as Optuna's one-key methods)."""
        with _create_scoped_session(self.scoped_session, True) as session:
            for model, attrs in ((models.TrialUserAttributeModel, user), (models.TrialSystemAttributeModel, system)):
                for key, value in attrs.items():
                    self._set_trial_attr_without_commit(session, model, trial_id, key, value)
