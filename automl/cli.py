"""The ``automl`` command: run searches, join them as a worker, review and reproduce trials.

Every command takes ``--storage URL`` (default: the study's SQLite file under ``studies/``).
Errors print one line (``automl: error: ...``) and exit with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

import pandas as pd

from automl.errors import AutomlError, SearchSpaceError

SPACES_PACKAGE = "search_spaces"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def load_space_module(spec: str) -> ModuleType:
    """A search-space module: a file path, a module under ``search_spaces/`` by short name
    (``digits``), or a dotted module path (``search_spaces.digits``). It must define ``SPACE``.
    Any error in it (syntax, a refused value) is one :class:`SearchSpaceError` line."""
    path = Path(spec)
    try:
        if path.suffix == ".py" or path.exists():
            if not path.is_file():
                raise SearchSpaceError(f"search space file {spec!r} does not exist.")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(path.stem, None)
                raise
        else:
            name = spec if "." in spec else f"{SPACES_PACKAGE}.{spec.replace('-', '_')}"
            if str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name is not None and not name.startswith(e.name):
                    raise  # the space module exists but imports something missing
                available = sorted(p.stem for p in Path(SPACES_PACKAGE).glob("*.py") if p.stem != "__init__")
                raise SearchSpaceError(f"no search space {spec!r} ({e}); ready spaces: {available}, "
                                       f"or give a path to a .py file defining SPACE.") from None
    except AutomlError:
        raise
    except SyntaxError as e:
        raise SearchSpaceError(f"search space {spec!r} has a syntax error at line {e.lineno}: {e.msg}.") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while defining its space
        raise SearchSpaceError(f"search space {spec!r} failed to load: {type(e).__name__}: {_one_line(e)}") from None
    if not hasattr(module, "SPACE"):
        raise SearchSpaceError(f"search space module {spec!r} defines no SPACE (an automl.Recipe with "
                               f"pg.oneof / pg.floatv values).")
    return module


def load_task(spec: str | None):
    """``--task``: a built-in task name, or ``MODULE:ATTR`` (a module importable from here, or a
    ``.py`` file) naming an ``automl.Task`` object or class. Importing it is your choice, made
    on the command line; a study's storage never makes us import anything."""
    from automl.symbolic import import_trusted
    from automl.tasks import Task, resolve
    if spec is None:
        return None
    if ":" not in spec:
        return resolve(spec)
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise SearchSpaceError(f"--task {spec!r}: use a built-in task name or MODULE:ATTR (e.g. mytask:TASK).")
    module = import_trusted(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, Task):
        obj = obj()
    if not isinstance(obj, Task):
        raise SearchSpaceError(f"--task {spec!r}: {attr!r} in {module_name!r} is not an automl.Task object or "
                               f"class (found {type(obj).__name__}).")
    return obj


def _trusted(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "trust", None) or [])


def _load(args: argparse.Namespace, with_task: bool = False):
    from automl.study import Heartbeat, Study
    heartbeat = None
    if getattr(args, "heartbeat", None) is not None or getattr(args, "grace", None) is not None:
        heartbeat = Heartbeat(interval=args.heartbeat or 20, grace=args.grace or 60)
    task = load_task(args.task) if with_task else None
    return Study.load(args.study, storage=args.storage, task=task, trusted=_trusted(args), heartbeat=heartbeat)


def _print_frame(frame: pd.DataFrame) -> None:
    if frame.empty:
        print("(no completed trials)")
        return
    with pd.option_context("display.max_columns", None, "display.width", 200,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(frame.to_string())


def cmd_search(args: argparse.Namespace) -> None:
    import automl
    from automl.study import Heartbeat
    module = load_space_module(args.space)
    task = load_task(args.task) if args.task else getattr(module, "TASK", "digits")
    objective = getattr(module, "OBJECTIVE", None)
    name = args.study or Path(args.space).stem.split(".")[-1]
    heartbeat = None
    if args.heartbeat is not None or args.grace is not None:
        heartbeat = Heartbeat(interval=args.heartbeat or 20, grace=args.grace or 60)
    # the space module is yours (you ran it): its classes may be stored; others need --trust
    trusted = _trusted(args) + [module.__name__]
    study = automl.search(module.SPACE, task=task, objective=objective, algorithm=args.algorithm,
                          n_trials=args.trials, study_name=name, storage=args.storage, seed=args.seed,
                          pruner=args.pruner, timeout=args.timeout, progress=not args.quiet,
                          device=args.device, trusted=trusted, heartbeat=heartbeat)
    print(f"study {study.name!r}: {len(study.trials())} trials in {study.storage_url}")
    _print_frame(study.leaderboard(top=args.top))


def cmd_worker(args: argparse.Namespace) -> None:
    study = _load(args, with_task=True)
    study.optimize(args.trials, algorithm=args.algorithm, seed=args.seed, pruner=args.pruner,
                   timeout=args.timeout, progress=not args.quiet, device=args.device)
    print(f"worker finished: study {study.name!r} now has {len(study.trials())} trials")


def cmd_leaderboard(args: argparse.Namespace) -> None:
    _print_frame(_load(args).leaderboard(top=args.top))


def cmd_show(args: argparse.Namespace) -> None:
    study = _load(args)
    metrics = study.metrics(args.trial)
    trial = study._trial(args.trial)
    from automl.study import records
    if records.get(trial, records.RECIPE) is None:
        print(f"(no recipe stored: trial {args.trial} is {trial.state.name})")
    else:
        print(study.recipe(args.trial))  # an untrusted or damaged recipe is an error, not a note
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))


def cmd_reproduce(args: argparse.Namespace) -> None:
    study = _load(args, with_task=True)
    stored = study.metrics(args.trial)
    result = study.reproduce(args.trial, device=args.device)
    rows = [{"metric": k, "stored": stored.get(k), "reproduced": v} for k, v in result.metrics.items()]
    _print_frame(pd.DataFrame(rows).set_index("metric"))


def cmd_export(args: argparse.Namespace) -> None:
    for path in _load(args, with_task=True).export(args.trial, args.path, device=args.device):
        print(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from automl.report import write_report
    print(f"wrote {write_report(_load(args, with_task=True), args.out)}")


def cmd_studies(args: argparse.Namespace) -> None:
    from automl.study import list_studies
    rows = list_studies(args.storage)
    if rows:
        _print_frame(pd.DataFrame(rows))
    else:
        print("(no studies)")


def cmd_replicate(args: argparse.Namespace) -> None:
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        from studies._common import replicate
    except ModuleNotFoundError:
        raise SearchSpaceError("the replications live in the repository's studies/ package; run automl replicate "
                               "from the repository root (or python -m studies.NAME).") from None
    options = {"minilm": True} if args.minilm else {}
    if args.minilm and args.name != "intruders":
        raise SearchSpaceError("--minilm only applies to the intruders replication.")
    replicate(args.name, small=args.small, seeds=args.seeds, out=Path(args.out) if args.out else None, **options)


def cmd_tabulate(args: argparse.Namespace) -> None:
    from automl.tasks.tabular import Table, tabulate
    module = load_space_module(args.space)
    task = load_task(args.task) if args.task else getattr(module, "TASK", "digits")
    reuse = Table.load(args.reuse) if args.reuse else None
    table = tabulate(module.SPACE, task, device=args.device, progress=not args.quiet, workers=args.workers, reuse=reuse)
    failed = sum(row.error is not None for row in table.rows.values())
    print(f"wrote {table.save(args.out)}: {len(table)} recipes on task {table.task!r} ({failed} failed to train)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (``automl: error: ...``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"automl: error: {self.prog.split()[-1]}: {_one_line(message)}\n")


def _common(p: argparse.ArgumentParser, task: bool = False) -> None:
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///studies/<STUDY>.db)")
    p.add_argument("--trust", action="append", metavar="MODULE",
                   help="a module (or .py file) of your own classes (adapter, task) the study may "
                        "rebuild; repeatable. Nothing else is ever loaded from a study")
    if task:
        p.add_argument("--task", default=None, metavar="TASK",
                       help="a built-in task name or MODULE:ATTR of your automl.Task (never imported from storage)")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or a positive integer")
    return value


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_non_negative_int, default=1, metavar="N",
                   help="torch CPU threads of this process (default 1: one per worker, so several workers "
                        "on one machine don't contend; 0: torch's default, every core)")


def _running(p: argparse.ArgumentParser) -> None:
    from automl.sampling.samplers import ALGORITHMS
    p.add_argument("--trials", type=_positive_int, default=20, help="new recipes to try (default 20)")
    p.add_argument("--algorithm", default="tpe", choices=sorted(ALGORITHMS), help="search algorithm (default tpe)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--pruner", default=None, choices=["median", "sha", "hyperband", "none"],
                   help="prune unpromising trials (single-objective studies only)")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    _threads(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--heartbeat", type=_positive_int, default=None, metavar="SECONDS",
                   help="heartbeat interval of running trials (default 20)")
    p.add_argument("--grace", type=_positive_int, default=None, metavar="SECONDS",
                   help="a trial silent this long is failed and re-run by another worker (default 60)")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="automl", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("search", help="run (or resume) a search over a space module")
    p.add_argument("space", help="search space: name under search_spaces/ (e.g. digits), module path, or .py file")
    p.add_argument("--task", default=None,
                   help="built-in task name or MODULE:ATTR (default: the module's TASK, else digits)")
    p.add_argument("--study", default=None, help="study name (default: the space module's name)")
    p.add_argument("--top", type=_positive_int, default=None, help="leaderboard rows to print")
    _common(p), _running(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("worker", help="join an existing study and run more trials")
    p.add_argument("study")
    _common(p, task=True), _running(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("leaderboard", help="print a study's leaderboard, best first")
    p.add_argument("study")
    p.add_argument("--top", type=_positive_int, default=None, help="rows to print")
    _common(p)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("show", help="print one trial's recipe and metrics")
    p.add_argument("study"), p.add_argument("trial", type=int)
    _common(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("reproduce", help="re-run one trial from its stored recipe")
    p.add_argument("study"), p.add_argument("trial", type=int)
    p.add_argument("--device", default=None)
    _threads(p)
    _common(p, task=True)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("export", help="write a trial's trained adapter (peft format for LoRA-family adapters)")
    p.add_argument("study"), p.add_argument("trial", type=int), p.add_argument("path")
    p.add_argument("--device", default=None)
    _threads(p)
    _common(p, task=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="write an HTML report (leaderboard and plots) of a study")
    p.add_argument("study")
    p.add_argument("--out", required=True, help="folder for index.html and figures")
    _common(p, task=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("replicate", help="rerun one of the papers' findings (a replication under studies/)")
    p.add_argument("name", choices=["intruders", "pissa", "rebasin", "ternary", "svd_adapters", "merging",
                                    "intruder_aware"], help="which finding")
    p.add_argument("--small", action="store_true", help="the CI setting: fewer seeds and steps (seconds)")
    p.add_argument("--seeds", type=_positive_int, default=None, help="seeds (default 5; --small 2)")
    p.add_argument("--minilm", action="store_true", help="intruders: add small-setting MiniLM rows")
    p.add_argument("--out", default=None, help="folder for table.md, table.csv, figure.png "
                                               "(default studies/results/NAME)")
    p.set_defaults(func=cmd_replicate)

    p = sub.add_parser("tabulate", help="train every recipe of a finite space once into a table (a tabular "
                                        "benchmark that automl.tasks.tabular.Tabular replays)")
    p.add_argument("space", help="search space with only pg.oneof decisions: name under search_spaces/, module path, or .py file")
    p.add_argument("--task", default=None, help="built-in task name or MODULE:ATTR (default: the module's TASK, else digits)")
    p.add_argument("--out", required=True, help="the table to write (JSON)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--workers", type=_positive_int, default=1, help="recipes trained at once, in forked processes (default 1)")
    p.add_argument("--reuse", default=None, metavar="TABLE", help="a table of the same task whose recipes are not trained again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _threads(p)
    p.set_defaults(func=cmd_tabulate)

    p = sub.add_parser("studies", help="list studies")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: every SQLite file under studies/)")
    p.set_defaults(func=cmd_studies)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a usage error already printed on one line (2)
        return e.code if isinstance(e.code, int) else 2
    import optuna
    import sqlalchemy
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: our one-line warning
    logging.basicConfig(format="automl: %(message)s", level=logging.WARNING)
    try:
        if getattr(args, "threads", None) is not None:
            from automl.devices import set_cpu_threads
            set_cpu_threads(args.threads)
        args.func(args)
        sys.stdout.flush()
    except AutomlError as e:
        print(f"automl: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except sqlalchemy.exc.SQLAlchemyError as e:
        from automl.study.storage import mask_url
        reason = _one_line(getattr(e, "orig", None) or e).split(" [SQL:")[0]
        print(f"automl: error: storage failed: {mask_url(reason)}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as e:
        print(f"automl: error: the storage holds a value that is not JSON ({e.msg}); it was damaged or "
              f"tampered with, and nothing was loaded.", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`automl leaderboard | head`): stop quietly, like other tools
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError, AttributeError):
            pass
        return 0
    except KeyboardInterrupt:
        print("automl: interrupted; completed trials are stored, the running one is marked failed.",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
