"""Instruction tuning of a Hugging Face causal language model: your own model and prompt →
response pairs as an automl task.

The task model is the ``transformers`` causal LM itself (e.g. ``LlamaForCausalLM``), so exports
load on it directly. Each example is ``prompt_template.format(prompt=…) + response + eos``;
the loss is next-token cross-entropy on the response tokens only (the prompt is masked with
-100, as in supervised fine-tuning). ``evaluate`` reports ``accuracy`` (next-token accuracy on
response tokens), ``loss`` and ``perplexity`` on held-out pairs. Forgetting is the increase of
the loss on held-out text of another kind (``pretrain_texts``): ``pretrain_loss`` now minus the
pretrained model's, in nats per token (> 0 = forgot); ``pretrain_accuracy`` is next-token
accuracy on that text. Adapters with ``targets="all-linear"`` adapt the transformer blocks'
linear layers (not the output layer, which is often tied to the embeddings), as peft does.
"""
from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from automl.errors import SearchSpaceError
from automl.tasks.base import Subtask, Task
from automl.tasks.text import TextData, cached_tokens, freeze, load_backbone, matching_layers, tokenizer_fingerprint

Pairs = tuple[Sequence[str], Sequence[str]]
IGNORE = -100
DEFAULT_TEMPLATE = "Question: {prompt}\nAnswer: "


def tokenize_pairs(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str] | None, template: str,
                   max_length: int) -> TextData:
    """``template(prompt) + response + eos`` per pair, labels on the response tokens only; with
    ``responses=None`` the ``prompts`` are plain text with labels on every token (cached)."""
    if responses is not None and len(prompts) != len(responses):
        raise SearchSpaceError(f"{len(prompts)} prompts but {len(responses)} responses; give one response per prompt.")
    if not prompts:
        raise SearchSpaceError("no examples given; a causal-LM task needs at least one per split.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def build() -> dict[str, torch.Tensor]:
        ids = torch.full((len(prompts), max_length), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), max_length), dtype=torch.long)
        labels = torch.full((len(prompts), max_length), IGNORE, dtype=torch.long)
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for i, prompt in enumerate(prompts):
            if responses is None:
                head, tail = [], tokenizer(prompt, add_special_tokens=False)["input_ids"] + eos
            else:
                head = tokenizer(template.format(prompt=prompt), add_special_tokens=False)["input_ids"]
                tail = tokenizer(responses[i], add_special_tokens=False)["input_ids"] + eos
            tokens = (head + tail)[:max_length]
            n, start = len(tokens), min(len(head), max_length)
            ids[i, :n] = torch.tensor(tokens)
            mask[i, :n] = 1
            labels[i, start:n] = ids[i, start:n]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    key = ["causal-lm", tokenizer_fingerprint(tokenizer), template, max_length, list(prompts),
           None if responses is None else list(responses)]
    return cached_tokens(key, build)


def token_statistics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed next-token cross-entropy, number of correct argmax predictions, and token count over
    the positions whose label (shifted by one) is not -100."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    keep = labels != IGNORE
    nll = nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")
    correct = (logits[keep].argmax(-1) == labels[keep]).sum()
    return nll, correct, int(keep.sum())


class HFCausalLM(Task):
    """Fine-tune a Hugging Face causal LM on prompt → response pairs.

    ``model``: a local model directory (``model_kwargs`` go to ``from_pretrained``, e.g.
    ``gguf_file=``) or a loaded ``transformers`` causal LM (with ``tokenizer``).
    ``train``/``test``: ``(prompts, responses)``, or ``subtasks={"name": (train, test)}``.
    ``pretrain_texts``: held-out text of another kind (forgetting); ``layers``: a regular expression
    over layer names that ``targets="all-linear"`` adapts (default: every linear layer but the
    output layer ``lm_head``).
    """

    def __init__(self, model: str | Path | nn.Module, train: Pairs | None = None, test: Pairs | None = None, *,
                 tokenizer: Any = None, subtasks: Mapping[str, tuple[Pairs, Pairs]] | None = None,
                 pretrain_texts: Sequence[str] = (), name: str = "hf-causal-lm", template: str = DEFAULT_TEMPLATE,
                 max_length: int = 64, layers: str | None = None, eval_batch_size: int = 32,
                 model_kwargs: Mapping[str, Any] | None = None):
        if (subtasks is None) == (train is None or test is None):
            raise SearchSpaceError("give train=(prompts, responses) and test=(prompts, responses), "
                                   "or subtasks={name: (train, test)}.")
        if "{prompt}" not in template:
            raise SearchSpaceError(f"template {template!r} has no '{{prompt}}' field; e.g. {DEFAULT_TEMPLATE!r}.")
        self.name = name
        self._model, self._tokenizer = model, tokenizer
        self._splits = dict(subtasks) if subtasks is not None else {name: (train, test)}
        self.pretrain_texts = tuple(pretrain_texts)
        self.template, self.max_length, self.layers = template, max_length, layers
        self.eval_batch_size = eval_batch_size
        self.model_kwargs = dict(model_kwargs or {})

    @cached_property
    def _loaded(self) -> tuple[nn.Module, Any]:
        return load_backbone(self._model, self._tokenizer, causal=True, **self.model_kwargs)

    @property
    def tokenizer(self) -> Any:
        return self._loaded[1]

    @cached_property
    def _pretrained(self) -> nn.Module:
        return freeze(self._loaded[0])

    def pretrained_model(self) -> nn.Module:
        return self._pretrained

    def adaptable_layers(self, model: nn.Module) -> list[str]:
        output = getattr(model, "get_output_embeddings", lambda: None)()
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not output]
        return matching_layers(linears, self.layers)

    @cached_property
    def subtasks(self) -> list[Subtask]:
        tok = self.tokenizer
        return [Subtask(name, tokenize_pairs(tok, *train, self.template, self.max_length),
                        tokenize_pairs(tok, *test, self.template, self.max_length))
                for name, (train, test) in self._splits.items()]

    @cached_property
    def pretrain_data(self) -> TextData:
        if not self.pretrain_texts:
            raise SearchSpaceError(f"task {self.name!r} has no pretrain_texts to measure forgetting on.")
        return tokenize_pairs(self.tokenizer, self.pretrain_texts, None, self.template, self.max_length)

    def batches(self, subtask: Subtask, batch_size: int, seed: int, device: torch.device) -> Iterator[Any]:
        return self.on_device(subtask.train, device).random_batches(batch_size, seed, device)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        nll, _, count = token_statistics(logits, batch["labels"])
        return nll / max(count, 1)

    @torch.no_grad()
    def _scores(self, model: nn.Module, data: TextData) -> tuple[float, float]:
        """Mean next-token loss and accuracy over ``data``'s labelled tokens."""
        model.eval()
        data = self.on_device(data, next(model.parameters()).device)
        nll, correct, count = 0.0, 0, 0
        for batch in data.chunks(self.eval_batch_size, by_length=True):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
            n, c, k = token_statistics(logits, batch["labels"])
            nll, correct, count = nll + float(n), correct + int(c), count + k
        return nll / max(count, 1), correct / max(count, 1)

    def evaluate(self, model: nn.Module, subtask: Subtask) -> dict[str, float]:
        loss, accuracy = self._scores(model, subtask.test)
        return {"accuracy": accuracy, "loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def pretrain_metrics(self, model: nn.Module) -> dict[str, float]:
        if not self.pretrain_texts:
            return {}
        loss, accuracy = self._scores(model, self.pretrain_data)
        return {"pretrain_loss": loss, "pretrain_accuracy": accuracy}

    def forgetting(self, now: dict[str, float], before: dict[str, float]) -> float:
        return now["pretrain_loss"] - before["pretrain_loss"] if self.pretrain_texts else 0.0
