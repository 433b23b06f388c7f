"""Test settings: studies and caches (AUTOML_HOME) in temporary folders; quiet Optuna."""
import os

import optuna
import pytest
import torch

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True, scope="session")
def _studies_dir(tmp_path_factory):
    os.environ["AUTOML_STUDIES"] = str(tmp_path_factory.mktemp("studies"))
    os.environ["AUTOML_HOME"] = str(tmp_path_factory.mktemp("automl-home"))  # caches, shared by the session
    yield


@pytest.fixture
def studies(tmp_path, monkeypatch):
    """A fresh, empty studies folder for one test (caches stay in the session's AUTOML_HOME)."""
    monkeypatch.setenv("AUTOML_STUDIES", str(tmp_path))
    return tmp_path
