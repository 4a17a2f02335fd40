"""SQLite connection pools for oversip-hooks services: oversip-mod-mysql's design on the
standard library's ``sqlite3``.

The user adds pools from an ``initialize`` hook; the module opens them in ``started``,
reports them on ``reload`` and closes them in ``terminated``::

    import oversip_hooks

    def initialize():
        oversip_hooks.M.sqlite.add_pool("main", database="app.db", size=4)

    async def started(runtime):
        pool = oversip_hooks.M.sqlite.pool("main")
        await pool.execute("CREATE TABLE IF NOT EXISTS hits (at TEXT)")
"""

# The package is the plugin, as OverSIP's modules are Ruby modules: its functions are the
# user's API (`M.sqlite.add_pool`), its hook functions are registered from the entry point
# `sqlite`, and `log_id` names it in the runtime's own log lines. A package is imported
# once per process, but a process may run several runtimes (tests do), so no pool lives
# in a global: each runtime's pools live in a _Run that this module's `initialize` puts in
# a context variable of the runtime's task. Every later hook, every service and worker
# thread started from one, inherits it, and another runtime's task never sees it. We
# rejected a dict keyed by runtime: add_pool() would still need to know which runtime is
# calling it, which is what the context variable says.
#
# `initialize` and `started` are tryfirst: the _Run must exist before any user's
# `initialize` calls add_pool(), and the pools must be open before any plugin's `started`
# uses them. Since `terminated` runs in the reverse of the started order, the pools then
# close last, once every other plugin has been terminated and its services cancelled.

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from sqlite3 import Connection
from typing import Any

import trio
from oversip_hooks import Runtime, RuntimeState, dbpool, fatal, get_logger, hookimpl

from ._errors import PoolClosedError, PoolOpenError, SQLiteSettingsError, UnknownPoolError
from ._pool import LOG_ID, Parameters, Pool, PoolStats, Queries, Result, Transaction
from ._settings import PoolSettings, check_settings

__all__ = [
    # The hook functions are left out, so that `from oversip_mod_sqlite import *` in a
    # server file does not make them the server's hooks too.
    "LOG_ID",
    "Parameters",
    "Pool",
    "PoolClosedError",
    "PoolOpenError",
    "PoolSettings",
    "PoolStats",
    "Queries",
    "Result",
    "SQLiteSettingsError",
    "Transaction",
    "UnknownPoolError",
    "add_pool",
    "pool",
]

log_id = LOG_ID  # how the runtime names this plugin in its log lines: <SQLite module>
_log = get_logger(LOG_ID)


@dataclass(eq=False)
class _Run:
    """The pools of one runtime, in the order they were added."""

    runtime: Runtime
    pools: dict[str, Pool] = field(default_factory=dict)


_current_run: ContextVar[_Run | None] = ContextVar("oversip_mod_sqlite_run", default=None)
# The same, by runtime, for the probe hooks: `run --http` calls them from its own task,
# outside the context that the runtime's hooks run in.
_runs: weakref.WeakKeyDictionary[Runtime, _Run] = weakref.WeakKeyDictionary()


def add_pool(
    name: str,
    *,
    database: str | os.PathLike[str],
    size: int = 10,
    on_connect: Callable[[Connection], object] | None = None,
    **connect_options: Any,
) -> Pool:
    """Add a pool of ``size`` connections to ``database``; call it from ``initialize``.

    Nothing is opened yet: the module's ``started`` hook opens the connections, in WAL
    mode, and calls ``on_connect`` for each one.

    Args:
        name: an identifier, unique in this runtime: :func:`pool` finds the pool by it.
        database: the database file; it is created if missing, in a directory that must
            exist and be writable. A relative path is taken from the current directory.
        size: how many connections, and so how many statements at once.
        on_connect: a plain function called with each new ``sqlite3.Connection``, in a
            worker thread: create tables, set pragmas or ``row_factory``, register
            functions. It must not leave a transaction open, nor set ``synchronous``
            (an option: the pool decides from it which writes may run in trio's
            thread).
        connect_options: ``timeout`` (the busy timeout in seconds, 5.0 by default),
            ``detect_types`` and ``cached_statements``, as for ``sqlite3.connect``;
            ``synchronous``, SQLite's ``PRAGMA synchronous``: ``"FULL"`` (the default: a
            committed transaction survives a power loss), ``"EXTRA"``, ``"NORMAL"`` (a
            power loss or an OS crash may undo the last transactions committed, never
            corrupt the database; much faster writes, which then run in trio's thread)
            or ``"OFF"`` (a power loss or an OS crash may corrupt the database).

    Returns:
        The pool, not open yet.

    Raises:
        SQLiteSettingsError: a bad setting, named in the message with its value; raised
            from ``initialize``, it makes the startup fail with exit status 1.
        RuntimeError: not called from an ``initialize`` hook of a runtime that has this
            module loaded.

    Example::

        def initialize():
            M.sqlite.add_pool(
                "main", database="app.db", size=4, on_connect=create_tables, timeout=10
            )
    """
    run = _this_run("add_pool()")
    if run.runtime.state is not RuntimeState.INITIALIZING:
        raise RuntimeError(
            "add_pool() must be called from an initialize hook, not while the runtime is "
            f"{run.runtime.state.value}"
        )
    settings = check_settings(name, database, size, on_connect, connect_options, taken=run.pools)
    if settings.timeout > run.runtime.shutdown_timeout:
        # A statement waiting for another process's lock cannot be interrupted: only its
        # busy timeout ends it, so the shutdown could outlast its own timeout.
        _log.log_system_warn(
            f"SQLite pool {settings.name!r}: timeout={settings.timeout:g} (the busy timeout) "
            f"is above the runtime's shutdown timeout of "
            f"{run.runtime.shutdown_timeout:g} s; a shutdown may wait that long for a lock"
        )
    run.pools[settings.name] = Pool(settings)
    return run.pools[settings.name]


def pool(name: str) -> Pool:
    """The pool added under ``name`` in this runtime.

    Raises:
        UnknownPoolError: no pool has that name; the message lists those that exist.
        RuntimeError: no runtime with this module loaded is running here.

    Example::

        async def started(runtime):
            rows = await M.sqlite.pool("main").fetchall("SELECT * FROM users")
    """
    run = _this_run("pool()")
    if name not in run.pools:
        known = ", ".join(map(repr, run.pools)) or "none (add them with add_pool())"
        raise UnknownPoolError(f"no SQLite pool named {name!r}; the pools are: {known}")
    return run.pools[name]


def _this_run(caller: str) -> _Run:
    run = _current_run.get()
    if run is None:
        raise RuntimeError(
            f"{caller} works inside a runtime that has the SQLite module loaded (the entry "
            "point 'sqlite' of oversip-mod-sqlite), from its initialize hook on; there is "
            "none here"
        )
    return run


@hookimpl(tryfirst=True)
def initialize(runtime: Runtime) -> None:
    """Make this runtime's (empty) set of pools the one add_pool() adds to."""
    _current_run.set(_Run(runtime))
    _runs[runtime] = _this_run("initialize")


@hookimpl(tryfirst=True)
async def started() -> None:
    """Open every pool added in initialize, in order; a pool that cannot open is fatal,
    and leaves none open."""
    opened: list[Pool] = []
    try:
        for each in _this_run("started").pools.values():
            _log.log_system_info(
                f"Adding SQLite connection pool (name: {each.name}, size: {each.size})"
            )
            await each.open()
            opened.append(each)
    except BaseException as exc:
        # This module's terminated hook runs only if started completes: close what is
        # open now. A pool that failed to open has closed its own connections.
        with trio.CancelScope(shield=True):
            for each in opened:
                await each.aclose()
        if isinstance(exc, PoolOpenError):
            fatal(exc)
        raise


@hookimpl
def reload() -> None:
    """Log each pool's state; a reload reopens nothing."""
    for each in _this_run("reload").pools.values():
        _log.log_system_info(f"SQLite connection pool ({each.stats()})")


@hookimpl
async def terminated() -> None:
    """Close every pool, all at once, so that one pool's statements in progress do not
    eat into the time another has to close (see Pool.aclose)."""
    async with trio.open_nursery() as nursery:
        for each in _this_run("terminated").pools.values():
            nursery.start_soon(each.aclose)


@hookimpl
async def health_check(runtime: Runtime) -> str | None:
    """``oversip-hooks run --http``'s ``/readyz``: a ``SELECT 1`` through every pool at
    once; the pools that fail, and why."""
    return await dbpool.check_pools(_pools_of(runtime))


@hookimpl
def metrics_collectors(runtime: Runtime) -> list[object]:
    """``oversip-hooks run --http``'s ``/metrics``: each pool's size, connections open and
    in use, calls waiting and served, and the time calls take."""
    return [dbpool.PoolCollector("oversip_sqlite_", partial(_pools_of, runtime))]


def _pools_of(runtime: Runtime) -> list[Pool]:
    run = _runs.get(runtime)
    return list(run.pools.values()) if run else []
