"""MySQL and MariaDB connection pools for oversip-hooks services: OverSIP's own example
module, ``oversip-mod-mysql``, in Python, on the driver mysqlclient.

The user adds pools from an ``initialize`` hook; the module connects them in ``started``,
reports them on ``reload`` and closes them in ``terminated``, as the SQLite module does,
so that moving from one to the other changes the ``add_pool`` call and the SQL dialect::

    import os
    from oversip_hooks import M

    def initialize():
        M.mysql.add_pool(
            "main", host="db.internal", user="app",
            password=os.environ["DB_PASSWORD"], database="app", size=4,
        )

    async def started(runtime):
        pool = M.mysql.pool("main")
        await pool.execute("INSERT INTO hits (at) VALUES (NOW())")
"""

# The package is the plugin, as in the SQLite module (read its comment for why the pools
# of a runtime live in a _Run in a context variable, and why `initialize` and `started`
# are tryfirst). What differs is the server: it may be away when the service starts (a
# fleet and its database often start together), so `started` retries each pool's first
# connections with backoff until the runtime's startup deadline, and only then is the
# failure fatal, naming user@host:port and the driver's last reason. A refusal that time
# will not change (the password, the database's name, on_connect) is fatal at once.

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from oversip_hooks import Runtime, RuntimeState, dbpool, fatal, get_logger, hookimpl

from ._errors import (
    ConnectionLostError,
    MySQLSettingsError,
    PoolClosedError,
    PoolOpenError,
    UnknownPoolError,
)
from ._pool import (
    ISOLATION_LEVELS,
    LOG_ID,
    Parameters,
    Pool,
    PoolStats,
    Queries,
    Result,
    Transaction,
)
from ._settings import DEFAULT_HOST, DEFAULT_PORT, PoolSettings, Secret, check_settings

__all__ = [
    # The hook functions are left out, so that `from oversip_mod_mysql import *` in a
    # server file does not make them the server's hooks too.
    "ISOLATION_LEVELS",
    "LOG_ID",
    "ConnectionLostError",
    "MySQLSettingsError",
    "Parameters",
    "Pool",
    "PoolClosedError",
    "PoolOpenError",
    "PoolSettings",
    "PoolStats",
    "Queries",
    "Result",
    "Secret",
    "Transaction",
    "UnknownPoolError",
    "add_pool",
    "pool",
]

log_id = LOG_ID  # how the runtime names this plugin in its log lines: <MySQL module>
_log = get_logger(LOG_ID)


@dataclass(eq=False)
class _Run:
    """The pools of one runtime, in the order they were added."""

    runtime: Runtime
    pools: dict[str, Pool] = field(default_factory=dict)


_current_run: ContextVar[_Run | None] = ContextVar("oversip_mod_mysql_run", default=None)
# The same, by runtime, for the probe hooks: `run --http` calls them from its own task,
# outside the context that the runtime's hooks run in.
_runs: weakref.WeakKeyDictionary[Runtime, _Run] = weakref.WeakKeyDictionary()


def add_pool(
    name: str,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    user: str,
    password: str,
    database: str,
    size: int = 10,
    on_connect: Callable[[Any], object] | None = None,
    unix_socket: str | os.PathLike[str] | None = None,
    **connect_options: Any,
) -> Pool:
    """Add a pool of ``size`` connections to a MySQL or MariaDB database; call it from
    ``initialize``.

    Nothing connects yet: the module's ``started`` hook opens the connections, calling
    ``on_connect`` for each one.

    Args:
        name: an identifier, unique in this runtime: :func:`pool` finds the pool by it.
        host: the server's host name or IP address.
        port: the server's TCP port.
        user: the user to connect as.
        password: the user's password. It never appears in a log line, an exception
            message or a ``repr``; read it from the environment or a secrets file, not
            from the server file's source, which a traceback may quote.
        database: the database to use.
        size: how many connections, and so how many statements at once.
        on_connect: a plain function called with each new ``MySQLdb`` connection (in
            autocommit mode), in its worker thread, also when a lost connection is
            replaced: set session variables, create tables.
        unix_socket: the server's unix socket path, instead of ``host`` and ``port``.
        connect_options: ``connect_timeout`` (whole seconds per attempt, 5 by default),
            ``read_timeout``, ``write_timeout`` (whole seconds, none by default),
            ``charset`` (``"utf8mb4"``), ``init_command`` and ``sql_mode``.

    Returns:
        The pool, not open yet.

    Raises:
        MySQLSettingsError: a bad setting, named in the message (with its value, except
            for the password); raised from ``initialize``, it makes the startup fail
            with exit status 1.
        RuntimeError: not called from an ``initialize`` hook of a runtime that has this
            module loaded.

    Example::

        def initialize():
            M.mysql.add_pool(
                "main", host="db.internal", user="app", password=os.environ["DB_PASSWORD"],
                database="app", size=4, connect_timeout=3,
            )
    """
    run = _this_run("add_pool()")
    if run.runtime.state is not RuntimeState.INITIALIZING:
        raise RuntimeError(
            "add_pool() must be called from an initialize hook, not while the runtime is "
            f"{run.runtime.state.value}"
        )
    settings = check_settings(
        name,
        host=host,
        port=port,
        unix_socket=unix_socket,
        user=user,
        password=password,
        database=database,
        size=size,
        on_connect=on_connect,
        connect_options=connect_options,
        taken=run.pools,
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
            rows = await M.mysql.pool("main").fetchall("SELECT * FROM users")
    """
    run = _this_run("pool()")
    if name not in run.pools:
        known = ", ".join(map(repr, run.pools)) or "none (add them with add_pool())"
        raise UnknownPoolError(f"no MySQL pool named {name!r}; the pools are: {known}")
    return run.pools[name]


def _this_run(caller: str) -> _Run:
    run = _current_run.get()
    if run is None:
        raise RuntimeError(
            f"{caller} works inside a runtime that has the MySQL module loaded (the entry "
            "point 'mysql' of oversip-mod-mysql), from its initialize hook on; there is "
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
    """Connect every pool added in initialize, in order, each retried until the startup
    deadline; a pool that cannot connect is fatal, and leaves none open."""
    opened: list[Pool] = []
    try:
        for each in _this_run("started").pools.values():
            _log.log_system_info(
                f"Adding MySQL connection pool (name: {each.name}, size: {each.size})..."
            )
            await each.open(patience=trio.current_effective_deadline())
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
    """Log each pool's state; a reload reconnects nothing."""
    for each in _this_run("reload").pools.values():
        _log.log_system_info(f"MySQL connection pool ({each.stats()})")


@hookimpl
async def terminated() -> None:
    """Close every pool, all at once, so that one pool's calls in progress do not eat
    into the time another has to close (see Pool.aclose)."""
    async with trio.open_nursery() as nursery:
        for each in _this_run("terminated").pools.values():
            nursery.start_soon(each.aclose)


@hookimpl
async def health_check(runtime: Runtime) -> str | None:
    """``oversip-hooks run --http``'s ``/readyz``: a ``SELECT 1`` through every pool at
    once (a lost connection is replaced first, as for any call); the pools that fail, and
    why, never with the password."""
    return await dbpool.check_pools(_pools_of(runtime))


@hookimpl
def metrics_collectors(runtime: Runtime) -> list[object]:
    """``oversip-hooks run --http``'s ``/metrics``: each pool's size, connections open and
    in use, calls waiting and served, reconnections, and the time calls take."""
    collector = dbpool.PoolCollector(
        "oversip_mysql_", partial(_pools_of, runtime), reconnects=_reconnects
    )
    return [collector]


def _pools_of(runtime: Runtime) -> list[Pool]:
    run = _runs.get(runtime)
    return list(run.pools.values()) if run else []


def _reconnects(stats: PoolStats) -> int:
    return stats.reconnects
