"""Optuna's RDB storage (SQLite, PostgreSQL, MySQL) whose stale trials say why they failed, that
writes a trial's attributes in one transaction, and that answers reads of the trials this process
runs (and has just finished) from what it wrote."""
from __future__ import annotations

import copy
import datetime
import functools
import importlib
import json
import sqlite3
import threading
from typing import Any, Callable

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session  # Optuna's own session helper

from automl.study import records


def _mirrored(update: Callable[..., None], pending_first: bool = True):
    """A write to a trial that, once stored, is applied to this process's copy of the trial too
    (``update(copy, *args)``); a trial the database says is finished is no longer copied. What
    waits for the trial's next write goes first (``pending_first``), else the write takes it."""
    def wrap(write):
        @functools.wraps(write)
        def method(self, trial_id: int, *args: Any, **kwargs: Any):
            try:
                if pending_first:
                    self._write_pending(trial_id)
                out = write(self, trial_id, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._forget(trial_id)   # finished elsewhere (e.g. failed as stale)
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


def _attrs(t: FrozenTrial, user: dict[str, Any], system: dict[str, Any], study: Any = None, last: bool = False) -> None:
    t.user_attrs = {**t.user_attrs, **_json(user)}
    t.system_attrs = {**t.system_attrs, **_json(system)}


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """:class:`optuna.storages.RDBStorage`; a trial found stale (no heartbeat for the grace
    period) gets its ``fail_reason`` before Optuna fails it; :meth:`set_trial_attrs` stores many
    attributes in one commit (a trial's 25 metrics were 25 commits).

    Reads. A trial this process created and still runs is read from a copy that every write
    through this storage updates after the database took it, as the database would answer it:
    by ``get_trial``, and by Optuna's reads of the trials changed since its last (its cache's
    ``_get_trials``: the sampler's, the search space's, the callbacks', three or four a trial),
    which then ask the database only which trials changed and read in full only those that are
    not ours (Optuna read the running trial back five to seven times a trial, five queries
    each). A trial this process finishes is read from its copy, with the times the database
    holds, until Optuna's cache has it. A write the database refuses because the trial finished
    elsewhere drops the copy, and so does a read that finds it finished elsewhere.

    Writes. What such a trial is given at its start waits for its first write and goes in that
    write's transaction (automl writes the recipe right after the walk of the space), or before
    a read of all trials from the database: its parameters (one ``suggest`` each; one INSERT),
    attributes set on it (TPE's relative parameters) and the heartbeat thread's first beat
    (stored by the thread with its second beat if no write came by then). Its last write
    (``set_trial_attrs(..., last=True)``: the metrics) goes with its state change. So a trial
    is three write transactions: created, recipe, finished, and the heartbeats of a long one
    (Optuna's own path with automl's records took eight or nine).
    """

    FINISHED_KEPT = 64   # finished trials' copies kept for Optuna's next read (it needs one each)

    def __init__(self, *args: Any, **kwargs: Any):
        self._running: dict[int, FrozenTrial] = {}
        self._finished: dict[int, FrozenTrial] = {}   # ours, finished here, not yet read by Optuna
        self._params: dict[int, list[tuple[Any, ...]]] = {}   # parameters of our trials not written yet
        self._first_beat: set[int] = set()   # our trials whose first heartbeat waits for their first write
        self._written: set[int] = set()      # our running trials written to since their creation
        self._beaten: set[int] = set()       # ... or not, but whose heartbeats the thread stores
        self._lock = threading.Lock()        # the heartbeat thread's and the trial's
        self._upserts: dict[Any, Any] = {}   # per table, built once
        self._later: dict[int, tuple[dict[str, Any], ...]] = {}   # our trials' last attributes, for their end
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

    def _pending_into(self, session: Any, trial: Any) -> None:
        """Write what waits for the trial's next write (``trial``: its row, checked to be still
        running) in ``session``: its parameters, its first heartbeat and the attributes of its
        last write (they are not retried: a trial whose write fails fails)."""
        trial_id = trial.trial_id
        with self._lock:
            self._written.add(trial_id)
            beat = trial_id in self._first_beat
            self._first_beat.discard(trial_id)
        params = self._params.pop(trial_id, ())
        if params:
            self._insert_params(session, trial_id, params)
        if beat:   # none can exist: only this method or, after it, the heartbeat thread writes one
            session.add(models.TrialHeartbeatModel(trial_id=trial_id))   # the time: the database's now
        later = self._later.pop(trial_id, None)
        if later is not None:
            self._attrs_into(session, trial, *later)

    def _insert_params(self, session: Any, trial_id: int, params: list[tuple[Any, ...]]) -> None:
        """Optuna's write of each parameter (``_set_trial_param_without_commit``: a name the
        caller knew no distribution for is checked against the study's first stored one), for
        all of a trial's parameters at once: one read of those distributions, one INSERT."""
        T, P = models.TrialModel, models.TrialParamModel
        unknown = {name for name, _value, _dist, previous in params if previous is None}
        stored: dict[str, str] = {}
        if unknown:
            study = sqlalchemy.select(T.study_id).where(T.trial_id == trial_id).scalar_subquery()
            for name, dist in (session.query(P.param_name, P.distribution_json).join(T)
                               .filter(T.study_id == study, P.param_name.in_(unknown)).order_by(P.param_id)):
                stored.setdefault(name, dist)
        for name, _value, distribution, previous in params:
            if previous is None and name in stored:
                previous = optuna.distributions.json_to_distribution(stored[name])
            if previous is not None:
                optuna.distributions.check_distribution_compatibility(previous, distribution)
        session.execute(sqlalchemy.insert(P), [
            {"trial_id": trial_id, "param_name": name, "param_value": value,
             "distribution_json": optuna.distributions.distribution_to_json(distribution)}
            for name, value, distribution, _previous in params])

    def _pending(self, trial_id: int) -> bool:
        return bool(self._params.get(trial_id)) or trial_id in self._first_beat or trial_id in self._later

    def _write_pending(self, trial_id: int) -> None:
        if self._pending(trial_id):
            with _create_scoped_session(self.scoped_session, True) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                self.check_trial_is_updatable(trial_id, trial.state)
                self._pending_into(session, trial)

    def record_heartbeat(self, trial_id: int) -> None:
        """A trial of ours not written to since its creation gets its first heartbeat with that
        first write, milliseconds later (automl writes the recipe right after the walk of the
        space), in its transaction: not in a second transaction at the same moment from the
        heartbeat thread, which on SQLite waits for the other's lock. Should the next beat come
        first (an objective that writes nothing), the first is stored with it, by this thread."""
        with self._lock:
            if trial_id in self._running and trial_id not in self._written and trial_id not in self._beaten:
                if trial_id not in self._first_beat:
                    self._first_beat.add(trial_id)
                    return
                self._first_beat.discard(trial_id)   # this thread stores it, and every later one
                self._beaten.add(trial_id)
        super().record_heartbeat(trial_id)

    def _get_trials(self, study_id: int, states: Any, included_trial_ids: set[int],
                    trial_id_greater_than: int) -> list[FrozenTrial]:
        """Optuna's read of the trials in ``included_trial_ids`` or after ``trial_id_greater_than``
        (all with -1). When some of them may be ours, one query says which trials those are and
        in which state; ours are answered from their copies (which hold what waits for their
        next write), and only the others are read in full. A read of all trials writes what
        waits first, and reads them all from the database."""
        if trial_id_greater_than < 0 or not (self._running or self._finished):
            return self._read_all(study_id, states, included_trial_ids, trial_id_greater_than)
        T = models.TrialModel
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        changed = T.trial_id > trial_id_greater_than
        if included:
            changed = sqlalchemy.or_(T.trial_id.in_(included), changed)
        try:
            with _create_scoped_session(self.scoped_session) as session:
                query = session.query(T).filter(T.study_id == study_id, changed)   # the rows alone
                if states is not None:
                    query = query.filter(T.state.in_(states))
                rows = [(t.trial_id, t.state, t.datetime_start, t.datetime_complete) for t in query]
        except sqlalchemy.exc.OperationalError:   # e.g. too many ids for one IN: Optuna's own fallback
            rows = []
        if not rows:
            return self._read_all(study_id, states, included_trial_ids, trial_id_greater_than)
        trials, rest = {}, set()
        for trial_id, state, start, complete in rows:
            mine = self._copy(trial_id, state)
            if mine is None:
                rest.add(trial_id)
                continue
            mine.datetime_start, mine.datetime_complete = start, complete   # as stored (e.g. MySQL's seconds)
            trials[trial_id] = mine
        if rest:   # the others, and any trial created since the query above (ours, in another thread: copied)
            for t in super()._get_trials(study_id, states, rest, max(trial_id for trial_id, *_ in rows)):
                mine = self._copy(t._trial_id, t.state)
                if mine is not None:
                    mine.datetime_start, mine.datetime_complete = t.datetime_start, t.datetime_complete
                trials[t._trial_id] = mine or t
        return [trials[trial_id] for trial_id in sorted(trials)]

    def _read_all(self, study_id: int, *args: Any) -> list[FrozenTrial]:
        for trial_id in [t for t in list(self._running) if self._pending(t)]:
            try:
                self._write_pending(trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._forget(trial_id)   # failed elsewhere (as stale): what waited is dropped
        return super()._get_trials(study_id, *args)

    def _copy(self, trial_id: int, state: TrialState) -> FrozenTrial | None:
        """Our copy of a trial the database says is in ``state`` (a trial finished here is handed
        out once: Optuna's cache keeps it); none when it is not ours or not as we hold it."""
        running = self._running.get(trial_id)
        if running is not None:
            if state == TrialState.RUNNING:
                return copy.deepcopy(running)
            self._forget(trial_id)   # finished elsewhere (e.g. failed as stale)
            return None
        finished = self._finished.pop(trial_id, None)
        return finished if finished is not None and finished.state == state else None

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        frozen = super()._create_new_trial(study_id, template_trial)
        if template_trial is None and frozen.state == TrialState.RUNNING:   # ``ask``: a trial of ours
            self._running[frozen._trial_id] = copy.deepcopy(frozen)
        return frozen

    def _forget(self, trial_id: int) -> None:
        """The trial is no longer ours to copy (finished here or elsewhere)."""
        self._running.pop(trial_id, None)
        self._params.pop(trial_id, None)
        self._later.pop(trial_id, None)
        with self._lock:
            self._written.discard(trial_id)
            self._beaten.discard(trial_id)
            self._first_beat.discard(trial_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        mine = self._running.get(trial_id) or self._finished.get(trial_id)
        return copy.deepcopy(mine) if mine is not None else super().get_trial(trial_id)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        """Optuna's state change; a trial of ours that finishes does so in one transaction with
        what waited for it (its last attributes, parameters not written yet), and its copy is
        kept, with the times the database holds, until Optuna's cache has read it."""
        mine = self._running.get(trial_id)
        if mine is None or not state.is_finished():
            try:
                self._write_pending(trial_id)
                return super().set_trial_state_values(trial_id, state, values)
            finally:
                if state != TrialState.RUNNING:
                    self._forget(trial_id)
        try:
            with _create_scoped_session(self.scoped_session) as session:   # as Optuna's, plus what waited
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                self.check_trial_is_updatable(trial_id, trial.state)
                self._pending_into(session, trial)
                for objective, value in enumerate(values or ()):
                    self._set_trial_value_without_commit(session, trial, objective, value)
                trial.state = state
                trial.datetime_complete = datetime.datetime.now()
                times = trial.datetime_start, trial.datetime_complete   # as a read gives them back
        except sqlalchemy.exc.IntegrityError:
            return False
        finally:
            self._forget(trial_id)
        if self.engine.name != "mysql":   # MySQL keeps whole seconds: a read would differ
            mine.state, (mine.datetime_start, mine.datetime_complete) = state, times
            mine.values = None if values is None else [float(v) for v in values]
            while len(self._finished) >= self.FINISHED_KEPT:
                self._finished.pop(next(iter(self._finished)))
            self._finished[trial_id] = mine
        return True

    set_trial_intermediate_value = _mirrored(_intermediate)(optuna.storages.RDBStorage.set_trial_intermediate_value)
    _set_user_attr = _mirrored(_user)(optuna.storages.RDBStorage.set_trial_user_attr)
    _set_system_attr = _mirrored(_system)(optuna.storages.RDBStorage.set_trial_system_attr)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._early(trial_id, {key: value}, {}):
            self._set_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._early(trial_id, {}, {key: value}):
            self._set_system_attr(trial_id, key, value)

    def _early(self, trial_id: int, user: dict[str, Any], system: dict[str, Any]) -> bool:
        """An attribute set on a trial of ours before its first write (TPE's relative parameters,
        set while the space is walked) waits for that write; false when it is stored now."""
        with self._lock:
            if trial_id not in self._running or trial_id in self._written:
                return False
        self._wait(trial_id, user, system, {})
        _attrs(self._running[trial_id], user, system)
        return True

    def _wait(self, trial_id: int, user: dict[str, Any], system: dict[str, Any], study: dict[str, Any]) -> None:
        """Attributes that go with the trial's next write (later keys replace earlier ones)."""
        user0, system0, study0 = self._later.get(trial_id, ({}, {}, {}))
        self._later[trial_id] = ({**user0, **user}, {**system0, **system}, {**study0, **study})

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        records.mark_stale(self, stale, self.grace_period or 2 * (self.heartbeat_interval or 0))
        return stale

    @_mirrored(_attrs, pending_first=False)
    def set_trial_attrs(self, trial_id: int, user: dict[str, Any], system: dict[str, Any],
                        study: dict[str, Any] | None = None, last: bool = False) -> None:
        """``set_trial_user_attr`` / ``set_trial_system_attr`` for every item, and
        ``set_study_system_attr`` of the trial's study for every item of ``study``, in one
        transaction. ``last``: the trial's last write before it finishes (its metrics), which
        for a trial of ours then waits for that state change and goes in its transaction."""
        if last and trial_id in self._running:
            self._wait(trial_id, user, system, study or {})
            return
        with _create_scoped_session(self.scoped_session, True) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
            self.check_trial_is_updatable(trial_id, trial.state)
            self._pending_into(session, trial)
            self._attrs_into(session, trial, user, system, study or {})

    def _attrs_into(self, session: Any, trial: Any, user: dict[str, Any], system: dict[str, Any],
                    study: dict[str, Any]) -> None:
        """One upsert per table of every row (the rows Optuna writes, JSON values; one statement,
        compiled once, for any number of rows: a multi-row VALUES is compiled anew for each
        count, at several ms); a database without an upsert gets Optuna's one-key writes."""
        for model, owner, attrs in ((models.TrialUserAttributeModel, trial.trial_id, user),
                                    (models.TrialSystemAttributeModel, trial.trial_id, system),
                                    (models.StudySystemAttributeModel, trial.study_id, study)):
            if not attrs:
                continue
            statement = self._upsert(model)
            if statement is not None:
                owned = "study_id" if model is models.StudySystemAttributeModel else "trial_id"
                session.execute(statement, [{owned: owner, "key": key, "value_json": json.dumps(value)}
                                            for key, value in attrs.items()])
            elif model is models.StudySystemAttributeModel:
                for key, value in attrs.items():
                    attribute = model.find_by_study_and_key(trial.study, key, session)
                    if attribute is None:
                        session.add(model(study_id=owner, key=key, value_json=json.dumps(value)))
                    else:
                        attribute.value_json = json.dumps(value)
            else:
                for key, value in attrs.items():
                    self._set_trial_attr_without_commit(session, model, trial.trial_id, key, value)

    def _upsert(self, model: Any) -> Any:
        """An INSERT into ``model``'s table replacing an existing key's value, for databases that
        have one (the rows come with its execution)."""
        if model not in self._upserts:
            self._upserts[model] = self._upsert_statement(model)
        return self._upserts[model]

    def _upsert_statement(self, model: Any) -> Any:
        dialect = self.engine.name
        if dialect in ("sqlite", "postgresql") and (dialect != "sqlite" or sqlite3.sqlite_version_info >= (3, 24, 0)):
            insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert(model)
            owner = model.study_id if model is models.StudySystemAttributeModel else model.trial_id
            return insert.on_conflict_do_update(index_elements=[owner, model.key],
                                                set_={"value_json": insert.excluded.value_json})
        if dialect == "mysql":
            from sqlalchemy.dialects import mysql
            insert = mysql.insert(model)
            return insert.on_duplicate_key_update(value_json=insert.inserted.value_json)
        return None
