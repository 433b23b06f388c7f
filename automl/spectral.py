"""Spectral analysis of fine-tuned weights.

Intruder dimensions follow Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of
Equivalence" (arXiv 2410.21228, §3 and reference code ``find_intruder_dimensions.py``): a
singular vector of the fine-tuned weight is an *intruder* if it is among the top-``k`` and its
cosine similarity with every pretrained singular vector is below ``epsilon``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from automl.errors import SearchSpaceError


def _check(top_k: int, epsilon: float) -> None:
    if not (isinstance(top_k, int) and top_k > 0):
        raise SearchSpaceError(f"top_k must be a positive integer, got {top_k!r}.")
    if not 0.0 < epsilon < 1.0:
        raise SearchSpaceError(f"epsilon must lie in (0, 1), got {epsilon!r}.")


def weight_key(w: torch.Tensor) -> str:
    """A content hash of a weight matrix (dtype, shape, bytes), used to cache its SVD."""
    t = w.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha1(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


class SVDCache:
    """Thin SVDs (float32) of pretrained weights, keyed by content hash; they never change."""

    def __init__(self) -> None:
        self._memory: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def svd(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = weight_key(w)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        self.misses += 1
        result = torch.linalg.svd(w.detach().to("cpu", torch.float32), full_matrices=False)
        self._memory[key] = (result.U, result.S, result.Vh)
        return self._memory[key]


DEFAULT_CACHE = SVDCache()


def intruder_indices(u0: torch.Tensor, u1: torch.Tensor, top_k: int = 10,
                     epsilon: float = 0.5) -> list[int]:
    """Indices ``i < top_k`` of fine-tuned left singular vectors ``u1[:, i]`` whose largest
    ``|cos|`` with any pretrained left singular vector (columns of ``u0``) is below ``epsilon``."""
    _check(top_k, epsilon)
    k = min(top_k, u1.shape[1])
    similarity = (u1[:, :k].t() @ u0).abs()          # k × r0: |U_ftᵀ U_0|
    best = similarity.max(dim=1).values               # max over all pretrained vectors
    return [i for i in range(k) if best[i] < epsilon]


def intruder_dimensions(w0: torch.Tensor, w1: torch.Tensor, top_k: int = 10, epsilon: float = 0.5,
                        cache: SVDCache | None = None) -> int:
    """Number of intruder dimensions of fine-tuned ``w1`` relative to pretrained ``w0``."""
    _check(top_k, epsilon)
    if w0.shape != w1.shape:
        raise SearchSpaceError(f"weights differ in shape: {tuple(w0.shape)} vs {tuple(w1.shape)}.")
    u0 = (cache or DEFAULT_CACHE).svd(w0)[0]
    u1 = torch.linalg.svd(w1.detach().to("cpu", torch.float32), full_matrices=False).U
    return len(intruder_indices(u0, u1, top_k, epsilon))


@dataclass(frozen=True)
class LayerSpectrum:
    """Spectral comparison of one weight matrix before and after fine-tuning."""

    layer: str
    intruders: int


def spectral_report(base_model: nn.Module, tuned_model: nn.Module, layers: list[str] | None = None,
                    top_k: int = 10, epsilon: float = 0.5,
                    cache: SVDCache | None = None) -> dict[str, LayerSpectrum]:
    """Per-layer spectra of every ``nn.Linear`` in ``layers`` (default: all of the base model's)."""
    base = {n: m for n, m in base_model.named_modules() if isinstance(m, nn.Linear)}
    tuned = dict(tuned_model.named_modules())
    names = list(base) if layers is None else layers
    report = {}
    for name in names:
        if name not in base or not isinstance(tuned.get(name), nn.Linear):
            raise SearchSpaceError(f"layer {name!r} is not a linear layer of both models; "
                                   f"merge adapters first. Linear layers: {list(base)}.")
        w0, w1 = base[name].weight, tuned[name].weight
        report[name] = LayerSpectrum(name, intruder_dimensions(w0, w1, top_k, epsilon, cache))
    return report
