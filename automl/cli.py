"""The ``automl`` command: run searches, join them as a worker, review and reproduce trials.

Every command takes ``--storage URL`` (default: the study's SQLite file under ``studies/``).
Errors print one line (``automl: error: ...``) and exit with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import pandas as pd

from automl.errors import AutomlError, SearchSpaceError

SPACES_PACKAGE = "search_spaces"


def load_space_module(spec: str) -> ModuleType:
    """A search-space module: a file path, a module under ``search_spaces/`` by short name
    (``digits``), or a dotted module path (``search_spaces.digits``). It must define ``SPACE``."""
    path = Path(spec)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise SearchSpaceError(f"search space file {spec!r} does not exist.")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        name = spec if "." in spec else f"{SPACES_PACKAGE}.{spec.replace('-', '_')}"
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            available = sorted(p.stem for p in Path(SPACES_PACKAGE).glob("*.py") if p.stem != "__init__")
            raise SearchSpaceError(f"no search space {spec!r} ({e}); ready spaces: {available}, "
                                   f"or give a path to a .py file defining SPACE.") from None
    if not hasattr(module, "SPACE"):
        raise SearchSpaceError(f"search space module {spec!r} defines no SPACE (an automl.Recipe with "
                               f"pg.oneof / pg.floatv values).")
    return module


def _print_frame(frame: pd.DataFrame) -> None:
    if frame.empty:
        print("(no completed trials)")
        return
    with pd.option_context("display.max_columns", None, "display.width", 200,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(frame.to_string())


def cmd_search(args: argparse.Namespace) -> None:
    import automl
    module = load_space_module(args.space)
    task = args.task or getattr(module, "TASK", "digits")
    objective = getattr(module, "OBJECTIVE", None)
    name = args.study or Path(args.space).stem.split(".")[-1]
    study = automl.search(module.SPACE, task=task, objective=objective, algorithm=args.algorithm,
                          n_trials=args.trials, study_name=name, storage=args.storage, seed=args.seed,
                          pruner=args.pruner, timeout=args.timeout, progress=not args.quiet,
                          device=args.device)
    print(f"study {study.name!r}: {len(study.trials())} trials in {study.storage_url}")
    _print_frame(study.leaderboard(top=args.top))


def cmd_worker(args: argparse.Namespace) -> None:
    from automl.study import Study
    study = Study.load(args.study, storage=args.storage)
    study.optimize(args.trials, algorithm=args.algorithm, seed=args.seed, pruner=args.pruner,
                   timeout=args.timeout, progress=not args.quiet, device=args.device)
    print(f"worker finished: study {study.name!r} now has {len(study.trials())} trials")


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from automl.study import Study
    _print_frame(Study.load(args.study, storage=args.storage).leaderboard(top=args.top))


def cmd_show(args: argparse.Namespace) -> None:
    from automl.study import Study
    study = Study.load(args.study, storage=args.storage)
    metrics = study.metrics(args.trial)
    try:
        print(study.recipe(args.trial))
    except AutomlError as e:
        print(f"(no recipe: {e})")
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))


def cmd_reproduce(args: argparse.Namespace) -> None:
    from automl.study import Study
    study = Study.load(args.study, storage=args.storage)
    stored = study.metrics(args.trial)
    result = study.reproduce(args.trial, device=args.device)
    rows = [{"metric": k, "stored": stored.get(k), "reproduced": v} for k, v in result.metrics.items()]
    _print_frame(pd.DataFrame(rows).set_index("metric"))


def cmd_export(args: argparse.Namespace) -> None:
    from automl.study import Study
    for path in Study.load(args.study, storage=args.storage).export(args.trial, args.path, device=args.device):
        print(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from automl.report import write_report
    from automl.study import Study
    print(f"wrote {write_report(Study.load(args.study, storage=args.storage), args.out)}")


def cmd_studies(args: argparse.Namespace) -> None:
    from automl.study import list_studies
    rows = list_studies(args.storage)
    if rows:
        _print_frame(pd.DataFrame(rows))
    else:
        print("(no studies)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///studies/<STUDY>.db)")


def _running(p: argparse.ArgumentParser) -> None:
    from automl.sampling.samplers import ALGORITHMS
    p.add_argument("--trials", type=int, default=20, help="number of trials to run (default 20)")
    p.add_argument("--algorithm", default="tpe", choices=sorted(ALGORITHMS), help="search algorithm (default tpe)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--pruner", default=None, choices=["median", "sha", "hyperband", "none"],
                   help="prune unpromising trials (single-objective studies only)")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="automl", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("search", help="run (or resume) a search over a space module")
    p.add_argument("space", help="search space: name under search_spaces/ (e.g. digits), module path, or .py file")
    p.add_argument("--task", default=None, help="task name (default: the module's TASK, else digits)")
    p.add_argument("--study", default=None, help="study name (default: the space module's name)")
    p.add_argument("--top", type=int, default=None, help="leaderboard rows to print")
    _common(p), _running(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("worker", help="join an existing study and run more trials")
    p.add_argument("study")
    _common(p), _running(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("leaderboard", help="print a study's leaderboard, best first")
    p.add_argument("study")
    p.add_argument("--top", type=int, default=None, help="rows to print")
    _common(p)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("show", help="print one trial's recipe and metrics")
    p.add_argument("study"), p.add_argument("trial", type=int)
    _common(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("reproduce", help="re-run one trial from its stored recipe")
    p.add_argument("study"), p.add_argument("trial", type=int)
    p.add_argument("--device", default=None)
    _common(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("export", help="write a trial's trained adapter (peft format for LoRA-family adapters)")
    p.add_argument("study"), p.add_argument("trial", type=int), p.add_argument("path")
    p.add_argument("--device", default=None)
    _common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="write an HTML report (leaderboard and plots) of a study")
    p.add_argument("study")
    p.add_argument("--out", required=True, help="folder for index.html and figures")
    _common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("studies", help="list studies")
    _common(p)
    p.set_defaults(func=cmd_studies)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        args.func(args)
    except AutomlError as e:
        print(f"automl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("automl: interrupted; completed trials are stored.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
