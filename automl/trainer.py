"""The trainer: fine-tune a recipe on a task, deploy it, and measure it.

One readable loop in nanoGPT's shape; everything model- and data-specific is the task's
(batches, loss, evaluation, the pretrained skill), so the same loop fine-tunes the digits MLP
and a Hugging Face transformer. Per subtask: start from the task's initial model, apply the
adapter and quantization, train with AdamW (bf16 autocast on CUDA), merge the adapter into
the weights and re-quantize as deployed. Several subtask models are merged by the recipe's merge
method. The deployed model is measured: per-subtask accuracy, pretraining-task accuracy
(forgetting), intruder dimensions against the pretrained weights, bits per parameter.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
from torch import nn

from automl.adapters.base import merge_adapters, trainable_parameters
from automl.errors import TrainingError
from automl.merge.diagnostics import merge_metrics
from automl.optim import AdamW
from automl.recipe import Recipe
from automl.result import Result
from automl.spectral import DEFAULT_CACHE, SVDCache, spectral_report
from automl.tasks import Task, resolve
from automl.tasks.base import Subtask

Report = Callable[[int, float], None]
TOP_K = 10
REPORTS_PER_SUBTASK = 5


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(model: nn.Module, task: Task, subtask: Subtask, recipe: Recipe, *,
          report: Report | None = None, step_offset: int = 0) -> None:
    """Fine-tune ``model`` in place on ``subtask`` for ``recipe.steps`` AdamW steps.

    Batches come from ``task.batches`` (seeded by ``recipe.seed``), the loss from ``task.loss``
    plus the adapter's penalty. ``report(step, accuracy)`` receives the subtask's held-out
    accuracy a few times during training (an Optuna pruner may raise ``TrialPruned`` from it);
    without ``report`` nothing is evaluated. A non-finite loss raises :class:`TrainingError`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the adapter left no trainable parameter; check its targets.")
    device = params[0].device
    optimizer = AdamW(params, lr=recipe.lr)   # torch's AdamW kernel, without torch._dynamo's import
    every = max(1, recipe.steps // REPORTS_PER_SUBTASK)
    batches = task.batches(subtask, recipe.batch_size, recipe.seed, device)
    model.train()
    for step, batch in zip(range(1, recipe.steps + 1), batches):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = task.loss(model, batch)
        loss = loss.float() + recipe.adapter.penalty(model)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {step}; lower the learning rate "
                                f"(lr={recipe.lr:g}) or use fewer quantization levels.")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if report is not None and (step % every == 0 or step == recipe.steps):
            report(step_offset + step, task.evaluate(model, subtask)["accuracy"])
            model.train()  # evaluation left it in eval mode


def build_subtask_model(recipe: Recipe, task: Task, index: int, plan, quantized, device) -> nn.Module:
    """Subtask ``index``'s model ready to train: its initial model, the adapter applied by
    ``plan`` (seeded ``recipe.seed + index``), the task's trained modules made trainable and
    ``quantized`` layers fake-quantized. :mod:`automl.tuned` rebuilds stored trials with it."""
    model = task.initial_model(task.subtasks[index]).to(device)
    torch.manual_seed(recipe.seed + index)
    recipe.adapter.apply(model, plan)
    task.prepare(model, task.subtasks[index])
    recipe.quant.apply(model, quantized)
    return model


def fit(recipe: Recipe, task: str | Task, device: str | torch.device | None = None,
        report: Report | None = None, svd_cache: SVDCache | None = None) -> Result:
    """Fine-tune ``recipe`` on ``task`` and measure the deployed model (see module docstring).

    Order: a result the task replays (``task.replay``, e.g. from a table) is returned as is; else
    plan the adapted layers on the pretrained model; per subtask apply the adapter and
    quantization, train, merge the adapter, re-quantize; merge the subtask models; mitigate
    intruders (``recipe.mitigation``) and re-quantize; measure.
    """
    start = time.perf_counter()
    task = resolve(task)
    replayed = task.replay(recipe)  # a tabular benchmark answers from its table
    if replayed is not None:
        return replayed
    device = pick_device(device)
    pretrained = task.pretrained_model()
    plan = recipe.adapter.plan(pretrained, within=task.adaptable_layers(pretrained))
    layers = list(plan)
    quantized = task.adaptable_layers(pretrained)
    deployed, trained_states, train_seconds, trainable = [], [], 0.0, 0
    for i, sub in enumerate(task.subtasks):
        model = build_subtask_model(recipe, task, i, plan, quantized, device)
        trainable = trainable_parameters(model)
        t0 = time.perf_counter()
        train(model, task, sub, recipe, report=report, step_offset=i * recipe.steps)
        train_seconds += time.perf_counter() - t0
        state = {**task.trained_modules_state(model, sub), **recipe.adapter.trained_state(model)}
        trained_states.append({k: v.detach().cpu() for k, v in state.items()})
        merge_adapters(model)
        deployed.append(recipe.quant.deploy(model, quantized))
    diagnostics: dict[str, float] = {}
    if len(deployed) == 1:
        final = deployed[0]
    else:
        common = task.merge_base(pretrained)
        base = None if common is None else {k: v.to(device) for k, v in common.items()}
        states = [m.state_dict() for m in deployed]
        final = copy.deepcopy(pretrained).to(device)
        # a subtask's own modules (its head) are taken whole from its model, not merged; the
        # diagnostics' linear path runs between trunks that all carry those trained heads
        owned = {k: v for sub, state in zip(task.subtasks, states) for module in task.owned_modules(sub)
                 for k, v in state.items() if k.startswith(module + ".")}
        final.load_state_dict({**recipe.merge.merge(base, states), **owned})
        final = recipe.quant.deploy(final, quantized)
        diagnostics = merge_metrics(recipe.merge, final, [{**state, **owned} for state in states],
                                    lambda m: sum(task.evaluate(m, s)["loss"] for s in task.subtasks) / len(task.subtasks))
    if recipe.mitigation is not None:
        recipe.mitigation.apply(pretrained, final, layers, cache=svd_cache or DEFAULT_CACHE)
        final = recipe.quant.deploy(final, quantized)  # the mitigated weights, re-quantized as deployed
    final.eval()
    metrics = measure(task, pretrained, final, layers, svd_cache)
    metrics.update(diagnostics)
    metrics["bits"] = float(recipe.quant.bits_per_parameter(final, quantized))
    metrics["trainable_params"] = float(trainable)
    metrics["train_seconds"] = train_seconds
    metrics["seconds"] = time.perf_counter() - start
    return Result(metrics=metrics, model=final, trained_states=trained_states)


def measure(task: Task, pretrained: nn.Module, model: nn.Module, layers: list[str],
            svd_cache: SVDCache | None = None) -> dict[str, float]:
    """The task's metrics per subtask (``accuracy/<subtask>``, ...) and their means, the pretrained
    skill (``pretrain_*``) and ``forgetting``, and the spectral report per adapted layer.

    ``intruders`` sums the per-layer counts over layers whose smaller side exceeds ``TOP_K``: in
    a layer with at most ``TOP_K`` singular vectors the top-k is every vector (e.g. a 10-class
    head), so its count is reported as ``intruders/<layer>`` but kept out of the sum.
    """
    metrics: dict[str, float] = {}
    per_subtask = {sub.name: task.evaluate(model, sub) for sub in task.subtasks}
    for key in next(iter(per_subtask.values())):
        for name, values in per_subtask.items():
            metrics[f"{key}/{name}"] = float(values[key])
        metrics[key] = sum(values[key] for values in per_subtask.values()) / len(per_subtask)
    skill = task.pretrain_metrics(model)
    metrics.update({k: float(v) for k, v in skill.items()})
    metrics["forgetting"] = float(task.forgetting(skill, task.pretrained_skill))
    report = spectral_report(pretrained, model, layers=layers, top_k=TOP_K, cache=svd_cache or DEFAULT_CACHE)
    modules = dict(model.named_modules())
    total = 0
    for name, spectrum in report.items():
        metrics[f"intruders/{name}"] = float(spectrum.intruders)
        metrics[f"effective_rank/{name}"] = float(spectrum.effective_rank_tuned)
        metrics[f"drift/{name}"] = float(spectrum.drift)
        metrics[f"overlap/{name}"] = float(spectrum.overlap)
        if min(modules[name].weight.shape) > TOP_K:
            total += spectrum.intruders
    metrics["intruders"] = float(total)
    for k, v in metrics.items():
        if isinstance(v, float) and math.isnan(v):
            raise TrainingError(f"metric {k} is NaN: the deployed model produced invalid outputs.")
    return metrics
