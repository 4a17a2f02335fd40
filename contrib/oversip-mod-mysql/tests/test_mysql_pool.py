"""A pool in a real runtime (oversip_hooks.testing) on the private server: each call
commits on its own, a transaction and run() as a whole; a lost connection fails its call
clearly and is replaced; a cancelled statement is killed on the server; the password
shows nowhere."""

from __future__ import annotations

import pickle

import MySQLdb
import pytest
import trio
import trio.testing
from oversip_hooks import dbpool, hookimpl
from oversip_hooks.testing import LifecycleHarness

import oversip_mod_mysql
from oversip_mod_mysql import ConnectionLostError, MySQLSettingsError, UnknownPoolError
from oversip_mod_mysql.testing import PrivateServer

from mysql_helpers import register_pool, rows

INSERT = "INSERT INTO items (name) VALUES (%s)"


async def test_each_call_commits_on_its_own_and_executemany_as_a_whole(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=2)
    async with lifecycle.running():
        pool = user.opened()
        result = await pool.execute(INSERT, ("a",))
        assert (result.rowcount, result.lastrowid) == (1, 1)
        assert rows(server) == [(1, "a")]
        with pytest.raises(MySQLdb.IntegrityError):
            await pool.executemany(
                "INSERT INTO items (id, name) VALUES (%s, %s)", [(2, "b"), (1, "dup")]
            )
        assert rows(server) == [(1, "a")]  # the first row of the failed batch is not in
        assert await pool.fetchone("SELECT name FROM items WHERE id = %s", (1,)) == ("a",)
        assert await pool.fetchall("SELECT id FROM items") == [(1,)]


async def test_a_transaction_commits_at_its_end_and_rolls_back_when_it_raises(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=2)
    async with lifecycle.running():
        pool = user.opened()
        async with pool.transaction() as tx:
            await tx.execute(INSERT, ("a",))
            await tx.executemany(INSERT, [("b",), ("c",)])
            assert rows(server) == []
            assert len(await tx.fetchall("SELECT * FROM items")) == 3
        assert [name for _, name in rows(server)] == ["a", "b", "c"]

        async def insert_then_fail() -> None:
            async with pool.transaction("SERIALIZABLE") as tx:
                await tx.execute(INSERT, ("d",))
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await insert_then_fail()
        assert len(rows(server)) == 3
        with pytest.raises(ValueError, match="isolation must be one of"):
            async with pool.transaction("CHAOTIC"):
                pass


async def test_run_is_one_transaction_in_the_worker_thread(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=1)

    def insert(connection: object, names: list[str], fail: bool) -> int:
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.executemany(INSERT, [(name,) for name in names])
        if fail:
            raise RuntimeError("after the inserts")
        return len(names)

    async with lifecycle.running():
        pool = user.opened()
        assert await pool.run(insert, ["a", "b"], False) == 2
        with pytest.raises(RuntimeError, match="after the inserts"):
            await pool.run(insert, ["c"], True)
        assert [name for _, name in rows(server)] == ["a", "b"]


async def test_a_connection_killed_on_the_server_fails_its_call_and_is_replaced(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=1)
    async with lifecycle.running():
        pool = user.opened()
        errors: list[ConnectionLostError] = []

        async def carry_on_after_a_lost_connection() -> None:
            async with pool.transaction() as tx:
                await tx.execute(INSERT, ("lost",))
                (thread_id,) = await tx.fetchone("SELECT CONNECTION_ID()")
                server.admin(f"KILL CONNECTION {thread_id}")
                try:
                    await tx.execute(INSERT, ("after",))
                except ConnectionLostError as exc:
                    errors.append(exc)
                await tx.execute(INSERT, ("never",))  # refused: not in autocommit instead

        with pytest.raises(ConnectionLostError, match="this transaction's connection was lost"):
            await carry_on_after_a_lost_connection()
        assert "the connection was lost during this call (2013 " in str(errors[0])
        assert server.password not in str(errors[0])
        assert rows(server) == []
        await pool.execute(INSERT, ("later",))  # on a new connection
        assert [name for _, name in rows(server)] == ["later"]
        assert pool.stats().reconnects == 1


async def test_a_cancelled_statement_is_killed_on_the_server_and_the_connection_stays(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=1)
    async with lifecycle.running():
        pool = user.opened()
        with trio.move_on_after(0.3) as scope:
            await pool.fetchone("SELECT SLEEP(60)")
        assert scope.cancelled_caught
        assert await pool.fetchone("SELECT 1") == (1,)  # waited for the killed one
        assert not server.admin(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'"
        )
        assert pool.stats().reconnects == 0


async def test_a_write_on_a_quiet_pool_goes_out_from_trios_thread_and_cancelled_is_killed(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=1)
    async with lifecycle.running():
        pool = user.opened()
        engine = pool._engine  # white box: which path the write took
        await pool.execute(INSERT, ("a",))
        locker = MySQLdb.connect(**server.pool_settings())
        try:
            locker.query("BEGIN")
            locker.query("UPDATE items SET name = 'locked' WHERE id = 1")  # holds the row
            blocked = "UPDATE items SET name = %s WHERE id = 1"

            async def watch_and_cancel(scope: trio.CancelScope) -> None:
                await trio.testing.wait_all_tasks_blocked()
                # Waiting for its reply in trio's thread: no job in the worker thread.
                assert not engine.quiet
                assert not any(worker.pending for worker in engine._workers)
                assert dbpool.jobs_in_flight() == 1  # a test clock holds on it
                scope.cancel()

            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as scope:
                    nursery.start_soon(watch_and_cancel, scope)
                    await pool.execute(blocked, ("cancelled",))
            assert scope.cancelled_caught
            # Queued behind the killed statement's reply, which the worker thread reads
            # first: it returns once the KILL has landed, the row still locked.
            assert await pool.fetchone("SELECT 1") == (1,)
            locker.rollback()
        finally:
            locker.close()
        assert await pool.fetchone("SELECT name FROM items WHERE id = 1") == ("a",)
        assert not server.admin(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'UPDATE items%'"
        )
        assert pool.stats().reconnects == 0
        assert (await pool.execute(blocked, ("after",))).rowcount == 1
        assert rows(server) == [(1, "after")]


async def test_a_write_from_trios_thread_on_a_killed_connection_fails_clearly_and_is_replaced(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=1)
    async with lifecycle.running():
        pool = user.opened()
        (thread_id,) = await pool.fetchone("SELECT CONNECTION_ID()")
        server.admin(f"KILL CONNECTION {thread_id}")
        with pytest.raises(ConnectionLostError, match="the connection was lost during this call"):
            await pool.execute(INSERT, ("lost",))
        result = await pool.execute(INSERT, ("later",))  # a new connection, in the thread
        assert (result.rowcount, result.lastrowid) == (1, 1)
        assert await pool.execute(INSERT, ("inline again",)) == oversip_mod_mysql.Result(1, 2)
        assert [name for _, name in rows(server)] == ["later", "inline again"]
        assert pool.stats().reconnects == 1


async def test_writes_from_trios_thread_bind_parameters_as_the_driver_does(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=1)
    server.admin(f"CREATE TABLE {server.database}.blobs (id INT PRIMARY KEY, b BLOB)")
    async with lifecycle.running():
        pool = user.opened()
        every_byte = bytes(range(256))  # not UTF-8, a quote, a backslash, a NUL
        await pool.execute("INSERT INTO blobs (id, b) VALUES (%s, %s)", (1, every_byte))
        assert await pool.fetchone("SELECT b FROM blobs WHERE id = 1") == (every_byte,)
        await pool.execute(INSERT, ('it\'s 100% \\ "quoted"',))
        await pool.execute("INSERT INTO items (name) VALUES (%(name)s)", {"name": "named"})
        await pool.execute("UPDATE items SET name = 'plain%' WHERE id = 2")  # no parameters
        long = "x" * 5000  # longer than what goes out from trio's thread: in the thread
        await pool.execute("INSERT INTO blobs (id, b) VALUES (%s, %s)", (2, long))
        assert await pool.fetchone("SELECT LENGTH(b) FROM blobs WHERE id = 2") == (5000,)
        with pytest.raises(MySQLdb.ProgrammingError, match="not all arguments converted"):
            await pool.execute(INSERT, ("one", "too many"))
        assert [name for _, name in rows(server)] == ['it\'s 100% \\ "quoted"', "plain%"]


@pytest.mark.slow
async def test_with_a_read_timeout_a_write_waits_for_its_reply_in_the_thread(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    # The driver bounds each read by read_timeout in the worker thread; trio's wait for a
    # reply would not, so such a pool sends nothing from trio's thread.
    user = register_pool(lifecycle, server, size=1, read_timeout=1)
    async with lifecycle.running():
        pool = user.opened()
        await pool.execute(INSERT, ("a",))
        locker = MySQLdb.connect(**server.pool_settings())
        try:
            locker.query("BEGIN")
            locker.query("UPDATE items SET name = 'locked' WHERE id = 1")
            with trio.fail_after(30), pytest.raises(ConnectionLostError, match="2013") as lost:
                await pool.execute("UPDATE items SET name = 'late' WHERE id = 1")
            # The server may still run it once the lock is gone: the error says so.
            assert "may or may not have been committed" in str(lost.value)
        finally:
            locker.rollback()
            locker.close()
        assert (await pool.execute(INSERT, ("after",))).rowcount == 1  # reconnected
        assert pool.stats().reconnects == 1


class Misuse:
    """Asks, from its started hook, for a pool that does not exist, and adds one late."""

    def __init__(self, server: PrivateServer) -> None:
        self.server = server
        self.errors: list[Exception] = []

    @hookimpl
    def started(self) -> None:
        for misuse in (
            lambda: oversip_mod_mysql.pool("other"),
            lambda: oversip_mod_mysql.add_pool("late", **self.server.pool_settings()),
        ):
            try:
                misuse()
            except Exception as exc:
                self.errors.append(exc)


async def test_the_password_is_in_no_repr_and_no_message(
    lifecycle: LifecycleHarness, server: PrivateServer
) -> None:
    user = register_pool(lifecycle, server, size=1)
    misuse = Misuse(server)
    lifecycle.register(misuse, name="misuse")
    async with lifecycle.running():
        pool = user.opened()
        shown = [repr(pool), repr(pool.settings), str(pool.stats()), f"{pool.settings.password}"]
        assert all(server.password not in text for text in shown), shown
        with pytest.raises(TypeError, match="not pickled"):
            pickle.dumps(pool.settings)
    unknown, late = misuse.errors
    assert isinstance(unknown, UnknownPoolError)
    assert "no MySQL pool named 'other'; the pools are: 'main'" in str(unknown)
    assert "add_pool() must be called from an initialize hook, not while the runtime is " in (
        str(late)
    )
    assert all(server.password not in line for line in lifecycle.lines)


def test_a_bad_password_type_is_named_without_its_value(server: PrivateServer) -> None:
    from oversip_mod_mysql._settings import check_settings

    settings = {**server.pool_settings(), "password": server.password.encode()}
    with pytest.raises(MySQLSettingsError) as refused:
        check_settings(
            "main", unix_socket=None, size=1, on_connect=None, connect_options={}, taken=(),
            **settings,
        )  # fmt: skip
    assert refused.value.setting == "password"
    assert server.password not in str(refused.value)
    assert "password=<hidden> is invalid: expected a str, not bytes" in str(refused.value)
