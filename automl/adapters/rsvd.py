"""Randomized top-r SVD for PiSSA's fast initialisation (PiSSA §3 "fast SVD"): a randomized
block Krylov method (Musco & Musco, 2015, "Randomized Block Krylov Methods for Stronger and Faster
Approximate SVD", Alg. 2; Halko, Martinsson & Tropp, 2011, §4.2 and Alg. 5.1 for the sketch and
the final small SVD), run on many layers at once.

``randomized_svds(weights, ranks, niter)`` works on each float32 ``W`` from its short side
(``A = W`` or ``Wᵀ``, m × n with m ≤ n), block size ``k = r + oversample``:

1. sketch the row space with a Gaussian ``Ω`` (k × m): ``Y = Ω A``;
2. ``niter`` Krylov steps: ``X = Y Aᵀ`` (k × m), orthogonalised against the blocks so far and
   orthonormalised into the next block ``Z_i``; ``Y = Z_i A``. The blocks span the Krylov space
   ``{A G, (A Aᵀ) A G, …}`` of the column space (``G = Aᵀ Ωᵀ``), and the ``Y``s already are the
   projection ``K A`` of ``A`` onto it (``K`` = the stacked ``Z_i``);
3. the SVD of the small ``(k·niter) × n`` projection (through the eigendecomposition of its
   Gram matrix) gives ``A ≈ Kᵀ (K A) = (Kᵀ Ũ) S Vᵀ``.

Each step costs one ``A Aᵀ`` product, but keeps every block instead of only the last
(``torch.svd_lowrank``'s subspace iteration): for a flat spectrum — pretrained weights have one —
the top-r subspace converges in far fewer steps (Musco & Musco's gap-independent bound), so a small
block (``oversample`` 4) suffices. Every product keeps the thin factor on the left (k × m @ m × n,
k × n @ n × m), the GEMM shape that runs fastest on one CPU thread, and the projection comes for
free with the last step. Working from the short side makes the sketch, the blocks and their QRs
k × m instead of k × out.

What is left after the ``2·niter + 1`` passes over each ``W`` is a fixed cost per small step
(Householder QR of a k × m block, the Gram eigendecomposition, Gram–Schmidt products): each takes
tens of microseconds for a few thousand flops. So layers of one shape and rank run together, in
batches of :data:`BATCH_BYTES` of weights: the GEMMs go one layer at a time, every small step runs
once, batched, for the whole batch. A batch stays small enough for its weights to stay in cache
from one pass to the next (step by step over a whole model's weights, each pass would read them
from memory again). :func:`iter_randomized_svds` yields each batch's factors as they are done, so
PiSSA writes the residual while the weight is still in cache.

The sketches are drawn from torch's global generator (``torch.manual_seed`` fixes them) one layer
at a time, in the order given, before any batch runs, so a layer's factors do not depend on which
layers share its batch. ``niter = 0`` is Halko et al.'s one-pass range finder with a projection
pass. When the Krylov space would span the short side of ``W``, the exact SVD is as cheap and is
taken.

Measured (``benchmarks/pissa_init.py``; 2 shared CPU cores, one torch thread, one run): PiSSA r=8
on all-MiniLM-L6-v2's 36 matrices at ``niter`` 2, the SVDs alone take 0.62 ms CPU per 384×384 layer
(0.78 ms one layer at a time, 21.5 ms exact) and 2.1–2.3 ms per 1536×384 or 384×1536 layer (about
the same one at a time, 46–48 ms exact); the whole model's PiSSA init, residuals and wrapping
included, is 23× faster than with the exact SVD (18–21× on a busier machine), with the same mean
first-steps training loss.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import torch

OVERSAMPLE = 4
"""Block size beyond the rank (Halko et al. §4.2: a few extra columns)."""

BATCH_BYTES = 8 << 20
"""Float32 weight bytes of one batch of same-shape layers: its GEMMs run batch step by batch step,
so the batch's weights should stay in cache between steps (a whole model's do not)."""

Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _orthonormal_rows(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the rows of each ``x`` (…, k, d; k ≤ d): Householder QR."""
    return torch.linalg.qr(x.mT).Q.mT


def _gram_svd(y: torch.Tensor, rank: int) -> Factors:
    """Top-``rank`` thin SVD of each wide ``y`` (B, d, n; d ≤ n) from the eigendecomposition of
    its d × d Gram matrix ``y yᵀ = Ũ S² Ũᵀ`` (``Vᵀ = S⁻¹ Ũᵀ y``): LAPACK's SVD of the wide matrix, or
    a QR of ``yᵀ``, costs several times more at these sizes. Singular values below ``√ε·σ₁`` are
    rounding noise this way; their ``Vᵀ`` rows are bounded (not unit) so ``U S Vᵀ`` stays tiny."""
    evals, evecs = torch.linalg.eigh(y @ y.mT)                      # ascending
    u = evecs[..., -rank:].flip(-1)
    s = evals[..., -rank:].flip(-1).clamp(min=0).sqrt()
    floor = s[..., :1] * torch.finfo(y.dtype).eps + torch.finfo(y.dtype).tiny
    return u, s, (u.mT @ y) / torch.maximum(s, floor)[..., None]


def _products(lefts: torch.Tensor, mats: Sequence[torch.Tensor], out: torch.Tensor, transpose: bool) -> torch.Tensor:
    """``out[b] = lefts[b] @ mats[b]`` (``mats[b]ᵀ`` with ``transpose``), one GEMM per layer."""
    for left, mat, result in zip(lefts, mats, out):
        torch.mm(left, mat.mT if transpose else mat, out=result)
    return out


def _krylov(mats: Sequence[torch.Tensor], sketches: torch.Tensor, rank: int, niter: int) -> Factors:
    """Block Krylov SVD of the m × n ``mats`` (m ≤ n) from the Gaussian ``sketches`` (B, k, m):
    ``U`` (B, m, r), ``S`` (B, r), ``Vh`` (B, r, n)."""
    batch, k, m = sketches.shape
    n = mats[0].shape[1]
    if niter == 0:                                                                   # A ≈ (A qᵀ) q
        q = _orthonormal_rows(_products(sketches, mats, sketches.new_empty(batch, k, n), False))
        x = _products(q, mats, sketches.new_empty(batch, k, m), True)                # (A qᵀ)ᵀ
        v_small, s, ut = _gram_svd(x, rank)
        return ut.mT, s, v_small.mT @ q
    basis = sketches.new_empty(batch, k * niter, m)          # K: the blocks Z_i, orthonormal rows
    projection = sketches.new_empty(batch, k * niter, n)     # K A
    x = sketches.new_empty(batch, k, m)
    y = _products(sketches, mats, sketches.new_empty(batch, k, n), False)            # Ω A
    for i in range(niter):
        _products(y, mats, x, True)                                                  # Y Aᵀ
        if i:                                                # block Gram–Schmidt, twice for stability
            done = basis[:, : i * k]
            x.baddbmm_(x @ done.mT, done, alpha=-1)
            x.baddbmm_(x @ done.mT, done, alpha=-1)
        z = basis[:, i * k: (i + 1) * k]
        z.copy_(_orthonormal_rows(x))
        y = _products(z, mats, projection[:, i * k: (i + 1) * k], False)            # this block's K A
    u_small, s, vh = _gram_svd(projection, rank)
    return basis.mT @ u_small, s, vh


def iter_randomized_svds(weights: Sequence[torch.Tensor], ranks: int | Sequence[int], niter: int,
                         oversample: int = OVERSAMPLE) -> Iterator[tuple[int, Factors]]:
    """Approximate top-``rank`` singular triplets ``(U_r, S_r, Vh_r)`` (float32) of each 2-D
    float ``weight`` (out × in → out × r, r, r × in) by ``niter`` block Krylov steps from a Gaussian
    sketch of ``rank + oversample`` rows (see the module docstring), yielded as ``(index, factors)``
    batch by batch: layers of one shape, rank, dtype and device are computed together,
    :data:`BATCH_BYTES` of weights at a time, so a caller that uses a layer's factors on its weight
    as they come (PiSSA's residual) finds that weight still in cache. All sketches are drawn before
    the first result. ``U_r`` and ``Vh_r`` have orthonormal columns / rows (up to rounding); ``S_r``
    is descending. A layer's factors equal (to rounding) those of that layer alone after drawing
    the same sketches before it."""
    ranks = [ranks] * len(weights) if isinstance(ranks, int) else list(ranks)
    groups: dict[tuple, list[int]] = defaultdict(list)
    sketches: dict[int, torch.Tensor] = {}
    exact: list[int] = []
    for i, (weight, rank) in enumerate(zip(weights, ranks)):
        short = min(weight.shape)
        k = min(rank + oversample, short)
        if k * max(niter, 1) >= short:                       # the sketch spans everything
            exact.append(i)
            continue
        sketches[i] = torch.randn(k, short, dtype=torch.float32, device=weight.device)
        groups[(tuple(weight.shape), rank, weight.dtype, weight.device)].append(i)
    for i in exact:
        u, s, vh = torch.linalg.svd(weights[i].detach().float(), full_matrices=False)
        yield i, (u[:, :ranks[i]], s[:ranks[i]], vh[:ranks[i]])
    for (shape, rank, *_), members in groups.items():
        tall = shape[0] > shape[1]                           # work on Wᵀ: the sketch on the short side
        size = max(1, BATCH_BYTES // (shape[0] * shape[1] * 4))
        for start in range(0, len(members), size):
            chunk = members[start: start + size]
            mats = [weights[i].detach().float() for i in chunk]
            mats = [m.mT for m in mats] if tall else mats
            u, s, vh = _krylov(mats, torch.stack([sketches[i] for i in chunk]), rank, niter)
            for j, i in enumerate(chunk):       # Wᵀ = U S Vh → W = Vhᵀ S Uᵀ, laid out row-major for the caller
                yield i, ((vh[j].mT.contiguous(), s[j], u[j].mT.contiguous()) if tall else (u[j], s[j], vh[j]))


def randomized_svds(weights: Sequence[torch.Tensor], ranks: int | Sequence[int], niter: int,
                    oversample: int = OVERSAMPLE) -> list[Factors]:
    """:func:`iter_randomized_svds` of all ``weights``, in their order."""
    out: list[Factors | None] = [None] * len(weights)
    for i, factors in iter_randomized_svds(weights, ranks, niter, oversample):
        out[i] = factors
    return out


def randomized_svd(weight: torch.Tensor, rank: int, niter: int,
                   oversample: int = OVERSAMPLE) -> Factors:
    """:func:`randomized_svds` of one layer."""
    return randomized_svds([weight], rank, niter, oversample)[0]
