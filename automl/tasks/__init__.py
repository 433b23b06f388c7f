"""Tasks: a pretrained model, fine-tuning subtasks and evaluations. ``get(name)`` for built-ins."""
from __future__ import annotations

from typing import Callable

from automl.errors import SearchSpaceError
from automl.tasks.base import Data, Subtask, Task
from automl.tasks.digits import DigitsMultitask, DigitsSeedsTask, DigitsTask
from automl.tasks.hf_causal_lm import HFCausalLM
from automl.tasks.hf_classification import HFClassification, RetrievalSkill


def _minilm(name: str) -> Task:
    from automl.tasks import minilm
    return minilm.minilm_sentiment() if name == "minilm-sentiment" else minilm.minilm_sentiment_topics()


def _smollm2(name: str) -> Task:
    from automl.tasks import smollm2
    return smollm2.smollm2_qa()

BUILTIN: dict[str, Callable[[], Task]] = {
    "digits": lambda: DigitsTask(("mirror",), name="digits"),
    "digits-multitask": lambda: DigitsMultitask(("mirror", "flip", "transpose"), name="digits-multitask"),
    "digits-seeds": lambda: DigitsSeedsTask((1, 2), name="digits-seeds"),
    "minilm-sentiment": lambda: _minilm("minilm-sentiment"),
    "minilm-sentiment-topics": lambda: _minilm("minilm-sentiment-topics"),
    "smollm2-qa": lambda: _smollm2("smollm2-qa"),
}
_INSTANCES: dict[str, Task] = {}


def get(name: str) -> Task:
    """The built-in task called ``name`` (one instance per process, so data loads once)."""
    if name not in BUILTIN:
        raise SearchSpaceError(f"unknown task {name!r}; built-in tasks are {sorted(BUILTIN)}, "
                               f"or pass an automl.Task object.")
    if name not in _INSTANCES:
        _INSTANCES[name] = BUILTIN[name]()
    return _INSTANCES[name]


def resolve(task: str | Task) -> Task:
    """A task given by name or as an object."""
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        return get(task)
    raise SearchSpaceError(f"task must be a built-in task name {sorted(BUILTIN)} or an automl.Task, "
                           f"got {type(task).__name__}.")


__all__ = ["BUILTIN", "Data", "DigitsMultitask", "DigitsSeedsTask", "DigitsTask", "HFCausalLM", "HFClassification", "RetrievalSkill",
           "Subtask", "Task", "get", "resolve"]
