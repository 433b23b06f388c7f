"""Built-in tasks on scikit-learn's bundled digits (8×8 images, 10 classes; no download).

The pretrained model is an MLP 64→256→256→10 trained on the original task (stratified 70/30
split, features standardized on the train split; 20 epochs of AdamW, lr 1e-3, weight decay
0.01, batch 64, seed 0), cached as safetensors under ``studies/.cache/tasks``. Fine-tuning
subtasks transform the images and permute the labels, so the pretrained model scores near
chance on them and must really adapt (the setting of reference.md, "Verified on the digits
setting").
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from functools import cached_property
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

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
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images, labels = digits.images.astype(np.float32), digits.target.astype(np.int64)
        idx = np.arange(len(labels))
        self.train_idx, self.test_idx = train_test_split(idx, test_size=0.3, stratify=labels, random_state=0)
        self.images, self.labels = images, labels
        flat = images[self.train_idx].reshape(len(self.train_idx), -1)
        self.mean = flat.mean(0)
        self.std = np.where(flat.std(0) > 0, flat.std(0), 1.0).astype(np.float32)

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
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), batch_size):
            b = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(data.x[b]), data.y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


class DigitsTask(Task):
    """Fine-tune the pretrained digits MLP on shifted digits (transformed images, permuted labels)."""

    def __init__(self, shifts: tuple[str, ...] = ("mirror",), name: str = "digits"):
        self.name = name
        self.shifts = shifts

    def build_model(self) -> nn.Module:
        return digits_mlp()

    @cached_property
    def _pretrained(self) -> nn.Module:
        torch.manual_seed(PRETRAIN["seed"])
        model = digits_mlp()
        tag = hashlib.sha1(repr(sorted(PRETRAIN.items())).encode() + str(HIDDEN).encode()).hexdigest()[:12]
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
    original digits task; merging these needs weight matching (Ainsworth et al., 2022)."""

    def __init__(self, seeds: tuple[int, ...] = (1, 2), name: str = "digits-seeds"):
        super().__init__(shifts=(), name=name)
        self.seeds = seeds

    @cached_property
    def subtasks(self) -> list[Subtask]:
        data = digits_data()
        train, test = data.split("train"), data.split("test")
        return [Subtask(f"seed{s}", train, test, init_seed=s) for s in self.seeds]
