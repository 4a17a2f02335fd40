"""The module's health check and metrics through `oversip-hooks run --http` and a real
HTTP client, against the private server: ready while it answers, not ready naming each
pool (and never the password) once it is SIGKILLed, ready again once it is back."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from tests.processes import Spawn, http_get

from oversip_mod_mysql.testing import PrivateServer

from mysql_helpers import http_address, run_server

pytestmark = pytest.mark.slow

POOLS = """
    def initialize():
        M.mysql.add_pool("main", size=3, **SERVER)
        M.mysql.add_pool("spare", size=1, **SERVER)


    async def started(runtime):
        await M.mysql.pool("main").fetchone("SELECT 1")
"""


async def readyz(address: str) -> tuple[int, dict[str, Any], str]:
    """The status, the report, and the body as text (to search for what must not be
    there)."""
    status, body = await trio.to_thread.run_sync(http_get, address, "/readyz")
    return status, json.loads(body), body.decode()


def mysql_check(report: dict[str, Any]) -> dict[str, Any]:
    """The module's own check in the report: exactly one."""
    checks: list[dict[str, Any]] = [c for c in report["checks"] if c["plugin"] == "mysql"]
    [check] = checks
    return check


async def metrics(address: str) -> dict[tuple[str, str], float]:
    """Each sample of the pools' metrics, by (sample name, pool)."""
    status, body = await trio.to_thread.run_sync(http_get, address, "/metrics")
    assert status == 200
    return {
        (sample.name, sample.labels["pool"]): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name.startswith("oversip_mysql_")
    }


async def test_readyz_checks_each_pool_and_metrics_describe_them(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    child = await run_server(spawn, server, tmp_path, POOLS, "--http", "127.0.0.1:0")
    address = await http_address(child)

    status, report, _ = await readyz(address)
    assert status == 200, report
    assert mysql_check(report)["result"] == "pass"
    assert mysql_check(report)["reason"] is None

    samples = await metrics(address)
    for pool, size in (("main", 3), ("spare", 1)):
        assert samples[("oversip_mysql_pool_size", pool)] == size
        assert samples[("oversip_mysql_pool_open_connections", pool)] == size
        assert samples[("oversip_mysql_pool_in_use", pool)] == 0
        assert samples[("oversip_mysql_pool_waiting", pool)] == 0
        assert samples[("oversip_mysql_pool_reconnects_total", pool)] == 0
    # started's SELECT 1 and the readiness check's; the summary counts the same calls
    assert samples[("oversip_mysql_queries_served_total", "main")] == 2
    assert samples[("oversip_mysql_call_duration_seconds_count", "main")] == 2
    assert samples[("oversip_mysql_queries_served_total", "spare")] == 1
    assert samples[("oversip_mysql_call_duration_seconds_count", "spare")] == 1
    assert samples[("oversip_mysql_call_duration_seconds_sum", "spare")] > 0

    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 0


async def test_readyz_is_503_naming_each_pool_while_the_server_is_killed_then_200_again(
    spawn: Spawn, server: PrivateServer, tmp_path: Path
) -> None:
    child = await run_server(spawn, server, tmp_path, POOLS, "--http", "127.0.0.1:0")
    address = await http_address(child)
    status, report, _ = await readyz(address)
    assert status == 200, report

    server.kill()
    # The first check finds each connection it uses lost; the next one cannot reconnect.
    lost_status, lost, lost_body = await readyz(address)
    again_status, again, again_body = await readyz(address)
    server.start()
    back_status, back, _ = await readyz(address)
    samples = await metrics(address)
    child.process.send_signal(signal.SIGTERM)

    assert await child.finish() == 0
    where = f"MySQL pool '{{}}' ({server.user}@127.0.0.1:{server.port}): "
    for status, report, what in (
        (lost_status, lost, "the connection was lost during this call"),
        (again_status, again, "cannot reconnect: 200"),  # 2002 or 2003: refused
    ):
        assert status == 503, report
        assert report["ready"] is False
        assert report["reason"] == "health check failed: mysql"
        check = mysql_check(report)
        assert check["result"] == "fail"
        main, spare = re.split(r"; (?=pool ')", check["reason"])
        assert main.startswith("pool 'main': ConnectionLostError: " + where.format("main"))
        assert spare.startswith("pool 'spare': ConnectionLostError: " + where.format("spare"))
        assert what in main
        assert what in spare
    assert back_status == 200, back
    assert mysql_check(back)["result"] == "pass"
    assert samples[("oversip_mysql_pool_reconnects_total", "spare")] == 1
    assert samples[("oversip_mysql_pool_reconnects_total", "main")] >= 1
    for text in (lost_body, again_body, *child.lines):
        assert server.password not in text
