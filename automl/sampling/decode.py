"""A DNA into a recipe, building only the chosen branch of the space.

``pg.template(space).decode(dna)`` (what ``pg.materialize`` runs) clones the whole space, every
candidate of every choice re-validated against its class schema, and then picks: about 15 ms a
trial on the digits space, more than a trial's storage writes. :class:`Decoder` keeps the
space's JSON form instead and, per DNA, puts each decision's chosen candidate (decoded the same
way, recursively) or float in its place, then builds the recipe with ``pg.from_json``: only the
recipe's own objects are constructed, each validated by its schema as usual. The result is the
one PyGlove's decode gives (``tests/test_space.py`` compares every recipe of the tabular spaces
and random ones of every example space). Decisions it does not model (``pg.manyof``, custom
decision points, a choice whose JSON is not a plain ``hyper.OneOf``) send the whole space to
PyGlove's decode.
"""
from __future__ import annotations

import json
from typing import Any

import pyglove as pg

_ONE_OF, _FLOAT = "hyper.OneOf", "hyper.Float"


class Decoder:
    """Decodes DNAs of ``space`` (a symbolic value with hyper values) into concrete values."""

    def __init__(self, space: Any, spec: pg.geno.Space | None = None):
        self.template = pg.template(space)
        self.spec = spec or self.template.dna_spec()
        self._json = json.dumps(space.to_json()) if isinstance(space, pg.Symbolic) else None
        self.fast = self._json is not None and _supported(json.loads(self._json), self.spec)

    def decode(self, dna: pg.DNA) -> Any:
        if not self.fast:
            return self.template.decode(dna)
        dna.use_spec(self.spec)
        chosen = {str(k): v for k, v in dna.to_dict(key_type="id", value_type="value").items()}
        return pg.from_json(_fill(json.loads(self._json), self.spec, chosen), auto_import=False)


def _slot(node: Any, location: pg.KeyPath) -> tuple[Any, Any]:
    """The container and key of the value at ``location`` inside the JSON ``node``."""
    keys = location.keys
    for key in keys[:-1]:
        node = node[key]
    return node, keys[-1]


def _supported(node: Any, spec: pg.geno.Space) -> bool:
    for e in spec.elements:
        if not e.location.keys:
            return False
        try:
            parent, key = _slot(node, e.location)
            hyper = parent[key]
        except (KeyError, IndexError, TypeError):
            return False
        if isinstance(e, pg.geno.Float):
            if not (isinstance(hyper, dict) and hyper.get("_type") == _FLOAT):
                return False
        elif isinstance(e, pg.geno.Choices) and e.num_choices == 1:
            if not (isinstance(hyper, dict) and hyper.get("_type") == _ONE_OF and hyper.get("where") is None
                    and len(hyper["candidates"]) == len(e.candidates)):
                return False
            if not all(_supported(c, s) for c, s in zip(hyper["candidates"], e.candidates)):
                return False
        else:
            return False
    return True


def _fill(node: Any, spec: pg.geno.Space, chosen: dict[str, Any]) -> Any:
    """``node`` (JSON, changed in place) with every decision of ``spec`` replaced by its choice."""
    for e in spec.elements:
        parent, key = _slot(node, e.location)
        value = chosen[str(e.id)]
        if isinstance(e, pg.geno.Float):
            parent[key] = value
        else:
            parent[key] = _fill(parent[key]["candidates"][value], e.candidates[value], chosen)
    return node
