"""automl: symbolic AutoML search over fine-tuning recipes.

A search space is an :class:`automl.Recipe` whose fields hold PyGlove hyper values; a search
algorithm (any Optuna sampler or PyGlove generator) proposes recipes; the trainer fine-tunes
each on a task and scores the deployed model on accuracy plus spectral penalties (intruder
dimensions), forgetting and bits per parameter. Every trial is stored in an Optuna study.
"""
import pyglove as pg

from automl import adapters, errors, merge, metrics, quant, spectral, tasks
from automl.devices import check_device
from automl.errors import SearchSpaceError
from automl.objective import Objective
from automl.recipe import Recipe
from automl.result import Result
from automl.study import Study, list_studies, search
from automl.tasks import Task
from automl.trainer import fit


def evaluate(recipe: Recipe, task: "str | Task" = "digits", device=None) -> Result:
    """Fine-tune one concrete ``recipe`` on ``task`` (no study) and return its :class:`Result`."""
    if not isinstance(recipe, Recipe):
        raise SearchSpaceError(f"evaluate takes an automl.Recipe, got {type(recipe).__name__}.")
    if not pg.is_deterministic(recipe):
        raise SearchSpaceError("this recipe still holds hyper values (pg.oneof, pg.floatv...); "
                               "use automl.search for a space, or fix every value.")
    check_device(device)
    return fit(recipe, task, device=device)


__all__ = ["Objective", "Recipe", "Result", "Study", "Task", "adapters", "errors", "evaluate", "fit",
           "list_studies", "merge", "metrics", "quant", "search", "spectral", "tasks"]
