"""Studies: an Optuna study that stores symbolic recipes, metrics and failures.

Optuna's storage is the single source of truth: a study lives in any Optuna storage URL
(SQLite under ``studies/`` by default; PostgreSQL or MySQL for many machines; ``journal:PATH``
for Optuna's journal file, several processes on one machine).

- :mod:`automl.study.storage`: opening storages (read-only checks, heartbeats, masked URLs)
- :mod:`automl.study.records`: what a study and a trial store (bookkeeping in ``system_attrs``,
  metrics in ``user_attrs``), read back through the trusted loader
- :mod:`automl.study.loop`: the trial loop on Optuna's ``optimize``
- :mod:`automl.study.leaderboard`: the leaderboard
- :mod:`automl.study.study`: :class:`Study`, :func:`search`, :func:`list_studies`
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# imported on first use: ``automl.study.records`` (read by the samplers) does not import the
# whole of :class:`Study` (and with it the samplers: no import cycle)
_LAZY = {"Heartbeat": "storage", "default_storage": "storage", "mask_url": "storage", "open_storage": "storage",
         "Study": "study", "list_studies": "study", "search": "study"}

if TYPE_CHECKING:
    from automl.study.storage import Heartbeat, default_storage, mask_url, open_storage  # noqa: F401
    from automl.study.study import Study, list_studies, search  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'automl.study' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"automl.study.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["Heartbeat", "Study", "default_storage", "list_studies", "mask_url", "open_storage", "search"]
