"""Shared plumbing for the replications: arguments, mean ± sd, the printed/saved table, figures."""
from __future__ import annotations

import argparse
import csv
import importlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("intruders", "intruders_minilm", "pissa", "rebasin", "ternary", "svd_adapters", "merging", "intruder_aware")
"""The replications, one module each (``python -m studies.NAME`` or ``automl replicate NAME``)."""


def setup() -> None:
    """One torch thread (the machine is shared); quiet Optuna; studies' databases in a temp dir
    unless ``AUTOML_STUDIES`` is set."""
    torch.set_num_threads(1)
    os.environ.setdefault("AUTOML_STUDIES", tempfile.mkdtemp(prefix="automl-replication-"))
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def mean_sd(values: list[float], digits: int = 3) -> str:
    """``mean ± sd`` (sample sd; 0 for one value)."""
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def mean(values: list[float]) -> float:
    return float(statistics.mean(float(v) for v in values))


@dataclass
class Report:
    """A replication's outcome: the paper's claim, the table, each direction checked."""

    name: str
    claim: str
    setting: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, what: str, agrees: bool) -> None:
        self.checks.append((what, bool(agrees)))

    def markdown(self) -> str:
        lines = [f"# {self.name}", "", f"**Paper:** {self.claim}", "", f"**Setting:** {self.setting}", "",
                 "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in self.columns) + " |" for r in self.rows]
        lines += [""] + [f"- direction {'AGREES' if ok else 'DISAGREES'}: {what}" for what, ok in self.checks]
        lines += [f"- note: {n}" for n in self.notes]
        lines += ["", f"Took {self.seconds:.0f} s (wall clock, 2 shared CPU cores, one torch thread: approximate)."]
        return "\n".join(lines) + "\n"

    def save(self, out: Path, figure: Callable[[Path], Any] | None = None) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(self.markdown())
        with open(out / "table.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        if figure is not None:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig = figure(out / "figure.png")     # a figure function draws and returns its figure
            fig.tight_layout()
            fig.savefig(out / "figure.png", dpi=100)
            plt.close(fig)
        return out


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m studies.{name}", description=doc)
    p.add_argument("--small", action="store_true", help="CI setting: fewer seeds and steps (seconds)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5, small 2)")
    p.add_argument("--out", type=Path, default=RESULTS / name, help="where table and figure go")
    return p


def main(name: str, doc: str | None, run: Callable[..., tuple[Report, Callable[[Path], Any]]]) -> Report:
    """Parse arguments, run, print and save."""
    args = parser(name, doc).parse_args()
    setup()
    seeds = args.seeds or (2 if args.small else 5)
    start = time.perf_counter()
    report, figure = run(small=args.small, seeds=seeds)
    report.seconds = time.perf_counter() - start
    report.save(args.out, figure)
    print(report.markdown())
    print(f"saved to {args.out}")
    return report


def execute(run: Callable[..., tuple[Report, Callable[[Path], Any]]], out: Path, small: bool = True,
            seeds: int = 2) -> Report:
    """Run a replication programmatically (tests): returns the saved report."""
    setup()
    start = time.perf_counter()
    report, figure = run(small=small, seeds=seeds)
    report.seconds = time.perf_counter() - start
    report.save(out, figure)
    return report


def replicate(name: str, small: bool = False, seeds: int | None = None, out: Path | None = None,
              **options: Any) -> Report:
    """Run replication ``name`` (one of :data:`NAMES`), print its table and save it under ``out``
    (default ``studies/results/NAME``); ``options`` go to its ``run``."""
    if name not in NAMES:
        from automl.errors import SearchSpaceError
        raise SearchSpaceError(f"no replication {name!r}; choose one of {list(NAMES)}.")
    module = importlib.import_module(f"studies.{name}")
    setup()
    start = time.perf_counter()
    report, figure = module.run(small=small, seeds=seeds or (2 if small else 5), **options)
    report.seconds = time.perf_counter() - start
    out = out or RESULTS / name
    report.save(out, figure)
    print(report.markdown())
    print(f"saved to {out}")
    return report
