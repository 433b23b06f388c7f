"""Spectral analysis of fine-tuned weights: intruder dimensions, effective rank, drift, overlap, WeLore.

Every metric compares a pretrained weight ``W0`` with its fine-tuned (merged, deployed) ``W1``
through their thin SVDs ``W = U diag(σ) Vᵀ`` (float32, singular values in descending order):

- **Intruder dimensions** (Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of
  Equivalence", arXiv 2410.21228, §3; reference code ``find_intruder_dimensions.py``; peft
  ``reduce_intruder_dimension``): a left singular vector ``u1_i`` of ``W1`` with ``i < k`` is an
  intruder if ``max_j |u1_iᵀ u0_j| < ε`` over *all* pretrained left singular vectors ``u0_j``.
- **Effective rank** (Roy & Vetterli, "The effective rank: a measure of effective
  dimensionality", EUSIPCO 2007, Def. 1–2): ``exp(H(p))`` with ``p_i = σ_i / Σσ`` and the
  Shannon entropy ``H(p) = −Σ p_i log p_i``.
- **Spectral drift**: relative change of the top-``k`` singular values,
  ``‖σ1[:k] − σ0[:k]‖₂ / ‖σ0[:k]‖₂``.
- **Subspace overlap** of the top-``k`` left singular spaces: ``‖U0[:, :k]ᵀ U1[:, :k]‖_F² / k``
  (1 = same space, 0 = orthogonal spaces).
- **WeLore** (Jaiswal et al., "From GaLore to WeLore", arXiv 2407.11239, §4): the rank a matrix
  needs to keep a fraction of its spectrum, and its classification as a low-rank component
  (LRC, compressible) or not (N-LRC).

Pretrained SVDs never change during a study: :class:`SVDCache` keeps them by content hash, in
memory in front of safetensors files under ``~/.cache/automl/svd`` (``$AUTOML_HOME``) (shared by trials and
processes). SVDs run in float32 on the device the weight lives on; matrices of equal shape are
decomposed in one batched call.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from automl.errors import SearchSpaceError, TrainingError
from automl.paths import cache_dir

Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Thin SVD factors ``(U, S, Vh)`` of an ``m × n`` matrix: ``m × r``, ``r``, ``r × n``, ``r = min(m, n)``."""

FAST_NITER = 6
"""Power iterations of the ``fast=True`` randomized SVD (``torch.svd_lowrank``)."""
FAST_MIN_SIDE = 256
"""``fast=True`` uses the randomized SVD only for matrices whose smaller side is at least this."""
FAST_TOLERANCE = 1e-3
"""Documented accuracy of ``fast=True``, tested in ``tests/test_spectral.py``: on matrices whose
spectrum decays so that ``σ_q ≤ σ_k / 2`` (``q = 2k + 10`` sampled directions, ``k = top_k``;
trained weights such as the digits MLP's qualify), the top-``k`` singular values agree with the
exact SVD within this relative error, the intruder similarities (max ``|cos|``) within this
absolute error, and the effective rank within this relative error. On a flat spectrum (e.g. a
Gaussian random matrix) the randomized top vectors are not accurate: keep the exact default."""


def check_top_k(top_k: int) -> None:
    """Raise :class:`SearchSpaceError` unless ``top_k`` is a positive integer."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
        raise SearchSpaceError(f"top_k must be a positive integer (1, 2, 3, ...), got {top_k!r}; "
                               f"the paper's default is top_k=10.")


def check_epsilon(epsilon: float) -> None:
    """Raise :class:`SearchSpaceError` unless ``0 < epsilon < 1``."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 < epsilon < 1.0:
        raise SearchSpaceError(f"epsilon must lie in the open interval (0, 1), got {epsilon!r}; "
                               f"the paper's default is epsilon=0.5.")


def _check(top_k: int, epsilon: float) -> None:
    check_top_k(top_k)
    check_epsilon(epsilon)


def _check_keep(keep: float, min_reduction: float = 0.5) -> None:
    if not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise SearchSpaceError(f"keep must lie in (0, 1] (the fraction of Σσ to keep), got {keep!r}.")
    if not isinstance(min_reduction, (int, float)) or not 0.0 <= min_reduction < 1.0:
        raise SearchSpaceError(f"min_reduction must lie in [0, 1) (the rank reduction above which a "
                               f"matrix is a low-rank component), got {min_reduction!r}.")


def _matrix(w: torch.Tensor, what: str = "weight") -> torch.Tensor:
    """``w`` detached as a float32 matrix on its own device."""
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise SearchSpaceError(f"{what} must be a 2-D tensor (out × in), got {shape}.")
    return w.detach().to(torch.float32)


def weight_key(w: torch.Tensor) -> str:
    """A content hash of a weight matrix (shape and float32 bytes), used to cache its SVD."""
    t = w.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha1(str(tuple(t.shape)).encode())
    h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()


def batched_svd(ws: Sequence[torch.Tensor]) -> list[Factors]:
    """Thin float32 SVDs of ``ws``; matrices of equal shape and device go through one batched
    ``torch.linalg.svd`` call, on the device they live on."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, w in enumerate(ws):
        groups[(tuple(w.shape), str(w.device))].append(i)
    out: list[Factors | None] = [None] * len(ws)
    for index in groups.values():
        stack = torch.stack([_matrix(ws[i]) for i in index])
        u, s, vh = torch.linalg.svd(stack, full_matrices=False)
        for j, i in enumerate(index):
            out[i] = (u[j], s[j], vh[j])
    return out  # type: ignore[return-value]


class SVDCache:
    """Thin SVDs (float32) of pretrained weights, keyed by :func:`weight_key`; they never change.

    An in-memory dict sits in front of one safetensors file per weight under ``directory``
    (default ``~/.cache/automl/svd``, resolved at each use so ``$AUTOML_HOME`` is honoured), so
    the decomposition is shared across trials and processes. Files are written atomically
    (temporary file + ``os.replace``); an unreadable file is recomputed and rewritten.
    ``persist=False`` keeps the cache in memory only. Factors are returned on the CPU.
    Counters: ``hits`` (memory or disk), ``disk_hits``, ``misses`` (SVDs computed).
    """

    def __init__(self, directory: str | os.PathLike | None = None, persist: bool = True) -> None:
        self._directory = Path(directory) if directory is not None else None
        self.persist = persist
        self._memory: dict[str, Factors] = {}
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    @property
    def directory(self) -> Path:
        """Folder of the safetensors files (created on demand)."""
        if self._directory is None:
            return cache_dir("svd")
        self._directory.mkdir(parents=True, exist_ok=True)
        return self._directory

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def _load(self, key: str, shape: tuple[int, int]) -> Factors | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            t = load_file(str(path))
            u, s, vh = t["U"], t["S"], t["Vh"]
        except (SafetensorError, KeyError, OSError):
            return None
        r = min(shape)
        if u.shape != (shape[0], r) or s.shape != (r,) or vh.shape != (r, shape[1]):
            return None
        return u, s, vh

    def _store(self, key: str, factors: Factors) -> None:
        directory = self.directory
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            u, s, vh = (f.contiguous() for f in factors)
            save_file({"U": u, "S": s, "Vh": vh}, tmp, metadata={"format": "automl-svd-v1"})
            os.replace(tmp, directory / f"{key}.safetensors")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def svd(self, w: torch.Tensor) -> Factors:
        """The thin SVD ``(U, S, Vh)`` of ``w`` (CPU float32), from the cache when possible."""
        return self.svd_many([w])[0]

    def svd_many(self, ws: Sequence[torch.Tensor]) -> list[Factors]:
        """Thin SVDs of several weights; the misses are decomposed together (:func:`batched_svd`)."""
        ws = [_matrix(w) for w in ws]
        keys = [weight_key(w) for w in ws]
        out: list[Factors | None] = [None] * len(ws)
        missing: dict[str, list[int]] = defaultdict(list)
        for i, (key, w) in enumerate(zip(keys, ws)):
            if key in missing:                       # a repeat within this call: decomposed once
                missing[key].append(i)
            elif key in self._memory:
                out[i] = self._memory[key]
            elif self.persist and (loaded := self._load(key, tuple(w.shape))) is not None:
                self._memory[key] = out[i] = loaded
                self.disk_hits += 1
            else:
                missing[key].append(i)
                continue
            self.hits += 1
        if missing:
            first = [index[0] for index in missing.values()]
            for key, factors in zip(missing, batched_svd([ws[i] for i in first])):
                # own row-major storage, not the batch's: memory and disk hits then have one layout,
                # so later products take the same BLAS path and give the same bits
                factors = tuple(f.cpu().clone(memory_format=torch.contiguous_format) for f in factors)
                self._memory[key] = factors
                self.misses += 1
                if self.persist:
                    self._store(key, factors)
                for j in missing[key]:
                    out[j] = factors
        return out  # type: ignore[return-value]


DEFAULT_CACHE = SVDCache()


@dataclass(frozen=True)
class _Tuned:
    """What the metrics need of a fine-tuned matrix: its top-``q`` left vectors and all σ."""

    u_top: torch.Tensor
    s: torch.Tensor


def _fast_applies(w: torch.Tensor, top_k: int) -> bool:
    return min(w.shape) >= max(FAST_MIN_SIDE, 2 * top_k + 10)


def _fast_spectrum(w: torch.Tensor, top_k: int) -> _Tuned:
    """Top-``k`` left singular vectors by ``torch.svd_lowrank`` (``q = 2k + 10``, ``FAST_NITER``
    power iterations, seeded so the result is reproducible and the global RNG is untouched), and
    every singular value from the eigenvalues of the smaller Gram matrix (float32: absolute error
    ≈ 1e-7·σ_max² on σ², negligible in the entropy and the cumulative sums that use them)."""
    q = 2 * top_k + 10
    devices = [w.device] if w.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        u, _, _ = torch.svd_lowrank(w, q=q, niter=FAST_NITER)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    s = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt()
    return _Tuned(u[:, :top_k].cpu(), s.cpu())


def _tuned_spectra(ws: Sequence[torch.Tensor], top_k: int, fast: bool) -> list[_Tuned]:
    out: list[_Tuned | None] = [None] * len(ws)
    exact = []
    for i, w in enumerate(ws):
        if fast and _fast_applies(w, top_k):
            out[i] = _fast_spectrum(w, top_k)
        else:
            exact.append(i)
    for i, (u, s, _) in zip(exact, batched_svd([ws[i] for i in exact])):
        out[i] = _Tuned(u[:, :top_k].cpu(), s.cpu())
    return out  # type: ignore[return-value]


def intruder_similarity(u0: torch.Tensor, u1: torch.Tensor, top_k: int = 10) -> torch.Tensor:
    """``max_j |u1_iᵀ u0_j|`` for each of the top-``k`` fine-tuned left singular vectors
    ``u1_i`` (columns of ``u1``) over every pretrained left singular vector (columns of ``u0``)."""
    check_top_k(top_k)
    k = min(top_k, u1.shape[1])
    u0 = u0.to(u1.device, torch.float32)
    return (u1[:, :k].float().t() @ u0).abs().max(dim=1).values


def intruder_indices(u0: torch.Tensor, u1: torch.Tensor, top_k: int = 10,
                     epsilon: float = 0.5) -> list[int]:
    """Indices ``i < top_k`` of fine-tuned left singular vectors ``u1[:, i]`` whose largest
    ``|cos|`` with any pretrained left singular vector (columns of ``u0``) is below ``epsilon``."""
    _check(top_k, epsilon)
    best = intruder_similarity(u0, u1, top_k)
    return [i for i in range(len(best)) if best[i] < epsilon]


def _pair(w0: torch.Tensor, w1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w0, w1 = _matrix(w0, "pretrained weight"), _matrix(w1, "fine-tuned weight")
    if w0.shape != w1.shape:
        raise SearchSpaceError(f"weights differ in shape: {tuple(w0.shape)} vs {tuple(w1.shape)}; "
                               f"compare a fine-tuned matrix with its own pretrained matrix.")
    return w0, w1


def intruder_dimensions(w0: torch.Tensor, w1: torch.Tensor, top_k: int = 10, epsilon: float = 0.5,
                        cache: SVDCache | None = None, fast: bool = False) -> int:
    """Number of intruder dimensions of fine-tuned ``w1`` relative to pretrained ``w0``."""
    return intruder_curve(w0, w1, [epsilon], top_k, cache, fast)[0]


def intruder_curve(w0: torch.Tensor, w1: torch.Tensor, epsilons: Iterable[float], top_k: int = 10,
                   cache: SVDCache | None = None, fast: bool = False) -> list[int]:
    """Intruder counts of ``w1`` against ``w0`` at each ``ε`` of ``epsilons`` (one SVD pair).

    The count is non-decreasing in ``ε`` (paper Fig. 4 plots it over ε)."""
    check_top_k(top_k)
    epsilons = list(epsilons)
    for e in epsilons:
        _check(top_k, e)
    w0, w1 = _pair(w0, w1)
    u0 = (cache or DEFAULT_CACHE).svd(w0)[0]
    best = intruder_similarity(u0, _tuned_spectra([w1], top_k, fast)[0].u_top, top_k)
    return [int((best < e).sum()) for e in epsilons]


def _effective_rank(s: torch.Tensor) -> float:
    total = s.double().sum()
    if total <= 0:
        return 0.0
    p = s.double() / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def effective_rank(w: torch.Tensor) -> float:
    """Effective rank ``exp(−Σ p_i log p_i)``, ``p = σ/Σσ`` (Roy & Vetterli 2007, Def. 2).

    Between 1 and ``rank(w)``; equals ``k`` for ``k`` equal non-zero singular values. The zero
    matrix gets 0.0 (its rank), a convention: the paper defines it for non-zero matrices only."""
    return _effective_rank(torch.linalg.svdvals(_matrix(w)))


def _welore_rank(s: torch.Tensor, keep: float) -> int:
    total = s.double().sum()
    if total <= 0:
        return 0
    cumulative = s.double().cumsum(0)
    # the smallest r with Σ_{i<r} σ_i ≥ keep·Σσ; a float32-sized relative slack keeps the
    # round-off singular values of a rank-deficient matrix from counting at keep=1
    return int((cumulative < keep * total * (1 - 1e-6)).sum()) + 1


def welore_rank(w: torch.Tensor, keep: float = 0.9) -> int:
    """The smallest rank ``r`` whose top singular values keep ``keep`` of the spectrum's **sum**
    (nuclear norm): ``Σ_{i≤r} σ_i ≥ keep · Σ σ_i`` (WeLore, arXiv 2407.11239, §4).

    WeLore thresholds singular values after min–max normalisation with one threshold for the
    whole model; this per-matrix cumulative-sum form needs no model-wide calibration and
    orders matrices the same way (heavy-tailed spectra need fewer directions)."""
    _check_keep(keep)
    return _welore_rank(torch.linalg.svdvals(_matrix(w)), keep)


def low_rank_component(w: torch.Tensor, keep: float = 0.9, min_reduction: float = 0.5) -> bool:
    """WeLore's classification: ``w`` is a low-rank component (LRC) if keeping ``keep`` of its
    spectrum reduces its rank by more than ``min_reduction``, i.e.
    ``1 − welore_rank(w, keep) / min(m, n) > min_reduction`` (WeLore's ``min_ratio``)."""
    _check_keep(keep, min_reduction)
    return _is_lrc(_welore_rank(torch.linalg.svdvals(_matrix(w)), keep), min(w.shape), min_reduction)


def welore_ranks(model: nn.Module, keep: float = 0.9, layers: Sequence[str] | None = None,
                 cache: SVDCache | None = None) -> dict[str, int]:
    """:func:`welore_rank` of each ``nn.Linear`` in ``layers`` (default: all) of a pretrained
    ``model``, from the cached SVDs: the per-layer, non-uniform ranks WeLore assigns (an adapter
    may size each layer's rank from them)."""
    _check_keep(keep)
    weights = linear_weights(model, layers)
    factors = (cache or DEFAULT_CACHE).svd_many(list(weights.values()))
    return {name: _welore_rank(s, keep) for name, (_, s, _) in zip(weights, factors)}


def _is_lrc(rank: int, full: int, min_reduction: float) -> bool:
    return 1 - rank / full > min_reduction


def _drift(s0: torch.Tensor, s1: torch.Tensor, top_k: int) -> float:
    k = min(top_k, len(s0))
    norm = float(s0[:k].norm())
    return float((s1[:k] - s0[:k]).norm()) / norm if norm > 0 else float(s1[:k].norm() > 0)


def spectral_drift(w0: torch.Tensor, w1: torch.Tensor, top_k: int = 10) -> float:
    """Relative change of the top-``k`` singular values: ``‖σ1[:k] − σ0[:k]‖₂ / ‖σ0[:k]‖₂``
    (1.0 when ``w0`` is zero and ``w1`` is not)."""
    check_top_k(top_k)
    w0, w1 = _pair(w0, w1)
    return _drift(torch.linalg.svdvals(w0).cpu(), torch.linalg.svdvals(w1).cpu(), top_k)


def _overlap(u0: torch.Tensor, u1: torch.Tensor, top_k: int) -> float:
    k = min(top_k, u0.shape[1], u1.shape[1])
    return float((u0[:, :k].t() @ u1[:, :k]).pow(2).sum()) / k


def subspace_overlap(w0: torch.Tensor, w1: torch.Tensor, top_k: int = 10,
                     cache: SVDCache | None = None) -> float:
    """Overlap of the top-``k`` left singular spaces, ``‖U0[:, :k]ᵀ U1[:, :k]‖_F² / k`` ∈ [0, 1]:
    the mean squared cosine of the principal angles between the two spaces."""
    check_top_k(top_k)
    w0, w1 = _pair(w0, w1)
    u0 = (cache or DEFAULT_CACHE).svd(w0)[0]
    return _overlap(u0, _tuned_spectra([w1], top_k, False)[0].u_top, top_k)


@dataclass(frozen=True)
class LayerSpectrum:
    """Spectral comparison of one weight matrix before (``base``) and after (``tuned``) fine-tuning.

    ``similarity[i]`` is the max ``|cos|`` of the ``i``-th tuned left singular vector with any
    pretrained one; ``intruder_indices`` are those below ``epsilon`` and ``intruders`` counts them.
    """

    layer: str
    intruders: int
    intruder_indices: tuple[int, ...]
    similarity: tuple[float, ...]
    top_k: int
    epsilon: float
    effective_rank_base: float
    effective_rank_tuned: float
    drift: float
    overlap: float
    welore_rank_base: int
    welore_rank_tuned: int
    low_rank_base: bool
    low_rank_tuned: bool

    def intruders_at(self, epsilon: float) -> int:
        """The intruder count at another ``epsilon`` (no new SVD)."""
        check_epsilon(epsilon)
        return sum(s < epsilon for s in self.similarity)


def linear_weights(model: nn.Module, layers: Sequence[str] | None, other: nn.Module | None = None
                   ) -> dict[str, torch.Tensor]:
    """Weights of the ``nn.Linear`` layers named ``layers`` (default: all) of ``model``; every
    name must also be a linear layer of ``other`` when given."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    others = dict(other.named_modules()) if other is not None else linears
    names = list(linears) if layers is None else list(layers)
    for name in names:
        if name not in linears or not isinstance(others.get(name), nn.Linear):
            raise SearchSpaceError(f"layer {name!r} is not a linear layer of both models; merge "
                                   f"adapters first (automl.adapters.base.merge_adapters). "
                                   f"Linear layers: {list(linears)}.")
    return {name: linears[name].weight for name in names}


def spectral_report(base_model: nn.Module, tuned_model: nn.Module, layers: list[str] | None = None,
                    top_k: int = 10, epsilon: float = 0.5, cache: SVDCache | None = None, *,
                    keep: float = 0.9, min_reduction: float = 0.5,
                    fast: bool = False) -> dict[str, LayerSpectrum]:
    """A :class:`LayerSpectrum` per ``nn.Linear`` in ``layers`` (default: all of the base model's).

    Pretrained SVDs come from ``cache`` (default :data:`DEFAULT_CACHE`, on disk); fine-tuned ones
    are computed in float32 on the weights' device, batched by shape. ``fast=True`` uses
    ``torch.svd_lowrank`` for the fine-tuned top vectors of matrices whose smaller side is at
    least :data:`FAST_MIN_SIDE` (accuracy: :data:`FAST_TOLERANCE`)."""
    _check(top_k, epsilon)
    _check_keep(keep, min_reduction)
    w0s = linear_weights(base_model, layers, tuned_model)
    w1s = linear_weights(tuned_model, list(w0s))
    for name, w in w1s.items():
        if w.shape != w0s[name].shape:
            raise SearchSpaceError(f"layer {name!r} has shape {tuple(w.shape)} in the tuned model but "
                                   f"{tuple(w0s[name].shape)} in the base model.")
        if not torch.isfinite(w).all():
            raise TrainingError(f"layer {name!r} of the tuned model has non-finite weights; its "
                                f"spectrum is undefined (lower the learning rate).")
    names = list(w0s)
    base = (cache or DEFAULT_CACHE).svd_many([w0s[n] for n in names])
    tuned = _tuned_spectra([_matrix(w1s[n]) for n in names], top_k, fast)
    report = {}
    for name, (u0, s0, _), t in zip(names, base, tuned):
        similarity = intruder_similarity(u0, t.u_top, top_k)
        indices = tuple(i for i in range(len(similarity)) if similarity[i] < epsilon)
        r0, r1 = _welore_rank(s0, keep), _welore_rank(t.s, keep)
        report[name] = LayerSpectrum(
            layer=name, intruders=len(indices), intruder_indices=indices,
            similarity=tuple(float(x) for x in similarity), top_k=top_k, epsilon=float(epsilon),
            effective_rank_base=_effective_rank(s0), effective_rank_tuned=_effective_rank(t.s),
            drift=_drift(s0, t.s, top_k), overlap=_overlap(u0, t.u_top, top_k),
            welore_rank_base=r0, welore_rank_tuned=r1,
            low_rank_base=_is_lrc(r0, len(s0), min_reduction),
            low_rank_tuned=_is_lrc(r1, len(s0), min_reduction))
    return report
