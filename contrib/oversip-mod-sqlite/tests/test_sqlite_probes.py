"""The module's health check and metrics, through `oversip-hooks run --http` and a real
HTTP client."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from tests.processes import http_get

from sqlite_helpers import Spawn

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "server.py"


async def test_readyz_checks_each_pool_and_metrics_describe_them(spawn: Spawn) -> None:
    child = await spawn("run", str(EXAMPLE), "--http", "127.0.0.1:0")
    serving = child.err[await child.line(child.err, "serving /livez")]
    found = re.search(r"http://(\S+)$", serving)
    assert found is not None, serving
    address = found.group(1)
    await child.line(child.err, "<runtime> running")

    status, body = await trio.to_thread.run_sync(http_get, address, "/readyz")
    report = json.loads(body)
    assert status == 200, report
    assert {"plugin": "sqlite", "result": "pass"}.items() <= next(
        check for check in report["checks"] if check["plugin"] == "sqlite"
    ).items()

    status, body = await trio.to_thread.run_sync(http_get, address, "/metrics")
    assert status == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    pool = (("pool", "main"),)
    assert samples[("oversip_sqlite_pool_size", pool)] == 2
    assert samples[("oversip_sqlite_pool_open_connections", pool)] == 2
    # at least the readiness check's SELECT 1
    assert samples[("oversip_sqlite_queries_served_total", pool)] >= 1
    assert samples[("oversip_sqlite_call_duration_seconds_count", pool)] >= 1
    assert samples[("oversip_sqlite_call_duration_seconds_sum", pool)] > 0

    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 0
