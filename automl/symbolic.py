"""Symbolic programs to and from JSON; the one loader for every symbolic value read from storage.

A stored recipe, space, objective or DNA names the classes to rebuild (``"_type"``). A study
database is untrusted input, so :func:`load_symbolic` checks the whole JSON tree against an
allow-list of *exact classes* before anything is built: ours (every ``pg.Object`` defined under
``automl.``), PyGlove's hyper values (``OneOf``, ``ManyOf``, ``Float``) and ``DNA``. Nothing is
imported on a stored name, nothing is unpickled (PyGlove's opaque-object wrapper, functions,
types and methods are simply not on the list). A user's own classes (an adapter subclass in
their module) are accepted only when the caller trusts their module: ``trusted=["mymodule"]``.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import pyglove as pg

from automl.errors import StudyError

TYPE_KEY = pg.JSONConvertible.TYPE_NAME_KEY
_HYPER = (pg.hyper.OneOf, pg.hyper.ManyOf, pg.hyper.Float)
_OURS_PACKAGES = ("automl.adapters", "automl.quant", "automl.merge", "automl.mitigation", "automl.recipe",
                  "automl.objective")
Trusted = Iterable["str | ModuleType | type"]
# roots a user can't trust wholesale: PyGlove's own (its opaque-object wrapper unpickles),
# ours (already allowed class by class), the standard library's entry points
NEVER_TRUSTED = ("pyglove", "hyper", "automl", "builtins", "os", "sys", "subprocess", "pickle", "importlib")


def _subclasses(cls: type) -> Iterable[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _module_of(item: "str | ModuleType | type") -> str:
    if isinstance(item, ModuleType):
        return item.__name__
    if isinstance(item, type):
        return item.__module__
    if isinstance(item, str):
        return item
    raise StudyError(f"trusted entries are module names, modules or classes, got {type(item).__name__}.")


def import_trusted(spec: str) -> ModuleType:
    """Import a module the *user* named as trusted (``--trust``): a dotted module path importable
    from the working directory, or a ``.py`` file (registered under its stem)."""
    path = Path(spec)
    try:
        if path.suffix == ".py":
            if not path.is_file():
                raise StudyError(f"trusted module file {spec!r} does not exist.")
            if path.stem in sys.modules and getattr(sys.modules[path.stem], "__file__", None) == str(path.resolve()):
                return sys.modules[path.stem]
            module_spec = importlib.util.spec_from_file_location(path.stem, path.resolve())
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
            return module
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        return importlib.import_module(spec)
    except StudyError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed: say which and why, one line
        raise StudyError(f"cannot import trusted module {spec!r}: {type(e).__name__}: {e}".replace("\n", " ")) from None


def trusted_modules(trusted: Trusted = ()) -> tuple[str, ...]:
    """Module names the user trusts (``.py`` paths become their stem; modules get imported)."""
    names = []
    for item in trusted or ():
        root = _module_of(item).split(".")[0] if not isinstance(item, type) else ""
        if root in NEVER_TRUSTED:
            raise StudyError(f"module {_module_of(item)!r} can't be trusted wholesale: trust only the module "
                             f"that defines your own classes (e.g. --trust my_adapters).")
        if isinstance(item, str) and (item.endswith(".py") or item not in sys.modules):
            module = import_trusted(item)
            names.append(module.__name__)
        else:
            names.append(_module_of(item))
    return tuple(names)


def allowed_classes(trusted: Trusted = ()) -> dict[str, type]:
    """Serialization name → class for every class a stored program may name."""
    for package in _OURS_PACKAGES:
        importlib.import_module(package)
    modules = trusted_modules(trusted)
    explicit = {item for item in trusted or () if isinstance(item, type)}

    def ours(cls: type) -> bool:
        module = cls.__module__
        return (module.startswith("automl.") or cls in explicit
                or any(module == m or module.startswith(m + ".") for m in modules))

    classes = {cls for cls in _subclasses(pg.Object) if ours(cls) and not cls.__name__.startswith("_")}
    classes.update(_HYPER)
    classes.add(pg.DNA)
    return {name: cls for name, cls in pg.JSONConvertible.registered_types() if cls in classes}


def _check_tree(node: Any, allowed: dict[str, type], where: str, path: str) -> None:
    if isinstance(node, dict):
        if TYPE_KEY in node:
            name = node[TYPE_KEY]
            if not isinstance(name, str) or name not in allowed:
                shown = name if isinstance(name, str) else type(name).__name__
                module = shown.rpartition(".")[0]
                hint = ("" if not module or module.split(".")[0] in NEVER_TRUSTED else
                        f"; if it is your own class, trust its module: trusted=[{module!r}] / --trust {module}")
                raise StudyError(f"{where}: type {shown[:120]!r} at {path or 'top level'} is not trusted, so "
                                 f"nothing was loaded (allowed: automl's classes, PyGlove hyper values and "
                                 f"DNA{hint}).")
        for key, value in node.items():
            if not isinstance(key, str):
                raise StudyError(f"{where}: non-string key at {path or 'top level'}.")
            if key != TYPE_KEY:
                _check_tree(value, allowed, where, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_tree(value, allowed, where, f"{path}[{i}]")
    elif not isinstance(node, (str, int, float, bool, type(None))):
        raise StudyError(f"{where}: value of type {type(node).__name__} at {path} is not JSON.")


def load_symbolic(text: Any, trusted: Trusted = (), where: str = "stored program",
                  expect: type | tuple[type, ...] | None = None) -> Any:
    """Rebuild a symbolic value from stored JSON after checking every ``_type`` in it against the
    allow-list (see module docstring); anything else is a :class:`StudyError` naming ``where``
    (study, trial, field) and the type. ``expect``: the class(es) the result must be."""
    if not isinstance(text, str):
        raise StudyError(f"{where}: expected a JSON string, found {type(text).__name__}.")
    try:
        tree = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise StudyError(f"{where}: not valid JSON ({type(e).__name__}: {str(e)[:120]}).") from None
    try:
        _check_tree(tree, allowed_classes(trusted), where, "")
    except RecursionError:
        raise StudyError(f"{where}: nested too deeply to be a program.") from None
    try:
        value = pg.from_json(tree, auto_import=False)
    except Exception as e:  # noqa: BLE001 - a malformed (but allowed) program: one clear line
        message = " ".join(str(e).split())[:300]
        raise StudyError(f"{where}: cannot be rebuilt ({type(e).__name__}: {message}).") from None
    if expect is not None and not isinstance(value, expect):
        names = [c.__name__ for c in (expect if isinstance(expect, tuple) else (expect,))]
        raise StudyError(f"{where}: expected {' or '.join(names)}, found {type(value).__name__}.")
    return value


def fingerprint(value: Any) -> str:
    """A stable hash of a symbolic value (of its canonical JSON)."""
    canonical = json.dumps(json.loads(pg.to_json_str(value)), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
