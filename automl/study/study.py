"""The :class:`Study`: create or open one, run trials, review and reproduce them.

A study lives in any Optuna storage (see :mod:`automl.study.storage`); what it and its trials
store is :mod:`automl.study.records`; the trial loop is :mod:`automl.study.loop`; the
leaderboard :mod:`automl.study.leaderboard`. Everything read back from storage is untrusted:
symbolic values go through the allow-list loader, and a task is never imported from storage
unless the caller trusts its module (``trusted=[...]``, ``--trust``) or passes the task.
"""
from __future__ import annotations

import importlib
import json
import logging
import re
import sys
import time
import warnings
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pyglove as pg
import torch
from optuna.trial import FrozenTrial, TrialState

from automl.artifacts import default_store, load_trained_states
from automl.devices import check_device
from automl.errors import AutomlError, SearchSpaceError, StudyError
from automl.export import export_adapter
from automl.objective import Objective
from automl.paths import studies_dir
from automl.recipe import Recipe
from automl.result import Result
from automl.sampling.pyglove_sampler import stored_proposal
from automl.sampling.samplers import check_algorithm, make_sampler
from automl.sampling.space import dna_spec, space_size
from automl.study import leaderboard as board
from automl.study import loop, records
from automl.study.checks import check_space_fits
from automl.study.quiet import optuna_quiet
from automl.study.storage import Heartbeat, default_storage, mask_url, open_storage, sqlite_path, storage_error
from automl.symbolic import NEVER_TRUSTED, Trusted, fingerprint, load_symbolic, trusted_modules
from automl.tasks import BUILTIN, Task, resolve
from automl.trainer import fit

if TYPE_CHECKING:
    import pandas as pd   # the leaderboard builds its tables: a worker never imports pandas

    from automl.study.review import Comparison, Exported, Reproduction, TrialRecord

PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(),
    "none": lambda: optuna.pruners.NopPruner(),
}
logger = logging.getLogger("automl")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _pruner(pruner: str | optuna.pruners.BasePruner | None) -> optuna.pruners.BasePruner:
    if pruner is None:
        return optuna.pruners.NopPruner()
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if not isinstance(pruner, str) or pruner not in PRUNERS:
        raise SearchSpaceError(f"unknown pruner {pruner!r}; choose one of {sorted(PRUNERS)} or an optuna pruner.")
    return PRUNERS[pruner]()


def _check_n_trials(n_trials: Any) -> None:
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials <= 0:
        raise SearchSpaceError(f"n_trials must be a positive integer, got {n_trials!r}.")


def _check_run(n_trials: Any, algorithm: Any, pruner: Any, device: Any, multi: bool) -> None:
    """Everything about a run that can be refused before anything is written."""
    _check_n_trials(n_trials)
    check_algorithm(algorithm, multi)
    if multi and pruner not in (None, "none"):
        raise SearchSpaceError("pruning needs a single objective (Optuna cannot prune multi-objective "
                               "trials); drop the pruner or use a weighted-sum Objective.")
    _pruner(pruner)
    check_device(device)


def _guard_storage(url: str):
    """Turn a storage failure met while reading (a damaged page...) into one StudyError line."""
    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, kind, error, tb):
            # sqlalchemy is imported by RDB storages only: without it, no error is one of its
            sql = sys.modules.get("sqlalchemy")
            if isinstance(error, json.JSONDecodeError) or (sql is not None and isinstance(error, sql.exc.SQLAlchemyError)):
                raise storage_error(error, url) from None
            return False
    return _Guard()


class ProgressBar:
    """The progress bar of :meth:`Study.optimize` (a callback after the runner's): new recipes
    added, and the best score among the trials the runner just read (no read of its own)."""

    def __init__(self, name: str, total: int, runner: loop.TrialRunner, multi: bool):
        from tqdm.auto import tqdm  # only when a bar is shown
        self.runner, self.total, self.multi = runner, total, multi
        self.bar = tqdm(total=total, desc=name, unit="trial")

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.bar.n = min(self.runner.added, self.total)
        if not self.multi and trial.state == TrialState.COMPLETE:
            values = [t.value for t in self.runner.trials if t.state == TrialState.COMPLETE]
            best = max(values) if study.direction == optuna.study.StudyDirection.MAXIMIZE else min(values)
            self.bar.set_postfix(best=f"{best:.4f}")
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class Study:
    """A search's trials: run more (:meth:`optimize`), review (:meth:`leaderboard`,
    :meth:`pareto_front`), rebuild (:meth:`recipe`) and re-run (:meth:`reproduce`) any trial.

    ``trusted``: modules (names, modules or classes) whose ``pg.Object`` classes may be rebuilt
    from this study's storage and whose task class may be imported; nothing else is."""

    def __init__(self, study: optuna.Study, storage_url: str, task: str | Task | None = None,
                 artifact_store: Any = None, keep_artifacts: int = 10, trusted: Trusted = ()):
        self.optuna = study
        self._url = storage_url
        self.storage_url = mask_url(storage_url)
        self._task = task
        self.trusted = tuple(trusted or ())
        self.artifact_store = artifact_store or default_store(study.study_name)
        self.keep_artifacts = keep_artifacts
        self._removed_artifacts: set[str] = set()

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def load(cls, name: str, storage: str | None = None, task: str | Task | None = None,
             artifact_store: Any = None, trusted: Trusted = (), heartbeat: Heartbeat | None = None) -> "Study":
        """Open an existing study (to review it, or to join it as a worker); creates and changes
        nothing. ``artifact_store``: an Optuna artifact store for trained weights (default
        ``studies/artifacts/<name>``); ``heartbeat``: see :class:`Heartbeat` (default on)."""
        if not isinstance(name, str) or not name:
            raise StudyError(f"a study name is a non-empty string, got {name!r}.")
        url = storage or default_storage(name)
        path = sqlite_path(url)
        if storage is None and path is not None and not path.exists():
            folder = studies_dir(create=False)
            known = sorted(p.stem for p in folder.glob("*.db")) if folder.is_dir() else []
            raise StudyError(f"no study {name!r} under {folder}/; existing studies: {known}. "
                             f"Pass --storage URL for a study stored elsewhere.")
        store = open_storage(url, write=False, heartbeat=heartbeat or Heartbeat())
        with _guard_storage(url):
            try:
                study = optuna.load_study(study_name=name, storage=store)
            except KeyError:
                names = optuna.get_all_study_names(store)
                raise StudyError(f"no study {name!r} in {mask_url(url)}; studies there: {names}.") from None
            if not records.is_automl(study):
                raise StudyError(f"study {name!r} in {mask_url(url)} was not created by automl (no stored search space).")
        loaded = cls(study, url, task, artifact_store, trusted=trusted)
        loaded._raw_storage = store
        return loaded

    @classmethod
    def create(cls, name: str, space: Any, task: str | Task, objective: Objective,
               storage: str | None = None, artifact_store: Any = None, trusted: Trusted = (),
               heartbeat: Heartbeat | None = None) -> "Study":
        """Create a study, or resume the one of that name if its space, task and objective are
        the same. The space and objective are round-tripped through the trusted loader first, so
        no study is written that can't be loaded (``trusted``: your own modules)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise StudyError(f"study name {name!r} must be letters, digits, '.', '_' or '-'.")
        if not isinstance(space, Recipe):
            raise SearchSpaceError(f"a search space is an automl.Recipe with pg.oneof / pg.floatv values, "
                                   f"got {type(space).__name__}.")
        if not isinstance(objective, Objective):
            raise SearchSpaceError(f"objective must be an automl.Objective, got {type(objective).__name__}.")
        task_obj = resolve(task)
        dna_spec(space)  # refuses a space without decisions
        where = f"study {name!r} (before writing)"
        load_symbolic(space.to_json_str(), trusted, where=f"{where}, field {records.SPACE!r}", expect=Recipe)
        load_symbolic(objective.to_json_str(), trusted, where=f"{where}, field {records.OBJECTIVE!r}",
                      expect=Objective)
        model = _architecture(task_obj)
        check_space_fits(space, model, task_obj.adaptable_layers(model))
        spec_hash = fingerprint(space)
        url = storage or default_storage(name)
        store = open_storage(url, write=True, heartbeat=heartbeat or Heartbeat())
        with _guard_storage(url):
            try:
                with optuna_quiet():
                    study = optuna.create_study(study_name=name, storage=store, load_if_exists=True,
                                                directions=objective.directions)
            except ValueError as e:
                raise StudyError(f"study {name!r} exists with other objectives: {e}") from e
            if records.study_get(study, records.SPACE_HASH) is not None:
                _check_same(study, name, spec_hash, objective, task_obj)
            elif study.get_trials(deepcopy=False):
                raise StudyError(f"study {name!r} in {mask_url(url)} already has trials but was not created by "
                                 f"automl; use another study name.")
            else:
                # the space's hash last: a process creating the same study at the same moment
                # (``--workers N``) that finds the hash finds everything else written
                records.study_put(study, records.SPACE, space.to_json_str())
                records.study_put(study, records.OBJECTIVE, objective.to_json_str())
                records.study_put(study, records.TASK, task_obj.name)
                with warnings.catch_warnings():  # experimental in Optuna; names "Objective 0" in dashboards
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(objective.names)
                if task_obj.name not in BUILTIN:
                    records.study_put(study, records.TASK_REF,
                                      f"{type(task_obj).__module__}:{type(task_obj).__qualname__}")
                records.study_put(study, records.SPACE_HASH, spec_hash)
        created = cls(study, url, task_obj, artifact_store, trusted=trusted)
        created._raw_storage = store
        return created

    # -- stored configuration ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.optuna.study_name

    def _stored(self, key: str, expect: Any) -> Any:
        text = records.study_get(self.optuna, key)
        if text is None:
            raise StudyError(f"{records.where(self.name, None, key)}: missing; the study was not created by automl.")
        return records.load(self.name, None, key, text, self.trusted, expect=expect)

    @cached_property
    def space(self) -> Any:
        """The search space (a symbolic ``Recipe`` with hyper values)."""
        return self._stored(records.SPACE, Recipe)

    @cached_property
    def objective(self) -> Objective:
        return self._stored(records.OBJECTIVE, Objective)

    @property
    def task_name(self) -> str:
        """The stored task name (for display; nothing is built from it)."""
        if self._task is not None:
            return resolve(self._task).name
        name = records.study_get(self.optuna, records.TASK)
        return name if isinstance(name, str) else "?"

    @cached_property
    def task(self) -> Task:
        """The study's task: the one given, a built-in by name, or — only when its module is
        trusted — the stored class rebuilt. Storage never makes us import anything."""
        if self._task is not None:
            return resolve(self._task)
        name = records.study_get(self.optuna, records.TASK)
        if isinstance(name, str) and name in BUILTIN:
            return resolve(name)
        ref = records.study_get(self.optuna, records.TASK_REF)
        ref = ref if isinstance(ref, str) else ""
        module, _, qualname = ref.partition(":")
        trusted = trusted_modules(self.trusted)
        if module and qualname and any(module == m or module.startswith(m + ".") for m in trusted):
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, type) and issubclass(obj, Task):
                try:
                    return obj()
                except Exception as e:  # noqa: BLE001 - a task class that needs arguments, say
                    raise StudyError(f"study {self.name!r}: task class {ref!r} can't be built without arguments "
                                     f"({type(e).__name__}: {e}); pass the task object with --task MODULE:ATTR.") from None
            raise StudyError(f"study {self.name!r}: stored task {ref!r} is not an automl.Task class in the "
                             f"trusted module {module!r}; pass the task (--task MODULE:ATTR).")
        shown = repr(name) if isinstance(name, str) else "(unreadable)"
        hint = (f" or trust its module (--trust {module})" if module and _NAME.match(module.replace(".", "_"))
                and module.split(".")[0] not in NEVER_TRUSTED else "")
        raise StudyError(f"study {self.name!r} uses task {shown} ({ref[:100]!r}), which is not built in; a task "
                         f"is never imported from storage: pass it with --task MODULE:ATTR (task=...){hint}.")

    # -- running ----------------------------------------------------------------------------
    def optimize(self, n_trials: int, algorithm: Any = "tpe", seed: int | None = 0,
                 pruner: str | optuna.pruners.BasePruner | None = None, timeout: float | None = None,
                 progress: bool = True, device: str | torch.device | None = None) -> "Study":
        """Add ``n_trials`` trials of recipes new to the study with ``algorithm`` (any name of
        :data:`automl.sampling.samplers.ALGORITHMS`, a ``pg.DNAGenerator`` or an Optuna sampler),
        with Optuna's ``optimize``: heartbeats, dead workers' trials failed and re-run, every
        failure's ``fail_reason`` stored. A space with nothing new left is a :class:`StudyError`."""
        multi = self.objective.multi
        _check_run(n_trials, algorithm, pruner, device, multi)
        task = self.task  # a custom task that can't be built is refused before any trial
        space = self.space
        with _guard_storage(self._url):
            spec = dna_spec(space)
            for t in self.trials():  # a PyGlove sampler recovers from these: check them before any trial
                stored_proposal(self.name, t, spec)
            size = space_size(space, spec)
            if loop.distinct_recipes(self.trials()) >= size:
                raise loop.exhausted(self.name, size, 0, n_trials)
            self.optuna.sampler = make_sampler(algorithm, space, seed, multi)
            self.optuna.pruner = _pruner(pruner)
            self._writable()
            runner = loop.TrialRunner(self, n_trials, device, spec)
            bar = ProgressBar(self.name, n_trials, runner, multi) if progress else None
            try:
                with optuna_quiet():
                    self.optuna.optimize(runner, n_trials=None, timeout=timeout, catch=(AutomlError,),
                                         callbacks=[runner.after] + ([bar] if bar else []), gc_after_trial=False)
            finally:
                if bar is not None:
                    bar.close()
        if runner.fatal is not None:
            raise runner.fatal
        return self

    def _writable(self) -> None:
        """A worker writes: SQLite gets WAL journaling (readers never switch a file's mode)."""
        store = getattr(self, "_raw_storage", None)
        engine = getattr(store, "engine", None)
        if engine is not None and sqlite_path(self._url) is not None:
            from sqlalchemy import event

            from automl.study.storage import _sqlite_pragmas
            if not event.contains(engine, "connect", _sqlite_pragmas):
                event.listen(engine, "connect", _sqlite_pragmas)
                engine.dispose()

    # -- reviewing --------------------------------------------------------------------------
    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        with _guard_storage(self._url):
            return self.optuna.get_trials(deepcopy=False, states=states)

    def _trial(self, number: int) -> FrozenTrial:
        if not isinstance(number, int) or isinstance(number, bool):
            raise StudyError(f"a trial is given by its number (an integer), got {number!r}.")
        trials = self.trials()
        for t in trials:
            if t.number == number:
                return t
        span = f"trials 0..{len(trials) - 1}" if trials else "no trials"
        raise StudyError(f"study {self.name!r} has no trial {number}; it has {span}.")

    def recipe(self, trial: int) -> Recipe:
        """The stored recipe of trial ``trial``, rebuilt from its JSON (trusted types only)."""
        t = self._trial(trial)
        text = records.get(t, records.RECIPE)
        if text is None:
            raise StudyError(f"trial {trial} of {self.name!r} stored no recipe (state {t.state.name}).")
        recipe = records.load(self.name, t, records.RECIPE, text, self.trusted, expect=Recipe)
        if not pg.is_deterministic(recipe):
            raise StudyError(f"{records.where(self.name, t, records.RECIPE)}: the stored recipe still holds "
                             f"hyper values, so it is not a trained recipe.")
        return recipe

    def metrics(self, trial: int) -> dict[str, Any]:
        """The stored metrics (and failure reason, if any) of one trial."""
        t = self._trial(trial)
        out = dict(records.metrics(t))
        reason = records.get(t, records.FAIL_REASON)
        if reason is not None:
            out["fail_reason"] = reason
        return out

    def trial(self, number: int) -> TrialRecord:
        """One trial as stored: state, score (or objectives), duration, recipe (``.program``: its
        symbolic program), metrics, per-layer metrics (``.layers``), failure reason, whether its
        trained weights are kept; ``print()`` it for a summary."""
        t = self._trial(number)
        recipe = self.recipe(number) if records.get(t, records.RECIPE) is not None else None
        from automl.study.review import TrialRecord, weights_kept  # review code: not in a worker's start-up
        return TrialRecord.build(self.name, t, self.objective, recipe,
                                 weights_kept(self.artifact_store, self.name, t))

    def compare(self, a: int, b: int) -> Comparison:
        """Trials ``a`` and ``b`` side by side (``.metrics``: a table, ``.diff``: ``pg.diff`` of
        their programs); ``print()`` it for both."""
        from automl.study.review import Comparison
        return Comparison(self.trial(a), self.trial(b))

    def reproduce(self, trial: int, device: str | torch.device | None = None, rtol: float = 1e-4,
                  atol: float = 1e-6) -> Reproduction:
        """Re-run trial ``trial``'s stored recipe on the study's task. The returned
        :class:`~automl.study.review.Reproduction` has the new metrics (``.metrics``), a verdict
        per metric (``.verdicts``: same within ``rtol``/``atol``, or different; timings are not
        judged) and ``.same``."""
        check_device(device)
        recipe, task = self.recipe(trial), self.task
        stored = records.metrics(self._trial(trial))
        start = time.perf_counter()
        result = fit(recipe, task, device=device)
        from automl.study.review import Reproduction
        return Reproduction(self.name, trial, stored, result, time.perf_counter() - start, rtol, atol)

    def export(self, trial: int, path: str | Path, device: str | torch.device | None = None) -> Exported:
        """Write trial ``trial``'s trained adapter under ``path``: peft's format
        (``adapter_config.json`` + ``adapter_model.safetensors``) for the LoRA family, merged
        weights otherwise; one folder per subtask when the task has several. Uses the stored
        weights of the best trials, else re-trains the recipe (seeded, so the same weights): the
        returned list of paths says which (``.retrained``) and how long that took (``.seconds``)."""
        check_device(device)
        recipe, task = self.recipe(trial), self.task
        subtasks = task.subtasks
        states = load_trained_states(self.artifact_store, self._trial(trial), [s.name for s in subtasks], self.name)
        start, retrained = time.perf_counter(), states is None
        if retrained:
            logger.info("trial %d of %r: trained weights not kept (only the best trials keep theirs); "
                        "re-training its recipe (seeded: the same weights)", trial, self.name)
            states = fit(recipe, task, device=device).trained_states
        seconds = time.perf_counter() - start if retrained else 0.0
        path = Path(path)
        paths = [export_adapter(recipe.adapter, state, task.initial_model(sub),
                                path if len(subtasks) == 1 else path / sub.name, prefix=task.export_prefix)
                 for sub, state in zip(subtasks, states)]
        from automl.study.review import Exported
        return Exported(paths, retrained, seconds)

    def leaderboard(self, top: int | None = None, sort: str | None = None, where: str | None = None,
                    all: bool = False) -> pd.DataFrame:  # noqa: A002 - the documented keyword
        """Completed trials, best first: trial, score (or each objective and ``pareto``), metrics,
        the recipe's labels (adapter, quant, merge) and searched values, seconds, ``recipe`` (one
        readable line). Indexed by ``rank`` (1 = best). A multi-objective study lists its Pareto
        members first. ``sort``: a column to order by (best first by the metric's direction);
        ``where``: a filter such as ``"adapter==LoRA and accuracy>0.9"`` (parsed, never
        evaluated as code; rows keep their rank); ``top``: the first rows kept; ``all``: failed,
        pruned and running trials too, with a ``state`` column. A trial that repeated an earlier
        recipe (``automl:duplicate_of``) is listed once, as that one."""
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top <= 0):
            raise SearchSpaceError(f"top must be a positive integer, got {top!r}.")
        from automl.study.query import Where
        condition = Where(where) if where is not None else None
        states = None if all else (TrialState.COMPLETE,)
        trials = [t for t in self.trials(states) if records.get(t, records.DUPLICATE_OF) is None]
        table = board.leaderboard(trials, self.objective, sort=sort, pareto=self._pareto_numbers(),
                                  with_state=all)
        if condition is not None and not table.empty:
            table = table[condition.mask(table)]
        return table.head(top) if top else table

    def _pareto_numbers(self) -> set[int]:
        if not self.objective.multi:
            return set()
        with _guard_storage(self._url):
            return {t.number for t in self.optuna.best_trials}

    def pareto_front(self) -> pd.DataFrame:
        """The Pareto-optimal trials of a multi-objective study (leaderboard rows)."""
        if not self.objective.multi:
            raise StudyError(f"study {self.name!r} has a single objective; use leaderboard(), or create "
                             f"a study with Objective(maximize=[...], minimize=[...]).")
        table = self.leaderboard()
        return table[table["pareto"]] if not table.empty else table


def _architecture(task: Task) -> torch.nn.Module:
    """A model of the task's architecture: a fresh one when the task builds one (cheap, writes
    nothing), else its pretrained model."""
    with torch.random.fork_rng():
        try:
            return task.build_model()
        except (AutomlError, NotImplementedError):
            return task.pretrained_model()


def _check_same(study: optuna.Study, name: str, spec_hash: str, objective: Objective, task: Task) -> None:
    """Resuming: the stored space, objective and task must be the ones given (compared as text)."""
    if records.study_get(study, records.SPACE_HASH) != spec_hash:
        raise StudyError(f"study {name!r} was created with a different search space; resume it "
                         f"with the same space, or start a new study name.")
    stored = records.study_get(study, records.OBJECTIVE)
    if stored != objective.to_json_str():
        raise StudyError(f"study {name!r} was created with a different objective "
                         f"({str(stored)[:200]}); use a new study name.")
    stored_task = records.study_get(study, records.TASK)
    if stored_task != task.name:
        raise StudyError(f"study {name!r} was created for task {str(stored_task)[:100]!r}, "
                         f"not {task.name!r}; use a new study name.")


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    """Name, storage and trial counts of the studies in ``storage`` (default: every SQLite file
    and journal file under ``studies/``). Creates nothing."""
    if storage:
        urls = [storage]
    else:
        folder = studies_dir(create=False)
        urls = [f"sqlite:///{p}" for p in sorted(folder.glob("*.db"))] if folder.is_dir() else []
        urls += [f"journal:{p}" for p in sorted(folder.glob("*.journal"))] if folder.is_dir() else []
    rows = []
    for url in urls:
        store = open_storage(url, write=False)
        with _guard_storage(url):
            for summary in optuna.get_all_study_summaries(store, include_best_trial=False):
                system = store.get_study_system_attrs(summary._study_id)
                task = system.get(records.TASK, summary.user_attrs.get(records.TASK))
                rows.append({"study": summary.study_name, "trials": summary.n_trials,
                             "task": task if isinstance(task, str) else None, "storage": mask_url(url)})
    return rows


def search(space: Any, task: str | Task = "digits", objective: Objective | None = None,
           algorithm: Any = "tpe", n_trials: int = 20, study_name: str | None = None,
           storage: str | None = None, seed: int | None = 0, pruner: str | optuna.pruners.BasePruner | None = None,
           timeout: float | None = None, progress: bool = True, device: str | torch.device | None = None,
           artifact_store: Any = None, trusted: Trusted = (), heartbeat: Heartbeat | None = None) -> Study:
    """Search ``space`` (a symbolic ``Recipe`` with hyper values) on ``task``; returns the study.

    An existing ``study_name`` is resumed (the same space is required; another algorithm is
    allowed, e.g. random warm-up then TPE) and gets ``n_trials`` new recipes. Storage defaults to
    ``sqlite:///studies/<name>.db``; the best trials' trained weights go to ``artifact_store``
    (default ``studies/artifacts/<name>``). Bad input is refused before anything is written.
    """
    objective = objective if objective is not None else Objective()
    if not isinstance(objective, Objective):
        raise SearchSpaceError(f"objective must be an automl.Objective, got {type(objective).__name__}.")
    task_obj = resolve(task)
    _check_run(n_trials, algorithm, pruner, device, objective.multi)
    name = study_name or f"{task_obj.name}-search"
    study = Study.create(name, space, task_obj, objective, storage, artifact_store, trusted, heartbeat)
    return study.optimize(n_trials, algorithm=algorithm, seed=seed, pruner=pruner, timeout=timeout,
                          progress=progress, device=device)
