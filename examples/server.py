"""The example server, as the README runs it: ``oversip-hooks run examples/server.py``.

It records one row per second into an SQLite database through the oversip-mod-sqlite
module (installed, it is loaded from its entry point, as ``M.sqlite``), logs the row
count on SIGHUP, and logs a line at each step of its life, after the runtime's and the
module's own. The database is ``var/example.db`` under the current directory (or under
the directory that ``$EXAMPLE_VAR_DIR`` names), created with its directory if missing.

    oversip-hooks run examples/server.py &
    kill -HUP %1    # INFO: <example> reload: 3 rows recorded
    kill %1         # SIGTERM: the module closes the pool; exit status 0
"""

import os
import sqlite3
from pathlib import Path

import trio

from oversip_hooks import M, Runtime, get_logger

log = get_logger("example")
VAR_DIR = Path(os.environ.get("EXAMPLE_VAR_DIR") or "var")


def create_tables(connection: sqlite3.Connection) -> None:
    connection.execute(
        "CREATE TABLE IF NOT EXISTS ticks (id INTEGER PRIMARY KEY, at TEXT NOT NULL)"
    )


def initialize() -> None:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    database = VAR_DIR / "example.db"
    log.log_system_info(f"initialize: adding the pool 'main' on {database}")
    M.sqlite.add_pool("main", database=database, size=2, on_connect=create_tables)


async def started(runtime: Runtime) -> None:
    log.log_system_info("started: recording a row per second; SIGHUP counts them")
    runtime.start_soon(record_ticks)


async def record_ticks() -> None:
    pool = M.sqlite.pool("main")
    while True:
        await pool.execute("INSERT INTO ticks (at) VALUES (strftime('%Y-%m-%d %H:%M:%f'))")
        await trio.sleep(1)


async def reload() -> None:
    (count,) = await M.sqlite.pool("main").fetchone("SELECT count(*) FROM ticks")
    log.log_system_info(f"reload: {count} rows recorded")


def terminated(error: bool) -> None:
    log.log_system_info(f"terminated (error={error}); the module closes the pool next")
