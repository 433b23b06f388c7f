"""Checks of a space against its task before a study is written: every candidate must be able
to run (a rank that fits every targeted layer, targets that match layers)."""
from __future__ import annotations

from typing import Any

import pyglove as pg
from torch import nn

from automl.adapters.base import RankedAdapter, check_rank, select_linears
from automl.errors import SearchSpaceError


def _candidates(value: Any) -> list[Any]:
    """The literal values a field may take: its own value, or a ``pg.oneof``'s literals."""
    if isinstance(value, pg.hyper.OneOf):
        return [c for c in value.candidates if not isinstance(c, pg.hyper.HyperValue)]
    if isinstance(value, pg.hyper.HyperValue):
        return []
    return [value]


def check_space_fits(space: Any, model: nn.Module, within: list[str] | None = None) -> None:
    """Refuse a space with a ranked-adapter candidate whose rank can't fit a layer it targets,
    or whose targets match no layer of ``model`` (the task's architecture; ``within``: the
    task's adaptable layers, which ``"all-linear"`` means)."""
    modules = dict(model.named_modules())
    adapters = pg.query(space, where=lambda v: isinstance(v, RankedAdapter))
    for path, adapter in adapters.items():
        if adapter.ranks is not None:
            continue  # per-layer ranks (WeLore) are sized to each layer when applied
        for targets in _candidates(adapter.targets):
            try:
                names = select_linears(model, targets, within)
                for rank in _candidates(adapter.rank):
                    for name in names:
                        check_rank(rank, name, modules[name])
            except SearchSpaceError as e:
                raise SearchSpaceError(f"search space {path or 'adapter'} ({type(adapter).__name__}): {e} "
                                       f"Every candidate must be able to run on the task.") from None
