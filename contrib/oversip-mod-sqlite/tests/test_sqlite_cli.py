"""The module through the real command: `python -m oversip_hooks run SERVER_PY` in a child
process, with the module loaded from its installed entry point, and real signals."""

from __future__ import annotations

import re
import signal
import sqlite3
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from sqlite_helpers import Spawn, wal_is_applied

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "server.py"

BAD_SETTINGS = [
    ("name", '"main pool", database="test.db"'),
    ("size", '"main", database="test.db", size=0'),
    ("database", '"main", database="missing/test.db"'),
    ("on_connect", '"main", database="test.db", on_connect="CREATE TABLE t (x)"'),
    ("timeout", '"main", database="test.db", timeout=-1'),
    ("journal_mode", '"main", database="test.db", journal_mode="wal"'),
]


@pytest.mark.parametrize(("setting", "arguments"), BAD_SETTINGS)
async def test_a_bad_setting_exits_1_with_one_crit_line_naming_it(
    spawn: Spawn, tmp_path: Path, setting: str, arguments: str
) -> None:
    server = f"""
        from oversip_hooks import M

        def initialize():
            M.sqlite.add_pool({arguments})
    """
    (tmp_path / "server.py").write_text(textwrap.dedent(server))

    child = await spawn("run", "server.py")

    assert await child.finish() == 1
    crit = [line for line in child.err if " CRIT: " in line]
    assert [line for line in crit if f"{setting}=" in line] == [crit[0]]
    assert re.search(
        rf" CRIT: <server> initialize failed: SQLiteSettingsError\(.*{setting}=.* is invalid: ",
        crit[0],
    )
    assert crit[1:] == [crit[1]]
    assert crit[1].endswith(" CRIT: <runtime> exiting with error status")
    assert not (tmp_path / "test.db").exists()


WRITER = """
    import os

    from oversip_hooks import M


    def create_table(connection):
        connection.execute(
            "CREATE TABLE IF NOT EXISTS writes (id INTEGER PRIMARY KEY, writer INTEGER)"
        )


    def initialize():
        M.sqlite.add_pool("main", database="writes.db", size=4, on_connect=create_table)


    async def started(runtime):
        for writer in range(3):
            runtime.start_soon(write_rows, writer)
        runtime.start_soon(write_batches)


    async def write_rows(writer):
        # One row per statement, each its own transaction; reported once committed.
        pool = M.sqlite.pool("main")
        while True:
            result = await pool.execute("INSERT INTO writes (writer) VALUES (?)", (writer,))
            print("committed", result.lastrowid, flush=True)


    async def write_batches():
        # Five rows per transaction, reported once the transaction has committed.
        pool = M.sqlite.pool("main")
        while True:
            async with pool.transaction() as tx:
                ids = []
                for _ in range(5):
                    result = await tx.execute("INSERT INTO writes (writer) VALUES (99)")
                    ids.append(result.lastrowid)
            print("committed", *ids, flush=True)
"""


async def test_sigterm_during_a_stream_of_committed_writes_loses_no_committed_row(
    spawn: Spawn, tmp_path: Path
) -> None:
    (tmp_path / "server.py").write_text(textwrap.dedent(WRITER))
    database = tmp_path / "writes.db"
    child = await spawn("run", "server.py")
    await child.line(child.out, "committed", start=500)  # the 501st commit, or more
    # Another process has the database open at the end, as a backup tool might: SQLite
    # then leaves the WAL to be applied by its last user, unless the pool applies it.
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("SELECT count(*) FROM writes").fetchall()

        child.process.send_signal(signal.SIGTERM)

        assert await child.finish() == 0
        assert wal_is_applied(database)
        stored = {row_id for (row_id,) in connection.execute("SELECT id FROM writes")}
        (batched,) = connection.execute("SELECT count(*) FROM writes WHERE writer = 99").fetchone()
    reported = {int(n) for line in child.out for n in line.removeprefix("committed ").split()}
    assert len(reported) > 500
    assert reported <= stored
    assert batched % 5 == 0  # no transaction half-applied
    assert any(" NOTICE: <runtime> SIGTERM signal received, exiting..." in e for e in child.err)
    assert any("Closed SQLite connection pool (name: main, connections: 4" in e for e in child.err)
    assert not [line for line in child.err if " CRIT: " in line or " WARN: " in line]


async def test_the_example_server_records_rows_counts_them_on_sighup_and_stops_cleanly(
    spawn: Spawn, tmp_path: Path
) -> None:
    child = await spawn("run", str(EXAMPLE))
    await child.line(child.err, "NOTICE: <runtime> running")

    child.process.send_signal(signal.SIGHUP)
    reloaded = child.err[await child.line(child.err, "rows recorded")]
    child.process.send_signal(signal.SIGTERM)

    assert await child.finish() == 0
    database = tmp_path / "var" / "example.db"
    assert wal_is_applied(database)
    with closing(sqlite3.connect(database)) as connection:
        (stored,) = connection.execute("SELECT count(*) FROM ticks").fetchone()
    match = re.search(r"INFO: <example> reload: (\d+) rows recorded$", reloaded)
    assert match
    assert stored >= int(match[1])
    lines = "\n".join(child.err)
    for expected in [
        "INFO: <example> initialize: adding the pool 'main' on var/example.db",
        "INFO: <SQLite module> Adding SQLite connection pool (name: main, size: 2)",
        "INFO: <example> started: recording a row per second; SIGHUP counts them",
        "NOTICE: <runtime> running",
        "NOTICE: <runtime> SIGHUP signal received, reloading...",
        "INFO: <SQLite module> SQLite connection pool (name: main, open connections: 2",
        "NOTICE: <runtime> SIGTERM signal received, exiting...",
        "INFO: <example> terminated (error=False); the module closes the pool next",
        "INFO: <SQLite module> Closed SQLite connection pool (name: main, connections: 2",
    ]:
        assert expected in lines


async def test_the_command_lists_the_module_from_its_entry_point(spawn: Spawn) -> None:
    child = await spawn("plugins")

    assert await child.finish() == 0
    out = "\n".join(child.out)
    assert re.search(r"sqlite\s+entry point\s+oversip_mod_sqlite from oversip-mod-sqlite ", out)
    # tryfirst: the module starts first (with the MySQL module, when it is installed too,
    # which is also tryfirst and comes before it by name), so that it terminates last.
    assert re.search(r"started\s+(mysql, )?sqlite\b", out)
