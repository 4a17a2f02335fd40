"""examples/mysql_server.py, run as README says, against the tests' private server."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from tests.processes import Spawn, child_env

from oversip_mod_mysql.testing import PrivateServer

from mysql_helpers import command_argv

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mysql_server.py"


async def test_the_example_records_counts_on_sighup_and_stops_cleanly(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    env = child_env(
        tmp_path,
        MYSQL_HOST="127.0.0.1",
        MYSQL_PORT=str(server.port),
        MYSQL_USER=server.user,
        MYSQL_PASSWORD=server.password,
        MYSQL_DATABASE=server.database,
    )
    child = await spawn(str(EXAMPLE), "-p", "no:sqlite", env=env, argv=command_argv("run"))
    await child.line("Adding MySQL connection pool (name: main, size: 2)")
    await child.line("<runtime> running")
    child.process.send_signal(signal.SIGHUP)
    counted = await child.line("<example> reload: ")
    assert counted.endswith(" rows recorded")
    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 0
    assert all(server.password not in line for line in child.lines)


async def test_a_missing_setting_is_named(spawn: Spawn, tmp_path: Path) -> None:
    child = await spawn(
        str(EXAMPLE), "-p", "no:sqlite", env=child_env(tmp_path), argv=command_argv("run")
    )
    assert await child.finish() == 1
    # fatal() in the server file's hook: the plugin `server`'s line
    assert any("CRIT: <server> MYSQL_USER is not set" in line for line in child.lines)
