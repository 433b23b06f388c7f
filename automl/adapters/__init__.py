"""Adapters: symbolic fine-tuning methods (each a ``pg.Object``)."""
from automl.adapters.base import Adapter, AdapterLayer, merge_adapters, select_linears, trainable_parameters
from automl.adapters.full import FullFineTune
from automl.adapters.lora import LoRA, LoraLinear

__all__ = ["Adapter", "AdapterLayer", "FullFineTune", "LoRA", "LoraLinear", "merge_adapters",
           "select_linears", "trainable_parameters"]
