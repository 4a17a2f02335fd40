"""add_pool() refuses every bad setting before anything opens, only works from an
initialize hook, and each runtime has pools of its own."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from oversip_hooks import hookimpl
from oversip_hooks.testing import LifecycleHarness, check_lifecycle_invariants

import oversip_mod_sqlite
from oversip_mod_sqlite import SQLiteSettingsError, UnknownPoolError

from sqlite_helpers import PoolUser, read_rows, register_pool


async def not_a_plain_function(connection: sqlite3.Connection) -> None:
    pass


def unwritable_directory(tmp_path: Path) -> Path:
    """A directory that this process cannot write into, even as root, or a skip."""
    directory = tmp_path / "read-only"
    directory.mkdir(mode=0o500)
    if not os.access(directory, os.W_OK):
        return directory
    # root writes through permission bits; not into procfs, though.
    if Path("/proc/sys").is_dir() and not os.access("/proc/sys", os.W_OK):
        return Path("/proc/sys")
    pytest.skip("no directory here is unwritable for this user")


# (setting, the add_pool arguments past the name, as a function of tmp_path)
BAD_SETTINGS: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
    ("size", lambda tmp: {"size": 0}),
    ("size", lambda tmp: {"size": -3}),
    ("size", lambda tmp: {"size": "10"}),
    ("size", lambda tmp: {"size": True}),
    ("size", lambda tmp: {"size": 2.5}),
    ("database", lambda tmp: {"database": tmp / "missing" / "test.db"}),
    ("database", lambda tmp: {"database": tmp / "a-file" / "test.db"}),
    ("database", lambda tmp: {"database": tmp}),
    ("database", lambda tmp: {"database": ":memory:"}),
    ("database", lambda tmp: {"database": ""}),
    ("database", lambda tmp: {"database": 42}),
    ("database", lambda tmp: {"database": unwritable_directory(tmp) / "test.db"}),
    ("on_connect", lambda tmp: {"on_connect": "CREATE TABLE items (id)"}),
    ("on_connect", lambda tmp: {"on_connect": not_a_plain_function}),
    ("journal_mode", lambda tmp: {"journal_mode": "wal"}),
    ("isolation_level", lambda tmp: {"isolation_level": "DEFERRED"}),
    ("check_same_thread", lambda tmp: {"check_same_thread": True}),
    ("timeout", lambda tmp: {"timeout": -1}),
    ("timeout", lambda tmp: {"timeout": "5"}),
    ("timeout", lambda tmp: {"timeout": float("nan")}),
    ("detect_types", lambda tmp: {"detect_types": 8}),
    ("cached_statements", lambda tmp: {"cached_statements": -1}),
    ("synchronous", lambda tmp: {"synchronous": "FAST"}),
    ("synchronous", lambda tmp: {"synchronous": 1}),
    ("synchronous", lambda tmp: {"synchronous": None}),
]


def register_user(lifecycle: LifecycleHarness, user: object) -> None:
    lifecycle.register(oversip_mod_sqlite, name="sqlite")
    lifecycle.register(user, name="server")


@pytest.mark.parametrize(("setting", "make_settings"), BAD_SETTINGS)
async def test_a_bad_setting_fails_the_startup_with_one_crit_line_naming_it(
    lifecycle: LifecycleHarness,
    tmp_path: Path,
    setting: str,
    make_settings: Callable[[Path], dict[str, Any]],
) -> None:
    (tmp_path / "a-file").touch()
    settings = {"database": tmp_path / "test.db", **make_settings(tmp_path)}
    register_user(lifecycle, PoolUser("main", **settings))

    assert await lifecycle.play() == 1

    error = lifecycle.errors[0]
    assert isinstance(error, SQLiteSettingsError)
    assert (error.setting, error.pool) == (setting, "main")
    given = settings[setting]
    expected = os.fspath(given) if isinstance(given, os.PathLike) else given
    assert error.value is expected or error.value == expected
    crit = [line for line in lifecycle.lines if line.startswith("CRIT:")]
    assert crit == [
        f"CRIT: <server> initialize failed: {error!r}",
        "CRIT: <runtime> exiting with error status",
    ]
    assert f"{setting}={error.value!r} is invalid" in crit[0]
    assert "sqlite.started" not in lifecycle.trace
    assert not (tmp_path / "test.db").exists()


@pytest.mark.parametrize("name", ["", "main pool", "1st", 7, None])
async def test_a_name_that_is_not_an_identifier_is_refused(
    lifecycle: LifecycleHarness, database: Path, name: object
) -> None:
    register_user(lifecycle, PoolUser(name, database=database))

    assert await lifecycle.play() == 1

    assert str(lifecycle.errors[0]) == (
        f"SQLite pool name={name!r} is invalid: expected an identifier, such as 'main'"
    )


async def test_a_name_already_taken_is_refused(lifecycle: LifecycleHarness, database: Path) -> None:
    register_user(lifecycle, PoolUser("main", database=database))
    lifecycle.register(PoolUser("main", database=database.with_name("other.db")), name="other")

    assert await lifecycle.play() == 1

    assert str(lifecycle.errors[0]) == (
        "SQLite pool name='main' is invalid: a pool with this name was already added"
    )
    assert "CRIT: <other> initialize failed: " + repr(lifecycle.errors[0]) in lifecycle.lines


async def test_add_pool_outside_any_runtime_is_a_clear_error(database: Path) -> None:
    with pytest.raises(RuntimeError, match=r"add_pool\(\) works inside a runtime that has"):
        oversip_mod_sqlite.add_pool("main", database=database)
    with pytest.raises(RuntimeError, match=r"pool\(\) works inside a runtime that has"):
        oversip_mod_sqlite.pool("main")


class AddsPoolInStarted:
    def __init__(self, database: Path) -> None:
        self.database = database

    @hookimpl
    def started(self) -> None:
        oversip_mod_sqlite.add_pool("main", database=self.database)


class AddsPoolInReload:
    def __init__(self, database: Path) -> None:
        self.database = database

    @hookimpl
    def reload(self) -> None:
        oversip_mod_sqlite.add_pool("main", database=self.database)


async def test_add_pool_from_started_is_fatal_and_from_reload_only_logged(
    make_lifecycle: Callable[..., LifecycleHarness], database: Path
) -> None:
    # From started: fatal, as any error in started is.
    from_started = make_lifecycle(oversip_mod_sqlite, AddsPoolInStarted(database))
    assert await from_started.play() == 1
    assert (
        "CRIT: <AddsPoolInStarted> started failed: RuntimeError('add_pool() must be called "
        "from an initialize hook, not while the runtime is starting')"
    ) in from_started.lines

    # From reload: logged at crit, and the service keeps running.
    from_reload = make_lifecycle(oversip_mod_sqlite, AddsPoolInReload(database))
    assert await from_reload.play("reload") == 0
    assert (
        "CRIT: <AddsPoolInReload> reload failed: RuntimeError('add_pool() must be called "
        "from an initialize hook, not while the runtime is reloading')"
    ) in from_reload.lines
    check_lifecycle_invariants(from_reload)


class Lookup:
    """Looks a pool up by a wrong name in started."""

    @hookimpl
    def started(self) -> None:
        oversip_mod_sqlite.pool("mian")


async def test_an_unknown_pool_name_lists_the_known_ones(
    lifecycle: LifecycleHarness, database: Path
) -> None:
    lifecycle.register(oversip_mod_sqlite, name="sqlite")
    lifecycle.register(PoolUser("main", database=database), name="server")
    lifecycle.register(PoolUser("audit", database=database.with_name("audit.db")), name="audit")
    lifecycle.register(Lookup(), name="lookup")

    assert await lifecycle.play() == 1

    error = lifecycle.errors[0]
    assert isinstance(error, UnknownPoolError)
    assert isinstance(error, LookupError)
    assert str(error) == "no SQLite pool named 'mian'; the pools are: 'main', 'audit'"


class Writer(PoolUser):
    """Adds a pool and writes its name into it in started."""

    @hookimpl
    async def started(self) -> None:
        pool = oversip_mod_sqlite.pool(self.name)
        assert pool is self.pool
        await pool.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        await pool.execute("INSERT INTO items (name) VALUES (?)", (str(self.settings["database"]),))


async def test_pools_of_one_runtime_never_leak_into_the_next(
    make_lifecycle: Callable[..., LifecycleHarness], tmp_path: Path
) -> None:
    first_db, second_db = tmp_path / "first.db", tmp_path / "second.db"
    first = make_lifecycle(
        oversip_mod_sqlite,
        Writer("main", database=first_db),
        PoolUser("audit", database=tmp_path / "audit.db"),
    )
    assert await first.play() == 0

    # The same name again is no conflict, and the first runtime's "audit" is unknown.
    second = make_lifecycle(oversip_mod_sqlite, Writer("main", database=second_db), Lookup())
    assert await second.play() == 1
    assert str(second.errors[0]) == "no SQLite pool named 'mian'; the pools are: 'main'"

    assert read_rows(first_db) == [(1, str(first_db))]
    assert read_rows(second_db) == [(1, str(second_db))]
    with pytest.raises(RuntimeError, match="there is none here"):
        oversip_mod_sqlite.pool("main")


async def test_two_runtimes_running_at_once_each_have_their_own_pools(
    make_lifecycle: Callable[..., LifecycleHarness], tmp_path: Path
) -> None:
    databases = [tmp_path / "one.db", tmp_path / "two.db"]
    harnesses = [
        make_lifecycle(oversip_mod_sqlite, Writer("main", database=db)) for db in databases
    ]

    async with harnesses[0].running(), harnesses[1].running():
        pools = [harness.pm.get_plugin("Writer").pool for harness in harnesses]
        assert pools[0] is not pools[1]
        async with trio.open_nursery() as nursery:
            for pool in pools:
                nursery.start_soon(pool.execute, "INSERT INTO items (name) VALUES ('again')")

    for db in databases:
        assert read_rows(db) == [(1, str(db)), (2, "again")]


async def test_a_busy_timeout_above_the_shutdown_timeout_is_warned_about(
    make_lifecycle: Callable[..., LifecycleHarness], database: Path
) -> None:
    lifecycle = make_lifecycle(shutdown_timeout=5)
    register_pool(lifecycle, database, timeout=12)
    async with lifecycle.running():
        pass
    assert (
        "WARN: <SQLite module> SQLite pool 'main': timeout=12 (the busy timeout) is above "
        "the runtime's shutdown timeout of 5 s; a shutdown may wait that long for a lock"
    ) in lifecycle.lines
