"""Text tasks on Hugging Face models: tokenized data, cached on disk, and the pieces both the
classification and the causal-LM tasks use.

Tokenized data is a :class:`TextData`: a dict of equal-length tensors (``input_ids``,
``attention_mask``, ``labels``) padded to ``max_length``; a training batch is trimmed to its
longest sequence (dynamic padding), so short tweets cost short sequences. Tokenization is cached
as safetensors under the cache folder, keyed by the tokenizer's content, the texts, the labels
and the settings: a second worker or trial reads it instead of tokenizing again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from automl.errors import SearchSpaceError
from automl.paths import cache_dir

TEXT_EXTRA = "automl[text]"


def require_transformers():
    """The ``transformers`` module, quiet and offline (never downloads); a clear error without it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers
    except ImportError as e:
        raise SearchSpaceError(f"text tasks need the Hugging Face libraries: pip install '{TEXT_EXTRA}' ({e}).") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


class TextData:
    """Tokenized examples: tensors of equal length ``n`` (``input_ids``/``attention_mask`` n × L,
    ``labels`` n for classes or n × L for tokens, -100 where no loss is taken)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {k: len(v) for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise SearchSpaceError(f"tokenized tensors differ in length: {lengths}.")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["input_ids"])

    def to(self, device: torch.device) -> "TextData":
        pin = device.type == "cuda"
        return TextData({k: (v.pin_memory() if pin else v).to(device, non_blocking=pin) for k, v in self.tensors.items()})

    def batch(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """The examples at ``index``, trimmed to the longest sequence among them."""
        batch = {k: v[index] for k, v in self.tensors.items()}
        length = int(batch["attention_mask"].sum(1).max())
        return {k: v[:, :length] if v.dim() == 2 else v for k, v in batch.items()}

    def chunks(self, size: int, by_length: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Every example once, ``size`` at a time: in order, or shortest sequences first with
        ``by_length`` (chunks of similar length waste little on padding; for sums over examples)."""
        if not by_length:
            for i in range(0, len(self), size):
                yield self.batch(slice(i, i + size))
            return
        if "_by_length" not in self.__dict__:
            self._by_length = torch.argsort(self.tensors["attention_mask"].sum(1), stable=True)
        for i in range(0, len(self), size):
            yield self.batch(self._by_length[i:i + size].to(self.tensors["input_ids"].device))

    def random_batches(self, batch_size: int, seed: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches of ``batch_size`` examples drawn with replacement, seeded."""
        data = self
        generator = torch.Generator().manual_seed(seed)
        while True:
            index = torch.randint(len(data), (batch_size,), generator=generator).to(device)
            yield data.batch(index)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A content hash of a tokenizer (its full serialisation when it is a fast tokenizer)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cached_tokens(key_parts: Sequence[Any], build: Callable[[], dict[str, torch.Tensor]]) -> TextData:
    """``build()``'s tensors, cached as safetensors under ``<cache>/tokens`` by a hash of
    ``key_parts`` (written atomically; an unreadable file is rebuilt)."""
    digest = hashlib.sha1(json.dumps(list(key_parts), default=str).encode()).hexdigest()[:20]
    path = cache_dir("tokens") / f"{digest}.safetensors"
    if path.exists():
        try:
            return TextData(load_file(str(path)))
        except Exception:  # noqa: BLE001 - a truncated or foreign file: rebuild it
            pass
    tensors = {k: v.contiguous() for k, v in build().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    return TextData(tensors)


def tokenize_classification(tokenizer: Any, texts: Sequence[str], labels: Sequence[int], max_length: int) -> TextData:
    """Texts padded/truncated to ``max_length`` with their class labels (cached)."""
    if len(texts) != len(labels):
        raise SearchSpaceError(f"{len(texts)} texts but {len(labels)} labels; give one label per text.")
    if not texts:
        raise SearchSpaceError("no texts given; a text task needs at least one example per split.")

    def build() -> dict[str, torch.Tensor]:
        enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": torch.as_tensor(list(labels), dtype=torch.long)}

    return cached_tokens(["classification", tokenizer_fingerprint(tokenizer), max_length, list(texts), list(labels)], build)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens: sentence-transformers' pooling (``1_Pooling``, mean tokens)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


class SequenceClassifier(nn.Module):
    """A Hugging Face encoder (``backbone``), a pooling, and a linear ``head``.

    ``pooling="mean"`` (masked mean of the last hidden states, as sentence embedding models are
    trained) or ``"cls"`` (the first token). ``embed`` is the sentence embedding; ``forward``
    returns class logits.
    """

    def __init__(self, backbone: nn.Module, num_labels: int, pooling: str = "mean"):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise SearchSpaceError(f"pooling={pooling!r} is unknown; choose 'mean' or 'cls'.")
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None        # BERT's pooler (dense + tanh on [CLS]) is unused by either pooling
        self.backbone = backbone
        self.pooling = pooling
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))


def load_backbone(model: str | Path | nn.Module, tokenizer: Any, *, causal: bool = False,
                  **kwargs: Any) -> tuple[nn.Module, Any]:
    """A Hugging Face model and its tokenizer: from a local directory (offline; never downloads)
    or as given. ``causal`` loads an ``AutoModelForCausalLM``, else an ``AutoModel``."""
    transformers = require_transformers()
    if isinstance(model, nn.Module):
        if tokenizer is None:
            raise SearchSpaceError("a loaded model needs its tokenizer: pass tokenizer=AutoTokenizer.from_pretrained(...).")
        return model, tokenizer
    path = Path(model)
    if not path.is_dir():
        raise SearchSpaceError(f"model {str(model)!r} is not a local model directory; pass a folder holding "
                               f"config.json and the weights (save_pretrained's output), or a loaded model.")
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    try:
        loaded = auto.from_pretrained(str(path), local_files_only=True, dtype=torch.float32, **kwargs)
        tok = tokenizer or transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                                      **{k: v for k, v in kwargs.items() if k == "gguf_file"})
    except (OSError, ValueError) as e:
        raise SearchSpaceError(f"cannot load a Hugging Face model from {str(path)!r}: {e}") from None
    return loaded, tok


def matching_layers(linears: list[str], pattern: str | None) -> list[str]:
    """The layer names of ``linears`` that the regular expression ``pattern`` matches whole (all
    of them for ``None``); none matching is a :class:`SearchSpaceError`."""
    if pattern is None:
        return linears
    chosen = [n for n in linears if re.fullmatch(pattern, n)]
    if not chosen:
        raise SearchSpaceError(f"layers={pattern!r} matches none of the model's linear layers (e.g. {linears[:3]}).")
    return chosen


def freeze(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no parameter requiring gradients."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
