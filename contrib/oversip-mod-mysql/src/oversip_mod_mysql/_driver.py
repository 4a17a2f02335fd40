# What the pool engine (oversip_hooks.dbpool) needs to know about MySQL: a Driver, and
# the "connection" the engine holds, a Link. A Link is one slot of the pool: it holds a
# MySQLdb connection and replaces it when the server has dropped it, so the engine's
# connection objects live as long as the pool while the server connections behind them
# come and go, and the engine needs no notion of reconnecting. Every call runs on a Link
# in the slot's worker thread, through Link.run, which opens a new MySQLdb connection
# there, before the call's statement, when the last one was lost.
#
# We rejected reconnecting inside the failing call and running its statement again: a
# write whose COMMIT was sent when the connection broke may have been committed, and
# running it again would write it twice. The failing call gets ConnectionLostError; the
# replacement is opened for the next call, and reconnecting before a statement is sent is
# always safe. We also rejected a background task that reconnects eagerly: while the
# server is away it would spin, and it would race with the worker thread.
#
# A transaction remembers the generation of the connection it began on; a statement of
# that transaction on a newer connection is refused, since the server rolled the
# transaction back when the old connection died, and running the rest in autocommit would
# commit half of it.
#
# Interrupting (the engine's Driver.interrupt, on a cancelled call and at the shutdown
# deadline) is MariaDB's `KILL QUERY ID <query id>`, sent from a short-lived connection of
# its own in a thread of its own, since it is network I/O and the engine calls interrupt()
# from trio's thread. It names the statement, not the connection: `KILL QUERY <thread>`
# that arrives just after the call's statement ended would stop the next call's statement
# on that connection instead. The killer reads the connection's current query id, and
# sends the KILL only if the call it was asked to stop is still the one running.
#
# A Write (one INSERT, UPDATE, DELETE or REPLACE, in autocommit, with no RETURNING) on an
# idle connection is sent from trio's thread (MySQLDriver.run_inline, with mysqlclient's
# send_query), and its reply, one small OK packet, read there once the socket is readable
# (dbpool.WaitForReply): no hop to the worker thread and back, which cost more than the
# statement itself (benchmarks/PROFILES.md). Nothing else is: a result set may be large,
# and mysqlclient reads it on a blocking socket, which would block the loop while it
# arrives. A query longer than _INLINE_LIMIT goes to the thread too, so that sending it
# never waits for the server to read. Cancelled while it waits, the engine interrupts the
# statement (the KILL above) and leaves the reply to the worker thread, before its next
# call; the connection's order is kept.

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing, suppress
from typing import Any, TypeVar

import MySQLdb
from MySQLdb.constants import CR
from oversip_hooks import dbpool

from ._errors import ConnectionLostError, PoolOpenError
from ._settings import PoolSettings

_T = TypeVar("_T")

# The client's and server's error codes that mean "this connection is gone".
_LOST = frozenset(
    {
        CR.SERVER_GONE_ERROR,  # 2006: MySQL server has gone away
        CR.SERVER_LOST,  # 2013: Lost connection to MySQL server during query
        CR.CONNECTION_ERROR,  # 2002: cannot connect (a reconnection, or a dead socket)
        CR.CONN_HOST_ERROR,  # 2003: cannot connect (on a reconnection)
        2026,  # CR_SSL_CONNECTION_ERROR
        2055,  # CR_SERVER_LOST_EXTENDED: Lost connection at '...', system error
        1053,  # ER_SERVER_SHUTDOWN: Server shutdown in progress
        1927,  # ER_CONNECTION_KILLED (MariaDB): Connection was killed
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT: disconnected after wait_timeout
    }
)
_KILL_TIMEOUT = 2  # seconds for the killer's connection
_QUICK_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_INLINE_LIMIT = 4096  # bytes: a quarter of Linux's default TCP send buffer (16 KiB)


def driver_reason(exc: BaseException) -> str:
    """The driver's error as one line: ``(2003, "Can't connect ...")`` becomes
    ``2003 Can't connect ...``; the driver never puts the password in its messages."""
    if isinstance(exc, MySQLdb.Error) and len(exc.args) == 2:
        return f"{exc.args[0]} {exc.args[1]}"
    return f"{type(exc).__name__}: {exc}"


def is_lost(exc: BaseException) -> bool:
    """Whether the driver's ``exc`` means that the connection is gone."""
    if isinstance(exc, MySQLdb.InterfaceError):  # used after the driver saw it die
        return True
    return isinstance(exc, MySQLdb.OperationalError) and bool(exc.args) and exc.args[0] in _LOST


class Link:
    """One connection slot of a pool; see the module's comment. Its methods run in the
    slot's worker thread, except :meth:`kill`, which runs in a thread of its own."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self.connection: Any = None  # a MySQLdb connection, or None while it is lost
        self.generation = 0  # how many connections this slot has opened
        self.transaction: int | None = None  # the generation an open transaction began on
        self._thread_id: int | None = None  # the server's id of the current connection
        self._call: object | None = None  # the call running now, for kill()
        self._guard = threading.Lock()  # between the worker thread and kill()

    def __repr__(self) -> str:
        state = "connected" if self.connection is not None else "disconnected"
        return f"<MySQL link {self.settings.address} pool={self.settings.name!r} {state}>"

    @property
    def reconnects(self) -> int:
        """Connections opened after the first."""
        return max(0, self.generation - 1)

    def open(self, connect_timeout: int | None = None) -> None:
        """Open the slot's connection and run ``on_connect`` on it.

        Args:
            connect_timeout: whole seconds for this attempt, instead of the setting's.

        Raises:
            MySQLdb.Error: the driver's, when the server cannot be reached or refuses.
            PoolOpenError: ``on_connect`` raised; the connection was closed.
        """
        arguments = self.settings.driver_arguments()
        if connect_timeout is not None:
            arguments["connect_timeout"] = connect_timeout
        connection: Any = MySQLdb.connect(**arguments)  # the stubs leave its methods untyped
        try:
            if self.settings.on_connect is not None:
                try:
                    self.settings.on_connect(connection)
                except Exception as exc:
                    raise PoolOpenError(f"on_connect raised {type(exc).__name__}: {exc}") from exc
                connection.rollback()  # what on_connect left open is not committed later
        except BaseException:
            connection.close()
            raise
        with self._guard:
            self.connection = connection
            self._thread_id = connection.thread_id()
            self.generation += 1

    def run(self, work: Callable[[Any], _T]) -> _T:
        """``work(connection)``, on a new connection when the last one was lost.

        Raises:
            ConnectionLostError: the connection broke during ``work``, or none could be
                opened, or the open transaction's connection is gone.
        """
        if self.transaction is not None and (
            self.connection is None or self.transaction != self.generation
        ):
            raise self._lost(
                "this transaction's connection was lost, and the server rolled it back; "
                "nothing more runs in it"
            )
        if self.connection is None:
            try:
                self.open()
            except MySQLdb.Error as exc:
                raise self._lost(f"cannot reconnect: {driver_reason(exc)}") from exc
        call = object()
        with self._guard:
            self._call = call
        try:
            return work(self.connection)
        except MySQLdb.Error as exc:
            raise self._failed(exc) from exc
        finally:
            with self._guard:
                self._call = None

    def send(self, write: Write) -> dbpool.WaitForReply[Link, tuple[int, int]]:
        """In trio's thread, on an idle connection: send ``write``'s statement; the
        reply is for :meth:`read_reply`, once the connection's socket is readable.

        Raises:
            dbpool.HandOff: no connection (the worker thread reconnects); a
                ``read_timeout`` set (the driver applies it to reads in the thread, and
                trio's wait would not); named parameters; a query longer than
                _INLINE_LIMIT.
            ConnectionLostError: the connection broke as the statement was sent.
            MySQLdb.ProgrammingError: parameters that do not fit the placeholders.
        """
        mysql = self.connection
        parameters = write.parameters
        if (
            mysql is None
            or self.settings.read_timeout is not None
            or isinstance(parameters, Mapping)
            or len(write.sql) + sum(map(_size, parameters)) > _INLINE_LIMIT
        ):
            raise dbpool.HandOff
        # Bound as the driver's cursor binds them (its public mogrify() decodes the query
        # to str, which fails on binary parameters).
        query = write.sql.encode(mysql.encoding)
        if parameters:
            try:
                query %= tuple(map(mysql.literal, parameters))
            except TypeError as exc:
                raise MySQLdb.ProgrammingError(str(exc)) from None
        if len(query) > _INLINE_LIMIT:
            raise dbpool.HandOff
        with self._guard:
            self._call = object()
        try:
            mysql.send_query(query)
        except MySQLdb.Error as exc:
            with self._guard:
                self._call = None
            raise self._failed(exc) from exc
        return dbpool.WaitForReply(mysql.fileno(), Link.read_reply)

    def read_reply(self) -> tuple[int, int]:
        """The reply to what :meth:`send` sent: rows affected and the last insert id. In
        trio's thread once it has come, or in the worker thread, where it may wait.

        Raises:
            ConnectionLostError: the connection broke before the reply came.
            MySQLdb.Error: the server's (a duplicate key; 1317 when it was killed).
        """
        mysql = self.connection
        try:
            mysql.read_query_result()
            return mysql.affected_rows(), mysql.insert_id()
        except MySQLdb.Error as exc:
            raise self._failed(exc) from exc
        finally:
            with self._guard:
                self._call = None

    def _failed(self, exc: MySQLdb.Error) -> Exception:
        """What a call raises for the driver's ``exc``: itself, or, when the connection
        is gone (which it then drops), ConnectionLostError."""
        if not is_lost(exc):
            return exc
        self.drop()
        return self._lost(
            f"the connection was lost during this call ({driver_reason(exc)}); the call "
            "was not retried, and a write in it may or may not have been committed"
        )

    def _lost(self, what: str) -> ConnectionLostError:
        settings = self.settings
        return ConnectionLostError(f"MySQL pool {settings.name!r} ({settings.address}): {what}")

    def drop(self) -> None:
        """Forget the connection, closing it without waiting for a server that is gone."""
        with self._guard:
            connection, self.connection, self._thread_id = self.connection, None, None
        if connection is not None:
            with suppress(MySQLdb.Error):
                connection.close()

    def interrupt(self) -> None:
        """Stop the call running now, if any, soon: :meth:`kill` in a thread of its own.
        Returns at once; a call that ends first is left alone, and so is the next one."""
        with self._guard:
            call, thread_id = self._call, self._thread_id
        if call is not None and thread_id is not None:
            name = f"MySQL pool {self.settings.name!r} KILL QUERY"
            killer = threading.Thread(target=self.kill, args=(call, thread_id), name=name)
            killer.daemon = True  # never holds up the process's exit (2 s at most anyway)
            killer.start()

    def kill(self, call: object, thread_id: int) -> None:
        """Send ``KILL QUERY ID`` for the statement of ``call`` on the connection whose
        server id is ``thread_id``, if ``call`` still runs; from a connection of its own.

        The statement fails with "Query execution was interrupted" (1317) and the
        connection stays usable; a transaction around it stays open, for the pool to roll
        back. When the server cannot be reached, nothing is sent: the statement will fail
        on its own.
        """
        arguments = {**self.settings.driver_arguments(), "connect_timeout": _KILL_TIMEOUT}
        arguments.pop("init_command", None)
        with suppress(MySQLdb.Error), closing(MySQLdb.connect(**arguments)) as killer:
            cursor = killer.cursor()
            cursor.execute(
                "SELECT QUERY_ID FROM information_schema.PROCESSLIST "
                "WHERE ID = %s AND COMMAND = 'Query'",
                (thread_id,),
            )
            row = cursor.fetchone()
            with self._guard:
                # Read while `call` ran, before and after: the statement is the call's.
                still = self._call is call
            if row is not None and still:
                killer.query(f"KILL QUERY ID {int(row[0])}")


class Write:
    """One write whose reply is one small packet (see :func:`is_quick_write`). Called on
    a Link in its worker thread, it runs through a cursor; :meth:`MySQLDriver.run_inline`
    sends it from trio's thread instead when the connection is idle."""

    __slots__ = ("parameters", "sql")

    def __init__(self, sql: str, parameters: Any) -> None:
        self.sql = sql
        self.parameters = parameters

    def __call__(self, link: Link) -> tuple[int, int]:
        return link.run(self._with_cursor)

    def _with_cursor(self, mysql: Any) -> tuple[int, int]:
        cursor = mysql.cursor()
        try:
            cursor.execute(self.sql, self.parameters or None)
            return cursor.rowcount, cursor.lastrowid
        finally:
            cursor.close()


def _size(value: object) -> int:
    return len(value) if isinstance(value, (str, bytes, bytearray)) else 0


def is_quick_write(sql: str) -> bool:
    """Whether ``sql`` is one INSERT, UPDATE, DELETE or REPLACE without RETURNING: its
    reply is one OK packet, never a result set."""
    return (
        sql.lstrip()[:7].upper().startswith(_QUICK_WRITES)
        and ";" not in sql
        and "RETURNING" not in sql.upper()
    )


class MySQLDriver(dbpool.Driver[Link]):
    """How the pool engine opens, runs transactions on, interrupts and closes Links.

    ``ready`` holds Links that :meth:`Pool.open` connected already (its first attempts,
    retried until the startup deadline); :meth:`connect` hands those out first.
    """

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self.ready: list[Link] = []
        self.links: list[Link] = []  # every Link handed to the engine, for the stats
        # Counted here, not taken from the engine's Shutdown, which a close cut short by
        # its caller's deadline does not return.
        self.interrupts = 0
        self.rollbacks = 0  # transactions rolled back, whoever asked
        self.closed = 0  # connections closed by close()

    def connect(self) -> Link:
        link = self.ready.pop() if self.ready else None
        if link is None:
            link = Link(self.settings)
            link.open()
        self.links.append(link)
        return link

    def begin(self, connection: Link, mode: str) -> None:
        # `mode` is "" or an isolation level, for this one transaction.
        def begin(mysql: Any) -> None:
            if mode:
                mysql.query(f"SET TRANSACTION ISOLATION LEVEL {mode}")
            mysql.query("BEGIN")

        connection.run(begin)
        connection.transaction = connection.generation

    def commit(self, connection: Link) -> None:
        connection.run(_commit)
        connection.transaction = None

    def rollback(self, connection: Link) -> bool:
        # Never reconnects: a transaction whose connection was lost is rolled back
        # already, by the server.
        began, connection.transaction = connection.transaction, None
        if connection.connection is None or began != connection.generation:
            return False
        try:
            connection.connection.rollback()
        except MySQLdb.Error as exc:
            if not is_lost(exc):
                raise
            connection.drop()
            return False
        self.rollbacks += began is not None
        return began is not None

    def interrupt(self, connection: Link) -> None:
        self.interrupts += 1
        connection.interrupt()

    def run_inline(
        self, connection: Link, work: Callable[[Link], _T]
    ) -> _T | dbpool.WaitForReply[Link, _T]:
        if not isinstance(work, Write) or connection.transaction is not None:
            raise dbpool.HandOff
        return connection.send(work)  # type: ignore[return-value]  # _T is (int, int) here

    def close(self, connections: Sequence[Link], patience: float) -> None:
        for link in connections:
            self.closed += link.connection is not None
            link.drop()  # each is rolled back already; closing would roll back anyway


def _commit(mysql: Any) -> None:
    mysql.commit()
