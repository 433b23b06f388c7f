"""Symbolic programs to and from JSON, loading only trusted types.

A stored recipe or space names the classes to rebuild (``"_type"``). Loading imports and builds
only types from trusted modules (``automl``, ``search_spaces``, PyGlove's own), so a study
database cannot make us construct arbitrary objects.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any, Iterable

import pyglove as pg

from automl.errors import StudyError

TRUSTED = ("automl", "search_spaces", "pyglove", "hyper")


def _types(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        if isinstance(node.get("_type"), str):
            yield node["_type"]
        for v in node.values():
            yield from _types(v)
    elif isinstance(node, list):
        for v in node:
            yield from _types(v)


def load_symbolic(text: str, trusted: Iterable[str] = ()) -> Any:
    """Rebuild a symbolic object from JSON, refusing types outside trusted module prefixes."""
    prefixes = TRUSTED + tuple(trusted)
    try:
        tree = json.loads(text)
    except json.JSONDecodeError as e:
        raise StudyError(f"stored program is not valid JSON ({e}).") from e
    for type_name in set(_types(tree)):
        root = type_name.split(".", 1)[0]
        if root not in prefixes:
            raise StudyError(f"stored program uses type {type_name!r} from an untrusted module; "
                             f"trusted prefixes are {list(prefixes)} (pass trusted=[{root!r}] to allow it).")
        module = type_name.rpartition(".")[0]
        if root not in ("pyglove", "hyper") and module:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise StudyError(f"cannot import {module!r} to rebuild {type_name!r}: {e}.") from e
    return pg.from_json_str(text)


def fingerprint(value: Any) -> str:
    """A stable hash of a symbolic value (of its canonical JSON)."""
    canonical = json.dumps(json.loads(pg.to_json_str(value)), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
