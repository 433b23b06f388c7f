"""Errors raised on purpose by automl.

Every error is an :class:`AutomlError`; the CLI turns one into a single line and exit code 2.
Messages name the problem and the fix.
"""
from __future__ import annotations


class AutomlError(Exception):
    """Base of every error automl raises on purpose."""


class SearchSpaceError(AutomlError, ValueError):
    """A recipe, search space, task or objective is malformed (bad value, unknown name...)."""


class StudyError(AutomlError):
    """A study cannot be created, opened, resumed or read (storage, name, space mismatch)."""


class TrainingError(AutomlError):
    """A trial's training could not finish (non-finite loss, diverged weights...)."""


class ExportError(AutomlError):
    """A trained state cannot be exported onto the given base model."""


class QuantizationError(AutomlError, ValueError):
    """A model is not in the state a quantization step needs (not merged, not deployed...)."""


class DeviceError(AutomlError, ValueError):
    """A requested torch device does not exist or is not available here (``--device cuda``
    on a machine without CUDA, ``--device foo``)."""
