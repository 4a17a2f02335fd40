# A pool is oversip_hooks.dbpool's engine (a worker thread per connection, owned by the
# pool; work from concurrent tasks queued onto the connections; transactions; a bounded
# shutdown) driven by _SQLiteDriver, which knows how SQLite connects, begins, commits,
# rolls back, is interrupted, checkpoints and closes. This file keeps the user's API
# (Queries, Pool, Transaction) and everything that is SQLite's.
#
# Most statements never leave trio's thread. A point SELECT or a one-row INSERT takes
# SQLite a few microseconds, and handing it to a thread and waking trio back costs more
# than aiosqlite's whole statement; so a pool statement runs inline, on an idle
# connection, when that cannot block the event loop:
# - a progress handler stops it after INLINE_BUDGET seconds of SQLite's work, and a busy
#   timeout of 0 stops it at once when it would wait for a lock; either stop rolls the
#   statement back (it is a transaction of its own), and it runs again in the
#   connection's worker thread, with the real busy timeout;
# - a user function, aggregate or window function (created through the connection, in
#   on_connect or in run()) refuses to run in trio's thread, which stops the statement the
#   same way before the function's body runs: it may block, or call back into trio; a
#   connection with a user collation (which cannot refuse) never runs anything inline;
# - with synchronous=FULL or EXTRA a commit waits for fsync, so only SELECT and VALUES
#   run inline; with NORMAL or OFF writes do too, with SQLite's automatic checkpoint off
#   while inline (it would fsync in trio's thread): every CHECKPOINT_EVERY inline writes,
#   the next statement goes to a worker thread and checkpoints there first. Never inline:
#   what begins or ends transactions, PRAGMA, ATTACH, VACUUM, schema changes, and a
#   write that returns rows (see the next point);
# - SQLite calls the progress handler once more as a statement returns, and then reports
#   "interrupted" even for a statement that had finished and, in autocommit mode,
#   committed: running it again would do it twice. A write's committed changes show in
#   total_changes, so such a write counts as done (its result read back from changes()
#   and last_insert_rowid()); executemany() commits with the handler off; a read is
#   only read again. Schema changes and a write's RETURNING rows could not be told or
#   read back, so those run in a thread;
# - a statement stopped for its budget STRIKES times in a row (not once: its first run
#   may read the schema and cold pages), or once for a user function, goes straight to a
#   thread from then on; a lock is only waited for in a thread that once.
# Statements in a transaction() and run() always run in the worker thread: they may wait
# for a lock, and run()'s function is Python code no progress handler bounds.
#
# Connections are in autocommit mode (`isolation_level=None`): a statement outside
# transaction() is its own transaction, and transaction() says BEGIN, COMMIT and ROLLBACK
# itself, so nothing is committed that the caller did not ask for. Every call fetches what
# it returns and closes its cursor before it returns, so an idle connection holds no read
# snapshot, and neither a checkpoint nor closing ever waits for one.

from __future__ import annotations

import abc
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, cast

from oversip_hooks import Logger, dbpool

from ._errors import PoolClosedError, PoolOpenError
from ._settings import PoolSettings

LOG_ID = "SQLite module"

Parameters = Sequence[Any] | Mapping[str, Any]
"""Values for a statement's placeholders: a sequence for ``?``, a mapping for ``:name``."""

TransactionMode = Literal["deferred", "immediate", "exclusive"]

_BEGIN: dict[str, str] = {
    "deferred": "BEGIN DEFERRED",
    "immediate": "BEGIN IMMEDIATE",
    "exclusive": "BEGIN EXCLUSIVE",
}

_T = TypeVar("_T")
_P = ParamSpec("_P")

INLINE_BUDGET = 0.0002  # seconds of SQLite's work a statement may take in trio's thread
_PROGRESS_EVERY = 200  # SQLite VM instructions between two looks at the clock
CHECKPOINT_EVERY = 1000  # inline writes between checkpoints (SQLite's default, in pages)
STRIKES = 3  # inline runs over budget, in a row, that send a statement to threads for good
_MEMO_LIMIT = 4096  # statements remembered as read-only or as needing a thread
_ROLLBACK_ATTEMPTS = 10  # an interrupt lands on a ROLLBACK rarely; twice in a row, never seen
_FSYNC_ON_COMMIT = ("FULL", "EXTRA")
_READ, _WRITE, _THREAD = "read", "write", "thread"
_LAST_CHANGE = "SELECT changes(), last_insert_rowid()"
# Statements that never run inline: those that end or nest transactions, or cannot run
# inside one (executemany() runs in a transaction of its own).
_NOT_IN_A_TRANSACTION = frozenset(
    {"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"}
    | {"PRAGMA", "ATTACH", "DETACH", "VACUUM"}
    # Schema changes: total_changes does not count them (see _SQLiteDriver.run_inline).
    | {"CREATE", "DROP", "ALTER", "REINDEX", "ANALYZE"}
)


@dataclass(frozen=True)
class Result:
    """What ``execute()`` and ``executemany()`` report.

    Attributes:
        rowcount: the rows inserted, updated or deleted; -1 for other statements.
        lastrowid: the rowid of the last row inserted, or ``None``.
    """

    rowcount: int
    lastrowid: int | None


@dataclass(frozen=True)
class PoolStats:
    """A pool's state, as the module logs it on reload.

    Attributes:
        name: the pool's name.
        open_connections: connections open (the pool's size once it is open, 0 before
            and after).
        in_use: connections running or queueing a call, or held by a transaction.
        queries_served: calls (``execute``, ``executemany``, ``fetchone``, ``fetchall``,
            ``run``, on the pool or in a transaction) that completed without an error.
        queries_waiting: calls queued behind another on a connection, or waiting for a
            connection that no transaction holds.
        calls_timed, call_seconds: the pool's own calls (``execute``, ``executemany``,
            ``fetchone``, ``fetchall``, ``run``) that returned or raised, and the seconds
            they took from the caller's side, queueing included (the engine times them:
            see ``oversip_hooks.dbpool.PoolStats``); a transaction's statements are not
            timed one by one.
    """

    name: str
    open_connections: int
    in_use: int
    queries_served: int
    queries_waiting: int
    calls_timed: int = 0
    call_seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"name: {self.name}, open connections: {self.open_connections}, "
            f"in use: {self.in_use}, queries served: {self.queries_served}, "
            f"queries waiting: {self.queries_waiting}"
        )


class Queries(abc.ABC):
    """The statements that a :class:`Pool` and a :class:`Transaction` both run.

    Annotate with it the code that should work inside or outside a transaction alike.

    Example::

        async def record_login(db: Queries, user_id: int) -> None:
            await db.execute("INSERT INTO logins (user_id) VALUES (?)", (user_id,))
    """

    async def execute(self, sql: str, parameters: Parameters = ()) -> Result:
        """Run one statement; on a pool, as a transaction of its own.

        Rows that the statement returns are discarded: use :meth:`fetchone` or
        :meth:`fetchall` for those.

        Args:
            sql: one SQL statement, with ``?`` or ``:name`` placeholders.
            parameters: the values for the placeholders.

        Raises:
            sqlite3.Error: what SQLite raised (bad SQL, a constraint, "database is
                locked" after the busy timeout).
            PoolClosedError: the pool is not open.

        Example::

            result = await pool.execute("INSERT INTO users (name) VALUES (?)", ("ada",))
            user_id = result.lastrowid
        """
        result: Result = await self._statement(
            _Statement(sql, parameters, sqlite3.Cursor.execute, _summary)
        )
        return result

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> Result:
        """Run one statement once for each set of parameters; on a pool, all of them as
        one transaction.

        ``seq_of_parameters`` is read to its end before the statement runs, so that a
        generator never runs in a worker thread.

        Raises:
            sqlite3.Error: what SQLite raised; on a pool, no row was changed.
            PoolClosedError: the pool is not open.

        Example::

            await pool.executemany("INSERT INTO tags (name) VALUES (?)", [("a",), ("b",)])
        """
        rows = list(seq_of_parameters)
        result: Result = await self._statement(
            _Statement(sql, rows, _executemany_atomically, _summary)
        )
        return result

    async def fetchone(self, sql: str, parameters: Parameters = ()) -> Any:
        """Run a query; return its first row, or ``None`` when it has none.

        Rows are tuples unless ``on_connect`` sets the connection's ``row_factory``.

        Raises:
            sqlite3.Error: what SQLite raised.
            PoolClosedError: the pool is not open.

        Example::

            (count,) = await pool.fetchone("SELECT count(*) FROM users")
        """
        return await self._statement(
            _Statement(sql, parameters, sqlite3.Cursor.execute, sqlite3.Cursor.fetchone)
        )

    async def fetchall(self, sql: str, parameters: Parameters = ()) -> list[Any]:
        """Run a query; return all its rows.

        Raises:
            sqlite3.Error: what SQLite raised.
            PoolClosedError: the pool is not open.

        Example::

            names = [name for (name,) in await pool.fetchall("SELECT name FROM users")]
        """
        rows: list[Any] = await self._statement(
            _Statement(sql, parameters, sqlite3.Cursor.execute, sqlite3.Cursor.fetchall)
        )
        return rows

    @abc.abstractmethod
    async def _statement(self, statement: _Statement) -> Any:
        """Run ``statement`` on a connection of this object's."""


class Pool(Queries, Logger):
    """Connections to one SQLite database, each owned by a worker thread of the pool.

    Made by :func:`~oversip_mod_sqlite.add_pool`, opened by the module's ``started``
    hook and closed by its ``terminated`` hook; :func:`~oversip_mod_sqlite.pool` finds
    it by name. A quick statement runs in trio's thread on an idle connection (see the
    module's opening comment); the others, transactions and :meth:`run` run in the
    connections' threads, at most ``size`` at once, and calls made while every
    connection is busy queue on the least busy one.

    Cancelling a call: one that has not started never runs; one that runs in a thread
    is interrupted, or finishes, and its result is discarded; either way it ran
    completely or not at all.

    Example::

        pool = oversip_mod_sqlite.pool("main")
        await pool.execute("INSERT INTO events (kind) VALUES (?)", ("login",))
        rows = await pool.fetchall("SELECT kind, count(*) FROM events GROUP BY kind")
    """

    log_id = LOG_ID

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._driver = _SQLiteDriver(settings)
        self._engine = dbpool.Pool(
            self._driver,
            settings.size,
            label=f"SQLite pool {settings.name!r}",
            opened_by="the SQLite module opens it in its started hook",
            closed_error=PoolClosedError,
        )
        self._reported = False  # the close was logged

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def size(self) -> int:
        return self.settings.size

    def stats(self) -> PoolStats:
        """The pool's state now: connections open and in use, queries served and
        waiting."""
        stats = self._engine.stats()
        return PoolStats(
            name=self.name,
            open_connections=stats.open_connections,
            in_use=stats.in_use,
            queries_served=stats.served,
            queries_waiting=stats.waiting,
            calls_timed=stats.calls_timed,
            call_seconds=stats.call_seconds,
        )

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run ``fn(connection, *args, **kwargs)`` in a worker thread, inside one
        transaction (``BEGIN IMMEDIATE``): committed when ``fn`` returns, rolled back
        when it raises. A whole batch of statements costs one round trip to the thread.

        ``fn`` must not commit or roll back itself, and should return what it fetched:
        a cursor it returns is closed first (its ``rowcount`` and ``lastrowid`` stay).
        Cancelled before it starts, it never runs; while it runs, its
        statement is interrupted (``fn`` raises and is rolled back) or, if it had
        committed, its result is discarded.

        Raises:
            PoolClosedError: the pool is not open.
            sqlite3.Error: what SQLite raised; nothing was committed.
            Exception: what ``fn`` raised; nothing was committed.

        Example::

            def add_all(connection, names):
                for name in names:
                    connection.execute("INSERT INTO users (name) VALUES (?)", (name,))
                return len(names)

            count = await pool.run(add_all, ["ada", "grace"])
        """

        def work(connection: _Connection) -> _T:
            result = fn(connection, *args, **kwargs)
            if isinstance(result, sqlite3.Cursor):
                # Freed in trio's thread, an open cursor would reset its statement there,
                # while this thread may be running it for the next call.
                result.close()
            return result

        result: _T = await self._engine.run(work, mode=_BEGIN["immediate"])
        return result

    @asynccontextmanager
    async def transaction(self, mode: TransactionMode = "immediate") -> AsyncIterator[Transaction]:
        """Run statements as one transaction: committed when the block ends, rolled
        back when it raises or is cancelled. The transaction holds one connection for
        the whole block; run its statements on the object it yields, not on the pool,
        whose other connections would wait for this transaction's lock. Each statement
        is a round trip to the connection's thread: for a batch that needs no awaiting
        in between, :meth:`run` is one.

        Args:
            mode: how BEGIN locks. ``"immediate"`` takes the write lock at once, so that
                two writing transactions queue on the busy timeout rather than one of
                them failing with "database is locked" when it upgrades its read lock;
                ``"deferred"`` locks nothing until a statement needs it, which suits a
                transaction that only reads; ``"exclusive"`` is ``"immediate"`` in WAL
                mode.

        Raises:
            ValueError: ``mode`` is none of the three.
            PoolClosedError: the pool is not open, or was closed under the transaction
                (which it rolled back).
            sqlite3.Error: what SQLite raised; the transaction was rolled back.

        Example::

            async with pool.transaction() as tx:
                await tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
                await tx.execute("UPDATE accounts SET balance = balance + 10 WHERE id = 2")
        """
        if mode not in _BEGIN:
            raise ValueError(f"mode must be one of {', '.join(_BEGIN)}, not {mode!r}")
        async with self._engine.transaction(_BEGIN[mode]) as held:
            transaction = Transaction(held)
            try:
                yield transaction
            finally:
                transaction._end()

    async def open(self) -> None:
        """Open the connections, in WAL mode with the busy timeout and ``synchronous``,
        calling ``on_connect`` for each; the module's ``started`` hook calls it.

        Raises:
            PoolOpenError: a connection could not be opened or set up; those already
                open were closed.
            RuntimeError: the pool was opened before.

        Example::

            await pool.open()
            (mode,) = await pool.fetchone("PRAGMA journal_mode")   # "wal"
        """
        try:
            await self._engine.open()
        except Exception as exc:
            if isinstance(exc, RuntimeError) and not isinstance(exc, PoolOpenError):
                raise
            raise PoolOpenError(
                f"cannot open SQLite connection pool (name: {self.name}, "
                f"database: {self.settings.database}): {_reason(exc)}"
            ) from exc

    async def aclose(self) -> None:
        """Close the pool; the module's ``terminated`` hook calls it.

        New calls fail with :class:`PoolClosedError` from now on. Calls in progress and
        queued, and open transactions, may finish; when the caller is cancelled first
        (the runtime's shutdown timeout), queued calls fail with
        :class:`PoolClosedError`, running statements are interrupted and open
        transactions rolled back. Then the WAL is checkpointed into the database and
        every connection is closed. Nothing is committed. The checkpoint waits for
        readers in other processes until the caller's deadline at most; what it could
        not apply is logged, and left to the database's next user.

        Raises:
            sqlite3.Error: a rollback or the checkpoint failed; every connection was
                closed all the same.

        Example::

            with trio.move_on_after(shutdown_timeout):  # then statements are interrupted
                await pool.aclose()
        """
        try:
            await self._engine.aclose()
        finally:
            # Also when the caller was cancelled (the shutdown timeout ran out): the
            # engine closed everything all the same, shielded.
            if not self._reported and self._engine.shutdown is not None:
                self._reported = True
                self._report(self._engine.shutdown)

    def _report(self, shutdown: dbpool.Shutdown) -> None:
        if not shutdown.connections:
            return
        self.log_system_info(
            f"Closed SQLite connection pool (name: {self.name}, connections: "
            f"{shutdown.connections}, transactions rolled back: {shutdown.rolled_back}, "
            f"queries served: {self._engine.stats().served})"
        )
        if shutdown.abandoned:
            self.log_system_warn(
                f"SQLite pool {self.name!r}: {shutdown.abandoned} connections were left to "
                "a run() function that did not return after the shutdown interrupted it"
            )
        if not self._driver.checkpointed:
            self.log_system_warn(
                f"SQLite pool {self.name!r}: another connection to {self.settings.database} "
                "kept the WAL checkpoint from completing; its next writer will apply the WAL"
            )

    async def _statement(self, statement: _Statement) -> Any:
        statement.own_transaction = True
        return await self._engine.call(statement, inline=self._driver.may_inline(statement.sql))


class Transaction(Queries):
    """The statements of one transaction, on the connection it holds: what
    :meth:`Pool.transaction` yields. It works only inside its ``async with`` block."""

    def __init__(self, held: dbpool.Transaction[_Connection]) -> None:
        self._held: dbpool.Transaction[_Connection] | None = held

    async def _statement(self, statement: _Statement) -> Any:
        if self._held is None:
            raise RuntimeError(
                "this transaction has ended: run its statements inside its `async with` block"
            )
        return await self._held.call(statement)

    def _end(self) -> None:
        self._held = None


# -- what runs on a connection, in a worker thread or inline ---------------------------


class _Statement:
    """One call's statement, run on a connection: ``run(cursor, sql, parameters)``,
    then ``collect(cursor)`` for the result."""

    __slots__ = ("collect", "own_transaction", "parameters", "run", "sql")

    def __init__(
        self,
        sql: str,
        parameters: object,
        run: Callable[[sqlite3.Cursor, str, Any], object],
        collect: Callable[[sqlite3.Cursor], Any],
    ) -> None:
        self.sql = sql
        self.parameters = parameters
        self.run = run
        self.collect = collect
        self.own_transaction = False  # a pool's call, not a transaction's

    def __call__(self, connection: _Connection) -> Any:
        if connection.inline.mode and not connection.inline.running:
            connection.in_thread()
        if not self.own_transaction and not connection.in_transaction:
            # SQLite ends a transaction by itself on some errors (ON CONFLICT ROLLBACK, a
            # full disk, an interrupt) and on an explicit COMMIT or ROLLBACK. A statement
            # run after that would be committed on its own; refusing it keeps the
            # transaction all or nothing.
            raise sqlite3.OperationalError(
                "this transaction was already ended by SQLite (rolled back after an error, "
                "or an explicit COMMIT/ROLLBACK); nothing more runs in it"
            )
        # A call on the pool is a transaction of its own: whatever it leaves open (a
        # failed executemany(), an `execute("BEGIN")`) is rolled back before the
        # connection serves another.
        on_its_own = self.own_transaction and not connection.in_transaction
        cursor = connection.cursor()
        try:
            self.run(cursor, self.sql, self.parameters)
            result = self.collect(cursor)
        finally:
            cursor.close()  # ends the statement, and with it the snapshot it read
            left_open = on_its_own and connection.in_transaction
            if left_open:
                _roll_back(connection)
        if left_open:
            raise sqlite3.ProgrammingError(
                "the statement left a transaction open, so it was rolled back; "
                "use pool.transaction() for a transaction"
            )
        return result


class _NeedsThread(Exception):
    """Raised by a user function called in trio's thread: it stops the statement."""


class _Inline:
    """A connection's inline state, shared with the guards of its user functions and
    with its progress handler (which must not hold the connection: no cycle)."""

    __slots__ = ("checkpoint_due", "deadline", "mode", "running", "strikes", "usable")

    def __init__(self) -> None:
        self.usable = True  # False once a user collation exists
        self.mode = False  # busy timeout 0 and no automatic checkpoint
        self.running = False  # a statement runs in trio's thread now
        self.strikes = 0  # why the statement running inline was stopped: 0 it was not
        self.deadline = 0.0
        self.checkpoint_due = False

    def over_budget(self) -> int:
        if time.perf_counter() > self.deadline:
            self.strikes = 1
            return 1
        return 0

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any) -> Any:
            if self.running:
                self.strikes = STRIKES  # it will call the function every time
                raise _NeedsThread
            return fn(*args)

        return guarded


class _Connection(sqlite3.Connection):
    """A sqlite3.Connection whose user functions refuse to run in trio's thread, and
    which switches between its settings for trio's thread and for its worker thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inline = _Inline()
        # What its worker thread runs with: the driver reads them once on_connect ran.
        self.busy_timeout_ms = 5000
        self.autocheckpoint = 1000
        self._progress: tuple[Callable[[], int] | None, int] = (None, 0)

    def create_function(
        self, name: str, narg: int, func: Callable[..., Any] | None, *, deterministic: bool = False
    ) -> None:
        guarded = None if func is None else self.inline.guard(func)
        super().create_function(name, narg, guarded, deterministic=deterministic)

    def create_aggregate(self, name: str, n_arg: int, aggregate_class: Any) -> None:
        guarded = None if aggregate_class is None else self.inline.guard(aggregate_class)
        super().create_aggregate(name, n_arg, guarded)  # type: ignore[arg-type]

    def create_window_function(self, name: str, num_params: int, aggregate_class: Any, /) -> None:
        guarded = None if aggregate_class is None else self.inline.guard(aggregate_class)
        super().create_window_function(name, num_params, guarded)

    def create_collation(self, name: str, callback: Any, /) -> None:
        # A collation cannot stop a statement (sqlite3 ignores what it raises), so a
        # connection with one runs nothing inline.
        self.inline.usable = False
        super().create_collation(name, callback)

    def set_progress_handler(self, progress_handler: Any, n: int) -> None:
        self._progress = (progress_handler, n)
        super().set_progress_handler(progress_handler, n)

    def in_thread(self) -> None:
        """In a worker thread: the real busy timeout and automatic checkpoints again,
        and a checkpoint first when inline writes made one due."""
        inline = self.inline
        if inline.running or not inline.mode:
            return
        inline.mode = False
        _run_sql(f"PRAGMA busy_timeout = {self.busy_timeout_ms}", self)
        _run_sql(f"PRAGMA wal_autocheckpoint = {self.autocheckpoint}", self)
        if inline.checkpoint_due:
            inline.checkpoint_due = False
            _fetch_row("PRAGMA wal_checkpoint(PASSIVE)", self)

    def to_inline(self) -> None:
        """Before its first statement in trio's thread: no busy wait, no automatic
        checkpoint (see in_thread() for the way back)."""
        self.inline.mode = True
        _run_sql("PRAGMA busy_timeout = 0", self)
        _run_sql("PRAGMA wal_autocheckpoint = 0", self)

    def bound(self) -> None:
        """The inline progress handler on, for one statement."""
        super().set_progress_handler(self.inline.over_budget, _PROGRESS_EVERY)

    def unbind(self) -> None:
        """The user's progress handler back, if any."""
        super().set_progress_handler(*self._progress)

    def unbounded(self) -> None:
        """Take the inline progress handler off: for a COMMIT, which it must not stop
        (see _SQLiteDriver.run_inline)."""
        if self.inline.running:
            super().set_progress_handler(None, 0)


class _SQLiteDriver(dbpool.Driver[_Connection]):
    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self.checkpointed = True  # what close() found
        self._inline_writes = settings.synchronous not in _FSYNC_ON_COMMIT
        self._writes = 0  # inline statements that changed rows, since the last checkpoint
        self._kinds: dict[str, str] = {}  # sql -> _kind(sql)
        self._strikes: dict[str, int] = {}  # statements stopped inline, and how often

    def may_inline(self, sql: str) -> bool:
        """Whether the engine should try ``sql`` in trio's thread first."""
        if self._strikes.get(sql, 0) >= STRIKES:
            return False
        kind = self.kind(sql)
        return kind == _READ or (kind == _WRITE and self._inline_writes)

    def kind(self, sql: str) -> str:
        """_READ, _WRITE or _THREAD (never inline), by the statement's first keyword."""
        kind = self._kinds.get(sql)
        if kind is None:
            if len(self._kinds) >= _MEMO_LIMIT:
                self._kinds.clear()
            first = sql.lstrip()[:16].split(None, 1)
            keyword = first[0].upper() if first else ""
            if keyword in ("SELECT", "VALUES"):
                kind = _READ  # cannot write (a user function could, and runs in a thread)
            elif keyword.isalpha() and keyword not in _NOT_IN_A_TRANSACTION:
                kind = _WRITE
            else:  # a comment first, or what cannot run inside the inline transaction
                kind = _THREAD
            self._kinds[sql] = kind
        return kind

    def run_inline(self, connection: _Connection, work: Callable[[_Connection], _T]) -> _T:
        inline = connection.inline
        if not isinstance(work, _Statement) or not inline.usable or inline.checkpoint_due:
            raise dbpool.HandOff
        # A write that commits on its own (execute(), in autocommit mode). SQLite calls
        # the progress handler once more as a statement returns, and reports it
        # interrupted even when it had finished and committed: total_changes tells.
        # executemany() commits with the handler off; a write that returns rows
        # (RETURNING) could not be told, so it runs in a thread.
        commits = self.kind(work.sql) == _WRITE and work.run is sqlite3.Cursor.execute
        if commits and work.collect is not _summary:
            raise dbpool.HandOff
        if not inline.mode:
            connection.to_inline()
        changes = connection.total_changes
        inline.running = True
        inline.strikes = 0
        inline.deadline = time.perf_counter() + INLINE_BUDGET
        connection.bound()
        stopped = False  # by the handler, a user function or a lock: decided below
        try:
            result: _T = work(connection)
        except sqlite3.Error as exc:
            if not inline.strikes and exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            stopped = True
        finally:
            inline.running = False
            connection.unbind()  # before anything more runs on it
        if stopped:
            strikes = inline.strikes
            if strikes and commits and connection.total_changes != changes:
                result = cast(_T, Result(*_fetch_row(_LAST_CHANGE, connection)))
            else:
                # Rolled back: by SQLite as it stopped, or by _Statement. A statement
                # stopped for its budget or a user function counts a strike; a lock is
                # waited for in a thread this time only.
                if strikes:
                    if len(self._strikes) >= _MEMO_LIMIT:
                        self._strikes.clear()
                    self._strikes[work.sql] = self._strikes.get(work.sql, 0) + strikes
                raise dbpool.HandOff
        if self._strikes:
            self._strikes.pop(work.sql, None)  # in a row, they said
        if connection.total_changes != changes:
            self._writes += 1
            if self._writes >= CHECKPOINT_EVERY:
                self._writes = 0
                inline.checkpoint_due = True
        return result

    def connect(self) -> _Connection:
        settings = self.settings
        connection = sqlite3.connect(
            settings.database,
            timeout=settings.timeout,  # the busy timeout
            detect_types=settings.detect_types,
            isolation_level=None,  # autocommit; transactions say BEGIN and COMMIT themselves
            check_same_thread=False,  # its worker thread's, and trio's while that one idles
            factory=_Connection,
            cached_statements=settings.cached_statements,
        )
        assert isinstance(connection, _Connection)
        try:
            (mode,) = _fetch_row("PRAGMA journal_mode=WAL", connection)
            if mode != "wal":
                raise PoolOpenError(
                    f"the journal mode stays {mode!r}: this filesystem cannot do WAL"
                )
            _run_sql(f"PRAGMA synchronous = {settings.synchronous}", connection)
            if settings.on_connect is not None:
                try:
                    settings.on_connect(connection)
                except Exception as exc:
                    raise PoolOpenError(f"on_connect raised {_reason(exc)}") from exc
            if connection.in_transaction:
                raise PoolOpenError("on_connect left a transaction open; it must commit it")
            (connection.busy_timeout_ms,) = _fetch_row("PRAGMA busy_timeout", connection)
            (connection.autocheckpoint,) = _fetch_row("PRAGMA wal_autocheckpoint", connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def begin(self, connection: _Connection, mode: str) -> None:
        connection.in_thread()
        _run_sql(mode, connection)

    def commit(self, connection: _Connection) -> None:
        _run_sql("COMMIT", connection)

    def rollback(self, connection: _Connection) -> bool:
        connection.in_thread()
        if not connection.in_transaction:
            return False
        _roll_back(connection)
        return True

    def interrupt(self, connection: _Connection) -> None:
        # The one sqlite3 call that is safe from another thread; SQLite forgets an
        # interrupt when no statement is running at the start of the next one.
        connection.interrupt()

    def close(self, connections: Sequence[_Connection], patience: float) -> None:
        """Checkpoint the WAL into the database, waiting ``patience`` seconds at most
        for readers on other connections, and close every connection."""
        try:
            if connections:
                first = connections[0]
                first.in_thread()
                # A connection whose schema is stale (another one created a table since
                # it last read) reloads it inside the checkpoint statement, which then
                # waits the whole busy timeout for that read to end: for itself. Reading
                # the schema version first brings it up to date in a read that ends at
                # once.
                _fetch_row("PRAGMA schema_version", first)
                patience = min(self.settings.timeout, patience)
                _fetch_row(f"PRAGMA busy_timeout = {round(patience * 1000)}", first)
                # TRUNCATE copies every frame into the database and cuts the -wal file to
                # zero bytes; `busy` is 1 when a reader on another connection prevented it.
                busy, _, _ = _fetch_row("PRAGMA wal_checkpoint(TRUNCATE)", first)
                self.checkpointed = busy == 0
        finally:
            for connection in connections:
                connection.close()


def _executemany_atomically(cursor: sqlite3.Cursor, sql: str, rows: list[Parameters]) -> None:
    # In autocommit mode sqlite3 commits each row on its own, and a failure halfway would
    # leave the first half in: on a pool, where a call is a transaction, wrap it in one.
    # A failure leaves it open, for _Statement to roll back.
    atomic = not cursor.connection.in_transaction
    if atomic:
        _run_sql("BEGIN IMMEDIATE", cursor.connection)
    cursor.executemany(sql, rows)
    if atomic:
        connection = cursor.connection
        if isinstance(connection, _Connection):
            connection.unbounded()
        _run_sql("COMMIT", connection)


def _run_sql(sql: str, connection: sqlite3.Connection) -> None:
    connection.execute(sql).close()


def _roll_back(connection: sqlite3.Connection) -> None:
    """ROLLBACK, again if an interrupt lands on it: SQLite interrupts whatever statement
    runs, a ROLLBACK too, which then leaves the transaction open, holding the write lock
    and taking the connection's next calls into it. The engine repeats the interrupt of a
    cancelled job until the job returns, so one meant for the job's statement may come
    as the job rolls back; it does not stick (SQLite forgets it once nothing runs)."""
    for _ in range(_ROLLBACK_ATTEMPTS - 1):
        try:
            _run_sql("ROLLBACK", connection)
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_INTERRUPT or not connection.in_transaction:
                raise
    _run_sql("ROLLBACK", connection)


def _fetch_row(sql: str, connection: sqlite3.Connection) -> Any:
    cursor = connection.execute(sql)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()


def _summary(cursor: sqlite3.Cursor) -> Result:
    return Result(cursor.rowcount, cursor.lastrowid)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PoolOpenError) else f"{type(exc).__name__}: {exc}"
