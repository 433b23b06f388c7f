"""The trainer: fine-tune a recipe on a task, deploy it, and measure it.

One readable loop in nanoGPT's shape. Per subtask: start from the task's initial model, apply
the adapter and quantization, train with AdamW (bf16 autocast on CUDA), merge the adapter into
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
from automl.recipe import Recipe
from automl.result import Result
from automl.spectral import DEFAULT_CACHE, SVDCache, spectral_report
from automl.tasks import Task, resolve
from automl.tasks.base import Data

Report = Callable[[int, float], None]
TOP_K = 10
REPORTS_PER_SUBTASK = 5


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(model: nn.Module, data: Data, recipe: Recipe, *, evaluate: Callable[[nn.Module], float] | None = None,
          report: Report | None = None, step_offset: int = 0) -> None:
    """Fine-tune ``model`` in place on ``data`` for ``recipe.steps`` AdamW steps.

    ``report(step, value)`` receives ``evaluate(model)`` a few times during training (an Optuna
    pruner may raise ``TrialPruned`` from it). A non-finite loss raises :class:`TrainingError`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the adapter left no trainable parameter; check its targets.")
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=recipe.lr)
    generator = torch.Generator().manual_seed(recipe.seed)
    every = max(1, recipe.steps // REPORTS_PER_SUBTASK)
    model.train()
    for step in range(1, recipe.steps + 1):
        batch = torch.randint(len(data), (recipe.batch_size,), generator=generator).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(data.x[batch])
        loss = nn.functional.cross_entropy(logits.float(), data.y[batch]) + recipe.adapter.penalty(model)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {step}; lower the learning rate "
                                f"(lr={recipe.lr:g}) or use fewer quantization levels.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if report is not None and evaluate is not None and (step % every == 0 or step == recipe.steps):
            report(step_offset + step, evaluate(model))
            model.train()  # evaluation left it in eval mode


def fit(recipe: Recipe, task: str | Task, device: str | torch.device | None = None,
        report: Report | None = None, svd_cache: SVDCache | None = None) -> Result:
    """Fine-tune ``recipe`` on ``task`` and measure the deployed model (see module docstring).

    Order: per subtask train → merge adapter → re-quantize; merge the subtask models; mitigate
    intruders (``recipe.mitigation``) and re-quantize; measure.
    """
    start = time.perf_counter()
    task = resolve(task)
    device = pick_device(device)
    pretrained = task.pretrained_model()
    layers = recipe.adapter.adapted_layers(pretrained)
    deployed, trained_states, train_seconds, trainable = [], [], 0.0, 0
    for i, sub in enumerate(task.subtasks):
        model = task.initial_model(sub).to(device)
        torch.manual_seed(recipe.seed + i)
        recipe.adapter.apply(model)
        recipe.quant.apply(model)
        trainable = trainable_parameters(model)
        train_data, test_data = task.on_device(sub.train, device), task.on_device(sub.test, device)
        t0 = time.perf_counter()
        train(model, train_data, recipe, evaluate=lambda m: task.accuracy(m, test_data),
              report=report, step_offset=i * recipe.steps)
        train_seconds += time.perf_counter() - t0
        trained_states.append({k: v.detach().cpu() for k, v in recipe.adapter.trained_state(model).items()})
        merge_adapters(model)
        deployed.append(recipe.quant.deploy(model))
    diagnostics: dict[str, float] = {}
    if len(deployed) == 1:
        final = deployed[0]
    else:
        base = {k: v.to(device) for k, v in pretrained.state_dict().items()}
        states = [m.state_dict() for m in deployed]
        final = copy.deepcopy(pretrained).to(device)
        final.load_state_dict(recipe.merge.merge(base, states))
        final = recipe.quant.deploy(final)
        tests = [task.on_device(s.test, device) for s in task.subtasks]
        diagnostics = merge_metrics(recipe.merge, final, states,
                                    lambda m: sum(task.loss(m, t) for t in tests) / len(tests))
    if recipe.mitigation is not None:
        recipe.mitigation.apply(pretrained, final, layers, cache=svd_cache or DEFAULT_CACHE)
        final = recipe.quant.deploy(final)  # the mitigated weights, re-quantized as deployed
    final.eval()
    metrics = measure(task, pretrained, final, layers, svd_cache)
    metrics.update(diagnostics)
    metrics["bits"] = float(recipe.quant.bits_per_parameter(final))
    metrics["trainable_params"] = float(trainable)
    metrics["train_seconds"] = train_seconds
    metrics["seconds"] = time.perf_counter() - start
    return Result(metrics=metrics, model=final, trained_states=trained_states)


def measure(task: Task, pretrained: nn.Module, model: nn.Module, layers: list[str],
            svd_cache: SVDCache | None = None) -> dict[str, float]:
    """Accuracy per subtask and mean, pretraining accuracy and forgetting, intruder dimensions.

    ``intruders`` sums the per-layer counts over layers whose smaller side exceeds ``TOP_K``: in
    a layer with at most ``TOP_K`` singular vectors the top-k is every vector (e.g. a 10-class
    head), so its count is reported as ``intruders/<layer>`` but kept out of the sum.
    """
    metrics: dict[str, float] = {}
    device = next(model.parameters()).device
    for sub in task.subtasks:
        metrics[f"accuracy/{sub.name}"] = task.accuracy(model, task.on_device(sub.test, device))
    metrics["accuracy"] = sum(metrics[f"accuracy/{s.name}"] for s in task.subtasks) / len(task.subtasks)
    metrics["pretrain_accuracy"] = task.accuracy(model, task.on_device(task.pretrain_data, device))
    metrics["forgetting"] = task.pretrained_accuracy - metrics["pretrain_accuracy"]
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
