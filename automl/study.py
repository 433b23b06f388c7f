"""Studies: an Optuna study that stores symbolic recipes, metrics and failures.

Optuna's storage is the single source of truth: a study lives in any Optuna storage URL
(SQLite under ``studies/`` by default; PostgreSQL or MySQL for many machines; ``journal:PATH``
for Optuna's journal file, several processes on one machine). Each trial stores its recipe
(``recipe``, JSON), the DNA (``automl:dna``), every metric, and ``fail_reason`` when it failed;
the study stores its space, task and objective, so workers and reviewers need only its name.
"""
from __future__ import annotations

import importlib
import logging
import math
import re
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pyglove as pg
import torch
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from tqdm.auto import tqdm

from automl.artifacts import ARTIFACT_ATTR, default_store, load_trained_states, prune_artifacts, save_trained_states
from automl.errors import AutomlError, SearchSpaceError, StudyError
from automl.export import export_adapter
from automl.objective import Objective
from automl.paths import studies_dir
from automl.recipe import Recipe
from automl.result import Result
from automl.sampling.pyglove_sampler import DNA_ATTR, PROPOSAL_ATTR
from automl.sampling.samplers import make_sampler
from automl.sampling.space import dna_spec, suggest
from automl.symbolic import fingerprint, load_symbolic
from automl.tasks import BUILTIN, Task, resolve
from automl.trainer import fit

SPACE_ATTR, SPACE_HASH_ATTR = "automl:space", "automl:space_hash"
TASK_ATTR, TASK_REF_ATTR, OBJECTIVE_ATTR = "automl:task", "automl:task_ref", "automl:objective"
RECIPE_ATTR, LABELS_ATTR, FAIL_ATTR = "recipe", "automl:labels", "fail_reason"
DUPLICATE_ATTR = "automl:duplicate_of"
HEAD_METRICS = ("accuracy", "forgetting", "intruders", "bits")
TAIL_METRICS = ("pretrain_accuracy", "trainable_params")
PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(),
    "none": lambda: optuna.pruners.NopPruner(),
}
logger = logging.getLogger("automl")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_storage(name: str) -> str:
    """``sqlite:///studies/<name>.db``."""
    return f"sqlite:///{studies_dir() / name}.db"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (RDB URL, or ``journal:PATH`` for a journal file)."""
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage
            return JournalStorage(JournalFileBackend(url[len("journal:"):]))
        if not url.startswith("sqlite"):
            return optuna.storages.RDBStorage(url)
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        # WAL journaling: readers (a dashboard, `automl leaderboard`) don't block the writer, and
        # commits skip a full fsync (58 → 33 ms per trial of ~20 attributes, measured here).
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()
        return storage
    except Exception as e:  # noqa: BLE001 - any driver error means the URL can't be opened
        raise StudyError(f"cannot open storage {url!r}: {e}. Use an Optuna storage URL such as "
                         f"sqlite:///studies/demo.db, postgresql://user:pw@host/db or journal:PATH.") from e


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    """Name, storage and trial counts of the studies in ``storage`` (default: every SQLite file
    under ``studies/``)."""
    urls = [storage] if storage else [f"sqlite:///{p}" for p in sorted(studies_dir().glob("*.db"))]
    rows = []
    for url in urls:
        for summary in optuna.get_all_study_summaries(open_storage(url), include_best_trial=False):
            rows.append({"study": summary.study_name, "trials": summary.n_trials,
                         "task": summary.user_attrs.get(TASK_ATTR), "storage": url})
    return rows


def _pruner(pruner: str | optuna.pruners.BasePruner | None) -> optuna.pruners.BasePruner:
    if pruner is None:
        return optuna.pruners.NopPruner()
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner not in PRUNERS:
        raise SearchSpaceError(f"unknown pruner {pruner!r}; choose one of {sorted(PRUNERS)} or an optuna pruner.")
    return PRUNERS[pruner]()


class Study:
    """A search's trials: run more (:meth:`optimize`), review (:meth:`leaderboard`,
    :meth:`pareto_front`), rebuild (:meth:`recipe`) and re-run (:meth:`reproduce`) any trial."""

    def __init__(self, study: optuna.Study, storage_url: str, task: str | Task | None = None,
                 artifact_store: Any = None, keep_artifacts: int = 10):
        self.optuna = study
        self.storage_url = storage_url
        self._task = task
        self.artifact_store = artifact_store or default_store(study.study_name)
        self.keep_artifacts = keep_artifacts
        self._removed_artifacts: set[str] = set()

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def load(cls, name: str, storage: str | None = None, task: str | Task | None = None,
             artifact_store: Any = None) -> "Study":
        """Open an existing study (to review it, or to join it as a worker). ``artifact_store``:
        an Optuna artifact store for trained weights (default ``studies/artifacts/<name>``)."""
        url = storage or default_storage(name)
        path = _sqlite_path(url)
        if storage is None and path is not None and not path.exists():
            known = [p.stem for p in studies_dir().glob("*.db")]
            raise StudyError(f"no study {name!r} under {studies_dir()}/; existing studies: {known}. "
                             f"Pass --storage URL for a study stored elsewhere.")
        store = open_storage(url)
        try:
            study = optuna.load_study(study_name=name, storage=store)
        except KeyError:
            names = optuna.get_all_study_names(store)
            raise StudyError(f"no study {name!r} in {url}; studies there: {names}.") from None
        if SPACE_ATTR not in study.user_attrs:
            raise StudyError(f"study {name!r} in {url} was not created by automl (no stored search space).")
        return cls(study, url, task, artifact_store)

    @classmethod
    def create(cls, name: str, space: Any, task: str | Task, objective: Objective,
               storage: str | None = None, artifact_store: Any = None) -> "Study":
        """Create a study, or resume the one of that name if its space is the same."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise StudyError(f"study name {name!r} must be letters, digits, '.', '_' or '-'.")
        task_obj = resolve(task)
        spec_hash = fingerprint(space)
        dna_spec(space)  # refuses a space without decisions
        url = storage or default_storage(name)
        store = open_storage(url)
        try:
            study = optuna.create_study(study_name=name, storage=store, load_if_exists=True,
                                        directions=objective.directions)
        except ValueError as e:
            raise StudyError(f"study {name!r} exists with other objectives: {e}") from e
        attrs = study.user_attrs
        if SPACE_HASH_ATTR in attrs:
            if attrs[SPACE_HASH_ATTR] != spec_hash:
                raise StudyError(f"study {name!r} was created with a different search space; resume it "
                                 f"with the same space, or start a new study name.")
            if attrs.get(OBJECTIVE_ATTR) != objective.to_json_str():
                raise StudyError(f"study {name!r} was created with a different objective "
                                 f"({attrs.get(OBJECTIVE_ATTR)}); use a new study name.")
            if attrs.get(TASK_ATTR) != task_obj.name:
                raise StudyError(f"study {name!r} was created for task {attrs.get(TASK_ATTR)!r}, "
                                 f"not {task_obj.name!r}; use a new study name.")
        else:
            study.set_user_attr(SPACE_ATTR, space.to_json_str())
            study.set_user_attr(SPACE_HASH_ATTR, spec_hash)
            study.set_user_attr(OBJECTIVE_ATTR, objective.to_json_str())
            study.set_user_attr(TASK_ATTR, task_obj.name)
            if task_obj.name not in BUILTIN:
                study.set_user_attr(TASK_REF_ATTR, f"{type(task_obj).__module__}:{type(task_obj).__qualname__}")
        return cls(study, url, task_obj, artifact_store)

    # -- stored configuration ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.optuna.study_name

    @cached_property
    def space(self) -> Any:
        """The search space (a symbolic ``Recipe`` with hyper values)."""
        return load_symbolic(self.optuna.user_attrs[SPACE_ATTR])

    @cached_property
    def objective(self) -> Objective:
        return load_symbolic(self.optuna.user_attrs[OBJECTIVE_ATTR])

    @cached_property
    def task(self) -> Task:
        """The study's task: the one given, a built-in by name, or the stored class rebuilt."""
        if self._task is not None:
            return resolve(self._task)
        name = self.optuna.user_attrs[TASK_ATTR]
        if name in BUILTIN:
            return resolve(name)
        ref = self.optuna.user_attrs.get(TASK_REF_ATTR, "")
        module, _, qualname = ref.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            return obj()
        except Exception as e:  # noqa: BLE001
            raise StudyError(f"study {self.name!r} uses custom task {name!r} ({ref}) which cannot be "
                             f"rebuilt here ({e}); pass task=... when loading it.") from e

    # -- running ----------------------------------------------------------------------------
    def optimize(self, n_trials: int, algorithm: Any = "tpe", seed: int | None = 0,
                 pruner: str | optuna.pruners.BasePruner | None = None, timeout: float | None = None,
                 progress: bool = True, device: str | torch.device | None = None) -> "Study":
        """Run ``n_trials`` more trials with ``algorithm`` (any name of
        :data:`automl.sampling.samplers.ALGORITHMS`, a ``pg.DNAGenerator`` or an Optuna sampler)."""
        if not isinstance(n_trials, int) or n_trials <= 0:
            raise SearchSpaceError(f"n_trials must be a positive integer, got {n_trials!r}.")
        multi = self.objective.multi
        if multi and pruner not in (None, "none"):
            raise SearchSpaceError("pruning needs a single objective (Optuna cannot prune multi-objective "
                                   "trials); drop the pruner or use a weighted-sum Objective.")
        space, spec, task = self.space, dna_spec(self.space), self.task
        self.optuna.sampler = make_sampler(algorithm, space, seed, multi)
        self.optuna.pruner = _pruner(pruner)

        bar = tqdm(total=n_trials, disable=not progress, desc=self.name, unit="trial")
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in range(n_trials):
            if deadline is not None and time.monotonic() > deadline:
                break
            trial = self.optuna.ask()
            try:
                values = self._run_trial(trial, space, spec, task, device, multi)
            except optuna.TrialPruned:
                self.optuna.tell(trial, state=TrialState.PRUNED)
            except AutomlError as e:
                trial.set_user_attr(FAIL_ATTR, f"{type(e).__name__}: {e}")
                self.optuna.tell(trial, state=TrialState.FAIL)
                logger.warning("trial %d failed: %s", trial.number, e)
                if isinstance(e, StudyError):  # the study itself can't go on (e.g. space exhausted)
                    raise
            except BaseException:
                self.optuna.tell(trial, state=TrialState.FAIL)
                raise
            else:
                self.optuna.tell(trial, values)
                prune_artifacts(self.artifact_store, self.optuna, self.keep_artifacts,
                                self._removed_artifacts)
                if not multi:
                    bar.set_postfix(best=f"{self.optuna.best_value:.4f}")
            bar.update()
        bar.close()
        return self

    def _run_trial(self, trial: optuna.Trial, space: Any, spec: Any, task: Task,
                   device: str | torch.device | None, multi: bool) -> float | tuple[float, ...]:
        """Materialize the trial's recipe, store it, fit it, store its metrics; its objective values."""
        dna = suggest(trial, space, spec)
        trial.set_user_attr(DNA_ATTR, pg.to_json_str(dna))
        previous = self._same_recipe(trial)
        if previous is not None:  # don't train a recipe twice: reuse its result (Optuna FAQ)
            for key, value in previous.user_attrs.items():
                if key not in (PROPOSAL_ATTR, ARTIFACT_ATTR):
                    trial.set_user_attr(key, value)
            trial.set_user_attr(DUPLICATE_ATTR, previous.number)
            return previous.value if len(previous.values) == 1 else tuple(previous.values)
        recipe = pg.materialize(space, dna)
        trial.set_user_attr(RECIPE_ATTR, recipe.to_json_str())
        trial.set_user_attr(LABELS_ATTR, recipe.labels())
        pruning = not multi and not isinstance(self.optuna.pruner, optuna.pruners.NopPruner)
        result = fit(recipe, task, device=device, report=_reporter(trial) if pruning else None)
        for key, value in result.metrics.items():
            trial.set_user_attr(key, value)
        save_trained_states(self.artifact_store, trial, [s.name for s in task.subtasks], result.trained_states)
        return self.objective.values(result)

    def _same_recipe(self, trial: optuna.Trial) -> FrozenTrial | None:
        """A completed, trained trial with exactly this trial's parameters, if any."""
        for t in self.trials((TrialState.COMPLETE,)):
            if t.params == trial.params and DUPLICATE_ATTR not in t.user_attrs:
                return t
        return None

    # -- reviewing --------------------------------------------------------------------------
    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.optuna.get_trials(deepcopy=False, states=states)

    def _trial(self, number: int) -> FrozenTrial:
        for t in self.trials():
            if t.number == number:
                return t
        raise StudyError(f"study {self.name!r} has no trial {number}; it has trials 0..{len(self.trials()) - 1}.")

    def recipe(self, trial: int) -> Recipe:
        """The stored recipe of trial ``trial``, rebuilt from its JSON (trusted types only)."""
        t = self._trial(trial)
        if RECIPE_ATTR not in t.user_attrs:
            raise StudyError(f"trial {trial} of {self.name!r} stored no recipe (state {t.state.name}).")
        return load_symbolic(t.user_attrs[RECIPE_ATTR])

    def metrics(self, trial: int) -> dict[str, Any]:
        """The stored metrics (and failure reason, if any) of one trial."""
        t = self._trial(trial)
        return {k: v for k, v in t.user_attrs.items() if k not in (RECIPE_ATTR, DNA_ATTR, PROPOSAL_ATTR, LABELS_ATTR)}

    def reproduce(self, trial: int, device: str | torch.device | None = None) -> Result:
        """Re-run trial ``trial``'s stored recipe on the study's task."""
        return fit(self.recipe(trial), self.task, device=device)

    def export(self, trial: int, path: str | Path, device: str | torch.device | None = None) -> list[Path]:
        """Write trial ``trial``'s trained adapter under ``path``: peft's format
        (``adapter_config.json`` + ``adapter_model.safetensors``) for the LoRA family, merged
        weights otherwise; one folder per subtask when the task has several. Uses the stored
        weights of the best trials, else re-trains the recipe (seeded, so the same weights)."""
        recipe, subtasks = self.recipe(trial), self.task.subtasks
        states = load_trained_states(self.artifact_store, self._trial(trial), [s.name for s in subtasks])
        if states is None:
            states = fit(recipe, self.task, device=device).trained_states
        path = Path(path)
        return [export_adapter(recipe.adapter, state, self.task.initial_model(sub),
                               path if len(subtasks) == 1 else path / sub.name, prefix=self.task.export_prefix)
                for sub, state in zip(subtasks, states)]

    def leaderboard(self, top: int | None = None) -> pd.DataFrame:
        """Completed trials, best first: trial, score (or each objective), metrics, the recipe's
        labels (adapter, quant, merge) and searched values, seconds. Indexed by ``rank`` (1 = best).
        A trial that repeated an earlier recipe (``automl:duplicate_of``) is listed once, as that one."""
        trials = [t for t in self.trials((TrialState.COMPLETE,)) if DUPLICATE_ATTR not in t.user_attrs]
        frame = _frame(trials, self.objective)
        if frame.empty:
            return frame
        if self.objective.multi:
            first = self.objective.names[0]
            frame = frame.sort_values([first, "trial"], ascending=[self.objective.directions[0] == "minimize", True])
        else:
            frame = frame.sort_values(["score", "trial"], ascending=[False, True])
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="rank")
        return frame.head(top) if top else frame

    def pareto_front(self) -> pd.DataFrame:
        """The Pareto-optimal trials of a multi-objective study (leaderboard rows)."""
        if not self.objective.multi:
            raise StudyError(f"study {self.name!r} has a single objective; use leaderboard(), or create "
                             f"a study with Objective(maximize=[...], minimize=[...]).")
        best = {t.number for t in self.optuna.best_trials}
        board = self.leaderboard()
        return board[board["trial"].isin(best)]


def _reporter(trial: optuna.Trial):
    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (accuracy {value:.3f})")
    return report


def _short(name: str) -> str:
    """``adapter[LoRA].rank`` → ``rank``."""
    return re.sub(r"\[[^\]]*\]", "", name).split(".")[-1]


def _field_short(name: str) -> str:
    """``quant[Quantization#2].bits`` → ``quant.bits``."""
    parts = re.sub(r"\[[^\]]*\]", "", name).split(".")
    return f"{parts[0]}.{parts[-1]}" if len(parts) > 1 else parts[0]


def _frame(trials: list[FrozenTrial], objective: Objective) -> pd.DataFrame:
    """Leaderboard rows; searched values under short names (``adapter[LoRA].rank`` → ``rank``)
    where no trial has two active parameters of that short name and no metric has that name;
    else under the recipe field and short name (``quant[Quantization#2].bits`` → ``quant.bits``,
    since ``bits`` is the bits-per-parameter metric); else the full name."""
    params = sorted({p for t in trials for p in t.params}, key=lambda p: p)
    label_keys = ("adapter", "quant", "merge", "mitigation")
    reserved = {"trial", "score", "seconds", *HEAD_METRICS, *TAIL_METRICS, *label_keys}
    short: dict[str, str] = {}
    for naming in (_short, _field_short, str):
        for p in params:
            if p in short:
                continue
            name = naming(p)
            clash = name in reserved or any(sum(1 for q in t.params if naming(q) == name) > 1 for t in trials)
            if not clash or naming is str:
                short[p] = name
    subtask_metrics = sorted({k for t in trials for k in t.user_attrs if k.startswith("accuracy/")})
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number}
        if objective.multi:
            row.update({f"objective:{n}" if n in HEAD_METRICS else n: v for n, v in zip(objective.names, t.values)
                        if n not in HEAD_METRICS})
        else:
            row["score"] = t.value
        for m in HEAD_METRICS:
            row[m] = t.user_attrs.get(m, math.nan)
        labels = t.user_attrs.get(LABELS_ATTR, {})
        for key in label_keys:
            row[key] = labels.get(key)
            for p in params:
                if p.startswith(key + "[") or p.startswith(key + "."):
                    row[short[p]] = t.params.get(p, row.get(short[p]))
        for p in params:
            if p not in label_keys and not any(p.startswith(k + "[") or p.startswith(k + ".") for k in label_keys):
                row[short[p]] = t.params.get(p, row.get(short[p]))
        for m in subtask_metrics + list(TAIL_METRICS):
            row[m] = t.user_attrs.get(m, math.nan)
        row["seconds"] = t.user_attrs.get("seconds", math.nan)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(subtask_metrics) <= 1 and not frame.empty:
        frame = frame.drop(columns=subtask_metrics)
    if not frame.empty and (frame["mitigation"] == "none").all():
        frame = frame.drop(columns=["mitigation"])
    return frame


def search(space: Any, task: str | Task = "digits", objective: Objective | None = None,
           algorithm: Any = "tpe", n_trials: int = 20, study_name: str | None = None,
           storage: str | None = None, seed: int | None = 0, pruner: str | optuna.pruners.BasePruner | None = None,
           timeout: float | None = None, progress: bool = True, device: str | torch.device | None = None,
           artifact_store: Any = None) -> Study:
    """Search ``space`` (a symbolic ``Recipe`` with hyper values) on ``task``; returns the study.

    An existing ``study_name`` is resumed (the same space is required; another algorithm is
    allowed, e.g. random warm-up then TPE). Storage defaults to ``sqlite:///studies/<name>.db``;
    the best trials' trained weights go to ``artifact_store`` (default ``studies/artifacts/<name>``).
    """
    objective = objective if objective is not None else Objective()
    if not isinstance(objective, Objective):
        raise SearchSpaceError(f"objective must be an automl.Objective, got {type(objective).__name__}.")
    name = study_name or f"{resolve(task).name}-search"
    study = Study.create(name, space, task, objective, storage, artifact_store)
    return study.optimize(n_trials, algorithm=algorithm, seed=seed, pruner=pruner, timeout=timeout,
                          progress=progress, device=device)
