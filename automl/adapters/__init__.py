"""Adapters: symbolic fine-tuning methods (each a ``pg.Object``)."""
from automl.adapters.base import (Adapter, AdapterLayer, RankedAdapter, check_rank, merge_adapters,
                                  principal_svd, select_linears, trainable_parameters)
from automl.adapters.dora import DoRA
from automl.adapters.full import FullFineTune
from automl.adapters.lora import LoRA, LoraLinear
from automl.adapters.pissa import PiSSA
from automl.adapters.rslora import RsLoRA
from automl.adapters.svd import SORSA, SvdAdapter, SvdLinear, SVFit
from automl.adapters.welore import WeLoreRanks

__all__ = ["Adapter", "AdapterLayer", "DoRA", "FullFineTune", "LoRA", "LoraLinear", "PiSSA", "RankedAdapter", "RsLoRA",
           "SORSA", "SVFit", "SvdAdapter", "SvdLinear", "check_rank", "merge_adapters", "principal_svd",
           "select_linears", "trainable_parameters", "WeLoreRanks"]
