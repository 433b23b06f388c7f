"""Export a trained adapter as safetensors.

LoRA-family adapters (LoRA, rsLoRA, DoRA, PiSSA) are written in peft's format —
``adapter_config.json`` + ``adapter_model.safetensors`` — so that
``peft.PeftModel.from_pretrained(base_model, path)`` rebuilds the fine-tuned model on the same
base. PiSSA trains on a residual base; it is converted to a plain LoRA delta of rank 2r on the
original weight, ``s (B A − B₀ A₀) = s [B, −B₀] [A; A₀]`` (PiSSA §3; peft's
``path_initial_model_for_weight_conversion``). Each adapter writes its own format
(:meth:`automl.adapters.Adapter.export`); this module adds the program and the prefix. Other adapters (SORSA, SVFit, full fine-tuning)
are written as the merged full weights of the model, ``model.safetensors``. Every export also
holds the adapter's symbolic program, ``automl_adapter.json``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from automl.adapters.base import Adapter
from automl.adapters.lora import PEFT_CONFIG, PEFT_PREFIX, PEFT_WEIGHTS  # noqa: F401 (re-exported)
from automl.errors import ExportError

FULL_WEIGHTS = "model.safetensors"
TRAINED_MODULES = "trained_modules.safetensors"
PROGRAM = "automl_adapter.json"


def export_adapter(adapter: Adapter, trained_state: dict[str, torch.Tensor], base_model: nn.Module,
                   path: str | Path, prefix: str = "") -> Path:
    """Write ``adapter``'s ``trained_state`` (from :meth:`Adapter.trained_state`) under ``path``.

    ``base_model`` is the pretrained model the adapter was trained on (before any adapter was
    applied). ``prefix``: the dotted name of the submodule to export for (a task's
    ``export_prefix``, e.g. the Hugging Face encoder inside a classifier); tensor names are made
    relative to it, so ``peft.PeftModel.from_pretrained(that_submodule, path)`` loads the export.
    Trained tensors outside it (a classifier head trained in full) go to ``trained_modules.safetensors``
    under their full names. Returns the folder written.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / PROGRAM).write_text(adapter.to_json_str())
    if prefix:
        lead = prefix + "."
        outside = {k: v.detach().cpu().contiguous() for k, v in trained_state.items() if not k.startswith(lead)}
        trained_state = {k[len(lead):]: v for k, v in trained_state.items() if k.startswith(lead)}
        base_model = base_model.get_submodule(prefix)
        if outside:
            save_file(outside, str(path / TRAINED_MODULES), metadata={"format": "pt"})
    adapter.export(trained_state, base_model, path)
    return path


def linear_of(base_model: nn.Module, layer: str) -> nn.Linear:
    """The ``nn.Linear`` called ``layer`` in ``base_model`` (an :class:`ExportError` otherwise)."""
    module = dict(base_model.named_modules()).get(layer)
    if not isinstance(module, nn.Linear):
        raise ExportError(f"the trained state adapts layer {layer!r}, which is not an nn.Linear of the base "
                          f"model; export onto the pretrained model the adapter was trained on.")
    return module


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
