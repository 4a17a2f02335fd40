# The SQLite module (contrib/oversip-mod-sqlite) measured from outside, through its public
# API (`oversip_mod_sqlite.pool(...)` in a real Runtime), against aiosqlite, what users
# would pick instead (on asyncio, one connection, as its documentation uses it), with the
# same settings on both sides: WAL, synchronous=NORMAL, autocommit, busy timeout 5 s.
# Four workloads: a single-row INSERT and a point SELECT by primary key, each sequential
# and from 16 concurrent tasks; and a transaction of 100 INSERTs through `pool.run`
# against the same function called on a raw sqlite3 connection in one thread. The raw
# connection is also the floor of the four workloads, for context.
#
# Every variant runs `count` operations and returns seconds per operation; the module and
# aiosqlite variants start their event loop and open their connections outside the timed
# part, so that what is compared is the statements. aiosqlite is a benchmark-only
# dependency (`pip install aiosqlite`).

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from contextlib import closing
from pathlib import Path
from tempfile import TemporaryDirectory

import aiosqlite
import oversip_mod_sqlite

from ._measure import Profile, Variant, interleave, timed
from ._report import Section, compare
from ._statements import (
    Workers,
    cycling_ids,
    in_nursery,
    in_runtime,
    spread,
    workload_rows,
)

SIZE = 4  # connections in the module's pool
TASKS = 16
LIMIT = 1.0  # the module at or below aiosqlite's time per statement
RUN_LIMIT = 1.5  # pool.run within 1.5x of the same function on raw sqlite3
BATCH = 100  # INSERTs in one pool.run transaction
ROWS = 1000
TIMEOUT = 5.0  # the busy timeout, both sides

NOTES = f"""\
A database file in a temporary directory, WAL, `synchronous=NORMAL`, autocommit
(`isolation_level=None`), busy timeout {TIMEOUT:g} s on every side. Table
`bench (id INTEGER PRIMARY KEY, v TEXT)`, {ROWS} rows to start with. **insert** is
`INSERT INTO bench (v) VALUES (?)`, each its own transaction; **select** is
`SELECT id, v FROM bench WHERE id = ?` with the row fetched. **sequential**: one task, one
statement after another; **{TASKS} tasks**: the same statements shared by {TASKS}
concurrent tasks. **module**: `await pool.execute(...)` / `await pool.fetchone(...)` on
`oversip_mod_sqlite.pool("bench")` (size {SIZE}, `synchronous="NORMAL"`) inside a real
`Runtime`; **aiosqlite**: one `aiosqlite.connect(...)` on asyncio, `await db.execute(...)`
for inserts and `await db.execute_fetchall(...)` for selects; **floor**: the same
statements on a raw `sqlite3` connection in one thread, no event loop. **run**: a function
that INSERTs {BATCH} rows, through `await pool.run(fn)` (one transaction, BEGIN IMMEDIATE
to COMMIT, in a worker thread) against `BEGIN IMMEDIATE; fn(connection); COMMIT` on a raw
connection in one thread. Ratios are of seconds per operation: below 1 the subject is
faster. Targets: every workload at or below {LIMIT:g}x aiosqlite, and run within
{RUN_LIMIT:g}x of raw sqlite3.
"""

INSERT = "INSERT INTO bench (v) VALUES (?)"
SELECT = "SELECT id, v FROM bench WHERE id = ?"


def _connect(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(database, timeout=TIMEOUT, isolation_level=None)
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _insert_batch(connection: sqlite3.Connection) -> None:
    for _ in range(BATCH):
        connection.execute(INSERT, ("x",))


# -- the floor: sqlite3 in one thread -------------------------------------------------


def _floor(database: Path, sql: str) -> Variant:
    connection = _connect(database)
    ids = cycling_ids(ROWS)

    def measure(count: int) -> Mapping[str, float]:
        with timed() as timer:
            for _ in range(count):
                if sql is INSERT:
                    connection.execute(sql, ("x",)).close()
                else:
                    with closing(connection.execute(sql, (next(ids),))) as cursor:
                        cursor.fetchone()
        return {"op": timer.seconds / count}

    return measure


def _raw_batch(database: Path) -> Variant:
    connection = _connect(database)

    def measure(count: int) -> Mapping[str, float]:
        with timed() as timer:
            for _ in range(count):
                connection.execute("BEGIN IMMEDIATE")
                try:
                    _insert_batch(connection)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
        return {"op": timer.seconds / count}

    return measure


# -- aiosqlite on asyncio ---------------------------------------------------------------


def _aiosqlite(database: Path, sql: str, tasks: int) -> Variant:
    ids = cycling_ids(ROWS)

    async def measure_async(count: int) -> float:
        async with aiosqlite.connect(database, timeout=TIMEOUT, isolation_level=None) as db:
            await db.execute("PRAGMA synchronous = NORMAL")

            async def statement() -> None:
                if sql is INSERT:
                    await db.execute(sql, ("x",))
                else:
                    await db.execute_fetchall(sql, (next(ids),))

            async def gather(workers: Workers) -> None:
                await asyncio.gather(*(worker() for worker in workers))

            with timed() as timer:
                await spread(count, tasks, statement, gather)
        return timer.seconds / count

    def measure(count: int) -> Mapping[str, float]:
        return {"op": asyncio.run(measure_async(count))}

    return measure


# -- the module, in a real Runtime ----------------------------------------------------


def _module(
    database: Path, body: Callable[[oversip_mod_sqlite.Pool, int], Awaitable[None]]
) -> Variant:
    def add_pool() -> None:
        oversip_mod_sqlite.add_pool(
            "bench", database=database, size=SIZE, synchronous="NORMAL", timeout=TIMEOUT
        )

    return in_runtime(oversip_mod_sqlite, "sqlite", add_pool, body)


def _module_statements(database: Path, sql: str, tasks: int) -> Variant:
    ids = cycling_ids(ROWS)

    async def body(pool: oversip_mod_sqlite.Pool, count: int) -> None:
        async def statement() -> None:
            if sql is INSERT:
                await pool.execute(sql, ("x",))
            else:
                await pool.fetchone(sql, (next(ids),))

        await spread(count, tasks, statement, in_nursery)

    return _module(database, body)


def _module_batch(database: Path) -> Variant:
    async def body(pool: oversip_mod_sqlite.Pool, count: int) -> None:
        for _ in range(count):
            await pool.run(_insert_batch)

    return _module(database, body)


def _create(database: Path) -> None:
    with closing(_connect(database)) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)")
        connection.executemany(INSERT, [("x",)] * ROWS)


def run(profile: Profile) -> Section:
    section = Section("SQLite module: statements against aiosqlite and sqlite3", notes=NOTES)
    # A sample outlasts a runtime's start and a pool's opening.
    min_sample = max(profile.min_sample, 0.2)
    with TemporaryDirectory(prefix="bench-sqlite-") as directory:
        for workload, sql in (("insert", INSERT), ("select", SELECT)):
            database = Path(directory) / f"{workload}.db"
            _create(database)
            variants: dict[str, Variant] = {"floor": _floor(database, sql)}
            for tasks in (1, TASKS):
                size = "sequential" if tasks == 1 else f"{tasks} tasks"
                variants[f"module {size}"] = _module_statements(database, sql, tasks)
                variants[f"aiosqlite {size}"] = _aiosqlite(database, sql, tasks)
            samples = interleave(
                variants, rounds=profile.rounds, budget=profile.budget, min_sample=min_sample
            )
            sizes = ["sequential", f"{TASKS} tasks"]
            workload_rows(section, samples, workload, "aiosqlite", sizes, LIMIT)
        database = Path(directory) / "run.db"
        _create(database)
        samples = interleave(
            {"module": _module_batch(database), "raw": _raw_batch(database)},
            rounds=profile.rounds,
            budget=profile.budget,
            min_sample=min_sample,
        )
        section.rows.append(
            compare(
                samples, f"run: {BATCH} inserts, pool.run / sqlite3", "1 transaction",
                ("module", "op"), ("raw", "op"), limit=RUN_LIMIT,
            )
        )  # fmt: skip
    return section
