"""The module under load through the real command and real signals: SIGTERM during a
stream of committed writes, the server SIGKILLed and restarted under it, more concurrent
queries than connections, a statement still running at the shutdown deadline."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import trio
from tests.processes import Child, Spawn

from oversip_mod_mysql.testing import PrivateServer

from mysql_helpers import crit_lines, run_server

pytestmark = pytest.mark.slow

TABLE = """
    def create_table(connection):
        connection.query(
            "CREATE TABLE IF NOT EXISTS writes "
            "(id INT AUTO_INCREMENT PRIMARY KEY, writer INT, token VARCHAR(32))"
        )
"""


def reported(child: Child, word: str) -> list[str]:
    """The tokens of the lines ``WORD token...`` that the server file printed."""
    return [
        token for line in child.lines if line.startswith(word + " ") for token in line.split()[1:]
    ]


WRITER = (
    TABLE
    + """
    import trio


    def initialize():
        M.mysql.add_pool("main", size=4, on_connect=create_table, **SERVER)


    async def started(runtime):
        for writer in range(3):
            runtime.start_soon(write_rows, writer)
        runtime.start_soon(write_batches)
        runtime.start_soon(hold_a_transaction)


    async def write_rows(writer):
        # One row per statement, each its own transaction; reported once committed.
        pool = M.mysql.pool("main")
        while True:
            result = await pool.execute("INSERT INTO writes (writer) VALUES (%s)", (writer,))
            say("committed", result.lastrowid)


    async def write_batches():
        # Five rows per transaction, reported once the transaction has committed.
        pool = M.mysql.pool("main")
        while True:
            async with pool.transaction() as tx:
                ids = []
                for _ in range(5):
                    result = await tx.execute("INSERT INTO writes (writer) VALUES (99)")
                    ids.append(result.lastrowid)
            say("committed", *ids)


    async def hold_a_transaction():
        async with M.mysql.pool("main").transaction() as tx:
            await tx.execute("INSERT INTO writes (writer) VALUES (77)")
            say("opened a transaction")
            await trio.sleep_forever()
"""
)


async def test_sigterm_during_a_stream_of_committed_writes_loses_no_committed_row(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    child = await run_server(spawn, server, tmp_path, WRITER)
    await child.line("opened a transaction")
    for _ in range(300):
        await child.line("committed")

    child.process.send_signal(signal.SIGTERM)

    assert await child.finish() == 0
    rows = server.admin(f"SELECT id, writer FROM {server.database}.writes")
    stored = {row_id for row_id, _ in rows}
    committed = {int(n) for n in reported(child, "committed")}
    assert len(committed) >= 300
    assert committed <= stored
    assert sum(writer == 99 for _, writer in rows) % 5 == 0  # no transaction half-applied
    assert not [row for row in rows if row[1] == 77]  # the open one was rolled back
    assert any(" NOTICE: <runtime> SIGTERM signal received, exiting..." in e for e in child.lines)
    assert any("Closed MySQL connection pool (name: main, connections: 4" in e for e in child.lines)
    assert not [line for line in child.lines if " CRIT: " in line or " WARN: " in line]


TOKENS = (
    TABLE
    + """
    import trio


    def initialize():
        M.mysql.add_pool("main", size=3, on_connect=create_table, **SERVER)


    async def started(runtime):
        for writer in range(3):
            runtime.start_soon(write_tokens, writer)


    async def write_tokens(writer):
        # Each write has a token of its own, never written again by this code: a token
        # found twice in the table was written twice by the module.
        pool = M.mysql.pool("main")
        for n in range(1_000_000):
            token = f"{writer}-{n}"
            try:
                await pool.execute(
                    "INSERT INTO writes (writer, token) VALUES (%s, %s)", (writer, token)
                )
            except Exception as exc:
                say("failed", token, type(exc).__name__, exc)
                await trio.sleep(0.05)  # the server is away: no busy loop
            else:
                say("committed", token)
"""
)


async def test_the_server_killed_and_restarted_under_a_write_stream(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    child = await run_server(spawn, server, tmp_path, TOKENS)
    for _ in range(200):
        await child.line("committed")

    server.kill()
    failure = await child.line("failed")
    await child.line("failed")
    server.start()
    back = trio.current_time()
    await child.line("committed")
    resumed = trio.current_time() - back
    for _ in range(100):
        await child.line("committed")
    child.process.send_signal(signal.SIGTERM)

    assert await child.finish() == 0
    assert resumed < 3.0
    rows = server.admin(
        f"SELECT token, count(*) FROM {server.database}.writes WHERE token IS NOT NULL "
        "GROUP BY token"
    )
    stored = {token for token, _ in rows}
    assert not [token for token, count in rows if count > 1]  # none written twice
    committed = set(reported(child, "committed"))
    assert committed <= stored  # no committed row lost
    address = f"MySQL pool 'main' (oversip@127.0.0.1:{server.port}): "
    assert re.search(r"^failed \d+-\d+ ConnectionLostError " + re.escape(address), failure)
    errors = [line for line in child.lines if line.startswith("failed ")]
    assert all("ConnectionLostError" in line for line in errors), errors
    assert any("the connection was lost during this call (20" in line for line in errors)
    assert any("cannot reconnect: 200" in line for line in errors)
    assert not crit_lines(child)
    assert not [line for line in child.lines if server.password in line]


BURST = """
    import trio


    def initialize():
        M.mysql.add_pool("main", size=3, **SERVER)


    async def started(runtime):
        runtime.start_soon(burst)


    async def burst():
        pool = M.mysql.pool("main")
        ids = []

        async def query():
            (connection_id, _) = await pool.fetchone("SELECT CONNECTION_ID(), SLEEP(0.05)")
            ids.append(connection_id)

        async with trio.open_nursery() as nursery:
            for _ in range(60):
                nursery.start_soon(query)
        say("queries", len(ids), "connections", len(set(ids)))
"""


async def test_more_concurrent_queries_than_size_never_use_more_connections(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    server.admin("FLUSH USER_STATISTICS")
    child = await run_server(spawn, server, tmp_path, BURST)
    done = await child.line("queries")
    child.process.send_signal(signal.SIGHUP)
    reloaded = await child.line("MySQL connection pool (name: main")
    child.process.send_signal(signal.SIGTERM)

    assert await child.finish() == 0
    assert done == "queries 60 connections 3"
    [(total,)] = server.admin(
        "SELECT TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS "
        f"WHERE USER = '{server.user}'"
    )
    assert total == 3  # the server saw three connections of the user, in all
    assert reloaded.endswith(
        f" INFO: <MySQL module> MySQL connection pool (name: main, server: "
        f"oversip@127.0.0.1:{server.port}, open connections: 3, in use: 0, queries served: "
        "60, queries waiting: 0, reconnects: 0)"
    )


STUCK = """
    import trio


    def initialize():
        M.mysql.add_pool("main", size=2, **SERVER)


    async def started(runtime):
        runtime.start_soon(stuck)


    async def stuck():
        # Shielded, so that the shutdown's cancellation of services does not stop it:
        # only the pool's close at the deadline can.
        with trio.CancelScope(shield=True):
            async with M.mysql.pool("main").transaction() as tx:
                await tx.execute("INSERT INTO t (x) VALUES (1)")
                say("sleeping")
                try:
                    await tx.fetchone("SELECT SLEEP(600)")
                except Exception as exc:
                    say("stopped", type(exc).__name__, exc)
"""


async def test_a_statement_running_at_the_shutdown_deadline_is_killed_and_rolled_back(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    server.admin(f"CREATE TABLE {server.database}.t (x INT)")
    child = await run_server(spawn, server, tmp_path, STUCK, "--shutdown-timeout", "2")
    await child.line("sleeping")
    asked = trio.current_time()
    child.process.send_signal(signal.SIGTERM)

    status = await child.finish()
    took = trio.current_time() - asked
    assert took < 2 + 1.5
    assert server.admin(f"SELECT count(*) FROM {server.database}.t") == [(0,)]
    assert not server.admin(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(600)%'"
    )
    lines = "\n".join(child.lines)
    assert "stopped OperationalError (1317, 'Query execution was interrupted')" in lines
    assert (
        "INFO: <MySQL module> Closed MySQL connection pool (name: main, connections: 2, "
        "transactions rolled back: 1, statements interrupted: 1, queries served: 1)" in lines
    ), lines
    # The shielded service kept the runtime past its shutdown timeout: status 1.
    assert status == 1
