"""Randomized top-r SVD for PiSSA's fast initialisation (PiSSA §3 "fast SVD"): a randomized
block Krylov method (Musco & Musco, 2015, "Randomized Block Krylov Methods for Stronger and Faster
Approximate SVD", Alg. 2; Halko, Martinsson & Tropp, 2011, §4.2 and Alg. 5.1 for the sketch and
the final small SVD).

``randomized_svd(W, r, niter)`` (W is out × in, float32), block size ``k = r + oversample``:

1. sketch the row space with a Gaussian ``Ω`` (k × out): ``Y = Ω W``;
2. ``niter`` Krylov steps: ``X = Y Wᵀ`` (k × out), orthogonalised against the blocks so far and
   orthonormalised by a thin QR into the next block ``Z_i``; ``Y = Z_i W``. The blocks span the
   Krylov space ``{W G, (W Wᵀ) W G, …}`` of the column space (``G = Wᵀ Ωᵀ``), and the ``Y``s already
   are the projection ``K W`` of ``W`` onto it (``K`` = the stacked ``Z_i``, orthonormal rows);
3. the SVD of that small ``(k·niter) × in`` projection (through the eigendecomposition of its
   Gram matrix) gives ``W ≈ Kᵀ (K W) = (Kᵀ Ũ) S Vᵀ``.

Each step costs what a subspace iteration of ``torch.svd_lowrank`` costs (one ``W Wᵀ`` product),
but keeps every block instead of only the last: for a flat spectrum — pretrained weights have one
— the top-r subspace converges in far fewer steps (Musco & Musco's gap-independent bound), so a
small block (``oversample`` 4) suffices. Every product keeps the thin factor on the left
(k × out @ out × in, k × in @ in × out), the GEMM shape that on one CPU thread runs about twice as
fast as ``W @ thin`` (``torch.svd_lowrank``'s ``A @ Q``, ``Aᴴ @ Q``), and the projection comes for
free with the last step (``torch.svd_lowrank`` makes one more pass over ``W`` for it).
``niter = 0`` is Halko et al.'s one-pass range finder with a projection pass. When the Krylov
space would span the smaller side of ``W``, the exact SVD is as cheap and is taken. The random draw
comes from torch's global generator (``torch.manual_seed`` fixes it).
"""
from __future__ import annotations

import torch

OVERSAMPLE = 4
"""Block size beyond the rank (Halko et al. §4.2: a few extra columns)."""


def _orth_rows(y: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the row space of ``y`` (k × d, k ≤ d), as rows."""
    return torch.linalg.qr(y.mT).Q.mT


def _gram_svd(y: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``rank`` thin SVD of a wide ``y`` (k × d, k ≤ d) from the eigendecomposition of its
    k × k Gram matrix ``y yᵀ = Ũ S² Ũᵀ`` (``Vᵀ = S⁻¹ Ũᵀ y``): LAPACK's SVD of the wide matrix, or a
    QR of ``yᵀ``, costs several times more at these sizes. Singular values below ``√ε·σ₁`` are
    rounding noise this way; their ``Vᵀ`` rows are bounded (not unit) so ``U S Vᵀ`` stays tiny."""
    evals, evecs = torch.linalg.eigh(y @ y.mT)                    # ascending
    u = evecs[:, -rank:].flip(-1)
    s = evals[-rank:].flip(-1).clamp(min=0).sqrt()
    floor = s[:1] * torch.finfo(y.dtype).eps + torch.finfo(y.dtype).tiny
    return u, s, (u.mT @ y) / torch.maximum(s, floor)[:, None]


def randomized_svd(weight: torch.Tensor, rank: int, niter: int,
                   oversample: int = OVERSAMPLE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Approximate top-``rank`` singular triplets ``U_r`` (out × r), ``S_r`` (r), ``Vh_r`` (r × in)
    of the 2-D float ``weight`` by ``niter`` block Krylov steps from a Gaussian sketch of
    ``rank + oversample`` rows (see the module docstring). ``U_r`` and ``Vh_r`` have orthonormal
    columns / rows (up to rounding); ``S_r`` is descending."""
    out_features, in_features = weight.shape
    k = min(rank + oversample, out_features, in_features)
    if k * max(niter, 1) >= min(out_features, in_features):   # the sketch spans everything
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank]
    y = torch.randn(k, out_features, dtype=weight.dtype, device=weight.device) @ weight   # k × in
    if niter == 0:                                            # W ≈ (W qᵀ) q
        q = _orth_rows(y)
        v_small, s, ut = _gram_svd(q @ weight.mT, rank)          # (W qᵀ)ᵀ = V S Uᵀ
        return ut.mT, s, v_small.mT @ q
    basis = weight.new_empty(k * niter, out_features)          # K: the blocks Z_i, orthonormal rows
    projection = weight.new_empty(k * niter, in_features)      # K W
    for i in range(niter):
        x = y @ weight.mT                                     # k × out
        if i:
            done = basis[: i * k]
            x.addmm_(x @ done.mT, done, alpha=-1)             # block Gram–Schmidt, twice for stability
            x.addmm_(x @ done.mT, done, alpha=-1)
        z = basis[i * k: (i + 1) * k]
        z.copy_(_orth_rows(x))
        y = torch.mm(z, weight, out=projection[i * k: (i + 1) * k])   # this block's share of K W
    u_small, s, vh = _gram_svd(projection, rank)
    return basis.mT @ u_small, s, vh
