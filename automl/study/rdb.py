"""Optuna's RDB storage (SQLite, PostgreSQL, MySQL) whose stale trials say why they failed, and
that writes a trial's attributes in one transaction."""
from __future__ import annotations

import importlib
import json
import sqlite3
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
        """``set_trial_user_attr`` / ``set_trial_system_attr`` for every item, in one transaction:
        one check that the trial is still running, then one multi-row upsert per table (the rows
        Optuna writes, JSON values); a database without an upsert gets Optuna's one-key writes."""
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            for model, attrs in ((models.TrialUserAttributeModel, user), (models.TrialSystemAttributeModel, system)):
                if not attrs:
                    continue
                rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
                statement = self._upsert(model, rows)
                if statement is not None:
                    session.execute(statement)
                else:
                    for key, value in attrs.items():
                        self._set_trial_attr_without_commit(session, model, trial_id, key, value)

    def _upsert(self, model: Any, rows: list[dict[str, Any]]) -> Any:
        """An INSERT of ``rows`` replacing existing keys, for databases that have one."""
        dialect = self.engine.name
        if dialect in ("sqlite", "postgresql") and (dialect != "sqlite" or sqlite3.sqlite_version_info >= (3, 24, 0)):
            insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert(model).values(rows)
            return insert.on_conflict_do_update(index_elements=[model.trial_id, model.key],
                                                set_={"value_json": insert.excluded.value_json})
        if dialect == "mysql":
            from sqlalchemy.dialects import mysql
            insert = mysql.insert(model).values(rows)
            return insert.on_duplicate_key_update(value_json=insert.inserted.value_json)
        return None
