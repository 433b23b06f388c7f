"""What a study and each trial store: one schema.

Bookkeeping lives in Optuna's ``system_attrs`` (``automl:*`` keys, ``fail_reason``); a trial's
``user_attrs`` hold its metrics only (the names of :mod:`automl.metrics`), so dashboards show
metrics and ``Study.metrics`` needs no exclusion list. Studies written before this schema kept
bookkeeping in ``user_attrs``; :func:`get` still reads them there.

Everything read back is untrusted: symbolic values go through :func:`automl.symbolic.load_symbolic`
(exact allow-listed classes, no imports, no pickle).
"""
from __future__ import annotations

import re
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from automl.symbolic import Trusted, load_symbolic

# -- trial bookkeeping (system_attrs) ----------------------------------------------------------
RECIPE = "automl:recipe"            # the materialized Recipe, JSON
DNA = "automl:dna"                  # its DNA, JSON
PROPOSAL = "automl:proposal"        # a PyGlove generator's proposal with its metadata, JSON
LABELS = "automl:labels"            # {"adapter": "LoRA", "quant": "int4", ...}
DUPLICATE_OF = "automl:duplicate_of"  # the trial whose recipe this one repeated
ARTIFACT = "automl:artifact"        # artifact id of the trained weights
HEARTBEAT = "automl:heartbeat"      # last heartbeat (journal storage)
FAIL_REASON = "fail_reason"         # why a FAIL failed (also Ctrl-C, a dead worker)
WORKER = "automl:worker"            # the seed the worker's sampler ran with
PER_RUN = {FAIL_REASON, HEARTBEAT, ARTIFACT, DUPLICATE_OF}   # not copied to a retry
# keys older studies stored in user_attrs
_LEGACY = {"recipe": RECIPE, DNA: DNA, PROPOSAL: PROPOSAL, LABELS: LABELS, DUPLICATE_OF: DUPLICATE_OF,
           ARTIFACT: ARTIFACT, FAIL_REASON: FAIL_REASON}
_LEGACY_BY_KEY = {v: k for k, v in _LEGACY.items()}

# -- study bookkeeping (study system_attrs) ----------------------------------------------------
SPACE, SPACE_HASH = "automl:space", "automl:space_hash"
TASK, TASK_REF, OBJECTIVE = "automl:task", "automl:task_ref", "automl:objective"

_ARTIFACT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def get(trial: FrozenTrial, key: str, default: Any = None) -> Any:
    """A trial's bookkeeping value (system attribute; user attribute in older studies)."""
    if key in trial.system_attrs:
        return trial.system_attrs[key]
    legacy = _LEGACY_BY_KEY.get(key)
    return trial.user_attrs.get(legacy, default) if legacy else default


def put(study: optuna.Study, trial: "optuna.Trial | FrozenTrial", key: str, value: Any) -> None:
    """Store a bookkeeping value on a running trial."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def put_many(storage: Any, trial: "optuna.Trial | FrozenTrial", system: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None, study: dict[str, Any] | None = None,
             last: bool = False) -> None:
    """Store bookkeeping values (system attributes) and metrics (user attributes, one per metric,
    as before) on a running trial, and bookkeeping values of its study (system attributes;
    ``trial`` is then an :class:`optuna.Trial`), in one storage round trip where the storage can
    batch (automl's RDB and journal storages: :meth:`set_trial_attrs`), else one write per key.
    ``last``: the trial's last write before it finishes, which a storage may make with that
    state change (automl's RDB storage)."""
    system, metrics, study = dict(system or {}), dict(metrics or {}), dict(study or {})
    batch = getattr(storage, "set_trial_attrs", None)
    if batch is not None:
        batch(trial._trial_id, metrics, system, study, last=last)
        return
    for key, value in system.items():
        storage.set_trial_system_attr(trial._trial_id, key, value)
    for key, value in metrics.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)
    for key, value in study.items():
        storage.set_study_system_attr(trial.study._study_id, key, value)


def metrics(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's metrics (its user attributes, minus bookkeeping older studies kept there)."""
    return {k: v for k, v in trial.user_attrs.items() if k not in _LEGACY}


def study_get(study: optuna.Study, key: str, default: Any = None) -> Any:
    """A study's bookkeeping value (system attribute; user attribute in older studies)."""
    system = study._storage.get_study_system_attrs(study._study_id)
    return system[key] if key in system else study.user_attrs.get(key, default)


def study_put(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def is_automl(study: optuna.Study) -> bool:
    return study_get(study, SPACE) is not None


def where(study_name: str, trial: FrozenTrial | None, key: str) -> str:
    """``study 'x', trial 3, field 'automl:recipe'`` for error messages."""
    at = f", trial {trial.number}" if trial is not None else ""
    return f"study {study_name!r}{at}, field {key!r}"


def load(study_name: str, trial: FrozenTrial | None, key: str, text: Any, trusted: Trusted = (),
         expect: Any = None) -> Any:
    """A stored symbolic value, through the trusted loader."""
    return load_symbolic(text, trusted, where=where(study_name, trial, key), expect=expect)


def artifact_id(study_name: str, trial: FrozenTrial) -> str | None:
    """The trial's artifact id, if any; one that is not an Optuna artifact id (a path, ``..``) is
    refused rather than handed to the artifact store."""
    from automl.errors import StudyError
    value = get(trial, ARTIFACT)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ARTIFACT_ID.match(value):
        raise StudyError(f"{where(study_name, trial, ARTIFACT)}: {str(value)[:80]!r} is not an artifact id; "
                         f"the stored weights were not read.")
    return value


def fail_reason(error: BaseException) -> str:
    """What a FAIL stores: the exception's type and message (one line), never empty."""
    if isinstance(error, KeyboardInterrupt):
        return "KeyboardInterrupt: interrupted (Ctrl-C or SIGINT) while the trial ran"
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else f"{type(error).__name__} (no message)"


def mark_stale(storage: Any, trial_ids: list[int], grace: float) -> None:
    """Give trials about to be failed as stale their reason (before Optuna fails them)."""
    for trial_id in trial_ids:
        try:
            storage.set_trial_system_attr(
                trial_id, FAIL_REASON, f"worker lost: no heartbeat for over {grace:g} s (killed, crashed or "
                                       f"disconnected); the trial is re-queued for another worker")
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError, RuntimeError):
            pass
