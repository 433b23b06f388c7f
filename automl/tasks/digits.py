"""Built-in tasks on scikit-learn's bundled digits (8×8 images, 10 classes; no download).

The pretrained model is an MLP 64→256→256→10 trained on the original task (stratified 70/30
split, features standardized on the train split; 20 epochs of AdamW, lr 1e-3, weight decay
0.01, batch 64, seed 0), cached as safetensors under ``~/.cache/automl/tasks`` (``$AUTOML_HOME``). Fine-tuning
subtasks transform the images and permute the labels, so the pretrained model scores near
chance on them and must really adapt (the setting of reference.md, "Verified on the digits
setting").

``digits`` fine-tunes the whole MLP (one shared 10-way head). ``digits-multitask`` (several
shifts) gives each subtask its own head over a shared trunk, as task-arithmetic work does with
per-task classification heads: see :class:`DigitsMultitask`.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from functools import cached_property
from typing import Any, Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from automl.optim import AdamW
from automl.paths import cache_dir
from automl.tasks.base import Data, Subtask, Task

HIDDEN = 256
PRETRAIN = dict(epochs=20, lr=1e-3, weight_decay=0.01, batch_size=64, seed=0)

# name -> (image transform on an (n, 8, 8) array, label shift)
SHIFTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {
    "mirror": (lambda im: im[:, :, ::-1], 3),
    "flip": (lambda im: im[:, ::-1, :], 5),
    "transpose": (lambda im: im.transpose(0, 2, 1), 7),
}


def digits_mlp(hidden: int = HIDDEN) -> nn.Sequential:
    """The digits MLP; its linear layers are named ``fc1``, ``fc2``, ``head``."""
    return nn.Sequential(OrderedDict(fc1=nn.Linear(64, hidden), act1=nn.ReLU(),
                                     fc2=nn.Linear(hidden, hidden), act2=nn.ReLU(),
                                     head=nn.Linear(hidden, 10)))


class _DigitsData:
    """The split and standardization shared by every digits task (loaded once per process)."""

    def __init__(self) -> None:
        arrays = self._load()
        self.images, self.labels = arrays["images"], arrays["labels"]
        self.train_idx, self.test_idx = arrays["train_idx"], arrays["test_idx"]
        flat = self.images[self.train_idx].reshape(len(self.train_idx), -1)
        self.mean = flat.mean(0)
        self.std = np.where(flat.std(0) > 0, flat.std(0), 1.0).astype(np.float32)

    @staticmethod
    def _load() -> dict[str, np.ndarray]:
        """Images, labels and the split, cached as safetensors beside the pretrained model: a
        worker then starts without importing scikit-learn (and with it scipy and pandas), which
        cost a quarter of a worker's start-up. The cache is keyed by scikit-learn's version."""
        from importlib.metadata import version

        from safetensors.numpy import load_file as load_arrays
        from safetensors.numpy import save_file as save_arrays
        path = cache_dir("tasks") / f"digits-data-sklearn{version('scikit-learn')}.safetensors"
        if path.exists():
            try:
                return load_arrays(str(path))   # tensors only, never pickle
            except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
                pass
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images, labels = digits.images.astype(np.float32), digits.target.astype(np.int64)
        train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=0)
        arrays = {"images": images, "labels": labels, "train_idx": train_idx, "test_idx": test_idx}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_arrays({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        tmp.replace(path)
        return arrays

    def split(self, which: str, transform: Callable[[np.ndarray], np.ndarray] | None = None,
              shift: int = 0) -> Data:
        idx = self.train_idx if which == "train" else self.test_idx
        images = self.images[idx]
        if transform is not None:
            images = np.ascontiguousarray(transform(images))
        x = (images.reshape(len(idx), -1) - self.mean) / self.std
        y = (self.labels[idx] + shift) % 10
        return Data(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))


_DATA: _DigitsData | None = None


def digits_data() -> _DigitsData:
    global _DATA
    if _DATA is None:
        _DATA = _DigitsData()
    return _DATA


def pretrain(model: nn.Module, data: Data, epochs: int, lr: float, weight_decay: float,
             batch_size: int, seed: int) -> nn.Module:
    """Deterministic supervised training (the pretraining stage)."""
    gen = torch.Generator().manual_seed(seed)
    opt = AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), batch_size):
            b = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(data.x[b]), data.y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class DigitsTask(Task):
    """Fine-tune the pretrained digits MLP on shifted digits (transformed images, permuted labels),
    through its one 10-way head (:class:`DigitsMultitask` gives each subtask its own head)."""

    hidden: int = HIDDEN

    def __init__(self, shifts: tuple[str, ...] = ("mirror",), name: str = "digits"):
        self.name = name
        self.shifts = shifts

    def build_model(self) -> nn.Module:
        return digits_mlp(self.hidden)

    @cached_property
    def _pretrained(self) -> nn.Module:
        torch.manual_seed(PRETRAIN["seed"])
        model = digits_mlp(self.hidden)
        tag = hashlib.sha1(repr(sorted(PRETRAIN.items())).encode() + str(self.hidden).encode()).hexdigest()[:12]
        path = cache_dir("tasks") / f"digits-mlp-{tag}.safetensors"
        if path.exists():
            model.load_state_dict(load_file(str(path)))
        else:
            pretrain(model, digits_data().split("train"), **PRETRAIN)
            tmp = path.with_suffix(".tmp")
            save_file(model.state_dict(), str(tmp))
            tmp.replace(path)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def pretrained_model(self) -> nn.Module:
        return self._pretrained

    @cached_property
    def subtasks(self) -> list[Subtask]:
        data = digits_data()
        return [Subtask(name, data.split("train", *SHIFTS[name]), data.split("test", *SHIFTS[name]))
                for name in self.shifts]

    @cached_property
    def pretrain_data(self) -> Data:
        return digits_data().split("test")


class DigitsSeedsTask(DigitsTask):
    """The Git Re-Basin setting: the same MLP trained from different random inits on the
    original digits task; merging these needs weight matching (Ainsworth et al., 2022).

    ``hidden`` sets the MLP's width (the pretrained reference model, which forgetting and the
    spectral report compare against, is pretrained at that width too and cached). One seed is
    one model trained from scratch (e.g. quantization-aware training at a given width).

    The models share no base (``merge_base`` is None): task-vector merges (TaskArithmetic, TIES,
    DARE) refuse them with a one-line error; Linear, SLERP and WeightMatching merge them.
    """

    def __init__(self, seeds: tuple[int, ...] = (1, 2), name: str = "digits-seeds", hidden: int = HIDDEN):
        super().__init__(shifts=(), name=name)
        self.seeds = seeds
        self.hidden = hidden

    @cached_property
    def subtasks(self) -> list[Subtask]:
        data = digits_data()
        train, test = data.split("train"), data.split("test")
        return [Subtask(f"seed{s}", train, test, init_seed=s) for s in self.seeds]


class MultiHeadMLP(nn.Module):
    """The digits MLP's trunk (``fc1``, ``fc2``) with one 10-way head per subtask in ``heads``
    (plus ``heads.pretrain``, the pretrained head, which never trains). ``forward(x, head)`` uses
    the head called ``head`` (default: the pretrained one)."""

    def __init__(self, subtasks: tuple[str, ...], hidden: int = HIDDEN):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(64, hidden), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(hidden, hidden), nn.ReLU()
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, 10) for name in ("pretrain", *subtasks)})

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.fc2(self.act1(self.fc1(x))))

    def forward(self, x: torch.Tensor, head: str | None = None) -> torch.Tensor:
        return self.heads[head or "pretrain"](self.trunk(x))


class DigitsMultitask(DigitsTask):
    """Several shifted-digits subtasks, each with its own head over a shared trunk.

    Why: the shifts permute the labels differently (mirror +3, flip +5, transpose +7), so through
    one shared head the subtasks' label maps conflict and no merge can serve them all (every merge
    stayed ≤ 0.44 accuracy). Task-arithmetic work (Ilharco et al., 2023) merges the encoders of
    models with per-task heads; so does this task:

    - the pretrained model is a :class:`MultiHeadMLP` whose trunk is the pretrained digits MLP's
      ``fc1``/``fc2`` and whose every head starts as the pretrained head;
    - ``adaptable_layers`` are the trunk's (``fc1``, ``fc2``): adapters, quantization, intruder
      counts and the merge's interesting part act on the trunk only;
    - ``trained_modules(subtask)`` is that subtask's head (and only it): it trains in full under
      every adapter; batches carry the subtask name, so ``loss`` and ``evaluate`` use its head;
    - the merge combines whole state dicts; a head only one model changed would come out diluted
      or trimmed (Linear gives ``base + τ/T``, TIES trims it, TA scales it). So each head is an
      ``owned_modules(subtask)`` entry: the trainer takes it whole from its subtask's model after
      the merge, and the merged model is the merged trunk plus each subtask's own head;
    - forgetting is measured with the pretrained head (``heads.pretrain``) on the original
      digits: it tracks what the merged trunk lost.
    """

    def __init__(self, shifts: tuple[str, ...] = ("mirror", "flip", "transpose"), name: str = "digits-multitask"):
        super().__init__(shifts, name)

    def build_model(self) -> nn.Module:
        return MultiHeadMLP(self.shifts)

    @cached_property
    def _multihead(self) -> MultiHeadMLP:
        single = self._pretrained
        model = MultiHeadMLP(self.shifts)
        state = {k: v for k, v in single.state_dict().items() if not k.startswith("head.")}
        for name in model.heads:
            state.update({f"heads.{name}.{k}": v for k, v in single.head.state_dict().items()})
        model.load_state_dict(state)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def pretrained_model(self) -> nn.Module:
        return self._multihead

    def adaptable_layers(self, model: nn.Module) -> list[str]:
        return ["fc1", "fc2"]

    def trained_modules(self, subtask: Subtask) -> tuple[str, ...]:
        return (f"heads.{subtask.name}",)

    def owned_modules(self, subtask: Subtask) -> tuple[str, ...]:
        return (f"heads.{subtask.name}",)

    def batches(self, subtask: Subtask, batch_size: int, seed: int, device: torch.device) -> Iterator[Any]:
        for x, y in super().batches(subtask, batch_size, seed, device):
            yield x, y, subtask.name

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y, head = batch
        return nn.functional.cross_entropy(model(x, head=head).float(), y)

    @torch.no_grad()
    def _scores(self, model: nn.Module, data: Data, head: str) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        logits = model(data.x.to(device), head=head).float()
        y = data.y.to(device)
        return {"accuracy": float((logits.argmax(-1) == y).float().mean()),
                "loss": float(nn.functional.cross_entropy(logits, y))}

    def evaluate(self, model: nn.Module, subtask: Subtask) -> dict[str, float]:
        return self._scores(model, self.on_device(subtask.test, next(model.parameters()).device), subtask.name)

    def pretrain_metrics(self, model: nn.Module) -> dict[str, float]:
        data = self.on_device(self.pretrain_data, next(model.parameters()).device)
        return {"pretrain_accuracy": self._scores(model, data, "pretrain")["accuracy"]}
