"""Optuna's RDB storage (SQLite, PostgreSQL, MySQL) whose stale trials say why they failed."""
from __future__ import annotations

import optuna

from automl.study import records


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """:class:`optuna.storages.RDBStorage`; a trial found stale (no heartbeat for the grace
    period) gets its ``fail_reason`` before Optuna fails it."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        records.mark_stale(self, stale, self.grace_period or 2 * (self.heartbeat_interval or 0))
        return stale
