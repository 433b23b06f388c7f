"""Merge methods: each a small ``pg.Object`` combining several fine-tuned state dicts.

``Linear`` (model soup), ``TaskArithmetic``, ``TIES``, ``DARE``, ``SLERP`` and ``WeightMatching``
(Git Re-Basin, then any of the others). LoRA models merge on their factors via
``MergeMethod.merge_low_rank`` with ``lora_task_vectors``; ``diagnostics`` measures loss
barriers and singular-vector alignment.
"""
from automl.merge import diagnostics
from automl.merge.base import MergeMethod, check_compatible
from automl.merge.diagnostics import loss_barrier, merge_metrics, singular_alignment, singular_value_change
from automl.merge.factored import LowRankDelta, lora_task_vectors
from automl.merge.linear import Linear
from automl.merge.rebasin import (PermutationSpec, WeightMatching, permute_state, spec_from_module, spec_from_state,
                                  weight_matching)
from automl.merge.slerp import SLERP
from automl.merge.task_arithmetic import DARE, TIES, TaskArithmetic

__all__ = ["DARE", "Linear", "LowRankDelta", "MergeMethod", "PermutationSpec", "SLERP", "TIES", "TaskArithmetic",
           "WeightMatching", "check_compatible", "diagnostics", "lora_task_vectors", "loss_barrier", "merge_metrics",
           "permute_state", "singular_alignment", "singular_value_change", "spec_from_module", "spec_from_state",
           "weight_matching"]
