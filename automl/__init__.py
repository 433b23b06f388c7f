"""automl: symbolic AutoML search over fine-tuning recipes.

A search space is an :class:`automl.Recipe` whose fields hold PyGlove hyper values; a search
algorithm (any Optuna sampler or PyGlove generator) proposes recipes; the trainer fine-tunes
each on a task and scores the deployed model on accuracy plus spectral penalties (intruder
dimensions), forgetting and bits per parameter. Every trial is stored in an Optuna study.

Names are imported on first use (PEP 562), so ``import automl.errors`` or the CLI's argument
parsing does not import torch, and a worker imports only what it runs.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module defining it (a module itself when the name is a subpackage)
_LAZY = {
    "Objective": "automl.objective", "Recipe": "automl.recipe", "Result": "automl.result",
    "Study": "automl.study", "list_studies": "automl.study", "search": "automl.study",
    "Task": "automl.tasks", "fit": "automl.trainer", "check_device": "automl.devices",
}
_SUBMODULES = {"adapters", "errors", "merge", "metrics", "quant", "spectral", "tasks"}

if TYPE_CHECKING:
    from automl import adapters, errors, merge, metrics, quant, spectral, tasks  # noqa: F401
    from automl.result import Result as _Result
    from automl.objective import Objective  # noqa: F401
    from automl.recipe import Recipe  # noqa: F401
    from automl.result import Result  # noqa: F401
    from automl.study import Study, list_studies, search  # noqa: F401
    from automl.tasks import Task  # noqa: F401
    from automl.trainer import fit  # noqa: F401


def evaluate(recipe: "Recipe", task: "str | Task" = "digits", device=None) -> "_Result":
    """Fine-tune one concrete ``recipe`` on ``task`` (no study) and return its :class:`Result`."""
    import pyglove as pg

    from automl.devices import check_device
    from automl.errors import SearchSpaceError
    from automl.recipe import Recipe
    from automl.trainer import fit
    if not isinstance(recipe, Recipe):
        raise SearchSpaceError(f"evaluate takes an automl.Recipe, got {type(recipe).__name__}.")
    if not pg.is_deterministic(recipe):
        raise SearchSpaceError("this recipe still holds hyper values (pg.oneof, pg.floatv...); "
                               "use automl.search for a space, or fix every value.")
    check_device(device)
    return fit(recipe, task, device=device)


def __getattr__(name: str) -> Any:
    """``automl.Recipe``, ``automl.adapters``...: imported on first use, then a plain attribute."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        try:
            value = importlib.import_module(f"automl.{name}")   # a submodule (adapters, tasks, ...)
        except ModuleNotFoundError as e:
            if e.name != f"automl.{name}":
                raise
            raise AttributeError(f"module 'automl' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = ["Objective", "Recipe", "Result", "Study", "Task", "adapters", "errors", "evaluate", "fit",
           "list_studies", "merge", "metrics", "quant", "search", "spectral", "tasks"]
