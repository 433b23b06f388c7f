"""A trial's fine-tuned subtask model rebuilt from its stored trained state, without training.

The model is built as the trainer builds it (initial model → adapter → the task's trained
modules → quantization), the stored tensors are put back under the names they were read from
(:meth:`automl.adapters.Adapter.trained_state`, :meth:`automl.tasks.Task.trained_modules_state`),
the adapters are merged and the weights deployed at the recipe's precision. Tensors stored as
merged weights (the SVD family) are put back after merging.
"""
from __future__ import annotations

import torch
from torch import nn

from automl.adapters.base import merge_adapters
from automl.errors import StudyError
from automl.recipe import Recipe
from automl.tasks.base import Task
from automl.trainer import build_subtask_model


def subtask_model(recipe: Recipe, task: Task, index: int, state: dict[str, torch.Tensor]) -> nn.Module:
    """The deployed model of subtask ``index`` (before any merge across subtasks), on the CPU."""
    sub = task.subtasks[index]
    pretrained = task.pretrained_model()
    plan = recipe.adapter.plan(pretrained, within=task.adaptable_layers(pretrained))
    quantized = task.adaptable_layers(pretrained)
    with torch.random.fork_rng():   # the trainer's seeding, without touching the caller's generator
        model = build_subtask_model(recipe, task, index, plan, quantized, "cpu")
    rest = _put(model, state)
    merge_adapters(model)
    rest = _put(model, rest)
    if rest:
        raise StudyError(f"stored tensors {sorted(rest)[:4]} have no place in the {recipe.adapter.label} model "
                         f"of subtask {sub.name!r}; the stored weights don't match the stored recipe.")
    return recipe.quant.deploy(model, quantized).eval()


@torch.no_grad()
def _put(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy each tensor into ``model``'s tensor of that dotted name and shape (a parameter, a
    buffer, or a plain tensor attribute such as PiSSA's initial factors); return the others."""
    modules = dict(model.named_modules())
    rest = {}
    for key, tensor in state.items():
        owner, _, attr = key.rpartition(".")
        target = getattr(modules.get(owner), attr, None)
        if isinstance(target, torch.Tensor) and target.shape == tensor.shape:
            target.copy_(tensor.to(target.dtype))
        else:
            rest[key] = tensor
    return rest
