"""The task interface: a pretrained model, fine-tuning subtasks, their batches and evaluations.

A task owns everything model- and data-specific; the trainer only runs the loop:

- ``pretrained_model()``: the model fine-tuning starts from (built and cached once, frozen);
- ``subtasks``: one or more fine-tuning datasets (several mean several models to merge);
- ``batches(subtask, batch_size, seed, device)``: an endless, seeded stream of training batches,
  in whatever form the model takes (a tuple of tensors, a dict of ``input_ids``/``attention_mask``/
  ``labels``...); a stream may come from a ``DataLoader`` that does not fit in memory;
- ``loss(model, batch)``: the training loss of one batch (a scalar tensor);
- ``evaluate(model, subtask)``: metrics on the subtask's held-out data; every task reports
  ``accuracy`` (a fraction; next-token accuracy for language models) and ``loss``;
- ``pretrain_metrics(model)`` and ``forgetting(now, before)``: the pretrained skill, and how much of
  it a fine-tuned model lost (in the skill's unit: accuracy points, or nats/token of loss);
- ``adaptable_layers(model)``: the linear layers an adapter with ``targets="all-linear"`` adapts
  (and quantization quantizes); ``trainable_modules``/``trained_modules(subtask)``: modules that
  train in full whatever the adapter (e.g. a new classifier head); ``owned_modules(subtask)``:
  those only one subtask trains, kept whole through a merge; ``export_prefix``: the submodule that is the Hugging Face
  model an export is loaded onto;
- ``replay(recipe)``: a stored result instead of training (``None`` by default: train). A tabular
  benchmark (:class:`automl.tasks.tabular.Tabular`) answers from its table.

:class:`Task`'s defaults implement an in-memory classification task on :class:`Data` (inputs
``x``, integer labels ``y``), as the digits tasks use.
"""
from __future__ import annotations

import abc
import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from automl.errors import SearchSpaceError
from automl.result import Result


@dataclass(frozen=True)
class Data:
    """Inputs ``x`` (any tensor the model takes) and integer class labels ``y``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> "Data":
        pin = device.type == "cuda"
        x, y = (self.x.pin_memory(), self.y.pin_memory()) if pin else (self.x, self.y)
        return Data(x.to(device, non_blocking=pin), y.to(device, non_blocking=pin))


@dataclass(frozen=True)
class Subtask:
    """One fine-tuning dataset. ``init_seed`` set: train from a fresh random init with that seed
    instead of the pretrained weights (independently trained models, as in Git Re-Basin).
    ``train``/``test`` are whatever the task's ``batches``/``evaluate`` read (:class:`Data` for
    the default classification task)."""

    name: str
    train: Any
    test: Any
    init_seed: int | None = field(default=None)


class Task(abc.ABC):
    """A fine-tuning problem. ``name`` identifies it in studies."""

    name: str = "task"
    trainable_modules: tuple[str, ...] = ()
    """Modules of the task model that train in full under every adapter (a new head)."""
    export_prefix: str = ""
    """Dotted name of the submodule exports are relative to ('' = the whole model)."""

    def replay(self, recipe: Any) -> Result | None:
        """The result of ``recipe`` without training it, or ``None`` to train (the default); ``fit``
        asks this first. A recipe the task cannot answer is an :class:`AutomlError`."""
        return None

    # -- the model ------------------------------------------------------------------------------
    @abc.abstractmethod
    def pretrained_model(self) -> nn.Module:
        """The pretrained model (built once and cached; callers must not modify it)."""

    def build_model(self) -> nn.Module:
        """A freshly initialised model of the task's architecture (uses the global torch RNG);
        needed only by subtasks with an ``init_seed``."""
        raise SearchSpaceError(f"task {self.name!r} cannot build a model from a random init; "
                               f"define build_model() to use subtasks with init_seed.")

    def initial_model(self, subtask: Subtask) -> nn.Module:
        """The model a subtask's fine-tuning starts from (a copy; safe to modify)."""
        if subtask.init_seed is None:
            return copy.deepcopy(self.pretrained_model())
        torch.manual_seed(subtask.init_seed)
        return self.build_model()

    def merge_base(self, pretrained: nn.Module) -> dict[str, torch.Tensor] | None:
        """The common base of the subtask models for merging (their task vectors are ``θ_t − base``):
        the pretrained state dict, or None when a subtask trains from a fresh random init."""
        if any(sub.init_seed is not None for sub in self.subtasks):
            return None
        return pretrained.state_dict()

    def adaptable_layers(self, model: nn.Module) -> list[str]:
        """The linear layers ``targets="all-linear"`` selects (default: every ``nn.Linear``)."""
        return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]

    def trained_modules(self, subtask: Subtask) -> tuple[str, ...]:
        """The modules that train in full while fine-tuning on ``subtask`` (default:
        :attr:`trainable_modules`; a task with one head per subtask names that head)."""
        return self.trainable_modules

    def owned_modules(self, subtask: Subtask) -> tuple[str, ...]:
        """Modules only ``subtask``'s model trains (its own head): after a merge they are taken from
        that model whole instead of merged (a merge would dilute a tensor one model changed)."""
        return ()

    def prepare(self, model: nn.Module, subtask: Subtask) -> nn.Module:
        """Make :meth:`trained_modules` trainable after the adapter froze the rest (in place)."""
        for name in self.trained_modules(subtask):
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(True)
        return model

    def trained_modules_state(self, model: nn.Module, subtask: Subtask) -> dict[str, torch.Tensor]:
        """The fully trained modules' tensors (by full state-dict name), detached."""
        return {f"{name}.{k}": v.detach() for name in self.trained_modules(subtask)
                for k, v in model.get_submodule(name).state_dict().items()}

    # -- data -----------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def subtasks(self) -> list[Subtask]:
        """The fine-tuning datasets; several mean several models to merge."""

    @property
    def pretrain_data(self) -> Data:
        """Held-out data from the pretraining distribution (default :meth:`pretrain_metrics`)."""
        raise SearchSpaceError(f"task {self.name!r} defines neither pretrain_data nor pretrain_metrics().")

    def on_device(self, data: Any, device: torch.device) -> Any:
        """``data`` on ``device``, uploaded once per process and kept (a no-op on the CPU)."""
        if device.type == "cpu" or not hasattr(data, "to"):
            return data
        uploads = self.__dict__.setdefault("_uploads", {})
        key = (id(data), str(device))
        if key not in uploads:
            uploads[key] = (data, data.to(device))  # keep ``data`` alive so its id stays unique
        return uploads[key][1]

    def batches(self, subtask: Subtask, batch_size: int, seed: int, device: torch.device) -> Iterator[Any]:
        """Endless training batches ``(x, y)``: ``batch_size`` examples drawn with replacement by a
        generator seeded with ``seed``."""
        data = self.on_device(subtask.train, device)
        generator = torch.Generator().manual_seed(seed)
        while True:
            index = torch.randint(len(data), (batch_size,), generator=generator).to(device)
            yield data.x[index], data.y[index]

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Cross-entropy of ``model(x)`` against ``y``, in float32."""
        x, y = batch
        return nn.functional.cross_entropy(model(x).float(), y)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, subtask: Subtask) -> dict[str, float]:
        """``accuracy`` and ``loss`` of ``model`` on the subtask's test data."""
        data = self.on_device(subtask.test, _device(model))
        correct, total = 0, 0.0
        for logits, y in self._outputs(model, data, 1024):
            correct += int((logits.argmax(-1) == y).sum())
            total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        return {"accuracy": correct / len(data), "loss": total / len(data)}

    def pretrain_metrics(self, model: nn.Module) -> dict[str, float]:
        """The pretrained skill: ``pretrain_accuracy`` on :attr:`pretrain_data`."""
        return {"pretrain_accuracy": self.accuracy(model, self.on_device(self.pretrain_data, _device(model)))}

    def forgetting(self, now: dict[str, float], before: dict[str, float]) -> float:
        """How much of the pretrained skill was lost (accuracy points; > 0 = forgot)."""
        return before["pretrain_accuracy"] - now["pretrain_accuracy"]

    @property
    def pretrained_skill(self) -> dict[str, float]:
        """:meth:`pretrain_metrics` of the pretrained model (computed once)."""
        if "_pretrained_skill" not in self.__dict__:
            self.__dict__["_pretrained_skill"] = self.pretrain_metrics(self.pretrained_model())
        return self.__dict__["_pretrained_skill"]

    @property
    def pretrained_accuracy(self) -> float:
        """Accuracy of the pretrained model on its pretraining skill."""
        return self.pretrained_skill["pretrain_accuracy"]

    @torch.no_grad()
    def _outputs(self, model: nn.Module, data: Data, batch_size: int):
        """``(logits, labels)`` of ``model`` on ``data`` in eval mode, batch by batch."""
        model.eval()
        device = _device(model)
        for i in range(0, len(data), batch_size):
            yield model(data.x[i:i + batch_size].to(device)).float(), data.y[i:i + batch_size].to(device)

    def accuracy(self, model: nn.Module, data: Data, batch_size: int = 1024) -> float:
        """Fraction of ``data`` the model classifies correctly."""
        correct = sum(int((logits.argmax(-1) == y).sum()) for logits, y in self._outputs(model, data, batch_size))
        return correct / len(data)

    def data_loss(self, model: nn.Module, data: Data, batch_size: int = 1024) -> float:
        """Mean cross-entropy of the model on ``data``."""
        total = sum(float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                    for logits, y in self._outputs(model, data, batch_size))
        return total / len(data)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
