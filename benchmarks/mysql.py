# The MySQL module (contrib/oversip-mod-mysql) measured from outside, through its public
# API (`oversip_mod_mysql.pool(...)` in a real Runtime), on a private MariaDB server that
# the benchmark starts in a temporary directory (`oversip_mod_mysql.testing`). Two
# workloads, a single-row INSERT (autocommit: each its own transaction) and a point SELECT
# by primary key, each sequential and from 16 concurrent tasks, against two baselines:
# - the floor: the module's driver (mysqlclient) called in one thread with no async;
# - aiomysql on asyncio, what users would pick instead: its documented pool, same size.
# And the choice of driver itself: PyMySQL's floor against mysqlclient's, same loop.
#
# Every variant runs `count` operations and returns seconds per operation; the module and
# aiomysql variants start their event loop and open their pool outside the timed part,
# so that what is compared is the statements. Needs MariaDB's server installed
# (contrib/oversip-mod-mysql/tests/install-mariadb.sh) and the bench extra of the module
# (`pip install -e 'contrib/oversip-mod-mysql[bench]'`).

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiomysql  # type: ignore[import-untyped]
import MySQLdb
import oversip_mod_mysql
import pymysql  # type: ignore[import-untyped]  # a baseline only: no stubs installed
from oversip_mod_mysql.testing import PrivateServer

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

SIZE = 4  # connections in the module's pool and in aiomysql's
TASKS = 16
LIMIT = 1.0

NOTES = f"""\
A private MariaDB server (`mariadbd` started by the benchmark, data directory in a temporary
folder, default durability: `innodb_flush_log_at_trx_commit=1`), over loopback TCP. Table
`bench (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(32))`, 1000 rows to start with.
**insert** is `INSERT INTO bench (v) VALUES (%s)` in autocommit; **select** is
`SELECT id, v FROM bench WHERE id = %s` with the row fetched. **sequential**: one task,
one statement after another; **{TASKS} tasks**: the same statements shared by {TASKS}
concurrent tasks. **module**: `await pool.execute(...)` / `await pool.fetchone(...)` on
`oversip_mod_mysql.pool("bench")` (size {SIZE}) inside a real `Runtime`; **aiomysql**:
`aiomysql.create_pool(maxsize={SIZE})`, `async with pool.acquire()` and a cursor per
statement, on asyncio; **floor**: mysqlclient's cursor in one thread, no event loop (the
same loop for both columns: one thread cannot do more). **PyMySQL floor / mysqlclient
floor** compares the two drivers on the floor's loop. Ratios are of seconds per statement:
below 1 the subject is faster. Target: the module at or below {LIMIT:g}x aiomysql.
"""

INSERT = "INSERT INTO bench (v) VALUES (%s)"
SELECT = "SELECT id, v FROM bench WHERE id = %s"
ROWS = 1000


# -- the floor: the driver in one thread ---------------------------------------------


def _floor(connect: Callable[..., Any], server: PrivateServer, sql: str) -> Variant:
    connection = connect(**_driver_arguments(server), autocommit=True)
    ids = cycling_ids(ROWS)

    def measure(count: int) -> Mapping[str, float]:
        with closing(connection.cursor()) as cursor, timed() as timer:
            for _ in range(count):
                cursor.execute(sql, ("x",) if sql is INSERT else (next(ids),))
                if sql is SELECT:
                    cursor.fetchone()
        return {"op": timer.seconds / count}

    return measure


def _driver_arguments(server: PrivateServer) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
    }


# -- aiomysql on asyncio --------------------------------------------------------------


def _aiomysql(server: PrivateServer, sql: str, tasks: int) -> Variant:
    ids = cycling_ids(ROWS)

    async def measure_async(count: int) -> float:
        pool = await aiomysql.create_pool(
            minsize=SIZE, maxsize=SIZE, autocommit=True, db=server.database,
            **{k: v for k, v in _driver_arguments(server).items() if k != "database"},
        )  # fmt: skip

        async def statement() -> None:
            async with pool.acquire() as connection, connection.cursor() as cursor:
                await cursor.execute(sql, ("x",) if sql is INSERT else (next(ids),))
                if sql is SELECT:
                    await cursor.fetchone()

        async def gather(workers: Workers) -> None:
            await asyncio.gather(*(worker() for worker in workers))

        try:
            with timed() as timer:
                await spread(count, tasks, statement, gather)
        finally:
            pool.close()
            await pool.wait_closed()
        return timer.seconds / count

    def measure(count: int) -> Mapping[str, float]:
        return {"op": asyncio.run(measure_async(count))}

    return measure


# -- the module, in a real Runtime ----------------------------------------------------


def _module(server: PrivateServer, sql: str, tasks: int) -> Variant:
    ids = cycling_ids(ROWS)

    def add_pool() -> None:
        oversip_mod_mysql.add_pool("bench", size=SIZE, **server.pool_settings())

    async def body(pool: oversip_mod_mysql.Pool, count: int) -> None:
        async def statement() -> None:
            if sql is INSERT:
                await pool.execute(sql, ("x",))
            else:
                await pool.fetchone(sql, (next(ids),))

        await spread(count, tasks, statement, in_nursery)

    return in_runtime(oversip_mod_mysql, "mysql", add_pool, body)


@contextmanager
def _server() -> Iterator[PrivateServer]:
    with (
        TemporaryDirectory(prefix="bench-mariadb-") as directory,
        PrivateServer(Path(directory)) as server,
    ):
        server.admin(
            f"USE {server.database}",
            "CREATE TABLE bench (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(32))",
            f"INSERT INTO bench (v) SELECT 'x' FROM seq_1_to_{ROWS}",  # the sequence engine
        )
        yield server


def run(profile: Profile) -> Section:
    section = Section("MySQL module: statements against aiomysql and the driver", notes=NOTES)
    with _server() as server:
        for workload, sql in (("insert", INSERT), ("select", SELECT)):
            variants = {
                "floor": _floor(MySQLdb.connect, server, sql),
                "PyMySQL floor": _floor(pymysql.connect, server, sql),
            }
            for tasks in (1, TASKS):
                size = "sequential" if tasks == 1 else f"{tasks} tasks"
                variants[f"module {size}"] = _module(server, sql, tasks)
                variants[f"aiomysql {size}"] = _aiomysql(server, sql, tasks)
            samples = interleave(
                variants,
                rounds=profile.rounds,
                budget=profile.budget,
                min_sample=profile.min_sample * 10,  # a sample outlasts a pool's start
            )
            sizes = ["sequential", f"{TASKS} tasks"]
            workload_rows(section, samples, workload, "aiomysql", sizes, LIMIT)
            section.rows.append(
                compare(
                    samples, f"{workload}: PyMySQL floor / mysqlclient floor", "sequential",
                    ("PyMySQL floor", "op"), ("floor", "op"),
                )
            )  # fmt: skip
    return section
