"""Export a trained adapter as safetensors.

LoRA-family adapters (LoRA, rsLoRA, DoRA, PiSSA) are written in peft's format —
``adapter_config.json`` + ``adapter_model.safetensors`` — so that
``peft.PeftModel.from_pretrained(base_model, path)`` rebuilds the fine-tuned model on the same
base. PiSSA trains on a residual base; it is converted to a plain LoRA delta of rank 2r on the
original weight, ``s (B A − B₀ A₀) = s [B, −B₀] [A; A₀]`` (PiSSA §3; peft's
``path_initial_model_for_weight_conversion``). Other adapters (SORSA, SVFit, full fine-tuning)
are written as the merged full weights of the model, ``model.safetensors``. Every export also
holds the adapter's symbolic program, ``automl_adapter.json``.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from automl.adapters.base import Adapter
from automl.adapters.lora import LoRA
from automl.adapters.rslora import RsLoRA
from automl.errors import ExportError

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
FULL_WEIGHTS = "model.safetensors"
PROGRAM = "automl_adapter.json"
PEFT_PREFIX = "base_model.model."


def export_adapter(adapter: Adapter, trained_state: dict[str, torch.Tensor], base_model: nn.Module,
                   path: str | Path) -> Path:
    """Write ``adapter``'s ``trained_state`` (from :meth:`Adapter.trained_state`) under ``path``.

    ``base_model`` is the pretrained model the adapter was trained on (before any adapter was
    applied). Returns the folder written.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / PROGRAM).write_text(adapter.to_json_str())
    if isinstance(adapter, LoRA):
        config, tensors = peft_export(adapter, trained_state, base_model)
        (path / PEFT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(tensors, str(path / PEFT_WEIGHTS), metadata={"format": "pt"})
    else:
        save_file(merged_state_dict(trained_state, base_model), str(path / FULL_WEIGHTS), metadata={"format": "pt"})
    return path


def _linear(base_model: nn.Module, layer: str) -> nn.Linear:
    module = dict(base_model.named_modules()).get(layer)
    if not isinstance(module, nn.Linear):
        raise ExportError(f"the trained state adapts layer {layer!r}, which is not an nn.Linear of the base "
                          f"model; export onto the pretrained model the adapter was trained on.")
    return module


def peft_export(adapter: LoRA, state: dict[str, torch.Tensor],
                base_model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """peft's ``LoraConfig`` (as a dict) and adapter tensors for a LoRA-family trained state.

    Each layer's ``lora_alpha`` is set so that peft's scale (``alpha / r``, or ``alpha / √r``
    with ``use_rslora``) equals ours at the exported rank; ranks or alphas that differ from the
    most common one go to ``rank_pattern`` / ``alpha_pattern`` (exact-name patterns).
    """
    layers = sorted(k[: -len(".lora_A")] for k in state if k.endswith(".lora_A"))
    if not layers:
        raise ExportError("the trained state holds no lora_A tensor; pass adapter.trained_state(model) "
                          "of a model adapted by this LoRA-family adapter.")
    rslora = isinstance(adapter, RsLoRA)
    use_dora = f"{layers[0]}.lora_magnitude_vector" in state
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for layer in layers:
        linear = _linear(base_model, layer)
        a, b = state[f"{layer}.lora_A"], state[f"{layer}.lora_B"]
        if a.shape[1] != linear.in_features or b.shape[0] != linear.out_features:
            raise ExportError(f"layer {layer!r}: factors A {tuple(a.shape)}, B {tuple(b.shape)} do not fit the "
                              f"base layer ({linear.out_features}×{linear.in_features}).")
        scale = adapter.scaling(a.shape[0])
        if f"{layer}.lora_A0" in state:  # PiSSA → plain LoRA delta of rank 2r
            a = torch.cat([a, state[f"{layer}.lora_A0"]], dim=0)
            b = torch.cat([b, -state[f"{layer}.lora_B0"]], dim=1)
        ranks[layer] = a.shape[0]
        alphas[layer] = scale * (math.sqrt(a.shape[0]) if rslora else a.shape[0])
        prefix = PEFT_PREFIX + layer
        tensors[f"{prefix}.lora_A.weight"] = a.detach().cpu().contiguous()
        tensors[f"{prefix}.lora_B.weight"] = b.detach().cpu().contiguous()
        if use_dora:
            magnitude = state[f"{layer}.lora_magnitude_vector"]
            tensors[f"{prefix}.lora_magnitude_vector"] = magnitude.detach().cpu().contiguous()
    rank = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "target_modules": "|".join(re.escape(layer) for layer in layers),
        "r": rank,
        "lora_alpha": alpha,
        "rank_pattern": {_exact(n): r for n, r in ranks.items() if r != rank},
        "alpha_pattern": {_exact(n): a for n, a in alphas.items() if a != alpha},
        "use_rslora": rslora,
        "use_dora": use_dora,
        "lora_dropout": float(adapter.dropout),
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
    }
    return config, tensors


def _exact(layer: str) -> str:
    """A peft pattern key matching exactly ``layer`` (peft matches ``(.*\\.)?(key)$``)."""
    return "^" + re.escape(layer)


def merged_state_dict(state: dict[str, torch.Tensor], base_model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict with the trained (merged) tensors in place, on the CPU."""
    full = {k: v.detach().cpu().clone() for k, v in base_model.state_dict().items()}
    for key, tensor in state.items():
        if key not in full or full[key].shape != tensor.shape:
            where = "absent from" if key not in full else f"shaped {tuple(full[key].shape)} in"
            raise ExportError(f"trained tensor {key!r} {tuple(tensor.shape)} is {where} the base model; export "
                              f"onto the pretrained model the adapter was trained on.")
        full[key] = tensor.detach().cpu().clone().to(full[key].dtype)
    return full
