"""Bit packing of integer codes into bytes, and the byte counts of each packing.

- ``int8``: one signed byte per code.
- ``int4``: two codes per byte, offset by 8 into a nibble; the first code in the low nibble.
- ``2bit``: four codes per byte (int2 codes offset by 2, ternary codes offset by 1); the first
  code in the lowest two bits.
- ``trits``: five ternary codes per byte as a base-3 number ``Σ_i (c_i + 1) · 3^i ≤ 242``
  (3^5 = 243 ≤ 256: log2(3)·5/8 = 99 % of the byte is used, 1.6 bits per weight).

Codes are flattened in row-major order and padded with zeros to a whole number of bytes.
"""
from __future__ import annotations

import math

import torch

# packing -> (codes per byte, offset added to a code)
PACKINGS: dict[str, tuple[int, int]] = {"int8": (1, 0), "int4": (2, 8), "int2": (4, 2),
                                        "ternary2": (4, 1), "trits": (5, 1)}


def packed_nbytes(packing: str, numel: int) -> int:
    """Bytes that ``numel`` codes occupy once packed."""
    per_byte, _ = PACKINGS[packing]
    return math.ceil(numel / per_byte)


def pack(codes: torch.Tensor, packing: str) -> torch.Tensor:
    """Pack int8 ``codes`` into a flat tensor of bytes (int8 for ``int8``, uint8 otherwise)."""
    flat = codes.reshape(-1).to(torch.int16)
    if packing == "int8":
        return flat.to(torch.int8)
    per_byte, offset = PACKINGS[packing]
    digits = flat + offset
    pad = (-digits.numel()) % per_byte
    digits = torch.cat([digits, digits.new_zeros(pad)]).reshape(-1, per_byte)
    base = 3 if packing == "trits" else 2 ** (8 // per_byte)
    weights = base ** torch.arange(per_byte, dtype=torch.int16, device=codes.device)
    return (digits * weights).sum(-1).to(torch.uint8)


def unpack(packed: torch.Tensor, packing: str, numel: int) -> torch.Tensor:
    """The first ``numel`` int8 codes stored in ``packed``."""
    if packing == "int8":
        return packed.reshape(-1)[:numel].to(torch.int8)
    per_byte, offset = PACKINGS[packing]
    base = 3 if packing == "trits" else 2 ** (8 // per_byte)
    weights = base ** torch.arange(per_byte, dtype=torch.int16, device=packed.device)
    digits = (packed.to(torch.int16).unsqueeze(-1) // weights) % base
    return (digits.reshape(-1)[:numel] - offset).to(torch.int8)
