"""Starting through the real command: bad settings, an unreachable server, a wrong
password; each fatal with exit status 1 and crit lines that name what to fix, and never
the password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
from tests.processes import Spawn

from oversip_mod_mysql.testing import PrivateServer, free_port

from mysql_helpers import crit_lines, finished, run_server

pytestmark = pytest.mark.slow

# (setting, add_pool's arguments after the name): each one bad in one way.
BAD_SETTINGS = [
    ("name", '"main pool", **SERVER'),
    ("host", '"main", **{**SERVER, "host": ""}'),
    ("port", '"main", **{**SERVER, "port": 70000}'),
    ("unix_socket", '"main", unix_socket=42, user="u", password="p", database="d"'),
    ("user", '"main", **{**SERVER, "user": ""}'),
    ("password", '"main", **{**SERVER, "password": os.environ["MYSQL_PASSWORD"].encode()}'),
    ("database", '"main", **{**SERVER, "database": "x" * 65}'),
    ("size", '"main", size=0, **SERVER'),
    ("on_connect", '"main", on_connect="SET NAMES utf8mb4", **SERVER'),
    ("connect_timeout", '"main", connect_timeout=0.5, **SERVER'),
    ("passwd", '"main", passwd=os.environ["MYSQL_PASSWORD"], **SERVER'),
]


@pytest.mark.parametrize(("setting", "arguments"), BAD_SETTINGS)
async def test_a_bad_setting_exits_1_with_one_crit_line_naming_it(
    spawn: Spawn, server: PrivateServer, tmp_path: Path, setting: str, arguments: str
) -> None:
    source = f"""
        def initialize():
            M.mysql.add_pool({arguments})
    """
    child = await run_server(spawn, server, tmp_path, source)

    assert await child.finish() == 1
    crit = crit_lines(child)
    assert re.search(
        rf" CRIT: <server> initialize failed: MySQLSettingsError\(.*{setting}=.* is invalid: ",
        crit[0],
    )
    assert crit[1:] == [crit[1]]
    assert crit[1].endswith(" CRIT: <runtime> exiting with error status")
    assert not [line for line in child.lines if server.password in line]
    assert not [line for line in child.lines if "Adding MySQL connection pool" in line]


async def test_an_unreachable_server_is_retried_until_the_startup_deadline_then_fatal(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there: each attempt is refused at once
    source = """
        def initialize():
            M.mysql.add_pool("main", **SERVER)
    """
    started = trio.current_time()
    child = await run_server(
        spawn, server, tmp_path, source, "--startup-timeout", "3", MYSQL_PORT=str(port)
    )

    assert await child.finish() == 1
    took = trio.current_time() - started
    crit = crit_lines(child)
    assert len(crit) == 2, crit
    address = f"{server.user}@127.0.0.1:{port}"
    assert re.search(
        rf" CRIT: <MySQL module> cannot open MySQL connection pool \(name: main\) to "
        rf"{address}, database {server.database}: 200[23] Can't connect to server on "
        r"'127.0.0.1' .* after \d+ "
        r"attempts in [0-9.]+ s \(PoolOpenError\)$",
        crit[0],
    ), crit[0]
    assert crit[1].endswith(" CRIT: <runtime> exiting with error status")
    assert not [line for line in child.lines if "startup" in line and "timeout" in line]
    assert 1.5 < took < 3.0 + 5  # retried for most of the 3 s; the child's start aside


async def test_a_wrong_password_is_fatal_at_once_naming_the_user_and_never_the_password(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    wrong = "wrong-Jp4sNq8Yt"
    source = """
        def initialize():
            M.mysql.add_pool("main", **SERVER)
    """
    child = await run_server(spawn, server, tmp_path, source, MYSQL_PASSWORD=wrong)

    assert await child.finish() == 1
    crit = crit_lines(child)
    assert f"to {server.user}@127.0.0.1:{server.port}" in crit[0]
    assert re.search(f"1045 Access denied for user '{server.user}'@'[^']+'", crit[0])
    assert " after " not in crit[0]  # not retried: a password does not fix itself
    assert crit[1].endswith(" CRIT: <runtime> exiting with error status")
    assert not [line for line in child.lines if wrong in line or server.password in line]


async def test_the_password_is_in_no_listing_of_the_plugins(
    server: PrivateServer, tmp_path: Path
) -> None:
    source = """
        def initialize():
            M.mysql.add_pool("main", **SERVER)
    """
    for subcommand, options in (("plugins", ()), ("plugins", ("--json",)), ("check", ())):
        done = await finished(subcommand, server, tmp_path, source, *options)
        assert done.status == 0, done.err
        assert "mysql" in done.out + "\n".join(done.err)
        assert server.password not in done.out + "\n".join(done.err)
