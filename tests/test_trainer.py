"""The trainer on the digits tasks: metrics, forgetting, reporting, failure reasons."""
import pytest
import torch

import automl
from automl import adapters, tasks
from automl.errors import SearchSpaceError, TrainingError
from automl.trainer import fit


def test_digits_task_is_a_real_shift():
    task = tasks.get("digits")
    model = task.pretrained_model()
    assert task.accuracy(model, task.pretrain_data) > 0.95
    assert task.accuracy(model, task.subtasks[0].test) < 0.2


def test_fit_reports_contract_metrics_and_trains():
    result = fit(automl.Recipe(adapter=adapters.LoRA(rank=4), lr=3e-3, steps=150), "digits")
    m = result.metrics
    for name in ("accuracy", "accuracy/mirror", "pretrain_accuracy", "forgetting", "intruders",
                 "intruders/fc1", "intruders/fc2", "intruders/head", "bits", "trainable_params", "seconds"):
        assert name in m and result.__getattr__(name) == m[name]
    assert m["accuracy"] > 0.5                                 # learned the shifted task
    task = tasks.get("digits")
    base_acc = task.accuracy(task.pretrained_model(), task.pretrain_data)
    assert m["forgetting"] == pytest.approx(base_acc - m["pretrain_accuracy"])
    assert m["intruders"] == m["intruders/fc1"] + m["intruders/fc2"]  # head (10 vectors) kept apart
    assert m["trainable_params"] == 4 * (64 + 256) + 4 * (256 + 256) + 4 * (256 + 10)
    assert m["bits"] == 32.0


def test_fit_is_seeded():
    recipe = automl.Recipe(adapter=adapters.LoRA(rank=2), steps=40)
    a, b = fit(recipe, "digits"), fit(recipe, "digits")
    assert a.metrics["accuracy"] == b.metrics["accuracy"]


def test_report_receives_intermediate_accuracy():
    seen = []
    fit(automl.Recipe(adapter=adapters.FullFineTune(), steps=50, lr=3e-4), "digits",
        report=lambda step, value: seen.append((step, value)))
    assert [s for s, _ in seen] == [10, 20, 30, 40, 50]
    assert all(0.0 <= v <= 1.0 for _, v in seen)


def test_multitask_merges_one_model_per_subtask():
    result = fit(automl.Recipe(adapter=adapters.LoRA(rank=2), steps=30), "digits-multitask")
    names = {k for k in result.metrics if k.startswith("accuracy/")}
    assert names == {"accuracy/mirror", "accuracy/flip", "accuracy/transpose"}


def test_nan_loss_stops_with_a_reason():
    with pytest.raises(TrainingError, match="lower the learning rate"):
        fit(automl.Recipe(adapter=adapters.FullFineTune(), lr=1e12, steps=50), "digits")


def test_evaluate_refuses_a_space_and_bad_task():
    with pytest.raises(SearchSpaceError, match="hyper values"):
        automl.evaluate(automl.Recipe(adapter=adapters.LoRA(rank=pytest.importorskip("pyglove").oneof([1, 2]))))
    with pytest.raises(SearchSpaceError, match="unknown task 'nope'.*digits"):
        automl.evaluate(automl.Recipe(adapter=adapters.LoRA(rank=2)), task="nope")


def test_evaluate_takes_a_task_object():
    task = tasks.get("digits")
    result = automl.evaluate(automl.Recipe(adapter=adapters.LoRA(rank=1), steps=10), task=task)
    assert isinstance(result, automl.Result) and isinstance(result.model, torch.nn.Module)


def test_task_data_is_uploaded_to_a_device_once():
    task = tasks.get("digits")
    data = task.subtasks[0].test
    assert task.on_device(data, torch.device("cpu")) is data
    first = task.on_device(data, torch.device("meta"))        # stands in for a CUDA device
    assert first.x.device.type == "meta" and task.on_device(data, torch.device("meta")) is first
