"""Any PyGlove ``DNAGenerator`` (regularized evolution, NSGA-II, random, hill climbing...) as an
Optuna sampler, so PyGlove's algorithms share Optuna's storage, loop and leaderboard.

Before each trial the generator proposes a DNA; the trial's define-by-run walk
(:func:`automl.sampling.space.suggest`) then asks for each active decision and this sampler
answers from that DNA. Completed trials are fed back as rewards (PyGlove maximizes: minimized
objectives are negated). On a new process the generator's state is rebuilt with
``generator.recover`` from the DNAs stored on the study's completed trials.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import optuna
import pyglove as pg
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl.errors import StudyError
from automl.sampling.space import dna_params, dna_spec
from automl.study import records


def stored_proposal(study_name: str, trial: FrozenTrial, spec: pg.geno.Space) -> pg.DNA | None:
    """The DNA a PyGlove generator proposed for ``trial``, with the generator's metadata
    (``None`` for trials proposed by other samplers). Read through the trusted loader: only a
    ``pg.DNA`` of plain values is accepted."""
    text = records.get(trial, records.PROPOSAL)
    if text is None:
        return None
    dna = records.load(study_name, trial, records.PROPOSAL, text, expect=pg.DNA)
    try:
        dna.use_spec(spec)
    except Exception as e:  # noqa: BLE001 - a stored DNA that does not fit the space
        raise StudyError(f"{records.where(study_name, trial, records.PROPOSAL)}: the stored DNA does not fit "
                         f"the study's space ({type(e).__name__}).") from None
    return dna


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def reward(values: Sequence[float], directions: Sequence[StudyDirection]) -> float | tuple[float, ...]:
    """Optuna objective values as a PyGlove reward (to maximize)."""
    signed = tuple(v if d == StudyDirection.MAXIMIZE else -v for v, d in zip(values, directions))
    return signed[0] if len(signed) == 1 else signed


class PyGloveSampler(optuna.samplers.BaseSampler):
    """Drive an Optuna study over a PyGlove ``space`` with a PyGlove ``generator``.

    Proposals are deduplicated against every trial in the study (any state, any worker, any
    sampler), so one recipe is not trained twice; the generator is asked again, up to
    ``max_proposal_attempts`` times, before a repeat is accepted (a nearly exhausted space).
    PyGlove's own ``pg.geno.Deduping`` is not used: it is single-objective and per process.
    """

    def __init__(self, space: Any, generator: pg.DNAGenerator, max_proposal_attempts: int = 100):
        self._space = space
        self._spec = dna_spec(space)
        generator.setup(self._spec)
        self._generator = generator
        self._max_attempts = max_proposal_attempts
        self._recovered = False
        self._seen: set[str] = set()       # parameter keys of every trial in the study
        self._keyed: set[int] = set()      # numbers of the trials already in _seen
        self._proposals: dict[int, tuple[pg.DNA, dict[str, Any]]] = {}

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    @property
    def multi_objective(self) -> bool:
        """Whether the generator optimizes several objectives (takes tuple rewards)."""
        return self._generator.multi_objective

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self._recovered:
            self._recover(study)
        if trial.params:
            return  # a re-queued trial (a dead worker's retry, or enqueued): its recipe is fixed
        for t in study.get_trials(deepcopy=False):
            if t.number not in self._keyed and t.params:
                self._seen.add(_key(t.params))
                self._keyed.add(t.number)
        for _ in range(self._max_attempts):
            try:
                dna = self._generator.propose()
            except StopIteration:
                return  # exhausted: sample_independent reports it, the trial fails with that reason
            params = dna_params(self._space, self._spec, dna)
            if _key(params) not in self._seen:
                break
        self._seen.add(_key(params))
        self._proposals[trial.number] = (dna, params)
        # Keep the proposal itself (with the generator's metadata) for feedback and recovery.
        study._storage.set_trial_system_attr(trial._trial_id, records.PROPOSAL, pg.to_json_str(dna))

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if trial.number not in self._proposals:
            raise StudyError("the PyGlove algorithm has no new recipe to propose: the search space is exhausted.")
        params = self._proposals[trial.number][1]
        if param_name not in params:
            raise StudyError(f"parameter {param_name!r} is not a decision of this sampler's search space.")
        return params[param_name]

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        proposal = self._proposals.pop(trial.number, None)
        if proposal is not None and state == TrialState.COMPLETE and values is not None:
            self._generator.feedback(proposal[0], reward(values, study.directions))

    def _recover(self, study: optuna.Study) -> None:
        history = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            dna = stored_proposal(study.study_name, t, self._spec)
            if dna is not None and t.values is not None:
                history.append((dna, reward(t.values, study.directions)))
        if history:
            self._generator.recover(history)
        self._recovered = True
