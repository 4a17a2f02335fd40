# A Pool is the module's public face on the pool engine (oversip_hooks.dbpool), which owns
# the worker threads (one per connection), queues the calls of concurrent tasks onto
# them, runs transactions and bounds the shutdown; MySQLDriver (_driver.py) tells it how
# MySQL connects, commits and is interrupted. The shape and the guarantees are the SQLite
# module's; what differs is what a server gives and takes away:
# - the first connection is retried with backoff until the caller's deadline (the
#   runtime's startup deadline), since the server may be starting too; only then does the
#   engine open the pool, each of its threads connecting once;
# - a connection the server drops is replaced before the next call that uses its slot
#   (Link.run), and the call that was using it fails with ConnectionLostError;
# - the engine's interrupt, for a cancelled call and at the shutdown deadline, is
#   MariaDB's KILL QUERY ID, sent from another connection.
#
# Connections are in autocommit mode: a call outside transaction() and run() is its own
# transaction, and those two say BEGIN and COMMIT themselves. Every call fetches what it
# returns and closes its cursor before the connection serves another.

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import MySQLdb
import trio
from oversip_hooks import Logger, dbpool

from ._driver import Link, MySQLDriver, Write, driver_reason, is_quick_write
from ._errors import PoolClosedError, PoolOpenError
from ._settings import PoolSettings

LOG_ID = "MySQL module"

Parameters = Sequence[Any] | Mapping[str, Any]
"""Values for a statement's placeholders: a sequence for ``%s``, a mapping for
``%(name)s``."""

_T = TypeVar("_T")

ISOLATION_LEVELS = ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")

# The driver's refusals that waiting will not change: fatal at once, not retried.
_FINAL = frozenset(
    {
        1044,  # ER_DBACCESS_DENIED_ERROR: no access to the database
        1045,  # ER_ACCESS_DENIED_ERROR: wrong user or password
        1049,  # ER_BAD_DB_ERROR: unknown database
        1698,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    }
)
_FIRST_BACKOFF = 0.1  # seconds before the second attempt; doubled after each failure
_MAX_BACKOFF = 2.0
_MARGIN = 0.2  # seconds kept before the startup deadline for the fatal report
# At a forced close: seconds between two KILL QUERY ID of a statement still running (each
# opens a connection), and before a thread that no KILL stops (a server that stopped
# answering) is abandoned with its connection, so that the shutdown stays bounded.
_INTERRUPT_EVERY = 0.2
_ABANDON_AFTER = 1.0


@dataclass(frozen=True)
class Result:
    """What ``execute()`` and ``executemany()`` report.

    Attributes:
        rowcount: the rows inserted, updated or deleted (for a SELECT run through
            ``execute``, the rows it found).
        lastrowid: the AUTO_INCREMENT id of the last row inserted, or ``None``.
    """

    rowcount: int
    lastrowid: int | None


@dataclass(frozen=True)
class PoolStats:
    """A pool's state, as the module logs it on reload.

    Attributes:
        name: the pool's name.
        address: ``user@host:port`` (or ``user@unix:PATH``).
        open_connections: connections open now (a lost one counts once replaced).
        in_use: connections lent to a call or a transaction right now.
        queries_served: calls that completed without an error.
        queries_waiting: calls waiting for a connection because all are in use.
        reconnects: connections opened to replace lost ones.
        calls_timed, call_seconds: the pool's own calls (``execute``, ``executemany``,
            ``fetchone``, ``fetchall``, ``run``) that returned or raised, and the seconds
            they took from the caller's side, queueing and reconnecting included (the
            engine times them: see ``oversip_hooks.dbpool.PoolStats``); a transaction's
            statements are not timed one by one.
    """

    name: str
    address: str
    open_connections: int
    in_use: int
    queries_served: int
    queries_waiting: int
    reconnects: int
    calls_timed: int = 0
    call_seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"name: {self.name}, server: {self.address}, open connections: "
            f"{self.open_connections}, in use: {self.in_use}, queries served: "
            f"{self.queries_served}, queries waiting: {self.queries_waiting}, "
            f"reconnects: {self.reconnects}"
        )


class Queries(abc.ABC):
    """The statements that a :class:`Pool` and a :class:`Transaction` both run.

    Example::

        async def record_login(db: Queries, user_id: int) -> None:
            await db.execute("INSERT INTO logins (user_id) VALUES (%s)", (user_id,))
    """

    async def execute(self, sql: str, parameters: Parameters = ()) -> Result:
        """Run one statement; on a pool, as a transaction of its own (autocommit).

        Args:
            sql: one SQL statement, with ``%s`` or ``%(name)s`` placeholders.
            parameters: the values for the placeholders.

        Raises:
            MySQLdb.Error: what the server or the driver raised (bad SQL, a duplicate
                key, a lock wait timeout).
            ConnectionLostError: the connection was lost during the call; it was not
                retried.
            PoolClosedError: the pool is not open.

        Example::

            result = await pool.execute("INSERT INTO users (name) VALUES (%s)", ("ada",))
            user_id = result.lastrowid
        """
        return await self._statement(_execute, sql, parameters, _summary)

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> Result:
        """Run one statement for each set of parameters (an INSERT's rows are sent as one
        multi-row INSERT); on a pool, all of them as one transaction.

        Raises:
            MySQLdb.Error: what the server raised; on a pool, no row was changed.
            ConnectionLostError: the connection was lost during the call.
            PoolClosedError: the pool is not open.

        Example::

            await pool.executemany("INSERT INTO tags (name) VALUES (%s)", [("a",), ("b",)])
        """
        rows = list(seq_of_parameters)
        return await self._statement(_executemany, sql, rows, _summary, atomic=True)

    async def fetchone(self, sql: str, parameters: Parameters = ()) -> Any:
        """Run a query; return its first row (a tuple), or ``None`` when it has none.

        Raises:
            MySQLdb.Error: what the server raised.
            ConnectionLostError: the connection was lost during the call.
            PoolClosedError: the pool is not open.

        Example::

            (count,) = await pool.fetchone("SELECT count(*) FROM users")
        """
        return await self._statement(_execute, sql, parameters, _first_row)

    async def fetchall(self, sql: str, parameters: Parameters = ()) -> list[Any]:
        """Run a query; return all its rows.

        Raises:
            MySQLdb.Error: what the server raised.
            ConnectionLostError: the connection was lost during the call.
            PoolClosedError: the pool is not open.

        Example::

            names = [name for (name,) in await pool.fetchall("SELECT name FROM users")]
        """
        return await self._statement(_execute, sql, parameters, _all_rows)

    async def _statement(
        self,
        run: Callable[[Any, str, Any], object],
        sql: str,
        parameters: object,
        collect: Callable[[Any], _T],
        *,
        atomic: bool = False,
    ) -> _T:
        def work(connection: Any) -> _T:
            cursor = connection.cursor()
            try:
                run(cursor, sql, parameters)
                return collect(cursor)
            finally:
                cursor.close()

        return await (self._run_atomically(work) if atomic else self._run(work))

    @abc.abstractmethod
    async def _run(self, work: Callable[[Any], _T]) -> _T:
        """``work(connection)`` in a worker thread, on a connection of this object's."""

    @abc.abstractmethod
    async def _run_atomically(self, work: Callable[[Any], _T]) -> _T:
        """:meth:`_run`, as one transaction: on a pool, where autocommit would commit an
        executemany() row by row, a transaction of its own; in a transaction, that one
        (a second BEGIN would commit it)."""


class Pool(Queries, Logger):
    """Connections to one MySQL or MariaDB database, each owned by a worker thread.

    Made by :func:`~oversip_mod_mysql.add_pool`, opened by the module's ``started`` hook
    and closed by its ``terminated`` hook; :func:`~oversip_mod_mysql.pool` finds it by
    name. At most ``size`` statements run at once; the others are queued.

    Example::

        pool = oversip_mod_mysql.pool("main")
        await pool.execute("INSERT INTO events (kind) VALUES (%s)", ("login",))
        rows = await pool.fetchall("SELECT kind, count(*) FROM events GROUP BY kind")
    """

    log_id = LOG_ID

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._driver = MySQLDriver(settings)
        self._engine = dbpool.Pool(
            self._driver,
            settings.size,
            label=f"MySQL pool {settings.name!r}",
            opened_by="the MySQL module opens it in its started hook",
            closed_error=PoolClosedError,
            interrupt_every=_INTERRUPT_EVERY,
            abandon_after=_ABANDON_AFTER,
        )

    def __repr__(self) -> str:
        return (
            f"<MySQL pool {self.name!r} {self.settings.address} size={self.size} "
            f"{self._engine.state.value}>"
        )

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def size(self) -> int:
        return self.settings.size

    def stats(self) -> PoolStats:
        """The pool's state now: connections open and in use, calls served and waiting,
        reconnections, and the time calls took."""
        engine = self._engine.stats()
        links = self._driver.links if engine.open_connections else []
        return PoolStats(
            name=self.name,
            address=self.settings.address,
            open_connections=sum(link.connection is not None for link in links),
            in_use=engine.in_use,
            queries_served=engine.served,
            queries_waiting=engine.waiting,
            reconnects=sum(link.reconnects for link in self._driver.links),
            calls_timed=engine.calls_timed,
            call_seconds=engine.call_seconds,
        )

    @asynccontextmanager
    async def transaction(self, isolation: str | None = None) -> AsyncIterator[Transaction]:
        """Run statements as one transaction: committed when the block ends, rolled back
        when it raises or is cancelled. It holds one connection for the whole block; run
        its statements on the object it yields, not on the pool.

        Args:
            isolation: the isolation level of this transaction, one of
                ``ISOLATION_LEVELS``; the session's (REPEATABLE READ by default) when
                ``None``.

        Raises:
            ValueError: ``isolation`` is not an isolation level.
            PoolClosedError: the pool is not open, or was closed under the transaction
                (which was rolled back).
            ConnectionLostError: the connection was lost; the server rolled the
                transaction back, and nothing more runs in it.
            MySQLdb.Error: what the server raised; the transaction was rolled back.

        Example::

            async with pool.transaction() as tx:
                await tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
                await tx.execute("UPDATE accounts SET balance = balance + 10 WHERE id = 2")
        """
        async with self._engine.transaction(_mode(isolation)) as engine:
            yield Transaction(engine)

    async def run(self, fn: Callable[..., _T], *args: Any, isolation: str | None = None) -> _T:
        """``fn(connection, *args)`` in a worker thread, as one transaction: committed
        when it returns, rolled back when it raises. One hop for a batch of statements;
        use :meth:`transaction` for code that must await between them.

        ``fn`` gets the ``MySQLdb`` connection; it must not commit, roll back or close
        it. It is not run again when the connection is lost under it.

        Raises:
            Exception: what ``fn`` raised; the transaction was rolled back.
            ConnectionLostError: the connection was lost; the server rolled back.
            PoolClosedError: the pool is not open.

        Example::

            def move(connection, amount):
                with connection.cursor() as cursor:
                    cursor.execute("UPDATE a SET n = n - %s WHERE id = 1", (amount,))
                    cursor.execute("UPDATE a SET n = n + %s WHERE id = 2", (amount,))

            await pool.run(move, 10)
        """
        mode = _mode(isolation)

        def work(connection: Any) -> _T:
            return fn(connection, *args)

        return await self._engine.run(partial(Link.run, work=work), mode=mode)

    async def open(self, patience: float = math.inf) -> None:
        """Open the connections, calling ``on_connect`` for each; the module's ``started``
        hook calls it. A server that cannot be reached is tried again, with backoff,
        until the next attempt would end past ``patience`` (a trio deadline).

        Raises:
            PoolOpenError: the server could not be reached in time, or refused the user
                or the database, or ``on_connect`` failed; the message names
                ``user@host:port`` and the driver's reason. Nothing is left open.
            RuntimeError: the pool was opened before.

        Example::

            with trio.move_on_after(30) as scope:
                await pool.open(patience=scope.deadline)
        """
        if self._engine.state is not dbpool.PoolState.ADDED:
            raise RuntimeError(
                f"MySQL pool {self.name!r} is {self._engine.state.value}; it opens once"
            )
        first = Link(self.settings)
        await self._connect_first(first, patience)
        self._driver.ready.append(first)
        try:
            await self._engine.open()
        except PoolOpenError as exc:
            raise PoolOpenError(self._cannot_open(str(exc))) from exc
        except MySQLdb.Error as exc:
            raise PoolOpenError(self._cannot_open(driver_reason(exc))) from exc
        finally:
            for link in self._driver.ready:  # the engine was cancelled before using it
                link.drop()

    async def _connect_first(self, link: Link, patience: float) -> None:
        started = trio.current_time()
        backoff = _FIRST_BACKOFF
        attempts = 0
        while True:
            # Each attempt ends before the deadline (its connect timeout is cut to the whole
            # seconds left, one at least), so that a failure is this module's message,
            # naming the server, and not the runtime's startup timeout.
            timeout = max(1, min(self.settings.connect_timeout, math.floor(_left(patience))))
            attempts += 1
            try:
                await trio.to_thread.run_sync(link.open, timeout)
                return
            except PoolOpenError as exc:
                raise PoolOpenError(self._cannot_open(str(exc))) from exc
            except MySQLdb.Error as exc:
                final = bool(exc.args) and exc.args[0] in _FINAL
                pause = min(backoff, _left(patience) - 1)
                if final or pause < 0:
                    waited = trio.current_time() - started
                    tried = "" if final else f" after {attempts} attempts in {waited:.1f} s"
                    reason = driver_reason(exc) + tried
                    raise PoolOpenError(self._cannot_open(reason)) from exc
            await trio.sleep(pause)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _cannot_open(self, reason: str) -> str:
        return (
            f"cannot open MySQL connection pool (name: {self.name}) to "
            f"{self.settings.address}, database {self.settings.database}: {reason}"
        )

    async def aclose(self) -> None:
        """Close the pool; the module's ``terminated`` hook calls it.

        New calls fail with :class:`PoolClosedError` from now on. Calls in progress and
        open transactions may finish; when the caller is cancelled first (the runtime's
        shutdown deadline), running statements are stopped on the server with ``KILL
        QUERY ID``, queued calls fail, and open transactions are rolled back. Then every
        connection is closed. Nothing is committed.

        Example::

            with trio.move_on_after(shutdown_timeout):  # then statements are killed
                await pool.aclose()
        """
        if self._engine.state is not dbpool.PoolState.OPEN:
            await self._engine.aclose()  # never opened, or another call closes it
            return
        driver = self._driver
        interrupts, rollbacks = driver.interrupts, driver.rollbacks
        try:
            await self._engine.aclose()
        finally:
            # Also when the deadline cut the close short: the engine finished it shielded.
            self.log_system_info(
                f"Closed MySQL connection pool (name: {self.name}, connections: "
                f"{driver.closed}, transactions rolled back: {driver.rollbacks - rollbacks}, "
                f"statements interrupted: {driver.interrupts - interrupts}, queries "
                f"served: {self._engine.stats().served})"
            )
            abandoned = self.size - driver.closed
            if abandoned > 0:
                self.log_system_warn(
                    f"MySQL pool {self.name!r}: {abandoned} connection(s) did not answer "
                    "KILL QUERY in time and were abandoned; the server rolls back what they "
                    "had open when it notices that they are gone"
                )

    async def execute(self, sql: str, parameters: Parameters = ()) -> Result:
        # A one-row write on a quiet pool goes out from trio's thread (see _driver.py).
        if not is_quick_write(sql):
            return await super().execute(sql, parameters)
        engine = self._engine
        rowcount, lastrowid = await engine.call(Write(sql, parameters), inline=engine.quiet)
        return Result(rowcount, lastrowid or None)

    execute.__doc__ = Queries.execute.__doc__

    async def _run(self, work: Callable[[Any], _T]) -> _T:
        return await self._engine.call(partial(Link.run, work=work))

    async def _run_atomically(self, work: Callable[[Any], _T]) -> _T:
        return await self._engine.run(partial(Link.run, work=work), mode="")


def _mode(isolation: str | None) -> str:
    if isolation is None:
        return ""
    if isolation not in ISOLATION_LEVELS:
        raise ValueError(
            f"isolation must be one of {', '.join(ISOLATION_LEVELS)} or None, not {isolation!r}"
        )
    return isolation


def _left(patience: float) -> float:
    """Seconds until ``patience``, less the margin kept for the fatal report."""
    return patience - trio.current_time() - _MARGIN


class Transaction(Queries):
    """The statements of one transaction, on the connection it holds: what
    :meth:`Pool.transaction` yields. It works only inside its ``async with`` block."""

    def __init__(self, engine: dbpool.Transaction[Link]) -> None:
        self._engine = engine

    async def _run(self, work: Callable[[Any], _T]) -> _T:
        return await self._engine.call(partial(Link.run, work=work))

    _run_atomically = _run


# -- what runs in the worker threads ----------------------------------------------------


def _execute(cursor: Any, sql: str, parameters: Any) -> None:
    cursor.execute(sql, parameters or None)


def _executemany(cursor: Any, sql: str, rows: list[Parameters]) -> None:
    cursor.executemany(sql, rows)


def _summary(cursor: Any) -> Result:
    return Result(cursor.rowcount, cursor.lastrowid or None)


def _first_row(cursor: Any) -> Any:
    return cursor.fetchone()


def _all_rows(cursor: Any) -> list[Any]:
    return list(cursor.fetchall())
