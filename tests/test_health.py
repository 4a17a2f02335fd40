"""The probe and metrics server of `oversip-hooks run --http` (issue 12): its HTTP rules
and its timeouts in process, against a real Runtime and real sockets, with trio's mock
clock where a timeout is tested; readiness over a whole life, a blocked loop, metrics and
the settings through the real command and a real HTTP client (h11 on trio streams). The
Kubernetes manifest and the Containerfile are checked against the command's options."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import yaml
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from oversip_hooks import Runtime, RuntimeState, get_plugin_manager, hookimpl
from oversip_hooks._cli import main
from oversip_hooks._health import CHECK_TIMEOUT, HealthServer, open_listeners
from oversip_hooks._settings import (
    SETTINGS,
    ConfigError,
    parse_drain,
    parse_http_address,
    parse_seconds,
)
from oversip_hooks._watchdog import GRACE
from tests.processes import TIMEOUT, Child, Spawn, child_env, write

ROOT = Path(__file__).parent.parent

# -- a real HTTP client --------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def request(address: str, path: str, method: str = "GET") -> Reply:
    """One request on a new connection, through h11's client side."""
    host, port = split_address(address)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        client = h11.Connection(h11.CLIENT)
        await stream.send_all(
            client.send(h11.Request(method=method, target=path, headers=[("Host", host)]))
            + client.send(h11.EndOfMessage())
        )
        return await reply(stream, client)


async def reply(stream: trio.SocketStream, client: h11.Connection) -> Reply:
    response: h11.Response | None = None
    body = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some())
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            headers = {name.decode(): value.decode() for name, value in response.headers}
            return Reply(response.status_code, headers, body)
        else:
            raise AssertionError(f"unexpected {event!r}")


async def raw(address: str, data: bytes) -> bytes:
    """Send ``data`` as it is; everything the server sends back until it closes."""
    stream = await trio.open_tcp_stream(*split_address(address))
    async with stream:
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some():
            received += chunk
        return received


def scrape(body: bytes) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def sample(family: Metric, name: str, **labels: str) -> float:
    [value] = [
        each.value
        for each in family.samples
        if each.name == name and all(each.labels.get(k) == v for k, v in labels.items())
    ]
    return value


# -- in process: a real Runtime and the server in one trio run ------------------------------


class Gate:
    """A plugin whose ``started`` waits until the test opens the gate."""

    def __init__(self) -> None:
        self.waiting = trio.Event()
        self.open = trio.Event()

    @hookimpl
    async def started(self) -> None:
        self.waiting.set()
        await self.open.wait()


class Check:
    """A plugin whose health check says what the test sets."""

    def __init__(self, answer: str | None = None) -> None:
        self.answer = answer

    @hookimpl
    def health_check(self) -> str | None:
        return self.answer


class Hangs:
    @hookimpl
    async def health_check(self) -> None:
        await trio.sleep_forever()


class Raises:
    @hookimpl
    async def health_check(self) -> None:
        raise OSError("disk on fire")


@dataclass
class Serving:
    runtime: Runtime
    server: HealthServer
    address: str


@asynccontextmanager
async def serving(
    plugins: dict[str, object], host: str = "127.0.0.1", **options: Any
) -> AsyncIterator[Serving]:
    """The server for a runtime of ``plugins``, listening before the runtime runs, as the
    command does; the runtime is stopped and the server closed at the end."""
    pm = get_plugin_manager()
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    runtime = Runtime(pm, handle_signals=False)
    server = HealthServer(runtime, **options)
    listeners = await open_listeners(host, 0)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve, listeners)
        nursery.start_soon(runtime.run)
        yield Serving(runtime, server, address)
        runtime.stop()
        nursery.cancel_scope.cancel()


async def test_readiness_follows_the_state_from_starting_to_a_stop_request() -> None:
    gate = Gate()
    async with serving({"gate": gate, "check": Check()}) as s:
        await gate.waiting.wait()
        starting = await request(s.address, "/readyz")
        assert starting.status == 503
        assert starting.json()["state"] == "starting"
        assert starting.json()["checks"] == []  # no check runs before the plugins started
        assert (await request(s.address, "/livez")).status == 200
        gate.open.set()
        while s.runtime.state.value != "running":
            await trio.lowlevel.checkpoint()
        ready = await request(s.address, "/readyz")
        assert ready.status == 200, ready.body
        assert ready.json()["checks"] == [
            {
                "plugin": "check",
                "result": "pass",
                "reason": None,
                "duration_seconds": ready.json()["checks"][0]["duration_seconds"],
            }
        ]
        s.runtime.stop()  # from here on, before the runtime has acted on it
        stopping = await request(s.address, "/readyz")
        assert stopping.status == 503
        assert stopping.json()["reason"] == "a stop was requested"
        assert (await request(s.address, "/livez")).status == 200


async def test_a_failing_check_makes_the_instance_unready_naming_its_plugin() -> None:
    check = Check("replica lag 12 s")
    async with serving({"check": check, "fine": Check(), "raises": Raises()}) as s:
        await wait_running(s.runtime)
        unready = await request(s.address, "/readyz")
        assert unready.status == 503
        report = unready.json()
        assert report["reason"] == "health check failed: check, raises"
        checks = {each["plugin"]: each for each in report["checks"]}
        assert checks["check"]["result"] == "fail"
        assert checks["check"]["reason"] == "replica lag 12 s"
        assert checks["fine"]["result"] == "pass"
        assert "disk on fire" in checks["raises"]["reason"]
        s.runtime.pm.unregister(name="raises")
        check.answer = None
        assert (await request(s.address, "/readyz")).status == 200


async def test_a_check_that_never_answers_is_unhealthy_within_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving({"hangs": Hangs(), "fine": Check()}, check_timeout=1) as s:
        await wait_running(s.runtime)
        begun = trio.current_time()
        unready = await request(s.address, "/readyz")
        assert trio.current_time() - begun == pytest.approx(1)
        assert unready.status == 503
        checks = {each["plugin"]: each for each in unready.json()["checks"]}
        assert "'hangs' did not answer" in checks["hangs"]["reason"]
        assert "timeout of 1 s" in checks["hangs"]["reason"]
        assert checks["fine"]["result"] == "pass"
        assert (await request(s.address, "/livez")).status == 200  # the server is not hung


async def test_probes_that_come_while_checks_run_share_their_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    class Slow:
        @hookimpl
        async def health_check(self) -> None:
            nonlocal calls
            calls += 1
            await trio.sleep(0.5)

    async with serving({"slow": Slow()}) as s:
        await wait_running(s.runtime)
        statuses: list[int] = []

        async def probe() -> None:
            statuses.append((await request(s.address, "/readyz")).status)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(probe)
        assert statuses == [200] * 10
        assert calls == 1


async def wait_running(runtime: Runtime) -> None:
    while runtime.state.value != "running":
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /livez HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 405),
        (b"DELETE /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
    ],
)
async def test_bad_requests_get_their_status_and_the_server_stays_up(
    sent: bytes, status: int
) -> None:
    async with serving({}) as s:
        received = await raw(s.address, sent)
        assert received.startswith(f"HTTP/1.1 {status} ".encode()), received[:200]
        if status == 405:
            assert b"\r\nAllow: GET, HEAD\r\n" in received
        assert (await request(s.address, "/livez")).status == 200


async def test_head_answers_the_headers_of_get_without_the_body() -> None:
    async with serving({}) as s:
        got = await request(s.address, "/metrics")
        head = await request(s.address, "/metrics", method="HEAD")
        assert head.status == 200
        assert head.body == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert int(head.headers["content-length"]) > 0


async def test_a_connection_carries_several_requests() -> None:
    async with serving({}) as s:
        stream = await trio.open_tcp_stream(*split_address(s.address))
        async with stream:
            client = h11.Connection(h11.CLIENT)
            for path in ("/livez", "/readyz", "/metrics"):
                await stream.send_all(
                    client.send(h11.Request(method="GET", target=path, headers=[("Host", "x")]))
                    + client.send(h11.EndOfMessage())
                )
                answer = await reply(stream, client)
                assert answer.status in (200, 503)
                client.start_next_cycle()


async def test_a_client_that_sends_a_byte_a_second_is_dropped_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving({}, request_deadline=5) as s:
        stream = await trio.open_tcp_stream(*split_address(s.address))
        begun = trio.current_time()
        async with stream:
            with pytest.raises(trio.BrokenResourceError):  # noqa: PT012
                for byte in b"GET /livez HTTP/1.1\r\nHost: x\r\n" * 10:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(1)
                    if trio.current_time() - begun > 6:
                        assert await stream.receive_some() == b""
                        raise trio.BrokenResourceError
        assert 5 <= trio.current_time() - begun <= 7
        assert (await request(s.address, "/livez")).status == 200


async def test_an_idle_connection_is_closed_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving({}, request_deadline=5) as s:
        stream = await trio.open_tcp_stream(*split_address(s.address))
        begun = trio.current_time()
        async with stream:
            assert await stream.receive_some() == b""  # closed without an answer
        assert trio.current_time() - begun == pytest.approx(5)


async def test_connections_over_the_bound_are_closed_at_once() -> None:
    async with serving({}, max_connections=3) as s:
        host, port = split_address(s.address)
        held = [await trio.open_tcp_stream(host, port) for _ in range(3)]
        for stream in held:  # each has begun a request: none is idle, none can be evicted
            await stream.send_all(b"GET /livez HTTP/1.1\r\n")
        await trio.testing.wait_all_tasks_blocked()
        extra = await trio.open_tcp_stream(host, port)
        async with extra:
            with contextlib.suppress(trio.BrokenResourceError):  # reset: closed all the same
                assert await extra.receive_some() == b""
        # One held connection ends its request, which closes it: room for one more.
        await held[0].send_all(b"Host: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := await held[0].receive_some():
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert (await request(s.address, "/livez")).status == 200
        for stream in held:
            await stream.aclose()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_it_serves_on_ipv6() -> None:
    async with serving({}, host="::1") as s:
        assert s.address.startswith("[::1]:")
        assert (await request(s.address, "/livez")).status == 200


# -- metrics ----------------------------------------------------------------------------------


class Counted:
    """A plugin with a collector of its own, and one that raises."""

    log_id = "counted"

    def __init__(self) -> None:
        self.asked = 0

    @hookimpl
    def metrics_collectors(self, runtime: Runtime) -> list[object]:
        self.asked += 1
        return [self, Broken()]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("counted_things", "Things counted", labels=["kind"])
        family.add_metric(["apples"], 3)
        return [family]

    @hookimpl
    async def started(self, runtime: Runtime) -> None:
        runtime.start_soon(trio.sleep_forever)

    @hookimpl
    def reload(self) -> None:
        raise ValueError("no reload today")


class Broken:
    def collect(self) -> Iterable[Metric]:
        raise RuntimeError("collector bug")


async def test_metrics_have_the_runtime_the_process_and_the_plugins() -> None:
    counted = Counted()
    async with serving({"counted": counted}) as s:
        await wait_running(s.runtime)
        s.runtime.reload()
        while s.runtime.state.value != "running" or not (
            s.server._metrics and s.server._metrics.reloads._value.get()
        ):
            await trio.lowlevel.checkpoint()
        first = await request(s.address, "/metrics")
        assert first.status == 200
        assert first.headers["content-type"].startswith("text/plain; version=")
        metrics = scrape(first.body)
        hooks = metrics["oversip_hooks_hook_duration_seconds"]
        assert hooks.type == "histogram"
        assert sample(hooks, hooks.name + "_count", hook="started", plugin="counted") == 1
        assert sample(hooks, hooks.name + "_count", hook="reload", plugin="counted") == 1
        failures = metrics["oversip_hooks_hook_failures"]
        assert sample(failures, failures.name + "_total", hook="reload", plugin="counted") == 1
        reloads = metrics["oversip_hooks_reloads"]
        assert sample(reloads, reloads.name + "_total") == 1
        state = metrics["oversip_hooks_state"]
        assert sample(state, state.name, oversip_hooks_state="running") == 1
        assert sample(state, state.name, oversip_hooks_state="starting") == 0
        assert metrics["oversip_hooks_start_time_seconds"].samples[0].value > 0
        services = metrics["oversip_hooks_services_running"]
        assert sample(services, services.name, plugin="counted") == 1
        assert "process_start_time_seconds" in metrics  # the process collector
        assert "oversip_hooks_event_loop_stalls" in metrics
        things = metrics["counted_things"]
        assert sample(things, "counted_things", kind="apples") == 3
        await request(s.address, "/metrics")
        assert counted.asked == 1  # asked once, not at every scrape


async def test_each_runtime_has_its_own_registry() -> None:
    async with serving({"counted": Counted()}) as one, serving({}) as other:
        await wait_running(one.runtime)
        await wait_running(other.runtime)
        assert "counted_things" in scrape((await request(one.address, "/metrics")).body)
        assert "counted_things" not in scrape((await request(other.address, "/metrics")).body)


# -- the settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("[::]:0", ("::", 0)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_http_address(text: str, address: tuple[str, int]) -> None:
    assert parse_http_address(text) == address


@pytest.mark.parametrize(
    "text", ["9100", ":9100", "::1:9100", "[::1]9100", "[::1]:", "host:65536", "host: 1", "a" * 99]
)
def test_parse_http_address_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_http_address(text)
    assert "HTTP address" in str(raised.value)
    assert len(str(raised.value)) < 200


def test_parse_drain_takes_zero_and_what_parse_seconds_takes() -> None:
    assert parse_drain("0") == parse_drain("0.0") == 0
    assert parse_drain("2.5") == 2.5
    for bad in ("-1", "1e3", "inf", " 1", "86401", "0" * 50):
        with pytest.raises(ConfigError):
            parse_drain(bad)


def test_a_bad_http_address_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--http", "nowhere"])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "--http: bad HTTP address 'nowhere'" in line


async def test_an_address_in_use_is_bad_input_and_runs_no_hook(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(tmp_path, {"server.py": "def initialize():\n    print('initialize ran')\n"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        child = await spawn(
            "run", "server.py", env=child_env(tmp_path, OVERSIP_HOOKS_HTTP=f"127.0.0.1:{port}")
        )
        assert await child.finish() == 2
    [line] = child.lines
    assert f"error: --http: cannot listen on 127.0.0.1:{port}: Address already in use" in line


def test_check_tries_the_http_address_as_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` passing means `run` starts: an address in use fails both."""
    write(tmp_path, {"server.py": "def initialize():\n    pass\n"})
    server = str(tmp_path / "server.py")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["check", server, "--no-entrypoints", "--http", f"127.0.0.1:{port}"])
    assert status == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
    assert main(["check", server, "--no-entrypoints", "--http", f"127.0.0.1:{port}"]) == 0


# -- the real command: readiness over a whole life ----------------------------------------------

# Each gate is a FIFO: the hook blocks (in a worker thread) until the test writes to it.
LIFE = """
    from pathlib import Path

    import trio
    from oversip_hooks import get_logger, hookimpl

    log = get_logger("server")

    async def wait_for(gate):
        log.log_system_info(f"waiting at {gate}")
        await trio.to_thread.run_sync(Path(gate).read_text)

    async def started(runtime):
        await wait_for("start-gate")
        runtime.start_soon(trio.sleep_forever)

    async def reload():
        await wait_for("reload-gate")

    async def terminated():
        await wait_for("stop-gate")

    @hookimpl(optionalhook=True)  # declared by the server of --http
    def health_check():
        if Path("unhealthy").exists():
            return Path("unhealthy").read_text()
        return None
"""


async def open_gate(directory: Path, name: str) -> None:
    await trio.to_thread.run_sync((directory / name).write_text, "go")


async def http_address(child: Child) -> str:
    line = await child.line("serving /livez")
    found = re.search(r"http://(\S+)$", line)
    assert found is not None, line
    return found.group(1)


async def ready(address: str) -> tuple[int, Any]:
    answer = await request(address, "/readyz")
    return answer.status, answer.json()


@pytest.mark.slow
async def test_readiness_over_a_whole_life(tmp_path: Path, spawn: Spawn) -> None:
    write(tmp_path, {"server.py": LIFE})
    for gate in ("start-gate", "reload-gate", "stop-gate"):
        os.mkfifo(tmp_path / gate)
    child = await spawn("run", "server.py", "--http", "127.0.0.1:0")
    address = await http_address(child)
    await child.line("waiting at start-gate")
    status, report = await ready(address)
    assert (status, report["state"]) == (503, "starting")
    assert (await request(address, "/livez")).status == 200  # during a long start too
    await open_gate(tmp_path, "start-gate")
    await child.line("running")
    status, report = await ready(address)
    assert (status, report["state"]) == (200, "running"), report
    assert report["checks"] == [
        {
            "plugin": "server",
            "result": "pass",
            "reason": None,
            "duration_seconds": report["checks"][0]["duration_seconds"],
        }
    ]
    (tmp_path / "unhealthy").write_text("the flag file says so")
    status, report = await ready(address)
    assert status == 503
    assert report["reason"] == "health check failed: server"
    assert report["checks"][0]["reason"] == "the flag file says so"
    (tmp_path / "unhealthy").unlink()

    child.process.send_signal(signal.SIGHUP)
    await child.line("waiting at reload-gate")
    status, report = await ready(address)
    assert (status, report["state"]) == (200, "reloading")  # a reload stays ready
    await open_gate(tmp_path, "reload-gate")
    await child.line("reloaded")

    child.process.send_signal(signal.SIGTERM)
    status, report = await ready(address)  # at once, before the runtime acted on it
    assert status == 503
    assert report["reason"] == "a stop was requested"
    await child.line("waiting at stop-gate")
    status, report = await ready(address)
    assert (status, report["state"]) == (503, "stopping")
    assert (await request(address, "/livez")).status == 200  # until the last terminated
    metrics = scrape((await request(address, "/metrics")).body)
    hooks = metrics["oversip_hooks_hook_duration_seconds"]
    assert sample(hooks, hooks.name + "_count", hook="reload", plugin="server") == 1
    services = metrics["oversip_hooks_services_running"]
    assert sample(services, services.name, plugin="server") == 1
    await open_gate(tmp_path, "stop-gate")
    assert await child.finish() == 0
    with pytest.raises(OSError, match="connect"):  # closed last, with the process
        await request(address, "/livez")


BLOCKS = """
    import time

    from oversip_hooks import get_logger

    log = get_logger("server")

    def reload():
        log.log_system_info("blocking the loop")
        time.sleep(3)
        log.log_system_info("unblocked")
"""


@pytest.mark.slow
async def test_livez_stops_answering_while_the_loop_is_blocked(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(tmp_path, {"server.py": BLOCKS})
    child = await spawn("run", "server.py", "--http", "127.0.0.1:0")
    address = await http_address(child)
    await child.line("running")
    assert (await request(address, "/livez")).status == 200
    child.process.send_signal(signal.SIGHUP)
    await child.line("blocking the loop")
    with trio.move_on_after(1) as waited:
        await request(address, "/livez")
    assert waited.cancelled_caught, "/livez answered while the loop was blocked"
    await child.line("unblocked")
    assert (await request(address, "/livez")).status == 200
    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 0


@pytest.mark.slow
@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_the_variable_and_ipv6_through_the_command(tmp_path: Path, spawn: Spawn) -> None:
    write(tmp_path, {"server.py": "def started():\n    pass\n"})
    child = await spawn("run", "server.py", env=child_env(tmp_path, OVERSIP_HOOKS_HTTP="[::1]:0"))
    address = await http_address(child)
    assert address.startswith("[::1]:")
    await child.line("running")
    status, report = await ready(address)
    assert (status, report["checks"]) == (200, [])
    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 0


async def test_without_http_the_server_is_not_even_imported(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from oversip_hooks._cli import main
        status = main(["run", "server.py", "--no-entrypoints"])
        assert status == 0, status
        loaded = [name for name in ("h11", "prometheus_client", "oversip_hooks._health")
                  if name in sys.modules]
        print(loaded)
        """
    )
    write(tmp_path, {"server.py": "def started(runtime):\n    runtime.stop()\n"})
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=child_env(tmp_path),
            capture_stdout=True,
            capture_stderr=True,
        )
    assert done.stdout.decode().strip() == "[]"


# -- Kubernetes and the container ---------------------------------------------------------------


def manifest() -> tuple[Any, Any]:
    documents = list(yaml.safe_load_all((ROOT / "contrib/kubernetes/deployment.yaml").read_text()))
    [deployment] = [each for each in documents if each["kind"] == "Deployment"]
    [service] = [each for each in documents if each["kind"] == "Service"]
    return deployment, service


def test_the_manifest_agrees_with_the_command() -> None:
    deployment, service = manifest()
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {each["name"]: each["value"] for each in container["env"]}
    host, port = parse_http_address(env["OVERSIP_HOOKS_HTTP"])
    assert host == "0.0.0.0"  # kubelet probes the pod's address
    [named] = container["ports"]
    assert named["containerPort"] == port
    assert service["spec"]["ports"][0]["targetPort"] == named["name"]
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    paths = {kind: probe["httpGet"]["path"] for kind, probe in probes.items()}
    assert paths == {
        "startupProbe": "/readyz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/livez",
    }
    for probe in probes.values():
        assert probe["httpGet"]["port"] in (port, named["name"])
        # The server answers /readyz within its check timeout: the probe must wait longer.
        assert probe["timeoutSeconds"] > CHECK_TIMEOUT

    drain = parse_drain(env["OVERSIP_HOOKS_DRAIN"])
    shutdown = parse_seconds(env["OVERSIP_HOOKS_SHUTDOWN_TIMEOUT"])
    startup = parse_seconds(env["OVERSIP_HOOKS_STARTUP_TIMEOUT"])
    # Kubernetes kills the pod terminationGracePeriodSeconds after SIGTERM, preStop included.
    assert "lifecycle" not in container
    assert pod["terminationGracePeriodSeconds"] > drain + shutdown + GRACE
    # The readiness probe sees the 503 of a stop well within the drain.
    readiness = probes["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < drain
    # The startup probe outlasts the startup timeout, past which the runtime exits itself.
    startup_probe = probes["startupProbe"]
    assert startup_probe["periodSeconds"] * startup_probe["failureThreshold"] > startup


def test_the_containerfile_runs_the_command_as_pid_1_in_exec_form() -> None:
    instructions = [
        line.split(maxsplit=1)
        for line in (ROOT / "Containerfile").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    last = {keyword: argument for keyword, argument in instructions}
    assert json.loads(last["ENTRYPOINT"]) == ["oversip-hooks", "run"]  # a list: no shell
    assert "SHELL" not in last
    assert last["STOPSIGNAL"] == "SIGTERM"
    deployment, _ = manifest()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert json.loads(last["CMD"]) == container["args"]
    assert last["EXPOSE"] == str(container["ports"][0]["containerPort"])
    assert f"OVERSIP_HOOKS_HTTP=0.0.0.0:{last['EXPOSE']}" in last["ENV"] or any(
        f"OVERSIP_HOOKS_HTTP=0.0.0.0:{last['EXPOSE']}" in line
        for line in (ROOT / "Containerfile").read_text().splitlines()
    )


def test_the_systemd_template_runs_one_instance_per_name_within_its_bounds() -> None:
    unit = (ROOT / "contrib/systemd/oversip-hooks@.service").read_text()
    settings = [line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"]
    values: dict[str, list[str]] = {}
    for key, value in settings:
        values.setdefault(key, []).append(value)
    assert values["Type"] == ["notify-reload"]
    assert values["ExecStart"] == ["/usr/local/bin/oversip-hooks run /etc/oversip-hooks/%i.py"]
    assert values["EnvironmentFile"] == ["-/etc/oversip-hooks/%i.env"]  # each its --http
    env = dict(each.split("=", 1) for each in values["Environment"])
    known = {setting.env for setting in SETTINGS}
    assert set(env) <= known, set(env) - known
    drain = parse_drain(env["OVERSIP_HOOKS_DRAIN"])
    shutdown = parse_seconds(env["OVERSIP_HOOKS_SHUTDOWN_TIMEOUT"])
    [stop] = values["TimeoutStopSec"]
    assert int(stop) > drain + shutdown + GRACE
    assert values["RestartPreventExitStatus"] == ["2"]  # bad input: restarting cannot help


# -- what a review from outside broke, each once -----------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n",  # an illegal chunk header
        b"3\r\nabcXY0\r\n\r\n",  # chunk data without its CRLF
        b"0\r\nbadtrailer\r\n\r\n",  # a bad trailer
    ],
)
async def test_a_malformed_body_gets_400_and_the_server_stays_up(body: bytes) -> None:
    sent = b"GET /livez HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    async with serving({}) as s:
        received = await raw(s.address, sent)
        assert received.startswith(b"HTTP/1.1 400 "), received[:200]
        assert (await request(s.address, "/livez")).status == 200
        assert s.runtime.state is not RuntimeState.STOPPED


class Garbage:
    """A plugin whose collectors are no collectors, or yield what is no metric."""

    def __init__(self, collectors: object) -> None:
        self.collectors = collectors

    @hookimpl
    def metrics_collectors(self) -> object:
        return self.collectors


class YieldsNotANumber:
    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("garbage_value", "A value that is no number")
        family.add_metric([], "notanumber")  # type: ignore[arg-type]
        return [family]


class YieldsAnInt:
    def collect(self) -> Iterable[object]:
        return [42]


class RepeatsAProcessMetric:
    def collect(self) -> Iterable[Metric]:
        return [GaugeMetricFamily("process_open_fds", "A name the process collector has", 1)]


@pytest.mark.parametrize(
    "collectors",
    [42, "abc", [None], {"a": 1}, [object()], [YieldsNotANumber()], [YieldsAnInt()],
     [RepeatsAProcessMetric()]],
    ids=["int", "str", "none", "dict", "object", "not-a-number", "an-int", "process-name"],
)  # fmt: skip
async def test_a_plugin_s_bad_collectors_are_left_out_and_the_scrape_goes_on(
    collectors: object,
) -> None:
    async with serving({"garbage": Garbage(collectors), "counted": Counted()}) as s:
        await wait_running(s.runtime)
        for _ in range(2):
            answer = await request(s.address, "/metrics")
            assert answer.status == 200
            metrics = scrape(answer.body)  # a valid exposition: it parses
            assert "counted_things" in metrics
            assert "garbage_value" not in metrics
            assert answer.body.count(b"# TYPE process_open_fds ") == 1
        assert s.runtime.state is RuntimeState.RUNNING


class Uncancellable:
    """A check that no cancellation reaches while it runs for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @hookimpl
    async def health_check(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(self.seconds)


async def test_a_check_that_answers_after_its_timeout_fails() -> None:
    # Real time: a check's duration is the wall clock's, as in the logs.
    async with serving({"slow": Uncancellable(0.3)}, check_timeout=0.2) as s:
        await wait_running(s.runtime)
        ready, report = await s.server.readiness()
    assert not ready
    [check] = report["checks"]  # type: ignore[misc]
    assert check["plugin"] == "slow"
    assert check["result"] == "fail"
    assert "over the check timeout of 0.2 s" in check["reason"]


async def test_a_probe_does_not_wait_for_a_check_that_cannot_be_cancelled(
    autojump_clock: Any,
) -> None:
    async with serving({"stuck": Uncancellable(60)}, check_timeout=1) as s:
        await wait_running(s.runtime)
        begun = trio.current_time()
        answer = await request(s.address, "/readyz")
        assert trio.current_time() - begun < 2
        assert answer.status == 503
        [check] = answer.json()["checks"]
        assert check["plugin"] == "stuck"
        assert "cannot be cancelled" in check["reason"]


STUCK_IN_A_THREAD = """
    import time

    import trio

    def health_check():
        "Unmarked, as a server file may write a hook; its answer is a reason: unhealthy."
        return "the queue is full"

    async def started(runtime):
        async def stuck():
            await trio.to_thread.run_sync(time.sleep, 1000)  # no cancellation reaches it

        runtime.start_soon(stuck)  # a service, cancelled at the shutdown: it cannot be
"""


@pytest.mark.slow
async def test_an_unmarked_check_counts_and_a_thread_stuck_at_the_end_cannot_hold_the_exit(
    tmp_path: Path, spawn: Spawn
) -> None:
    write(tmp_path, {"server.py": STUCK_IN_A_THREAD})
    child = await spawn(
        "run", "server.py", "--http", "127.0.0.1:0", "--shutdown-timeout", "1",
        "--pidfile", "run.pid",
    )  # fmt: skip
    address = await http_address(child)
    await child.line("<runtime> running")
    status, report = await ready(address)
    assert status == 503
    assert report["checks"] == [
        {"plugin": "server", "result": "fail", "reason": "the queue is full",
         "duration_seconds": report["checks"][0]["duration_seconds"]}
    ]  # fmt: skip
    child.process.send_signal(signal.SIGTERM)
    assert await child.finish() == 1  # the shutdown overran: the stuck thread
    assert not (tmp_path / "run.pid").exists()


async def test_idle_connections_are_evicted_for_a_probe_oldest_first() -> None:
    async with serving({}, max_connections=3) as s:
        idle = [await trio.open_tcp_stream(*split_address(s.address)) for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):  # each probe takes the slot of the connection idle the longest
            assert (await request(s.address, "/livez")).status == 200
        assert [await each.receive_some() for each in idle] == [b"", b"", b""]  # closed
        for each in idle:
            await each.aclose()


async def test_a_connection_that_has_sent_part_of_a_request_is_not_evicted() -> None:
    async with serving({}, max_connections=1) as s:
        slow = await trio.open_tcp_stream(*split_address(s.address))
        await slow.send_all(b"GET /livez HTTP/1.1\r\n")
        await trio.testing.wait_all_tasks_blocked()
        refused = await raw(s.address, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused == b""  # over the bound, and nobody idle: closed at once
        await slow.send_all(b"Host: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := await slow.receive_some():
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        await slow.aclose()


async def test_prometheus_is_imported_only_once_the_runtime_is_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Importing prometheus-client costs a start about as much as the rest of the server:
    it comes after READY=1, and what happened before is counted all the same."""
    monkeypatch.delitem(sys.modules, "oversip_hooks._metrics", raising=False)
    gate = Gate()
    async with serving({"gate": gate, "counted": Counted()}) as s:
        await gate.waiting.wait()
        assert "oversip_hooks._metrics" not in sys.modules  # starting: not yet
        gate.open.set()
        await wait_running(s.runtime)
        while s.server._metrics is None:  # made in the server's background, once ready
            await trio.lowlevel.checkpoint()
        assert "oversip_hooks._metrics" in sys.modules
        metrics = scrape((await request(s.address, "/metrics")).body)
        hooks = metrics["oversip_hooks_hook_duration_seconds"]
        assert sample(hooks, hooks.name + "_count", hook="started", plugin="gate") == 1
        assert metrics["oversip_hooks_start_time_seconds"].samples[0].value > 0
