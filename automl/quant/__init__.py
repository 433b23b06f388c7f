"""Quantization: fake-quantized training (STE), deployment on the grid, packed export.

``quant.Quantization(bits=32|16|8|4|2|1.58, group_size=None|int, scale_rule="mean"|"median",
activations=None|8)`` is the recipe dimension; ``save_packed`` / ``load_packed`` write and read a
deployed model as packed safetensors.
"""
from automl.quant.export import load_packed, packed_tensors, save_packed
from automl.quant.formats import Bf16Grid, IntGrid, decode, quantize_activations, straight_through
from automl.quant.packing import pack, packed_nbytes, unpack
from automl.quant.quantization import (SUPPORTED_BITS, Quantization, QuantizationError, QuantLinear,
                                       quantized_layers)

__all__ = ["Bf16Grid", "IntGrid", "QuantLinear", "Quantization", "QuantizationError", "SUPPORTED_BITS",
           "decode", "load_packed", "pack", "packed_nbytes", "packed_tensors", "quantize_activations",
           "quantized_layers", "save_packed", "straight_through", "unpack"]
