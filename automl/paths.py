"""Where studies and caches live.

- Studies (SQLite databases ``<name>.db``, trained weights under ``artifacts/<name>/``) go to
  ``./studies`` under the working directory, or ``$AUTOML_STUDIES``: a study belongs to a
  project.
- Caches (converted pretrained models, pretrained digits MLPs, tokenized data, SVDs of
  pretrained weights) go to one per-user folder, independent of the working directory:
  ``$AUTOML_HOME``, else ``$XDG_CACHE_HOME/automl``, else ``~/.cache/automl``. Every cached file
  is keyed by a hash of what it was built from, so studies share it safely.
"""
from __future__ import annotations

import os
from pathlib import Path


def studies_dir(create: bool = True) -> Path:
    """The folder holding SQLite studies and their artifacts (created on demand, unless
    ``create=False``: read-only commands create nothing)."""
    path = Path(os.environ.get("AUTOML_STUDIES", "studies"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def user_cache_dir(kind: str) -> Path:
    """A per-user cache folder ``<home>/<kind>``: ``$AUTOML_HOME``, else
    ``$XDG_CACHE_HOME/automl``, else ``~/.cache/automl``; independent of the working directory
    (created on demand)."""
    home = os.environ.get("AUTOML_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "automl"
    path = Path(home) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind (``svd``, ``tokens``, ``tasks``, ``models``): the per-user
    :func:`user_cache_dir`, whatever the working directory."""
    return user_cache_dir(kind)
