"""Optuna's RDB storage (SQLite, PostgreSQL, MySQL) whose stale trials say why they failed, that
writes a trial's attributes in one transaction, and that answers ``get_trial`` for the trials this
process runs from what it wrote."""
from __future__ import annotations

import copy
import functools
import importlib
import json
import sqlite3
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session  # Optuna's own session helper

from automl.study import records


def _mirrored(update: Callable[..., None], params_first: bool = True):
    """A write to a trial that, once stored, is applied to this process's copy of the trial too
    (``update(copy, *args)``); a trial the database says is finished is no longer copied. The
    trial's parameters not written yet go first (``params_first``), else the write takes them."""
    def wrap(write):
        @functools.wraps(write)
        def method(self, trial_id: int, *args: Any, **kwargs: Any):
            try:
                if params_first:
                    self._write_params(trial_id)
                out = write(self, trial_id, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._running.pop(trial_id, None)   # finished elsewhere (e.g. failed as stale)
                raise
            mine = self._running.get(trial_id)
            if mine is not None:
                update(mine, *args, **kwargs)
            return out
        return method
    return wrap


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))   # what a read of the database gives back


def _param(t: FrozenTrial, name: str, internal: float, distribution: Any, *_: Any) -> None:
    t.params = {**t.params, name: distribution.to_external_repr(internal)}
    t.distributions = {**t.distributions, name: distribution}


def _intermediate(t: FrozenTrial, step: int, value: float) -> None:
    t.intermediate_values = {**t.intermediate_values, step: float(value)}


def _user(t: FrozenTrial, key: str, value: Any) -> None:
    t.user_attrs = {**t.user_attrs, key: _json(value)}


def _system(t: FrozenTrial, key: str, value: Any) -> None:
    t.system_attrs = {**t.system_attrs, key: _json(value)}


def _attrs(t: FrozenTrial, user: dict[str, Any], system: dict[str, Any]) -> None:
    t.user_attrs = {**t.user_attrs, **_json(user)}
    t.system_attrs = {**t.system_attrs, **_json(system)}


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """:class:`optuna.storages.RDBStorage`; a trial found stale (no heartbeat for the grace
    period) gets its ``fail_reason`` before Optuna fails it; :meth:`set_trial_attrs` stores many
    attributes in one commit (a trial's 25 metrics were 25 commits).

    ``get_trial`` of a trial this process created and still runs is answered from a copy that
    every write through this storage updates after the database took it, as the database would
    answer it (Optuna reads the running trial back three times a trial, five queries each). A
    write the database refuses because the trial finished elsewhere drops the copy; so does
    finishing it. The parameters such a trial is given (one ``suggest`` each) go to the database
    with its next write, in that write's transaction (automl stores the recipe right after the
    walk of the space), or before any read of several trials: one commit, not one per decision.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self._running: dict[int, FrozenTrial] = {}
        self._params: dict[int, list[tuple[Any, ...]]] = {}   # parameters of our trials not written yet
        super().__init__(*args, **kwargs)

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: Any, previous_distribution: Any = None) -> None:
        mine = self._running.get(trial_id)
        if mine is None:
            return super()._set_trial_param(trial_id, param_name, param_value_internal, distribution,
                                            previous_distribution)
        if previous_distribution is not None:   # the check Optuna makes now; the rest at the write
            optuna.distributions.check_distribution_compatibility(previous_distribution, distribution)
        self._params.setdefault(trial_id, []).append((param_name, param_value_internal, distribution,
                                                      previous_distribution))
        _param(mine, param_name, param_value_internal, distribution)

    def _params_into(self, session: Any, trial_id: int) -> None:
        """Write the trial's pending parameters in ``session`` (they are not retried: a trial
        whose write fails fails)."""
        for args in self._params.pop(trial_id, ()):
            self._set_trial_param_without_commit(session, trial_id, *args)

    def _write_params(self, trial_id: int) -> None:
        if self._params.get(trial_id):
            with _create_scoped_session(self.scoped_session, True) as session:
                self._params_into(session, trial_id)

    def _get_trials(self, study_id: int, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        for trial_id in list(self._params):
            self._write_params(trial_id)
        return super()._get_trials(study_id, *args, **kwargs)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        frozen = super()._create_new_trial(study_id, template_trial)
        if template_trial is None and frozen.state == TrialState.RUNNING:   # ``ask``: a trial of ours
            self._running[frozen._trial_id] = copy.deepcopy(frozen)
        return frozen

    def get_trial(self, trial_id: int) -> FrozenTrial:
        mine = self._running.get(trial_id)
        return copy.deepcopy(mine) if mine is not None else super().get_trial(trial_id)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        try:
            self._write_params(trial_id)
            return super().set_trial_state_values(trial_id, state, values)
        finally:
            if state != TrialState.RUNNING:
                self._running.pop(trial_id, None)

    set_trial_intermediate_value = _mirrored(_intermediate)(optuna.storages.RDBStorage.set_trial_intermediate_value)
    set_trial_user_attr = _mirrored(_user)(optuna.storages.RDBStorage.set_trial_user_attr)
    set_trial_system_attr = _mirrored(_system)(optuna.storages.RDBStorage.set_trial_system_attr)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        records.mark_stale(self, stale, self.grace_period or 2 * (self.heartbeat_interval or 0))
        return stale

    @_mirrored(_attrs, params_first=False)
    def set_trial_attrs(self, trial_id: int, user: dict[str, Any], system: dict[str, Any]) -> None:
        """``set_trial_user_attr`` / ``set_trial_system_attr`` for every item, in one transaction:
        one check that the trial is still running, then one multi-row upsert per table (the rows
        Optuna writes, JSON values); a database without an upsert gets Optuna's one-key writes."""
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            self._params_into(session, trial_id)
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
