"""Optuna's per-trial INFO lines ("Trial 3 finished with value ...") while automl runs.

automl prints its own progress (a bar, a leaderboard), so while :func:`automl.search` and
:meth:`automl.Study.optimize` run, Optuna's logger is lowered from its default INFO to WARNING
and restored afterwards. A level you set yourself other than INFO (DEBUG, WARNING, ERROR) is
left alone; to keep INFO, call ``automl.study.quiet_optuna(False)`` (the CLI's ``--verbose``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import optuna

_enabled = True


def quiet_optuna(enabled: bool = True) -> None:
    """Whether automl lowers Optuna's default INFO verbosity while it runs (default: yes)."""
    global _enabled
    _enabled = bool(enabled)


@contextmanager
def optuna_quiet() -> Iterator[None]:
    """Lower Optuna's verbosity from INFO to WARNING for the block (see the module)."""
    lower = _enabled and optuna.logging.get_verbosity() == optuna.logging.INFO
    if lower:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        if lower and optuna.logging.get_verbosity() == optuna.logging.WARNING:
            optuna.logging.set_verbosity(optuna.logging.INFO)
