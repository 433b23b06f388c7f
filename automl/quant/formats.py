"""Weight formats: the grids a linear weight is rounded to, and the straight-through estimator.

Integer grids are symmetric, with one scale per block of weights, ``W_q = clamp(round(W/s), qmin,
qmax) · s`` (reference.md, "Quantization"):

- intN (N = 8, 4, 2): ``qmin = −2^(N−1)``, ``qmax = 2^(N−1) − 1``, absmax scale
  ``s = max|W_block| / qmax`` per output channel (row) or per group of ``group_size`` input
  columns of a row. With N = 2 the absmax scale makes ``|W/s| ≤ 1``, so code −2 is never used:
  int2 is a ternary grid with an absmax scale, most weights round to 0 (see benchmarks/quant.py).
- ternary b1.58 (BitNet b1.58, Ma et al. 2024, arXiv 2402.17764, Eq. 1–3): ``qmin, qmax = −1, 1``
  and ``s = γ = mean|W|`` over the whole tensor (or per group); "BitNet b1.58 Reloaded"
  (Nielsen & Schneider-Kamp 2024, arXiv 2407.09527) uses ``median|W|`` for small models.
- bf16: a round trip through ``torch.bfloat16``.

Scales are stored as bfloat16 (like the fp16 scales of GPTQ/AWQ/llama.cpp block formats, with
fp32's range). With at most 8 significant bits in a scale and at most 8 in a code, every
dequantized value ``code · scale`` is exact in float32; so a dequantized weight can be encoded
again without loss (scale = block absmax / qmax), which makes packing lossless and re-quantizing
a weight already on its grid a no-op.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SCALE_DTYPE = torch.bfloat16
# Smallest scale: keeps an all-zero block finite (BitNet clamps its mean at 1e-5 the same way).
MIN_SCALE = 1e-8


def straight_through(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``w + (q − w).detach()``: forward value ``q``, gradient of the identity (Bengio et al. 2013;
    BitNet b1.58's STE)."""
    return w + (q - w).detach()


def decode(codes: torch.Tensor, scales: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Dequantize integer ``codes`` (any shape holding ``prod(shape)`` values) with ``scales`` of shape
    ``(rows, groups)``: rows is 1 (per tensor) or the output dimension, groups split each row."""
    rows, groups = scales.shape
    blocks = codes.reshape(rows, groups, -1).to(torch.float32)
    return (blocks * scales.to(torch.float32).unsqueeze(-1)).reshape(shape)


@dataclass(frozen=True)
class IntGrid:
    """A symmetric integer grid with one scale per block.

    ``rule`` picks the scale: ``"absmax"`` (``max|W_b| / qmax``), ``"mean"`` (``mean|W_b|``) or
    ``"median"`` (``median|W_b|``, the lower median of the block). Blocks are the whole tensor
    when ``per_tensor`` and ``group_size`` is None, a row when only ``group_size`` is None, else
    ``group_size`` consecutive input columns of a row.
    """

    qmin: int
    qmax: int
    rule: str = "absmax"
    group_size: int | None = None
    per_tensor: bool = False

    def blocks(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` (out × in) viewed as (rows, groups, block)."""
        out_features, in_features = w.shape
        if self.group_size is not None:
            return w.reshape(out_features, in_features // self.group_size, self.group_size)
        if self.per_tensor:
            return w.reshape(1, 1, -1)
        return w.reshape(out_features, 1, in_features)

    def encode(self, w: torch.Tensor, rule: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer codes (int8, shape of ``w``) and bf16 scales (rows × groups) of ``w``."""
        blocks = self.blocks(w.detach().to(torch.float32))
        magnitude = blocks.abs()
        rule = rule or self.rule
        if rule == "absmax":
            stat = magnitude.amax(-1) / self.qmax
        elif rule == "mean":
            stat = magnitude.mean(-1)
        else:
            stat = magnitude.median(-1).values
        scales = stat.clamp(min=MIN_SCALE).to(SCALE_DTYPE)
        codes = torch.round(blocks / scales.to(torch.float32).unsqueeze(-1)).clamp(self.qmin, self.qmax)
        return codes.to(torch.int8).reshape(w.shape), scales

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """The dequantized grid value of ``w`` (float32, no gradient)."""
        codes, scales = self.encode(w)
        return decode(codes, scales, w.shape)

    def fake_quantize(self, w: torch.Tensor) -> torch.Tensor:
        """Forward: the grid value; backward: identity (quantization-aware training)."""
        return straight_through(w, self.quantize(w).to(w.dtype))

    def encode_exact(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Codes and scales that decode to exactly ``w``, or None if ``w`` is not on this grid.

        An on-grid block's absmax is ``|code_max| · scale``: the absmax rule recovers its scale.
        """
        codes, scales = self.encode(w, rule="absmax")
        if torch.equal(decode(codes, scales, w.shape), w.detach().to(torch.float32)):
            return codes, scales
        return None

    def snap(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` itself when already on the grid, else its quantized value: deploying a weight twice
        changes nothing (the mean/median rules alone would shrink a ternary weight's scale)."""
        if self.encode_exact(w) is not None:
            return w.detach().to(torch.float32)
        return self.quantize(w)


@dataclass(frozen=True)
class Bf16Grid:
    """bfloat16: weights are rounded to the nearest bf16 value and stored as bf16."""

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return w.detach().to(torch.bfloat16).to(torch.float32)

    def fake_quantize(self, w: torch.Tensor) -> torch.Tensor:
        return straight_through(w, self.quantize(w).to(w.dtype))

    def snap(self, w: torch.Tensor) -> torch.Tensor:
        return self.quantize(w)


def quantize_activations(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-token absmax quantization of activations to ``bits`` bits with an STE (BitNet b1.58,
    Eq. 4: ``x_q = clamp(round(x · Q_b / max|x|), −Q_b − 1, Q_b) · max|x| / Q_b``, ``Q_b = 2^(b−1) − 1``;
    one scale per token, i.e. per row of the last dimension)."""
    qmax = 2 ** (bits - 1) - 1
    xf = x.detach().to(torch.float32)
    scale = qmax / xf.abs().amax(-1, keepdim=True).clamp(min=1e-5)
    q = (xf * scale).round().clamp(-qmax - 1, qmax) / scale
    return straight_through(x, q.to(x.dtype))
