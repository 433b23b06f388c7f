"""Quantization as a recipe dimension: what is trained, and what is deployed, at a bit-width.

``Quantization(bits=...)`` acts on every ``nn.Linear`` weight of the model (biases and other
tensors stay float32). Two regimes, chosen by what the adapter left trainable (reference.md,
"Quantization"):

- under an :class:`~automl.adapters.base.AdapterLayer` the frozen ``base.weight`` is quantized
  once and the adapter trains in full precision on top of it (QLoRA, Dettmers et al. 2023,
  arXiv 2305.14314, §3); a frozen plain linear layer is quantized once the same way;
- a plain linear layer whose weight trains becomes a :class:`QuantLinear`: the latent float
  weight trains and the forward uses its fake-quantized value through a straight-through
  estimator (quantization-aware training; BitNet b1.58, arXiv 2402.17764, §2).

:meth:`Quantization.deploy` runs on the merged model (plain ``nn.Linear`` everywhere) and puts
every linear weight on its grid, so the evaluated model is the deployed one. Activation
quantization (``activations=8``) is a forward pre-hook on each quantized layer, kept at deploy.
"""
from __future__ import annotations

from typing import Iterable

import pyglove as pg
import torch
from torch import nn

from automl.adapters.base import AdapterLayer, replace_module
from automl.errors import QuantizationError, SearchSpaceError
from automl.quant.formats import Bf16Grid, IntGrid, quantize_activations
from automl.quant.packing import packed_nbytes

TERNARY = 1.58
SUPPORTED_BITS = (32, 16, 8, 4, 2, TERNARY)
SCALE_RULES = ("mean", "median")
ACTIVATION_BITS = (None, 8)
TERNARY_PACKINGS = ("trits", "ternary2")


def _quantize_input_hook(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: quantize the layer's input per token to ``module.activation_bits``."""
    return (quantize_activations(args[0], module.activation_bits), *args[1:])


def install_activation_quantization(module: nn.Module, bits: int) -> None:
    """Quantize ``module``'s input to ``bits`` bits per token (once, however often called)."""
    if getattr(module, "activation_bits", None) is None:
        module.register_forward_pre_hook(_quantize_input_hook)
    module.activation_bits = bits


class QuantLinear(nn.Linear):
    """An ``nn.Linear`` whose forward uses the fake-quantized weight (QAT).

    It shares the parameters of the linear layer it replaces, so parameter names, state-dict
    keys and the optimizer's view are those of a plain ``nn.Linear``.
    """

    def __init__(self, linear: nn.Linear, grid: IntGrid | Bf16Grid):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight = linear.weight
        self.bias = linear.bias
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.grid.fake_quantize(self.weight), self.bias)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding the quantized weight (the forward's value)."""
        w = self.weight
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=w.device, dtype=w.dtype)
        out.weight.copy_(self.grid.quantize(w))
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out


def quantized_layers(model: nn.Module, names: Iterable[str] | None = None) -> list[tuple[str, nn.Module, nn.Linear]]:
    """``(name, outer, linear)`` for every linear weight of ``model`` (of the layers ``names`` when
    given: a task's adaptable layers, so a transformer's embeddings, tied output layer and new
    head stay in float): ``outer`` is the adapter layer wrapping ``linear`` (its ``base``) or
    ``linear`` itself. Linears inside an adapter layer other than its base (adapter-owned weights)
    are not quantized."""
    adapter_names = [n for n, m in model.named_modules() if isinstance(m, AdapterLayer)]
    chosen = None if names is None else set(names)
    layers = []
    for name, module in model.named_modules():
        if chosen is not None and name not in chosen:
            continue
        if isinstance(module, AdapterLayer):
            layers.append((name, module, module.base))
        elif isinstance(module, nn.Linear) and not any(name.startswith(a + ".") for a in adapter_names):
            layers.append((name, module, module))
    return layers


def quantized_weight_keys(model: nn.Module, names: Iterable[str] | None = None) -> set[str]:
    """State-dict keys of the weights :func:`quantized_layers` quantizes."""
    ids = {id(linear) for _, _, linear in quantized_layers(model, names)}
    return {f"{name}.weight" for name, module in model.named_modules() if id(module) in ids}


class Quantization(pg.Object):
    """Weight (and optionally activation) precision of the fine-tuned, deployed model.

    ``bits``: 32 (float32, nothing done), 16 (bfloat16), 8/4/2 (symmetric integers, absmax scale
    per output channel, or per group of ``group_size`` input columns), 1.58 (ternary BitNet
    b1.58: one scale per tensor, or per group, from ``scale_rule``: ``"mean"`` of |W| as BitNet,
    ``"median"`` as "BitNet b1.58 Reloaded"). ``scale_rule`` only applies to 1.58 and
    ``group_size`` only to integer and ternary weights (ignored otherwise, so both can sit in
    one search space). ``activations=8``: 8-bit per-token absmax activation quantization.
    Scales are stored in bfloat16 (see :mod:`automl.quant.formats`).
    """

    bits: float = 32
    group_size: int | None = None
    scale_rule: str = "mean"
    activations: int | None = None

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.bits, (int, float)) and self.bits not in SUPPORTED_BITS:
            raise SearchSpaceError(f"Quantization.bits={self.bits} is not supported; choose one of "
                                   f"{SUPPORTED_BITS} (1.58 = ternary BitNet b1.58).")
        if isinstance(self.group_size, int) and self.group_size <= 0:
            raise SearchSpaceError(f"Quantization.group_size must be a positive integer or None (one scale "
                                   f"per output channel), got {self.group_size}.")
        if isinstance(self.scale_rule, str) and self.scale_rule not in SCALE_RULES:
            raise SearchSpaceError(f"Quantization.scale_rule={self.scale_rule!r} is unknown; choose 'mean' "
                                   f"(BitNet b1.58) or 'median' (BitNet b1.58 Reloaded).")
        if (self.activations is None or isinstance(self.activations, int)) and self.activations not in ACTIVATION_BITS:
            raise SearchSpaceError(f"Quantization.activations={self.activations} is not supported; use None "
                                   f"(float activations) or 8 (8-bit per-token absmax).")

    @property
    def label(self) -> str:
        """Short stable name: ``fp32``, ``bf16``, ``int8``, ``int4-g32``, ``b1.58-median``, ``int8-a8``..."""
        label = {32: "fp32", 16: "bf16", 8: "int8", 4: "int4", 2: "int2", TERNARY: "b1.58"}[self.bits]
        if self.bits <= 8 and self.group_size is not None:
            label += f"-g{self.group_size}"
        if self.bits == TERNARY and self.scale_rule != "mean":
            label += f"-{self.scale_rule}"
        if self.activations is not None:
            label += f"-a{self.activations}"
        return label

    def grid(self) -> IntGrid | Bf16Grid | None:
        """The weight grid (None for float32)."""
        if self.bits == 32:
            return None
        if self.bits == 16:
            return Bf16Grid()
        if self.bits == TERNARY:
            return IntGrid(-1, 1, self.scale_rule, self.group_size, per_tensor=True)
        b = int(self.bits)
        return IntGrid(-2 ** (b - 1), 2 ** (b - 1) - 1, "absmax", self.group_size)

    def packing(self, ternary_packing: str = "trits") -> str | None:
        """How codes are packed in an export: int8, int4, int2, trits or ternary2; bf16; None for fp32."""
        if ternary_packing not in TERNARY_PACKINGS:
            raise SearchSpaceError(f"ternary_packing={ternary_packing!r} is unknown; choose 'trits' "
                                   f"(5 per byte, 1.6 bits) or 'ternary2' (2 bits).")
        if self.bits == 32:
            return None
        if self.bits == 16:
            return "bf16"
        if self.bits == TERNARY:
            return ternary_packing
        return f"int{int(self.bits)}"

    def check_layer(self, name: str, linear: nn.Linear) -> None:
        """``group_size`` must divide the layer's input dimension."""
        g = self.group_size
        if self.bits <= 8 and g is not None and linear.in_features % g:
            divisors = [d for d in (8, 16, 32, 64, 128, 256) if linear.in_features % d == 0]
            raise SearchSpaceError(f"Quantization(group_size={g}) does not divide the input dimension "
                                   f"{linear.in_features} of layer {name!r} ({linear.out_features}×"
                                   f"{linear.in_features}); choose a group_size dividing {linear.in_features} "
                                   f"(e.g. {divisors or [linear.in_features]}) or None (per output channel).")

    def apply(self, model: nn.Module, layers: Iterable[str] | None = None) -> nn.Module:
        """Prepare an adapted model for training at this precision (in place; returns it).

        Frozen linear weights (adapter bases included) are put on the grid once; trainable plain
        linear layers become :class:`QuantLinear` (QAT); activation hooks go on each layer.
        ``layers``: the names of the layers to quantize (default: every linear layer).
        """
        layers = quantized_layers(model, layers)
        for name, _, linear in layers:
            self.check_layer(name, linear)
        grid = self.grid()
        for name, outer, linear in layers:
            if grid is not None:
                if outer is linear and linear.weight.requires_grad:
                    if not name:
                        raise SearchSpaceError("quantization-aware training needs the trainable linear layer "
                                               "inside a container module; wrap it, e.g. nn.Sequential(layer).")
                    outer = QuantLinear(linear, grid)
                    replace_module(model, name, outer)
                else:
                    with torch.no_grad():
                        linear.weight.copy_(grid.snap(linear.weight))
            if self.activations is not None:
                install_activation_quantization(outer, self.activations)
        return model

    @torch.no_grad()
    def deploy(self, model: nn.Module, layers: Iterable[str] | None = None) -> nn.Module:
        """Put every linear weight (of ``layers``) of a merged model on its grid (in place; returns it).

        QAT layers are replaced by plain linears holding the quantized latent weight (what their
        forward computed); other weights (merged adapters, merged models) are re-quantized unless
        already exactly on the grid. No float weight is left over.
        """
        layers = quantized_layers(model, layers)
        unmerged = [name for name, outer, _ in layers if isinstance(outer, AdapterLayer)]
        if unmerged:
            raise QuantizationError(f"deploy needs a merged model, but layers {unmerged} are still adapter "
                                    f"layers; call automl.adapters.merge_adapters(model) first.")
        for name, _, linear in layers:
            self.check_layer(name, linear)
        grid = self.grid()
        for name, _, linear in layers:
            if isinstance(linear, QuantLinear):
                linear = linear.to_linear()
                replace_module(model, name, linear)
            elif grid is not None:
                linear.weight.copy_(grid.snap(linear.weight))
            if self.activations is not None:
                install_activation_quantization(linear, self.activations)
        return model

    def weight_nbytes(self, shape: torch.Size | tuple[int, int], ternary_packing: str = "trits") -> int:
        """Bytes a linear weight of ``shape`` takes in a packed export (codes plus bf16 scales)."""
        out_features, in_features = shape
        numel = out_features * in_features
        packing = self.packing(ternary_packing)
        if packing is None:
            return 4 * numel
        if packing == "bf16":
            return 2 * numel
        rows = 1 if self.bits == TERNARY and self.group_size is None else out_features
        groups = in_features // self.group_size if self.group_size else 1
        return packed_nbytes(packing, numel) + 2 * rows * groups

    def bits_per_parameter(self, model: nn.Module, layers: Iterable[str] | None = None,
                           ternary_packing: str = "trits") -> float:
        """Bits per stored scalar of the deployed model: packed linear weights (of ``layers``, default
        all) with their scales, every other state-dict tensor (biases, norms, embeddings, buffers) at
        its own width; tied tensors count once. Equals the size
        of :func:`automl.quant.save_packed`'s tensors × 8 / their scalar count. The file adds its
        JSON header (about 1 kB): for the 85k-parameter digits MLP that is 0.2–5 % of the file
        (more at fewer bits), for a 1M-parameter model under 0.5 % (``benchmarks/quant.py``)."""
        weights = quantized_weight_keys(model, layers)
        total_bits, total = 0, 0
        seen: set[tuple[int, tuple[int, ...]]] = set()
        for key, t in model.state_dict().items():
            tied = (t.data_ptr(), tuple(t.shape))
            if tied in seen:      # a tied tensor (a language model's output layer = its embeddings) is stored once
                continue
            seen.add(tied)
            total += t.numel()
            if key in weights:
                total_bits += 8 * self.weight_nbytes(t.shape, ternary_packing)
            else:
                total_bits += 8 * t.numel() * t.element_size()
        return total_bits / max(total, 1)

