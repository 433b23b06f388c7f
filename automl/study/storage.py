"""Opening a study's storage: URLs, checks before anything is written, heartbeats, masking.

Any Optuna storage URL works: ``sqlite:///PATH`` (the default, ``studies/<name>.db``),
``postgresql://user:pw@host/db`` (many machines), ``journal:PATH`` (Optuna's journal file, many
processes on one machine). Readers (``write=False``) never create or change anything: a missing
file, a corrupt SQLite file or a database without Optuna's tables is a one-line
:class:`StudyError`. Writers get heartbeats (a SIGKILLed worker's trial is failed after the grace
period and re-run by another worker) and, for SQLite, WAL journaling. Passwords never appear
in a message: :func:`mask_url`.
"""
from __future__ import annotations

import re
import sqlite3
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from automl.errors import StudyError
from automl.paths import studies_dir
from automl.study.journal import HeartbeatJournalStorage
from automl.study.retry import RetryStaleTrial

OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version"}


@dataclass(frozen=True)
class Heartbeat:
    """Workers record a heartbeat every ``interval`` seconds; a RUNNING trial silent for
    ``grace`` seconds is failed (``fail_reason`` says why) and re-queued, at most ``max_retry``
    times, for the next worker."""

    interval: int = 20
    grace: int = 60
    max_retry: int = 3

    def __post_init__(self) -> None:
        for field in ("interval", "grace"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise StudyError(f"heartbeat {field} must be a positive number of seconds, got {value!r}.")
        if self.grace <= self.interval:
            raise StudyError(f"heartbeat grace ({self.grace} s) must exceed its interval ({self.interval} s).")
        if not isinstance(self.max_retry, int) or self.max_retry < 0:
            raise StudyError(f"max_retry must be a non-negative integer, got {self.max_retry!r}.")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages, logs and listings)."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", str(url))


def _scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error) without ``url``'s password, on one line."""
    match = re.search(r"://[^:/@\s]*:([^@\s]*)@", url)
    text = " ".join(str(text).split())
    if match and match.group(1):
        text = text.replace(match.group(1), "***")
    return mask_url(text)


def default_storage(name: str) -> str:
    """``sqlite:///studies/<name>.db`` (the folder is created only when the study is), or
    ``journal:studies/<name>.journal`` when only that exists (``automl search --workers N``)."""
    folder = studies_dir(create=False)
    if not (folder / f"{name}.db").exists() and (folder / f"{name}.journal").is_file():
        return f"journal:{folder / name}.journal"
    return f"sqlite:///{folder / name}.db"


def sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def journal_path(url: str) -> Path | None:
    return Path(url[len("journal:"):]) if url.startswith("journal:") else None


def open_storage(url: str, *, write: bool, heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; ``write=False`` opens an existing one and changes nothing."""
    if not isinstance(url, str) or not url:
        raise StudyError(f"storage must be an Optuna storage URL string, got {url!r}.")
    shown = mask_url(url)
    journal, sqlite = journal_path(url), sqlite_path(url)
    if journal is not None:
        return _open_journal(journal, shown, write, heartbeat)
    import sqlalchemy   # here, not at the top: a journal worker starts without it (0.4 s)

    from automl.study.rdb import HeartbeatRDBStorage
    if sqlite is not None:
        _check_sqlite(sqlite, shown, write)
    elif not write:
        _check_rdb(url, shown)
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = dict(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
                      heartbeat_stale_trial_callback=RetryStaleTrial(heartbeat.max_retry))
    if sqlite is not None:
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(8):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat arguments are "experimental" in Optuna
                storage = HeartbeatRDBStorage(url, skip_table_creation=not write, **kwargs)
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            # Two processes creating one new database race on Optuna's tables and version stamp
            # ("UNIQUE constraint failed: alembic_version"): the loser retries and finds them made.
            if attempt == 7 or not write:
                raise StudyError(f"cannot open storage {shown}: {_scrub(getattr(e, 'orig', e), url)}") from None
            time.sleep(0.05 * 2 ** attempt)
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError, ImportError) as e:
            raise _bad_url(e, url, shown) from None
        except Exception as e:  # noqa: BLE001 - a driver's error: say it on one line, without secrets
            raise StudyError(f"cannot open storage {shown}: {_scrub(getattr(e, 'orig', None) or e, url)}") from None
    if sqlite is not None and write:
        # WAL journaling for writers only: readers (a dashboard, `automl leaderboard`) don't block
        # the writer, and commits skip a full fsync. A reader never switches a file's mode.
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()
    return storage


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _check_sqlite(path: Path, shown: str, write: bool) -> None:
    """A reader needs an existing, intact Optuna SQLite file; a writer an intact one or none."""
    if not path.exists() or path.stat().st_size == 0:
        if not write:
            raise StudyError(f"no study database at {shown} (file {str(path)!r} does not exist); check the "
                             f"path, or run `automl studies` to list the studies under {studies_dir(create=False)}/.")
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            check = connection.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise StudyError(f"{shown} is not a readable SQLite database ({e}): the file is corrupt, truncated or "
                         f"not SQLite; restore it from a copy.") from None
    if check is None or check[0] != "ok":
        raise StudyError(f"{shown} is a damaged SQLite database ({check[0] if check else 'no result'}); "
                         f"restore it from a copy.")
    # a reader needs every Optuna table; a writer may find them half made by a concurrent creator
    foreign = tables and not tables & OPTUNA_TABLES
    if foreign or (not write and not OPTUNA_TABLES <= tables):
        raise StudyError(f"{shown} is an SQLite database but not an Optuna study storage (no Optuna tables); "
                         f"nothing was changed. Use another file for studies.")


def _bad_url(error: Exception, url: str, shown: str) -> StudyError:
    """A URL SQLAlchemy can't use: a missing driver, or not a storage URL at all."""
    if isinstance(error, ImportError):
        return StudyError(f"cannot open storage {shown}: its database driver is not installed ({error}).")
    return StudyError(f"cannot open storage {shown}: it is not a storage URL ({_scrub(error, url)}). Use an "
                      f"Optuna storage URL such as sqlite:///studies/demo.db, postgresql://user:pw@host/db "
                      f"or journal:PATH.")


def _check_rdb(url: str, shown: str) -> None:
    """A reader of a server database needs Optuna's tables there (none are created)."""
    import sqlalchemy
    try:
        engine = sqlalchemy.create_engine(url)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError, ImportError) as e:
        raise _bad_url(e, url, shown) from None
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    except Exception as e:  # noqa: BLE001 - connection refused, authentication...: one line, no secret
        raise StudyError(f"cannot open storage {shown}: {_scrub(getattr(e, 'orig', None) or e, url)}") from None
    finally:
        engine.dispose()
    if not OPTUNA_TABLES <= tables:
        raise StudyError(f"no studies in {shown} (it has no Optuna tables); nothing was changed.")


def _open_journal(path: Path, shown: str, write: bool, heartbeat: Heartbeat | None) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend
    if not write and not path.is_file():
        raise StudyError(f"no journal file at {shown}; check the path.")
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat)
    except Exception as e:  # noqa: BLE001 - an unreadable or corrupt journal: one line
        raise StudyError(f"cannot read journal {shown}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None


def storage_error(e: BaseException, url: str) -> StudyError:
    """A storage failure met after opening (e.g. a page of a truncated SQLite file, a stored value
    that is not JSON), as one line."""
    import json
    if isinstance(e, json.JSONDecodeError):
        return StudyError(f"storage {mask_url(url)} holds a value that is not JSON ({e.msg}); it was damaged "
                          f"or tampered with, and nothing was loaded.")
    return StudyError(f"storage {mask_url(url)} failed: {_scrub(getattr(e, 'orig', None) or e, url)}")
