"""The task interface: a pretrained model, fine-tuning subtasks, and their evaluations.

A user's own task subclasses :class:`Task` and provides ``build_model`` (the architecture),
``pretrained_model`` (built and cached once), ``subtasks`` (one or more fine-tuning datasets:
merging combines the per-subtask models) and ``pretrain_data`` (the pretraining distribution,
to measure forgetting).
"""
from __future__ import annotations

import abc
import copy
from dataclasses import dataclass, field

import torch
from torch import nn


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
    instead of the pretrained weights (independently trained models, as in Git Re-Basin)."""

    name: str
    train: Data
    test: Data
    init_seed: int | None = field(default=None)


class Task(abc.ABC):
    """A fine-tuning problem. ``name`` identifies it in studies."""

    name: str = "task"

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model of the task's architecture (uses the global torch RNG)."""

    @abc.abstractmethod
    def pretrained_model(self) -> nn.Module:
        """The pretrained model (built once and cached; callers must not modify it)."""

    @property
    @abc.abstractmethod
    def subtasks(self) -> list[Subtask]:
        """The fine-tuning datasets; several mean several models to merge."""

    @property
    @abc.abstractmethod
    def pretrain_data(self) -> Data:
        """Held-out data from the pretraining distribution (forgetting is measured on it)."""

    @property
    def pretrained_accuracy(self) -> float:
        """Accuracy of the pretrained model on :attr:`pretrain_data` (computed once)."""
        if "_pretrained_accuracy" not in self.__dict__:
            self.__dict__["_pretrained_accuracy"] = self.accuracy(self.pretrained_model(), self.pretrain_data)
        return self.__dict__["_pretrained_accuracy"]

    def on_device(self, data: Data, device: torch.device) -> Data:
        """``data`` on ``device``, uploaded once per process and kept (a no-op on the CPU)."""
        if device.type == "cpu":
            return data
        uploads = self.__dict__.setdefault("_uploads", {})
        key = (id(data), str(device))
        if key not in uploads:
            uploads[key] = (data, data.to(device))  # keep ``data`` alive so its id stays unique
        return uploads[key][1]

    def initial_model(self, subtask: Subtask) -> nn.Module:
        """The model a subtask's fine-tuning starts from (a copy; safe to modify)."""
        if subtask.init_seed is None:
            return copy.deepcopy(self.pretrained_model())
        torch.manual_seed(subtask.init_seed)
        return self.build_model()

    @torch.no_grad()
    def _outputs(self, model: nn.Module, data: Data, batch_size: int):
        """``(logits, labels)`` of ``model`` on ``data`` in eval mode, batch by batch."""
        model.eval()
        device = next(model.parameters()).device
        for i in range(0, len(data), batch_size):
            yield model(data.x[i:i + batch_size].to(device)).float(), data.y[i:i + batch_size].to(device)

    def accuracy(self, model: nn.Module, data: Data, batch_size: int = 1024) -> float:
        """Fraction of ``data`` the model classifies correctly."""
        correct = sum(int((logits.argmax(-1) == y).sum()) for logits, y in self._outputs(model, data, batch_size))
        return correct / len(data)

    def loss(self, model: nn.Module, data: Data, batch_size: int = 1024) -> float:
        """Mean cross-entropy of the model on ``data``."""
        total = sum(float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                    for logits, y in self._outputs(model, data, batch_size))
        return total / len(data)
