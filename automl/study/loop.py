"""The trial loop, on Optuna's own ``Study.optimize`` (heartbeats, stale-trial retries, catch,
callbacks): one trial = suggest the active decisions → skip a recipe already in the study →
fit → store metrics. ``n_new`` counts trials that tried a recipe new to the study; repeats
don't count, and an exhausted space stops the loop with a :class:`StudyError`.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import optuna
import pyglove as pg
import torch
from optuna.trial import FrozenTrial, TrialState

from automl.artifacts import prune_artifacts, save_trained_states
from automl.errors import AutomlError, StudyError
from automl.sampling.decode import Decoder
from automl.sampling.space import dna_spec, space_size, suggest
from automl.study import records
from automl.trainer import fit

if TYPE_CHECKING:
    from automl.study.study import Study

logger = logging.getLogger("automl")
MAX_REPEATS_IN_A_ROW = 50
_TRIED = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def distinct_recipes(trials: list[FrozenTrial]) -> int:
    """Recipes in the study: completed, running or queued trials that are not repeats."""
    return len({_key(t.params) for t in trials
                if t.state in _TRIED and t.params and records.get(t, records.DUPLICATE_OF) is None})


class TrialRunner:
    """The objective Optuna's ``optimize`` calls, and the callback that counts and stops."""

    def __init__(self, study: "Study", n_new: int, device: str | torch.device | None,
                 spec: pg.geno.Space | None = None):
        self.study = study
        self.space = study.space
        self.spec = spec or dna_spec(self.space)
        self.size = space_size(self.space, self.spec)
        self.decoder = Decoder(self.space, self.spec)   # a DNA into a recipe, as pg.materialize does
        self.task = study.task
        self.multi = study.objective.multi
        self.device = device
        self.n_new = n_new
        self.added = 0
        self.repeats_in_a_row = 0
        self.fatal: StudyError | None = None
        # writes go to the storage itself (Optuna wraps an RDB storage in a read cache)
        self.storage = getattr(study, "_raw_storage", None) or study.optuna._storage
        self.trials: list[FrozenTrial] = []   # the study's trials as of the last finished trial

    # -- the objective ----------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as e:
            try:
                records.put(trial.study, trial, records.FAIL_REASON, records.fail_reason(e))
            except Exception:  # noqa: BLE001 - the storage itself failed: nothing more to record
                pass
            if isinstance(e, StudyError):     # the study itself can't go on (e.g. space exhausted)
                self.fatal = e
                trial.study.stop()
            if isinstance(e, AutomlError):
                logger.warning("trial %d failed: %s", trial.number, e)
            raise

    def _run(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        dna = suggest(trial, self.space, self.spec)
        original = self._original(trial)
        if original is not None:
            return self._repeat(trial, original, pg.to_json_str(dna))
        recipe = self.decoder.decode(dna)
        # one write: what the trial is, stored before it trains (a failure keeps it)
        records.put_many(self.storage, trial, {records.DNA: pg.to_json_str(dna), records.RECIPE: recipe.to_json_str(),
                                               records.LABELS: recipe.labels()})
        # intermediate values only when a pruner can use them (evaluating costs time on big models)
        pruning = not self.multi and not isinstance(trial.study.pruner, optuna.pruners.NopPruner)
        result = fit(recipe, self.task, device=self.device, report=_reporter(trial) if pruning else None)
        kept: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        if result.trained_states:   # a replayed (tabular) result has no weights to keep
            kept = save_trained_states(self.study.artifact_store, trial, [s.name for s in self.task.subtasks],
                                       result.trained_states)
        # one write: every metric, and where the weights are (the trial's and the study's records)
        records.put_many(self.storage, trial, kept[0], metrics=result.metrics, study=kept[1], last=True)
        return self.study.objective.values(result)

    def _original(self, trial: optuna.Trial) -> FrozenTrial | None:
        """An earlier trial (any worker) with exactly this trial's parameters that is completed,
        running or queued, and not itself a repeat. The trials are those Optuna read for this
        trial's sampling (its per-trial cache, refreshed at every ``ask``; read now if the sampler
        read none): a recipe another worker started in the milliseconds since is not seen, as it
        would not be by a fresh read made just before that worker's write either."""
        params = trial.params
        for t in trial.study._get_trials(deepcopy=False, states=_TRIED, use_cache=True):
            if (t.number < trial.number and t.params == params
                    and records.get(t, records.DUPLICATE_OF) is None):
                return t
        return None

    def _repeat(self, trial: optuna.Trial, original: FrozenTrial, dna: str) -> float | tuple[float, ...]:
        """Don't train a recipe twice (Optuna FAQ): a completed one's result is reused; one still
        running elsewhere makes this trial PRUNED. Either way it is marked ``duplicate_of``."""
        system: dict[str, Any] = {records.DNA: dna, records.DUPLICATE_OF: original.number}
        if original.state != TrialState.COMPLETE:
            records.put_many(self.storage, trial, system)
            raise optuna.TrialPruned(f"same recipe as trial {original.number}, which is still running")
        for key in (records.RECIPE, records.LABELS):
            value = records.get(original, key)
            if value is not None:
                system[key] = value
        records.put_many(self.storage, trial, system, records.metrics(original))
        return original.value if len(original.values) == 1 else tuple(original.values)

    # -- the callback -----------------------------------------------------------------------
    def after(self, optuna_study: optuna.Study, trial: FrozenTrial) -> None:
        """Count new recipes, prune stored weights, stop when done or when nothing new is left.
        One read of the study's trials serves them all (and the progress bar: :attr:`trials`)."""
        self.trials = optuna_study.get_trials(deepcopy=False)
        if trial.state == TrialState.COMPLETE:
            prune_artifacts(self.study.artifact_store, optuna_study, self.study.keep_artifacts,
                            self.study._removed_artifacts, trials=self.trials)
        if records.get(trial, records.DUPLICATE_OF) is not None:
            self.repeats_in_a_row += 1
        else:
            self.added += 1
            self.repeats_in_a_row = 0
        if self.added >= self.n_new or self.fatal is not None:
            optuna_study.stop()
            return
        if distinct_recipes(self.trials) >= self.size:
            self.fatal = exhausted(self.study.name, self.size, self.added, self.n_new)
            optuna_study.stop()
        elif self.repeats_in_a_row >= MAX_REPEATS_IN_A_ROW:
            self.fatal = StudyError(
                f"the algorithm proposed {self.repeats_in_a_row} recipes in a row that study {self.study.name!r} "
                f"already has ({self.added} of {self.n_new} new added); the space is nearly exhausted: "
                f"try --algorithm random, or widen the space.")
            optuna_study.stop()


def exhausted(name: str, size: float, added: int, requested: int) -> StudyError:
    return StudyError(f"the search space is exhausted: all {size:g} of its recipes are in study {name!r} "
                      f"({added} of the {requested} requested were added); widen the space or start a new study.")


def _reporter(trial: optuna.Trial):
    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (accuracy {value:.3f})")
    return report
