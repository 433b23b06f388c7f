"""Trained adapter weights kept beside a study, in an Optuna artifact store.

A trial's trained state (``Adapter.trained_state`` per subtask) is one safetensors file with
keys ``<subtask>/<tensor>``, kept in an Optuna artifact store (any store
works: the local default ``studies/artifacts/<study>``, a shared folder, S3 or GCS for many
machines). Only the best trials keep theirs: the ``keep`` best by score, or the Pareto front of a
multi-objective study.

Linking. ``optuna.artifacts.upload_artifact`` links a file to its trial through a trial system
attribute, which can't change once the trial is finished, so a pruned file would stay listed
(optuna-dashboard answers HTTP 500 for it). The file is therefore written to the store directly;
the trial records its id (``automl:artifact``) and the study links it for optuna-dashboard with a
mutable study system attribute ``dashboard:artifacts:<trial_id>:<artifact_id>`` holding Optuna's
``ArtifactMeta`` (the key optuna-dashboard lists as the trial's artifacts). Pruning first sets
that attribute to JSON ``null``, as optuna-dashboard's own delete does (listings skip it), then
removes the file.
"""
from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

import optuna
import torch
from optuna.artifacts import ArtifactMeta, FileSystemArtifactStore, download_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState
from safetensors.torch import load_file, save_file

from automl.errors import AutomlError
from automl.paths import studies_dir
from automl.study import records

ARTIFACT_ATTR = records.ARTIFACT
DASHBOARD_LINK = "dashboard:artifacts:"   # optuna-dashboard's study-level key prefix for a trial's artifacts
WEIGHTS_MIMETYPE = "application/octet-stream"


def link_key(trial_id: int, artifact_id: str) -> str:
    """The study system attribute that lists ``artifact_id`` among trial ``trial_id``'s artifacts
    in optuna-dashboard."""
    return f"{DASHBOARD_LINK}{trial_id}:{artifact_id}"


def link(trial_id: int, artifact_id: str, filename: str) -> dict[str, str]:
    """The study system attribute that lists a stored file among the trial's artifacts (a
    mutable study attribute, unlike the trial's own), as ``{key: value}``."""
    meta = ArtifactMeta(artifact_id=artifact_id, filename=filename, mimetype=WEIGHTS_MIMETYPE, encoding=None)
    return {link_key(trial_id, artifact_id): json.dumps(asdict(meta))}


def unlink(storage, study_id: int, trial_id: int, artifact_id: str) -> None:
    """Drop the listing (JSON ``null``, which optuna-dashboard skips; a study attribute can't be
    deleted through Optuna's storage API)."""
    storage.set_study_system_attr(study_id, link_key(trial_id, artifact_id), json.dumps(None))


class LocalArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store whose folder is created on the first upload, so
    opening a study to read it creates nothing."""

    def write(self, artifact_id: str, content_body) -> None:
        Path(self._base_path).mkdir(parents=True, exist_ok=True)
        super().write(artifact_id, content_body)


def default_store(study_name: str) -> FileSystemArtifactStore:
    """``studies/artifacts/<study>`` (created on the first upload)."""
    return LocalArtifactStore(str(studies_dir(create=False) / "artifacts" / study_name))


def save_trained_states(store, trial: optuna.Trial, subtasks: list[str],
                        states: list[dict[str, torch.Tensor]]) -> tuple[dict[str, str], dict[str, str]]:
    """Write one trial's trained states to the store. Returns what records them, for the caller to
    store with the trial's metrics in one write: the trial's system attribute (the artifact id)
    and the study's that links it for optuna-dashboard (see the module docstring)."""
    tensors = {f"{sub}/{key}": value.contiguous() for sub, state in zip(subtasks, states)
               for key, value in state.items()}
    artifact_id = str(uuid.uuid4())
    filename = f"trial-{trial.number}.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        save_file(tensors, str(path), metadata={"subtasks": ",".join(subtasks)})
        with open(path, "rb") as f:
            store.write(artifact_id, f)
    return {records.ARTIFACT: artifact_id}, link(trial._trial_id, artifact_id, filename)


def load_trained_states(store, trial: optuna.trial.FrozenTrial, subtasks: list[str],
                        study_name: str = "?") -> list[dict[str, torch.Tensor]] | None:
    """The trained states of one trial, per subtask, or ``None`` when none are stored (or the
    stored id no longer resolves). A stored id that is not an artifact id is refused."""
    artifact_id = records.artifact_id(study_name, trial)
    if not artifact_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except (ArtifactNotFound, FileNotFoundError):
            return None
        try:
            tensors = load_file(str(path))  # safetensors: tensors only, never pickle
        except Exception:  # noqa: BLE001 - a damaged file is as good as none: the caller re-trains
            return None
    return [{k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == sub} for sub in subtasks]


def prune_artifacts(store, study: optuna.Study, keep: int, removed: set[str],
                    trials: list[optuna.trial.FrozenTrial] | None = None) -> None:
    """Remove stored weights of finished trials no longer among the best (``keep`` by score, or
    the Pareto front). A finished trial's attributes are frozen, so a removed artifact is simply
    absent from the store (:func:`load_trained_states` then returns ``None``); its dashboard
    listing is unlinked first (:func:`unlink`). ``removed`` holds the ids already removed (or
    found gone), so each is tried once. ``trials``: the study's trials, when the caller has just
    read them (else they are read here, once)."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(study.directions) > 1:
        best = {t.number for t in study.best_trials}
    else:
        reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best = {t.number for t in sorted(done, key=lambda t: t.value, reverse=reverse)[:keep]}
    for t in trials:
        try:
            artifact_id = records.artifact_id(study.study_name, t)
        except AutomlError:
            continue  # not an artifact id (tampered): never handed to the store's remove
        if artifact_id and artifact_id not in removed and t.number not in best and t.state.is_finished():
            unlink(study._storage, study._study_id, t._trial_id, artifact_id)
            try:
                store.remove(artifact_id)
            except ArtifactNotFound:
                pass  # another worker removed it
            removed.add(artifact_id)
