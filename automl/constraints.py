"""Typed field constraints (``pg.typing`` value specs) that also check every candidate inside a
hyper value: ``Quantization(bits=pg.oneof([8, 3]))`` is refused when it is written, not after N
failed trials. Each check raises :class:`SearchSpaceError` with the problem and the fix.
"""
from __future__ import annotations

from typing import Any, Callable

import pyglove as pg

from automl.errors import SearchSpaceError


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checked:
    """Mixin: after PyGlove's own checks, ``check(value)`` (raises :class:`SearchSpaceError`)."""

    def __init__(self, check: Callable[[Any], None], **kwargs: Any):
        super().__init__(**kwargs)
        self._check = check

    def _validate(self, path: Any, value: Any) -> None:
        super()._validate(path, value)
        self._check(value)


class CheckedInt(_Checked, pg.typing.Int):
    """``pg.typing.Int`` with an extra check."""


class CheckedFloat(_Checked, pg.typing.Float):
    """``pg.typing.Float`` with an extra check."""


class CheckedStr(_Checked, pg.typing.Str):
    """``pg.typing.Str`` with an extra check."""


def _require(test: Callable[[Any], bool], message: Callable[[Any], str]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not test(value):
            raise SearchSpaceError(message(value))
    return check


def positive_int(field: str) -> pg.typing.Int:
    """An integer ≥ 1 (checked in every candidate)."""
    return CheckedInt(_require(lambda v: v >= 1, lambda v: f"{field} must be a positive integer, got {v}."))


def positive_float(field: str) -> pg.typing.Float:
    """A number > 0; a ``pg.floatv`` range must lie in ``[0, ∞)``."""
    return CheckedFloat(_require(lambda v: v > 0, lambda v: f"{field} must be positive, got {v}."), min_value=0.0)


def unit_interval(field: str) -> pg.typing.Float:
    """A number in ``[0, 1)``; a ``pg.floatv`` range must lie in ``[0, 1]``."""
    return CheckedFloat(_require(lambda v: 0.0 <= v < 1.0, lambda v: f"{field} must lie in [0, 1), got {v}."),
                        min_value=0.0, max_value=1.0)


def one_of(field: str, choices: tuple, spec: type, hint: str = "") -> Any:
    """A value among ``choices`` (``spec``: CheckedInt, CheckedFloat or CheckedStr)."""
    return spec(_require(lambda v: v in choices,
                         lambda v: f"{field}={v!r} is not supported; choose one of {choices}{hint}."))


# Module-level specs: PyGlove reads string annotations (``from __future__ import annotations``)
# as names, so fields are annotated with these names.
RANK = positive_int("rank")
LORA_ALPHA = positive_float("LoRA.alpha")
LORA_DROPOUT = unit_interval("LoRA.dropout")
QUANT_BITS = one_of("Quantization.bits", (32, 16, 8, 4, 2, 1.58), CheckedFloat, " (1.58 = ternary BitNet b1.58)")
QUANT_GROUP_SIZE = positive_int("Quantization.group_size").noneable()
QUANT_SCALE_RULE = one_of("Quantization.scale_rule", ("mean", "median"), CheckedStr,
                          " ('mean': BitNet b1.58, 'median': BitNet b1.58 Reloaded)")
QUANT_ACTIVATIONS = one_of("Quantization.activations", (8,), CheckedInt, " or None (float activations)").noneable()
