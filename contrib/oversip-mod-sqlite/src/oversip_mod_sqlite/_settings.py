# add_pool() checks every setting before anything is opened, and refuses rather than
# corrects: a pool that starts with a setting it quietly changed fails later, in
# production, far from the line that configured it. Each refusal is one
# SQLiteSettingsError that names the setting and its value, so that the runtime's crit line
# for the failed `initialize` says exactly what to fix. What only a connection can tell
# (the file is not a database, the filesystem cannot do WAL) is found in `started`.
#
# The connect options are an allow-list, not passed through to sqlite3.connect:
# `isolation_level` and `check_same_thread` are the pool's to set, `uri` and `factory`
# would change what `database` means or what a connection is, and a misspelt option must
# be refused, not ignored. `synchronous` is among them although it is a PRAGMA, not an
# argument of sqlite3.connect: it is set on each connection as it opens, like WAL mode.

from __future__ import annotations

import inspect
import math
import os
import sqlite3
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import SQLiteSettingsError

OnConnect = Callable[[sqlite3.Connection], object]

_PARSE_FLAGS = sqlite3.PARSE_DECLTYPES | sqlite3.PARSE_COLNAMES


@dataclass(frozen=True)
class PoolSettings:
    """A pool's settings, all checked: what :func:`check_settings` returns.

    ``timeout`` is SQLite's busy timeout, in seconds: how long a statement waits for a
    lock held by another connection before it fails with "database is locked".
    """

    name: str
    database: Path
    size: int
    on_connect: OnConnect | None = None
    timeout: float = 5.0
    detect_types: int = 0
    cached_statements: int = 128
    synchronous: str = "FULL"  # one of SYNCHRONOUS, upper case


def _is_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _is_parse_flags(value: object) -> bool:
    return type(value) is int and value & ~_PARSE_FLAGS == 0


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
"""The values of the ``synchronous`` option, as SQLite names them (any case)."""


def _is_synchronous(value: object) -> bool:
    return isinstance(value, str) and value.upper() in SYNCHRONOUS


# Each connect option: how to check it, and what it should be, for the error message.
_OPTIONS: dict[str, tuple[Callable[[object], bool], str]] = {
    "timeout": (_is_seconds, "expected a number of seconds >= 0 (the busy timeout)"),
    "detect_types": (
        _is_parse_flags,
        "expected 0, sqlite3.PARSE_DECLTYPES, sqlite3.PARSE_COLNAMES or both or-ed",
    ),
    "cached_statements": (_is_count, "expected an int >= 0"),
    "synchronous": (
        _is_synchronous,
        "expected 'FULL' (the default), 'EXTRA', 'NORMAL' or 'OFF' (SQLite's PRAGMA synchronous)",
    ),
}


def check_settings(
    name: object,
    database: object,
    size: object,
    on_connect: object,
    connect_options: Mapping[str, object],
    *,
    taken: Collection[str],
) -> PoolSettings:
    """Check everything ``add_pool()`` was given; return the settings.

    Args:
        taken: the names of the pools already added in this runtime.

    Raises:
        SQLiteSettingsError: for the first bad setting, in the order of the arguments.

    Example::

        settings = check_settings("main", "app.db", 4, None, {"timeout": 10}, taken=())
        settings.database   # PosixPath("/srv/app/app.db"): absolute from now on
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise SQLiteSettingsError("name", name, "expected an identifier, such as 'main'")
    if name in taken:
        raise SQLiteSettingsError("name", name, "a pool with this name was already added")
    path = _check_database(database, name)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SQLiteSettingsError("size", size, "expected a positive int", name)
    callback = _check_on_connect(on_connect, name)
    options: dict[str, Any] = {}
    for option, value in connect_options.items():
        if option not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            raise SQLiteSettingsError(
                option, value, f"unknown option; the options are {known}", name
            )
        is_valid, expected = _OPTIONS[option]
        if not is_valid(value):
            raise SQLiteSettingsError(option, value, expected, name)
        options[option] = value
    if "synchronous" in options:
        options["synchronous"] = options["synchronous"].upper()
    return PoolSettings(name, path, size, callback, **options)


def _check_on_connect(on_connect: object, pool: str) -> OnConnect | None:
    if on_connect is None:
        return None
    if not callable(on_connect):
        raise SQLiteSettingsError(
            "on_connect", on_connect, "expected a function of the new sqlite3.Connection", pool
        )
    if inspect.iscoroutinefunction(on_connect):
        raise SQLiteSettingsError(
            "on_connect",
            on_connect,
            "expected a plain function: it runs in a worker thread, so it cannot be async",
            pool,
        )
    return on_connect


def _check_database(database: object, pool: str) -> Path:
    """The database's absolute path, once its directory is known to take the database
    and the ``-wal`` and ``-shm`` files that WAL mode creates beside it."""
    text = os.fspath(database) if isinstance(database, str | os.PathLike) else None
    if not isinstance(text, str):
        raise SQLiteSettingsError(
            "database", database, "expected a file path (a str or an os.PathLike)", pool
        )
    if text in ("", ":memory:"):
        raise SQLiteSettingsError(
            "database",
            text,
            "an in-memory database is private to one connection; a pool needs a file",
            pool,
        )
    # Absolute now, so that a later change of the working directory does not move it.
    path = Path(text).absolute()
    directory = path.parent
    if not directory.exists():
        reason = f"the directory {directory} does not exist"
    elif not directory.is_dir():
        reason = f"{directory} is not a directory"
    elif path.is_dir():
        reason = "it is a directory; expected a file path"
    elif not os.access(directory, os.W_OK | os.X_OK):
        reason = (
            f"the directory {directory} is not writable (WAL mode creates the -wal and -shm "
            "files beside the database)"
        )
    elif path.exists() and not os.access(path, os.R_OK | os.W_OK):
        reason = "the file is not readable and writable"
    else:
        return path
    raise SQLiteSettingsError("database", text, reason, pool)
