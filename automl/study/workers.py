"""``automl search --workers N``: N processes on this machine run one study together.

The trial budget is split between them (the first ones get one more when it doesn't divide) and
so are the cores: each worker runs torch on ``cores // N`` threads (at least one), so the
workers share the machine instead of spinning against each other. They join one study in one
storage; Optuna recommends its journal file for several processes on one machine, so that is the
default (``studies/<name>.journal``) unless the study already lives in its SQLite file. Each
worker is an ``automl search`` process of its own (they all create-or-resume the same study, so
none waits for another to start); the launching process runs the first share itself.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl.errors import SearchSpaceError, StudyError
from automl.paths import studies_dir


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parallel_storage(name: str) -> str:
    """Where N workers on this machine share study ``name`` by default: its SQLite file when one
    exists already (never a second copy of a study), else Optuna's journal file."""
    folder = studies_dir(create=False)
    if (folder / f"{name}.db").exists():
        return f"sqlite:///{folder / name}.db"
    return f"journal:{folder / name}.journal"


@dataclass(frozen=True)
class LocalWorkers:
    """``workers`` processes sharing ``trials`` new recipes and ``cores`` cores."""

    workers: int
    trials: int
    cores: int

    def __post_init__(self) -> None:
        for field in ("workers", "trials", "cores"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SearchSpaceError(f"{field} must be a positive integer, got {value!r}.")

    @property
    def shares(self) -> list[int]:
        """New recipes per worker; never a worker with nothing to do."""
        n = min(self.workers, self.trials)
        return [self.trials // n + (1 if i < self.trials % n else 0) for i in range(n)]

    @property
    def threads(self) -> int:
        """Torch CPU threads of each worker."""
        return max(1, self.cores // len(self.shares))

    def start(self, argv: list[str]) -> "Started":
        """Start every worker but the first (which the caller runs): ``automl`` with ``argv``
        plus its share of trials and its threads."""
        import automl
        root = str(Path(automl.__file__).resolve().parents[1])   # the automl this process runs
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
               "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        started = Started()
        for share in self.shares[1:]:
            started.run([sys.executable, "-m", "automl.cli", *argv, "--trials", str(share),
                         "--threads", str(self.threads), "--quiet"], env)
        return started


class Started:
    """The worker processes a search started; their output is kept aside and shown only when
    one fails on its own (bad input fails every worker alike: the launcher says it once)."""

    def __init__(self) -> None:
        self.processes: list[tuple[subprocess.Popen, Any]] = []

    def run(self, command: list[str], env: dict[str, str]) -> None:
        errors = tempfile.TemporaryFile(mode="w+")
        self.processes.append((subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors), errors))

    def wait(self) -> None:
        """Wait for every worker; one that failed is a :class:`StudyError` with its error line.
        Trials finished by any worker stay stored."""
        failed = []
        for i, (process, errors) in enumerate(self.processes):
            code = process.wait()
            errors.seek(0)
            lines = [line.strip() for line in errors.read().splitlines() if line.strip()]
            errors.close()
            if code != 0:
                failed.append(f"worker {i + 2} exited with code {code}" + (f" ({lines[-1]})" if lines else ""))
        if failed:
            raise StudyError(f"{'; '.join(failed)}; the trials finished are stored: rerun the same command "
                             f"to add the rest.")

    def stop(self) -> None:
        """The launcher failed: interrupt the workers (each marks its running trial failed, as
        Ctrl-C does) and wait for them, dropping what they printed."""
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process, errors in self.processes:
            process.wait()
            errors.close()
