"""Where studies and caches live: ``studies/`` under the working directory, or ``$AUTOML_STUDIES``."""
from __future__ import annotations

import os
from pathlib import Path


def studies_dir(create: bool = True) -> Path:
    """The folder holding SQLite studies, artifacts and caches (created on demand, unless
    ``create=False``: read-only commands create nothing)."""
    path = Path(os.environ.get("AUTOML_STUDIES", "studies"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    """A cache folder under ``studies/.cache/<kind>`` (git-ignored)."""
    path = studies_dir() / ".cache" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_cache_dir(kind: str) -> Path:
    """A per-user cache folder ``<home>/<kind>`` for large, study-independent files (converted
    pretrained models): ``$AUTOML_HOME``, else ``$XDG_CACHE_HOME/automl``, else ``~/.cache/automl``;
    independent of the working directory (created on demand)."""
    home = os.environ.get("AUTOML_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "automl"
    path = Path(home) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
