"""What the MySQL module's tests share: running a server file through the real command
against the private server, and reading what it printed."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from oversip_hooks import hookimpl
from oversip_hooks.testing import LifecycleHarness
from tests.processes import COMMAND, Child, Finished, Spawn, child_env, command

import oversip_mod_mysql
from oversip_mod_mysql.testing import PrivateServer

# The server file's preamble: the pool's settings come from the environment, as a real
# deployment's would, so that the password is in no file that a traceback could quote.
PREAMBLE = """
    import os
    import sys

    from oversip_hooks import M

    SERVER = dict(
        host=os.environ["MYSQL_HOST"],
        port=int(os.environ["MYSQL_PORT"]),
        user=os.environ["MYSQL_USER"],
        password=os.environ["MYSQL_PASSWORD"],
        database=os.environ["MYSQL_DATABASE"],
    )


    def say(*words):
        print(*words, file=sys.stderr, flush=True)
"""


def prepare(server: PrivateServer, directory: Path, source: str, **environ: str) -> dict[str, str]:
    """Write ``directory/server.py``, PREAMBLE and ``source``; the environment that gives
    it the private server's settings, ``environ`` overriding them
    (``MYSQL_PASSWORD="wrong"``)."""
    (directory / "server.py").write_text(textwrap.dedent(PREAMBLE) + "\n" + textwrap.dedent(source))
    settings = {
        "MYSQL_HOST": "127.0.0.1",
        "MYSQL_PORT": str(server.port),
        "MYSQL_USER": server.user,
        "MYSQL_PASSWORD": server.password,
        "MYSQL_DATABASE": server.database,
    }
    return child_env(directory, **{**settings, **environ})


# The subcommand goes in argv, not in args: `spawn` and `command` block every installed
# module for the commands they see in args, and this module is the one under test. The
# SQLite module is blocked, to see only this one.
def command_argv(subcommand: str) -> tuple[str, ...]:
    return (*COMMAND, subcommand)


async def run_server(
    spawn: Spawn,
    server: PrivateServer,
    directory: Path,
    source: str,
    *options: str,
    **environ: str,
) -> Child:
    """Start ``oversip-hooks run server.py OPTIONS`` in ``directory`` (see
    :func:`prepare`), with the MySQL module loaded from its entry point."""
    env = prepare(server, directory, source, **environ)
    return await spawn("server.py", "-p", "no:sqlite", *options, env=env, argv=command_argv("run"))


async def finished(
    subcommand: str, server: PrivateServer, directory: Path, source: str, *options: str
) -> Finished:
    """Run ``oversip-hooks SUBCOMMAND server.py OPTIONS`` to its end, output captured."""
    env = prepare(server, directory, source)
    return await command(
        directory, "server.py", "-p", "no:sqlite", *options, env=env, argv=command_argv(subcommand)
    )


async def http_address(child: Child) -> str:
    """Where ``run --http 127.0.0.1:0`` serves (``127.0.0.1:PORT``), once the runtime
    runs, so that /readyz may pass."""
    serving = await child.line("serving /livez")
    found = re.search(r"http://(\S+)$", serving)
    assert found is not None, serving
    await child.line("<runtime> running")
    return found.group(1)


def crit_lines(child: Child) -> list[str]:
    return [line for line in child.lines if " CRIT: " in line]


class PoolUser:
    """A user's server plugin for the in-process tests: adds one pool from
    ``initialize``, as a server file does, and keeps it for the test."""

    def __init__(self, name: str = "main", **settings: Any) -> None:
        self.name = name
        self.settings = settings
        self.pool: oversip_mod_mysql.Pool | None = None

    @hookimpl
    def initialize(self) -> None:
        self.pool = oversip_mod_mysql.add_pool(self.name, **self.settings)

    def opened(self) -> oversip_mod_mysql.Pool:
        """The pool, once initialize has run."""
        assert self.pool is not None
        return self.pool


def register_pool(harness: LifecycleHarness, server: PrivateServer, **settings: Any) -> PoolUser:
    """Register the module as ``mysql``, then a :class:`PoolUser` of ``server`` as
    ``server``, with a table ``items (id INT PRIMARY KEY, name VARCHAR(32))``."""
    server.admin(
        f"CREATE TABLE {server.database}.items (id INT AUTO_INCREMENT PRIMARY KEY, "
        "name VARCHAR(32))"
    )
    user = PoolUser(**server.pool_settings(), **settings)
    harness.register(oversip_mod_mysql, name="mysql")
    harness.register(user, name="server")
    return user


def rows(server: PrivateServer) -> list[tuple[Any, ...]]:
    """The items as another connection, outside the runtime, sees them."""
    return server.admin(f"SELECT id, name FROM {server.database}.items ORDER BY id")
