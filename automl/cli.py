"""The automl command: run searches, join them as a worker, review and reproduce trials.

Every command takes --storage URL (default: the study's SQLite file under studies/, or under
$AUTOML_STUDIES). Errors print one line (automl: error: ...) and exit with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Sequence

from automl.errors import AutomlError, SearchSpaceError

if TYPE_CHECKING:
    import pandas as pd   # imported by the commands that print tables: a worker starts without it

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
    study = Study.load(args.study, storage=args.storage, task=task, trusted=_trusted(args), heartbeat=heartbeat)
    args.location = f"automl: study {study.name!r} in {_where(study.storage_url)}"  # said once it succeeded
    return study


def _where(url: str) -> str:
    """A study's storage, a SQLite file as its absolute path (the working directory matters)."""
    from automl.study.storage import sqlite_path
    path = sqlite_path(url)
    return str(path.resolve()) if path is not None else url


def _width(args: argparse.Namespace) -> int | None:
    """Columns to fit: the terminal's, 100 when not a terminal; none with --wide."""
    if getattr(args, "wide", False):
        return None
    return shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 100


def _print_board(study, table: pd.DataFrame, args: argparse.Namespace, extra: list[str] = ()) -> None:
    from automl.study.render import render
    fmt = getattr(args, "format", "table")
    if fmt in ("table", "markdown") and not table.empty:
        print(f"{study.objective}" + ("\n" if fmt == "markdown" else ""))
    print(render(table, study.objective, fmt, width=_width(args), extra=list(extra)))


def _print_frame(frame: pd.DataFrame) -> None:
    import pandas as pd
    if frame.empty:
        print("(no completed trials)")
        return
    with pd.option_context("display.max_columns", None, "display.width", 200,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(frame.to_string())


def cmd_search(args: argparse.Namespace) -> None:
    import automl
    from automl.study.workers import LocalWorkers, machine_cores, parallel_storage
    name = args.study or Path(args.space).stem.split(".")[-1]
    plan = LocalWorkers(args.workers, args.trials, machine_cores())
    storage = args.storage if args.storage or plan.workers == 1 else parallel_storage(name)
    # the other workers start first, each creating-or-resuming the same study, while this one imports
    workers = plan.start(_worker_argv(args, name, storage))
    try:
        from automl.devices import set_cpu_threads
        from automl.study import Heartbeat
        set_cpu_threads(args.threads if args.threads is not None else plan.threads if workers.processes else 1)
        module = load_space_module(args.space)
        task = load_task(args.task) if args.task else getattr(module, "TASK", "digits")
        objective = getattr(module, "OBJECTIVE", None)
        heartbeat = None
        if args.heartbeat is not None or args.grace is not None:
            heartbeat = Heartbeat(interval=args.heartbeat or 20, grace=args.grace or 60)
        # the space module is yours (you ran it): its classes may be stored; others need --trust
        trusted = _trusted(args) + [module.__name__]
        study = automl.search(module.SPACE, task=task, objective=objective, algorithm=args.algorithm,
                              n_trials=plan.shares[0], study_name=name, storage=storage, seed=args.seed,
                              pruner=args.pruner, timeout=args.timeout, progress=not args.quiet,
                              device=args.device, trusted=trusted, heartbeat=heartbeat)
    except BaseException:
        workers.stop()
        raise
    workers.wait()
    print(f"study {study.name!r}: {len(study.trials())} trials in {study.storage_url}")
    _print_board(study, study.leaderboard(top=args.top), args)


def _worker_argv(args: argparse.Namespace, name: str, storage: str) -> list[str]:
    """``automl search`` arguments of one more worker of this search (trials and threads apart)."""
    argv = ["search", args.space, "--study", name, "--storage", storage, "--algorithm", args.algorithm,
            "--seed", str(args.seed)]
    for option in ("task", "pruner", "timeout", "device", "heartbeat", "grace"):
        if getattr(args, option) is not None:
            argv += [f"--{option}", str(getattr(args, option))]
    for module in _trusted(args):
        argv += ["--trust", module]
    return argv


def cmd_worker(args: argparse.Namespace) -> None:
    study = _load(args, with_task=True)
    study.optimize(args.trials, algorithm=args.algorithm, seed=args.seed, pruner=args.pruner,
                   timeout=args.timeout, progress=not args.quiet, device=args.device)
    print(f"worker finished: study {study.name!r} now has {len(study.trials())} trials")


def cmd_leaderboard(args: argparse.Namespace) -> None:
    study = _load(args)
    table = study.leaderboard(top=args.top, sort=args.sort, where=args.where, all=args.all)
    _print_board(study, table, args, extra=[args.sort] if args.sort else [])


def cmd_pareto(args: argparse.Namespace) -> None:
    study = _load(args)
    table = study.pareto_front()
    _print_board(study, table.head(args.top) if args.top else table, args)


def cmd_show(args: argparse.Namespace) -> None:
    print(_load(args).trial(args.trial))


def cmd_compare(args: argparse.Namespace) -> None:
    print(_load(args).compare(args.a, args.b))


def cmd_reproduce(args: argparse.Namespace) -> int:
    reproduction = _load(args, with_task=True).reproduce(args.trial, device=args.device, rtol=args.rtol,
                                                         atol=args.atol)
    print(reproduction)
    return 0 if reproduction.same else 1


def cmd_export(args: argparse.Namespace) -> None:
    exported = _load(args, with_task=True).export(args.trial, args.path, device=args.device)
    if exported.retrained:
        print(f"trial {args.trial}'s trained weights were not kept (only the best trials keep theirs): "
              f"re-trained its recipe in {exported.seconds:.1f} s (seeded: the same weights)")
    for path in exported:
        print(f"wrote {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from automl.report import write_report
    print(f"wrote {write_report(_load(args, with_task=True), args.out)}")


def cmd_studies(args: argparse.Namespace) -> None:
    from automl.study import list_studies
    rows = list_studies(args.storage)
    import pandas as pd
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
    replicate(args.name, small=args.small, seeds=args.seeds, out=Path(args.out) if args.out else None)


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
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL (default: sqlite:///studies/<STUDY>.db; $AUTOML_STUDIES moves studies/)")
    p.add_argument("--verbose", action="store_true", help="show Optuna's own INFO lines (one per trial)")
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


def _threads(p: argparse.ArgumentParser, default: int | None = 1) -> None:
    p.add_argument("--threads", type=_non_negative_int, default=default, metavar="N",
                   help="torch CPU threads of this process (default 1: one per worker, so several workers "
                        "on one machine don't contend; with search --workers N: cores/N; 0: torch's "
                        "default, every core)")


def _running(p: argparse.ArgumentParser, threads: int | None = 1) -> None:
    from automl.sampling.samplers import ALGORITHMS
    p.add_argument("--trials", type=_positive_int, default=20, help="new recipes to try (default 20)")
    p.add_argument("--algorithm", default="tpe", choices=sorted(ALGORITHMS), metavar="NAME",
                   help="search algorithm (default tpe; the list below)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--pruner", default=None, choices=["median", "sha", "hyperband", "none"],
                   help="prune unpromising trials (single-objective studies only)")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    _threads(p, threads)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--heartbeat", type=_positive_int, default=None, metavar="SECONDS",
                   help="heartbeat interval of running trials (default 20)")
    p.add_argument("--grace", type=_positive_int, default=None, metavar="SECONDS",
                   help="a trial silent this long is failed and re-run by another worker (default 60)")


ALGORITHM_HELP = {
    "tpe": "Optuna's TPE (multivariate, grouped): the default, for mixed and conditional spaces",
    "random": "Optuna's random sampler: a baseline, and a warm-up before another algorithm",
    "nsga2": "Optuna's NSGA-II: multi-objective evolution (Pareto fronts)",
    "gp": "Optuna's Gaussian-process Bayesian optimization: few, costly trials; one objective",
    "cmaes": "Optuna's CMA-ES: continuous values (lr, scales); one objective",
    "qmc": "Optuna's quasi-Monte Carlo (Sobol): even coverage of the space",
    "evolution": "PyGlove's regularized evolution (tournament, aging): one objective",
    "pyglove-random": "PyGlove's random search over the DNA space",
    "pyglove-nsga2": "PyGlove's NSGA-II: multi-objective evolution",
}


def _epilog(examples: str, extra: str = "") -> str:
    return (extra.strip() + "\n\n" if extra else "") + "examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  ")


def _algorithms() -> str:
    from automl.sampling.samplers import ALGORITHMS
    width = max(len(a) for a in ALGORITHMS)
    return "algorithms:\n" + "\n".join(f"  {a:<{width}}  {ALGORITHM_HELP.get(a, '')}".rstrip() for a in ALGORITHMS)


_WHERE = """\
--where EXPR keeps the rows where EXPR holds: comparisons (== != < <= > >= in) of columns
and literals, joined by and / or / not. A bare word compared with a column is text
(adapter==LoRA); quote a column with '/' in backticks (`accuracy/<subtask>`). Columns: trial,
state (--all), score or each objective, pareto, the metrics, adapter, quant, merge, the searched
values (rank, alpha, lr, ...), recipe, seconds. Nothing in EXPR is ever run as code."""

_STUDY_HELP = "study name (its SQLite file is studies/<STUDY>.db unless --storage says otherwise)"


def _sub(sub, name: str, help: str, examples: str, extra: str = "") -> argparse.ArgumentParser:  # noqa: A002
    return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                          epilog=_epilog(examples, extra), formatter_class=argparse.RawDescriptionHelpFormatter)


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="automl", description=__doc__.split("\n\n")[0].replace("\n", " "),
                  formatter_class=argparse.RawDescriptionHelpFormatter,
                  epilog=_epilog("""
                      automl search digits --trials 12 --study demo
                      automl leaderboard demo --top 5
                      automl show demo 3
                      automl compare demo 3 7
                      automl reproduce demo 3
                      automl COMMAND --help""",
                                 "Studies live in ./studies (or $AUTOML_STUDIES): studies/<name>.db and "
                                 "studies/artifacts/<name>/;\ncaches (pretrained models, tokens, SVDs) "
                                 "in $AUTOML_HOME, else ~/.cache/automl."))
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = _sub(sub, "search", "run (or resume) a search over a space module", """
        automl search digits --trials 12 --study demo
        automl search pareto --algorithm nsga2 --trials 30      # multi-objective (Pareto)
        automl search my_space.py --task mytask:TASK --algorithm evolution
        automl search digits --study demo --algorithm random --trials 5   # resume the same study""",
             _algorithms())
    p.add_argument("space", help="search space: name under search_spaces/ (e.g. digits), module path, or .py file")
    p.add_argument("--task", default=None,
                   help="built-in task name or MODULE:ATTR (default: the module's TASK, else digits)")
    p.add_argument("--study", default=None, help="study name (default: the space module's name)")
    p.add_argument("--top", type=_positive_int, default=None, help="leaderboard rows to print")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="processes on this machine running the search together, sharing --trials and "
                        "the cores (default 1; storage default with N > 1: journal:studies/STUDY.journal)")
    _common(p), _running(p, threads=None)   # threads: 1, or cores/N with --workers N
    p.set_defaults(func=cmd_search)

    p = _sub(sub, "worker", "join an existing study and run more trials", """
        automl worker demo --storage postgresql://user@host/db --trials 10
        automl worker demo --storage journal:studies/demo.log --algorithm random""", _algorithms())
    p.add_argument("study", help=_STUDY_HELP)
    _common(p, task=True), _running(p)
    p.set_defaults(func=cmd_worker)

    p = _sub(sub, "leaderboard", "print a study's trials, best first", """
        automl leaderboard demo
        automl leaderboard demo --top 5 --sort intruders
        automl leaderboard demo --where 'adapter==LoRA and accuracy>0.9' --format markdown
        automl leaderboard demo --all --format csv > demo.csv""",
             "The table fits the terminal (100 columns when piped; --wide: no limit); values equal in\n"
             "every row are folded into one header line. csv and json hold every column.\n\n" + _WHERE)
    p.add_argument("study", help=_STUDY_HELP)
    _board_options(p)
    p.add_argument("--sort", default=None, metavar="METRIC",
                   help="order by this column, best first by the metric's direction (default: the score; "
                        "multi-objective: Pareto members, then the first objective)")
    p.add_argument("--where", default=None, metavar="EXPR", help="keep rows where EXPR holds (see below)")
    p.add_argument("--all", action="store_true", help="include failed, pruned and running trials, with their state")
    _common(p)
    p.set_defaults(func=cmd_leaderboard)

    p = _sub(sub, "pareto", "print the Pareto front of a multi-objective study", """
        automl search pareto --algorithm nsga2 --trials 30
        automl pareto pareto
        automl pareto pareto --format json""")
    p.add_argument("study", help=_STUDY_HELP)
    _board_options(p)
    _common(p)
    p.set_defaults(func=cmd_pareto)

    p = _sub(sub, "show", "print one trial: state, score, recipe, metrics, per-layer table", """
        automl show demo 3
        automl show demo 3 --storage postgresql://user@host/db""")
    p.add_argument("study", help=_STUDY_HELP)
    p.add_argument("trial", type=int, help="trial number (the leaderboard's trial column)")
    _common(p)
    p.set_defaults(func=cmd_show)

    p = _sub(sub, "compare", "print two trials' metrics side by side and the diff of their recipes", """
        automl compare demo 3 7""")
    p.add_argument("study", help=_STUDY_HELP)
    p.add_argument("a", type=int, help="first trial number (left)")
    p.add_argument("b", type=int, help="second trial number (right)")
    _common(p)
    p.set_defaults(func=cmd_compare)

    p = _sub(sub, "reproduce", "re-run one trial from its stored recipe and judge each metric", """
        automl reproduce demo 3
        automl reproduce demo 3 --rtol 1e-3 --device cuda""",
             "Exit code 0 when every metric is the same within the tolerance (timings are not\n"
             "judged), 1 when one differs, 2 on bad input.")
    p.add_argument("study", help=_STUDY_HELP)
    p.add_argument("trial", type=int, help="trial number to re-run")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of 'same' (default 1e-4)")
    p.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance of 'same' (default 1e-6)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    _threads(p)
    _common(p, task=True)
    p.set_defaults(func=cmd_reproduce)

    p = _sub(sub, "export", "write a trial's trained adapter (peft format for LoRA-family adapters)", """
        automl export demo 3 out/demo-3""",
             "The best trials keep their trained weights (automl show says so); any other trial is\n"
             "re-trained from its recipe first (seeded: the same weights), and the command says so.")
    p.add_argument("study", help=_STUDY_HELP)
    p.add_argument("trial", type=int, help="trial number to export")
    p.add_argument("path", help="output folder (one sub-folder per subtask when the task has several)")
    p.add_argument("--device", default=None, help="torch device used if the trial must be re-trained")
    _threads(p)
    _common(p, task=True)
    p.set_defaults(func=cmd_export)

    p = _sub(sub, "report", "write an HTML report (leaderboard and plots) of a study", """
        automl report demo --out reports/demo""")
    p.add_argument("study", help=_STUDY_HELP)
    p.add_argument("--out", required=True, help="folder for index.html and figures")
    _common(p, task=True)
    p.set_defaults(func=cmd_report)

    p = _sub(sub, "replicate", "rerun one of the papers' findings (a replication under studies/)", """
        automl replicate intruders --small
        automl replicate pissa --seeds 3 --out /tmp/pissa""",
             "Results go to studies/results/NAME/ (table.md, table.csv, figure.png); see studies/README.md.")
    p.add_argument("name", choices=["intruders", "intruders_minilm", "pissa", "rebasin", "ternary", "svd_adapters", "merging",
                                    "intruder_aware"], help="which finding")
    p.add_argument("--small", action="store_true", help="the CI setting: fewer seeds and steps (seconds)")
    p.add_argument("--seeds", type=_positive_int, default=None, help="seeds (default 5; --small 2)")
    p.add_argument("--out", default=None, help="folder for table.md, table.csv, figure.png "
                                               "(default studies/results/NAME)")
    p.set_defaults(func=cmd_replicate)

    p = _sub(sub, "tabulate", "train every recipe of a finite space once into a table (a tabular benchmark)", """
        automl tabulate digits_grid --out benchmarks/data/digits_grid.json --workers 2
        automl tabulate digits_large --out big.json --reuse benchmarks/data/digits_large.json""",
             "automl.tasks.tabular.Tabular(FILE) replays the table as a task: every algorithm runs on it in seconds.")
    p.add_argument("space", help="search space with only pg.oneof decisions: name under search_spaces/, module path, or .py file")
    p.add_argument("--task", default=None, help="built-in task name or MODULE:ATTR (default: the module's TASK, else digits)")
    p.add_argument("--out", required=True, help="the table to write (JSON)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--workers", type=_positive_int, default=1, help="recipes trained at once, in forked processes (default 1)")
    p.add_argument("--reuse", default=None, metavar="TABLE", help="a table of the same task whose recipes are not trained again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _threads(p)
    p.set_defaults(func=cmd_tabulate)

    p = _sub(sub, "studies", "list studies", """
        automl studies
        automl studies --storage postgresql://user@host/db""")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: every SQLite file under studies/)")
    p.set_defaults(func=cmd_studies)
    return top


def _board_options(p: argparse.ArgumentParser) -> None:
    from automl.study.leaderboard import FORMATS   # not render's module: that one imports pandas
    p.add_argument("--top", type=_positive_int, default=None, metavar="K", help="rows to print")
    p.add_argument("--format", default="table", choices=FORMATS, help="output format (default table)")
    p.add_argument("--wide", action="store_true", help="do not fit the table to the terminal's width")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a usage error already printed on one line (2)
        return e.code if isinstance(e.code, int) else 2
    import optuna

    from automl.study.quiet import quiet_optuna
    if getattr(args, "verbose", False):
        quiet_optuna(False)
        optuna.logging.set_verbosity(optuna.logging.INFO)
    else:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: our one-line warning
    logging.basicConfig(format="automl: %(message)s", level=logging.INFO if getattr(args, "verbose", False)
                        else logging.WARNING)
    try:
        if getattr(args, "threads", None) is not None:
            from automl.devices import set_cpu_threads
            set_cpu_threads(args.threads)
        code = args.func(args)
        sys.stdout.flush()
        if getattr(args, "location", None):
            print(args.location, file=sys.stderr)  # where the study lives: the working directory matters
    except AutomlError as e:
        print(f"automl: error: {_one_line(e)}", file=sys.stderr)
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
    except Exception as e:
        sql = sys.modules.get("sqlalchemy")   # imported by RDB storages only (a journal worker never loads it)
        if sql is None or not isinstance(e, sql.exc.SQLAlchemyError):
            raise
        from automl.study.storage import mask_url
        reason = _one_line(getattr(e, "orig", None) or e).split(" [SQL:")[0]
        print(f"automl: error: storage failed: {mask_url(reason)}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
