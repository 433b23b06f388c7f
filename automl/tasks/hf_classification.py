"""Sequence classification on a Hugging Face encoder: your own model and texts as an automl task.

The task model is :class:`~automl.tasks.text.SequenceClassifier`: the pretrained encoder
(``backbone``), a pooling, and a new linear ``head`` (seeded init) that trains in full under
every adapter, as peft's ``modules_to_save``. Adapters with ``targets="all-linear"`` adapt the
encoder's linear layers matched by ``layers`` (default: every linear layer of the encoder);
quantization acts on the same layers; embeddings and norms stay frozen. Forgetting is measured on
a pretrained skill of the encoder, e.g. :class:`RetrievalSkill` (question → answer retrieval by
cosine similarity of the sentence embeddings); without one, ``forgetting`` is 0.

    task = HFClassification("path/to/model", train=(texts, labels), test=(test_texts, test_labels),
                            name="my-sentiment")
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from automl.errors import SearchSpaceError
from automl.tasks.base import Subtask, Task
from automl.tasks.text import (SequenceClassifier, TextData, freeze, load_backbone, matching_layers,
                               tokenize_classification)

Split = tuple[Sequence[str], Sequence[int]]


@dataclass(frozen=True)
class RetrievalSkill:
    """The embedding skill of a sentence encoder: for each question, pick its answer among
    ``candidates`` (the true one and ``candidates − 1`` other answers drawn with ``seed``) by
    cosine similarity of the pooled embeddings; the score is the fraction picked right."""

    questions: tuple[str, ...]
    answers: tuple[str, ...]
    candidates: int = 8
    seed: int = 0
    max_length: int = 48

    def __post_init__(self) -> None:
        if len(self.questions) != len(self.answers) or len(self.questions) < self.candidates:
            raise SearchSpaceError(f"RetrievalSkill needs as many answers as questions and at least "
                                   f"{self.candidates} pairs; got {len(self.questions)} and {len(self.answers)}.")

    @cached_property
    def choices(self) -> torch.Tensor:
        """``(n, candidates)`` answer indices per question, the true answer first."""
        rng = random.Random(self.seed)
        n = len(self.questions)
        rows = []
        for i in range(n):
            others = rng.sample([j for j in range(n) if self.answers[j] != self.answers[i]], self.candidates - 1)
            rows.append([i, *others])
        return torch.tensor(rows)

    @torch.no_grad()
    def score(self, model: SequenceClassifier, tokenizer: Any, chunk: int = 256) -> float:
        model.eval()
        device = next(model.parameters()).device
        embeddings = []
        for texts in (self.questions, self.answers):
            data = tokenize_classification(tokenizer, texts, [0] * len(texts), self.max_length)
            parts = [model.embed(b["input_ids"].to(device), b["attention_mask"].to(device)).float()
                     for b in data.chunks(chunk)]
            embeddings.append(nn.functional.normalize(torch.cat(parts), dim=-1))
        q, a = embeddings
        choices = self.choices.to(device)
        similarity = (q[:, None, :] * a[choices]).sum(-1)      # (n, candidates)
        return float((similarity.argmax(-1) == 0).float().mean())


class HFClassification(Task):
    """Fine-tune a Hugging Face encoder plus a linear head to classify texts.

    ``model``: a local model directory or a loaded ``transformers`` encoder (with ``tokenizer``).
    ``train``/``test``: ``(texts, labels)`` with integer labels in ``[0, num_labels)``; or
    ``subtasks={"name": (train, test), ...}`` for several datasets whose models are merged.
    ``layers``: a regular expression over the task model's layer names (``backbone.…``) that
    ``targets="all-linear"`` adapts (default: every linear layer of the encoder).
    ``skill``: a :class:`RetrievalSkill` (or any object with ``score(model, tokenizer)``) measuring
    the pretrained ability that ``forgetting`` tracks. ``model_kwargs`` go to ``from_pretrained``
    (e.g. ``add_pooling_layer=False`` for a BERT whose pooler is unused).
    """

    trainable_modules = ("head",)
    export_prefix = "backbone"

    def __init__(self, model: str | Path | nn.Module, train: Split | None = None, test: Split | None = None, *,
                 tokenizer: Any = None, subtasks: Mapping[str, tuple[Split, Split]] | None = None,
                 num_labels: int | None = None, name: str = "hf-classification", pooling: str = "mean",
                 max_length: int = 48, layers: str | None = None, skill: Any = None, head_seed: int = 0,
                 eval_batch_size: int = 256, model_kwargs: Mapping[str, Any] | None = None):
        if (subtasks is None) == (train is None or test is None):
            raise SearchSpaceError("give train=(texts, labels) and test=(texts, labels), or subtasks={name: (train, test)}.")
        self.name = name
        self._model, self._tokenizer = model, tokenizer
        self._splits = dict(subtasks) if subtasks is not None else {name: (train, test)}
        labels = {int(y) for tr, te in self._splits.values() for y in (*tr[1], *te[1])}
        if min(labels) < 0:
            raise SearchSpaceError(f"labels must be integers in [0, num_labels); got {min(labels)}.")
        self.num_labels = num_labels or max(labels) + 1
        if max(labels) >= self.num_labels:
            raise SearchSpaceError(f"label {max(labels)} does not fit num_labels={self.num_labels}.")
        self.pooling, self.max_length, self.layers = pooling, max_length, layers
        self.skill, self.head_seed, self.eval_batch_size = skill, head_seed, eval_batch_size
        self.model_kwargs = dict(model_kwargs or {})

    @cached_property
    def _loaded(self) -> tuple[nn.Module, Any]:
        return load_backbone(self._model, self._tokenizer, **self.model_kwargs)

    @property
    def tokenizer(self) -> Any:
        return self._loaded[1]

    @cached_property
    def _pretrained(self) -> SequenceClassifier:
        backbone = self._loaded[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.head_seed)
            model = SequenceClassifier(backbone, self.num_labels, self.pooling)
        return freeze(model)

    def pretrained_model(self) -> nn.Module:
        return self._pretrained

    def adaptable_layers(self, model: nn.Module) -> list[str]:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("backbone.")]
        return matching_layers(linears, self.layers)

    @cached_property
    def subtasks(self) -> list[Subtask]:
        tok = self.tokenizer
        return [Subtask(name, tokenize_classification(tok, train[0], train[1], self.max_length),
                        tokenize_classification(tok, test[0], test[1], self.max_length))
                for name, (train, test) in self._splits.items()]

    def batches(self, subtask: Subtask, batch_size: int, seed: int, device: torch.device) -> Iterator[Any]:
        return self.on_device(subtask.train, device).random_batches(batch_size, seed, device)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"])
        return nn.functional.cross_entropy(logits.float(), batch["labels"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, subtask: Subtask) -> dict[str, float]:
        model.eval()
        data: TextData = self.on_device(subtask.test, next(model.parameters()).device)
        correct, total = 0, 0.0
        for batch in data.chunks(self.eval_batch_size, by_length=True):
            logits = model(batch["input_ids"], batch["attention_mask"]).float()
            correct += int((logits.argmax(-1) == batch["labels"]).sum())
            total += float(nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
        return {"accuracy": correct / len(data), "loss": total / len(data)}

    def pretrain_metrics(self, model: nn.Module) -> dict[str, float]:
        if self.skill is None:
            return {}
        return {"pretrain_accuracy": self.skill.score(model, self.tokenizer)}

    def forgetting(self, now: dict[str, float], before: dict[str, float]) -> float:
        return before["pretrain_accuracy"] - now["pretrain_accuracy"] if self.skill is not None else 0.0
