"""Merge methods: each a small ``pg.Object`` combining several fine-tuned state dicts."""
from automl.merge.base import MergeMethod, check_compatible
from automl.merge.linear import Linear

__all__ = ["Linear", "MergeMethod", "check_compatible"]
