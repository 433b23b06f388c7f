"""Packed export of a deployed quantized model as safetensors (never pickle), and its loader.

Each quantized linear weight ``<key>`` is stored as ``<key>.codes`` (bytes packed as in
:mod:`automl.quant.packing`) and ``<key>.scales`` (bfloat16, rows × groups); bf16 weights as
bfloat16 tensors; every other tensor as it is. The header's metadata entry ``automl.quant``
(JSON) records the label and, per weight, its packing and shape. Loading restores exactly the
deployed float32 weights (see :mod:`automl.quant.formats` for why the round trip is exact).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from automl.quant.formats import decode
from automl.quant.packing import pack, unpack
from automl.quant.quantization import Quantization, QuantizationError, quantized_weight_keys

METADATA_KEY = "automl.quant"


def packed_tensors(model: nn.Module, quantization: Quantization,
                   ternary_packing: str = "trits") -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of the export and its metadata; raises if a weight is not on its grid."""
    grid, packing = quantization.grid(), quantization.packing(ternary_packing)
    keys = quantized_weight_keys(model) if grid is not None else set()
    tensors, entries = {}, {}
    for key, t in model.state_dict().items():
        t = t.detach().cpu()
        if key not in keys:
            tensors[key] = t.contiguous()
            continue
        not_deployed = QuantizationError(f"weight {key!r} is not on the {quantization.label} grid; call "
                                         f"quantization.deploy(model) (after merge_adapters) before exporting.")
        if packing == "bf16":
            stored = t.to(torch.bfloat16)
            if not torch.equal(stored.to(t.dtype), t):
                raise not_deployed
            tensors[key] = stored
        else:
            exact = grid.encode_exact(t)
            if exact is None:
                raise not_deployed
            codes, scales = exact
            tensors[f"{key}.codes"] = pack(codes, packing)
            tensors[f"{key}.scales"] = scales.contiguous()
        entries[key] = {"packing": packing, "shape": list(t.shape)}
    return tensors, {"label": quantization.label, "tensors": entries}


def save_packed(model: nn.Module, quantization: Quantization, path: str | Path,
                ternary_packing: str = "trits") -> Path:
    """Write the deployed ``model`` packed at ``quantization``'s format to ``path`` (safetensors).

    ``ternary_packing``: ``"trits"`` (5 per byte) or ``"ternary2"`` (2 bits) for 1.58-bit weights.
    """
    tensors, metadata = packed_tensors(model, quantization, ternary_packing)
    path = Path(path)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(metadata)})
    return path


def load_packed(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored by :func:`save_packed`, with every weight dequantized to float32."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if METADATA_KEY not in metadata:
            raise QuantizationError(f"{path} has no {METADATA_KEY!r} metadata: it was not written by "
                                    f"automl.quant.save_packed.")
        entries = json.loads(metadata[METADATA_KEY])["tensors"]
        stored = {k: f.get_tensor(k) for k in f.keys()}
    state = {}
    for key, entry in entries.items():
        shape = tuple(entry["shape"])
        if entry["packing"] == "bf16":
            state[key] = stored.pop(key).to(torch.float32)
        else:
            numel = shape[0] * shape[1]
            codes = unpack(stored.pop(f"{key}.codes"), entry["packing"], numel)
            state[key] = decode(codes, stored.pop(f"{key}.scales"), shape)
    state.update(stored)
    return state
