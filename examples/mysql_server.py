"""The MySQL module's example server: `oversip-hooks run examples/mysql_server.py`.

It records a row per second in a MariaDB or MySQL database and counts them on SIGHUP.
The server and account come from the environment (the password never in a file):

    MYSQL_HOST=127.0.0.1 MYSQL_PORT=3306 MYSQL_USER=app MYSQL_PASSWORD=... \\
    MYSQL_DATABASE=app oversip-hooks run examples/mysql_server.py
"""

import os

import trio

from oversip_hooks import M, fatal, get_logger

log = get_logger("example")
SETTINGS = ("MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE")


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name) or default
    if value is None:
        fatal(f"{name} is not set: the example reads {', '.join(SETTINGS)}")
    return value


def create_table(connection):  # on_connect: in the connection's worker thread
    connection.query("CREATE TABLE IF NOT EXISTS ticks (at DATETIME(6) NOT NULL)")


def initialize():
    port = setting("MYSQL_PORT", "3306")
    if not port.isdigit():
        fatal(f"MYSQL_PORT={port!r} is not a port number")
    server = {
        "host": setting("MYSQL_HOST", "localhost"),
        "port": int(port),
        "user": setting("MYSQL_USER"),
        "password": setting("MYSQL_PASSWORD"),
        "database": setting("MYSQL_DATABASE"),
    }
    log.log_system_info("initialize: adding the pool 'main'")
    M.mysql.add_pool("main", size=2, on_connect=create_table, **server)


async def started(runtime):
    log.log_system_info("started: recording a row per second; SIGHUP counts them")
    runtime.start_soon(record)


async def record():
    pool = M.mysql.pool("main")
    while True:
        await pool.execute("INSERT INTO ticks (at) VALUES (NOW(6))")
        await trio.sleep(1)


async def reload():
    (count,) = await M.mysql.pool("main").fetchone("SELECT count(*) FROM ticks")
    log.log_system_info(f"reload: {count} rows recorded")


def terminated(error):
    log.log_system_info(f"terminated (error={error}); the module closes the pool next")
