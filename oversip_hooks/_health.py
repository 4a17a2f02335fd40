# The probe and metrics server of `oversip-hooks run --http ADDRESS`: /livez, /readyz and
# /metrics over HTTP/1.1, served from the runtime's own event loop, so that a loop blocked
# by plugin code stops answering /livez, which is what a liveness probe is for. The command
# imports this module only when --http is given: h11 and prometheus-client cost nothing to
# a process that does not serve them.
#
# HTTP is h11's (a state machine, no I/O) on trio streams. We rejected a web framework
# (ASGI needs a server, and each brings routing, middleware and a second event loop model
# for three fixed paths) and http.server (one thread per request, outside the loop, so a
# blocked loop would still answer). This is not a web server: GET and HEAD only, bounded
# header size (h11's max_incomplete_event_size, answered 431), one deadline per request
# from the moment the server waits for it to the end of its response (a client that sends
# a byte a second, or never reads, is dropped), a bounded number of connections (one over
# the bound is closed at once, rather than left in the kernel's backlog where it would
# look like a hung server), and any malformed request is answered 400 on its connection
# alone.
#
# Readiness is the runtime's state plus the plugins' health checks, the extension hook
# `health_check(runtime)`, all called at once with one timeout: a check that raises or
# does not answer marks its plugin unhealthy, never the server hung. Probes that come
# while checks run share that run's result rather than start another, so that a burst of
# probes cannot multiply the load that checks put on a database.
#
# The metrics are `_metrics.py`'s, made once the runtime is ready (or at the first scrape,
# if one comes sooner) from the events kept until then: importing prometheus-client costs
# a start about as much as the rest of this server, and it need not delay READY=1.
# Plugins add theirs through the extension hook `metrics_collectors(runtime)`, asked once,
# at the first scrape after `initialize` completed.

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn

import h11
import trio

from ._events import (
    Event,
    HookCallEnded,
    HookCallStarted,
    RuntimeState,
    StateChanged,
)
from ._fatal import printable
from ._logging import emit
from ._runtime import Runtime

if TYPE_CHECKING:
    from ._metrics import RuntimeMetrics

LOG_ID = "http"

# Bounds of the server; each is a keyword argument of HealthServer, for tests.
MAX_CONNECTIONS = 64  # probes and scrapers need a handful; more is a client's bug or worse
MAX_HEADER_BYTES = 8192  # the request line and headers together
REQUEST_DEADLINE = 5.0  # seconds from waiting for a request to the end of its response
CHECK_TIMEOUT = 1.0  # seconds that all health checks together may take; below the probe's
_CHECK_GRACE = 0.25  # seconds more that a probe waits for checks cancelled at their timeout

PATHS = ("/livez", "/readyz", "/metrics")
_READY_STATES = (RuntimeState.RUNNING, RuntimeState.RELOADING)  # a reload stays ready
# Seconds, for hook calls: from a quick sync hook to the default timeouts (30 s).
_HOOK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class CheckResult:
    """One plugin's answer to ``health_check``."""

    plugin: str
    healthy: bool
    reason: str | None
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "plugin": self.plugin,
            "result": "pass" if self.healthy else "fail",
            "reason": self.reason,
            "duration_seconds": round(self.seconds, 6),
        }


@dataclass
class _Run:
    """One run of the health checks, which the probes that come meanwhile wait for."""

    done: trio.Event = field(default_factory=trio.Event)
    results: list[CheckResult] | None = None
    began: float = field(default_factory=trio.current_time)


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listen on ``host``:``port`` (port 0: any free one), every address the host has.

    Raises:
        OSError: the address cannot be listened on (in use, not this host's, unknown).

    Example::

        listeners = await open_listeners("::1", 9100)
    """
    return await trio.open_tcp_listeners(port, host=host)


def bound_address(listener: trio.SocketListener) -> str:
    """``127.0.0.1:9100`` or ``[::1]:9100``: where ``listener`` listens, as --http takes."""
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HealthServer:
    """Serves ``/livez``, ``/readyz`` and ``/metrics`` for one runtime.

    Args:
        runtime: the runtime whose health and metrics are served; the server observes it
            from construction on.
        check_timeout: seconds that the health checks of one probe may take together.
        request_deadline: seconds for one request on a connection, from the moment the
            server waits for it (after the connection opened or the previous response
            ended) to the end of its response.
        max_connections: connections served at once; one more is closed at once.
        max_header_bytes: the largest request line and headers, answered 431 above.

    Example::

        server = HealthServer(runtime)
        listeners = await open_listeners("127.0.0.1", 9100)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            status = await runtime.run()
            nursery.cancel_scope.cancel()
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        check_timeout: float = CHECK_TIMEOUT,
        request_deadline: float = REQUEST_DEADLINE,
        max_connections: int = MAX_CONNECTIONS,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.runtime = runtime
        self.check_timeout = check_timeout
        self.request_deadline = request_deadline
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self._connections = 0
        self._checks: _Run | None = None
        # Where a run of the checks goes, so that a probe can give up on one that a check
        # stuck in a worker thread keeps from ending (no cancellation reaches a thread);
        # None before serve(): readiness() then runs them in its caller's task.
        self._background: trio.Nursery | None = None
        self._checking: dict[str, int] = {}  # plugins whose health_check runs now
        self._idle: dict[
            trio.CancelScope, None
        ] = {}  # connections awaiting a request, oldest first
        self._initialized = False  # `initialize` completed: plugins may be asked for metrics
        self._plugin_metrics_asked = False
        # The metrics (`_metrics.py`, prometheus-client) are made once the runtime is
        # ready, or at the first scrape; the events until then are kept, with their time.
        self._metrics: RuntimeMetrics | None = None
        self._unmetered: list[tuple[Event, float]] = []
        self._metering = threading.Lock()  # LoopBlocked comes from the watchdog's thread
        runtime.add_observer(self._observe)

    # -- serving ------------------------------------------------------------------------

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Accept connections on ``listeners`` until cancelled; report the addresses
        served (as ``--http`` spells them) once accepting, then log them."""
        addresses = [bound_address(listener) for listener in listeners]
        async with trio.open_nursery() as nursery:
            self._background = nursery
            for listener in listeners:
                nursery.start_soon(self._accept, listener, nursery)
            task_status.started(addresses)
            where = ", ".join(f"http://{address}" for address in addresses)
            emit(LOG_ID, "info", f"serving {', '.join(PATHS)} on {where}")
            await trio.sleep_forever()
        raise AssertionError("unreachable: sleep_forever returned")

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> NoReturn:
        async with listener:
            failing = False  # one line per outage, not one per attempt
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # EMFILE and the like: the process is out of sockets
                    if not failing:
                        emit(LOG_ID, "error", f"cannot accept connections: {exc}; retrying")
                    failing = True
                    await trio.sleep(self.request_deadline / 10)
                    continue
                if failing:
                    emit(LOG_ID, "notice", "accepting connections again")
                    failing = False
                if self._connections >= self.max_connections and not self._evict_idle():
                    stream.socket.close()  # no response: it may not have sent a request yet
                    continue
                self._connections += 1
                nursery.start_soon(self._serve_connection, stream)

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest for a request, if one waits: a
        client that opens connections and sends nothing must not keep a probe out. Its
        slot frees as its task ends, so the count may pass the bound by those closing."""
        for scope in self._idle:
            del self._idle[scope]
            scope.cancel()
            return True
        return False

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
        evicted = trio.CancelScope()
        try:
            another = True
            while another:
                another = False
                # Past the deadline, the connection is dropped without an answer; an idle
                # one may be evicted (a scope is entered once: one per request).
                evicted = trio.CancelScope(deadline=trio.current_time() + self.request_deadline)
                with evicted:
                    self._idle[evicted] = None  # until the request's first byte
                    another = await self._exchange(stream, connection, evicted)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except Exception as exc:  # a bug of ours: this connection ends, never the server
            emit(LOG_ID, "error", f"a connection failed: {printable(exc)}", exception=exc)
        finally:
            # Counted out before it is closed: a client that saw it close may connect again.
            self._idle.pop(evicted, None)
            self._connections -= 1
            await stream.aclose()

    async def _exchange(
        self, stream: trio.SocketStream, connection: h11.Connection, idle: trio.CancelScope
    ) -> bool:
        """Read one request and answer it; whether the connection may carry another.
        ``idle`` is the connection's entry among the idle ones, until a byte arrives."""
        try:
            request = await _next_request(
                stream, connection, self.max_header_bytes, lambda: self._idle.pop(idle, None)
            )
            if request is None:
                return False
            read_whole = _read_whole(connection)
            response = await self._respond(request)
        except h11.RemoteProtocolError as exc:
            if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return False
            response = _Response(exc.error_status_hint, f"bad request: {exc}\n".encode())
            await _send(stream, connection, response, head=False, close=True)
            await _linger(stream, self.max_header_bytes)
            return False
        close = response.status == 405 or not read_whole
        await _send(stream, connection, response, head=request.method == b"HEAD", close=close)
        if not read_whole:
            await _linger(stream, self.max_header_bytes)
        if connection.our_state is not h11.DONE:  # MUST_CLOSE: either side said close
            return False
        connection.start_next_cycle()
        return True

    async def _respond(self, request: h11.Request) -> _Response:
        if request.method not in (b"GET", b"HEAD"):
            return _Response(405, b"only GET and HEAD\n", headers=(("Allow", "GET, HEAD"),))
        path = request.target.partition(b"?")[0].decode("ascii", "replace")
        if path == "/livez":
            return _Response(200, b"ok\n")
        if path == "/readyz":
            ready, report = await self.readiness()
            body = json.dumps(report, indent=2).encode() + b"\n"
            return _Response(200 if ready else 503, body, _JSON)
        if path == "/metrics":
            body = await self.metrics()
            return _Response(200, body, self._meter().content_type)
        return _Response(404, f"not found; the paths are {', '.join(PATHS)}\n".encode())

    # -- readiness ----------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """Whether the instance is ready for traffic, and the report ``/readyz`` shows:
        the runtime's state, why it is not ready, and each plugin's check. The checks
        run only while the runtime runs and no stop is asked for.

        Example::

            ready, report = await server.readiness()
            report["checks"][0]   # {"plugin": "sqlite", "result": "pass", ...}
        """
        reason = self._not_ready()
        checks: list[CheckResult] = []
        if reason is None:
            checks = await self._run_checks()
            failed = [check.plugin for check in checks if not check.healthy]
            if failed:
                reason = f"health check failed: {', '.join(failed)}"
            reason = self._not_ready() or reason  # a stop asked for while checks ran
        report: dict[str, object] = {
            "ready": reason is None,
            "state": self.runtime.state.value,
            "reason": reason,
            "checks": [check.as_json() for check in checks],
        }
        return reason is None, report

    def _not_ready(self) -> str | None:
        if self.runtime.stop_requested:
            return "a stop was requested"
        state = self.runtime.state
        if state not in _READY_STATES:
            return f"the runtime is {state.value}"
        return None

    async def _run_checks(self) -> list[CheckResult]:
        run = self._checks
        if run is None:
            run = self._checks = _Run()
            if self._background is None:
                await self._check_into(run)
            else:
                self._background.start_soon(self._check_into, run)
        # The checks are cancelled at the timeout; a little more lets them say so.
        with trio.move_on_after(self.check_timeout + _CHECK_GRACE):
            await run.done.wait()
        if run.results is not None:
            return run.results
        seconds = trio.current_time() - run.began
        reason = (
            f"did not answer within the check timeout of {self.check_timeout:g} s, and "
            "cannot be cancelled (a worker thread?)"
        )
        return [CheckResult(plugin, False, reason, seconds) for plugin in sorted(self._checking)]

    async def _check_into(self, run: _Run) -> None:
        try:
            run.results = await self._check_all()
        finally:
            self._checks = None
            run.done.set()

    async def _check_all(self) -> list[CheckResult]:
        outcomes = await self.runtime.hooks.health_check.call_each(
            concurrently=True, timeout=self.check_timeout
        )
        results = []
        for outcome in outcomes:
            value: Any = outcome.value
            if outcome.error is not None:
                healthy, reason = False, _failure(outcome.error)
            elif outcome.seconds > self.check_timeout:  # it could not be cancelled in time
                healthy = False
                reason = (
                    f"answered after {outcome.seconds:.1f} s, over the check timeout of "
                    f"{self.check_timeout:g} s"
                )
            elif value is None:
                healthy, reason = True, None
            elif isinstance(value, str):
                healthy, reason = False, value or "unhealthy (an empty reason)"
            else:
                healthy = False
                reason = f"returned {printable(value)}; a check returns None or a reason (str)"
            results.append(CheckResult(outcome.plugin, healthy, reason, outcome.seconds))
        return results

    # -- metrics ------------------------------------------------------------------------

    async def metrics(self) -> bytes:
        """The metrics in Prometheus's text format, with the plugins' collectors once
        ``initialize`` has completed."""
        metrics = self._meter()
        if self._initialized and not self._plugin_metrics_asked:
            self._plugin_metrics_asked = True
            hook = self.runtime.hooks.metrics_collectors
            metrics.add_plugin_collectors(await hook.call_each(timeout=self.check_timeout))
        return metrics.exposition()

    def _meter(self) -> RuntimeMetrics:
        """The metrics, made now if they are not yet, from the events kept until now."""
        if self._metrics is None:
            from ._metrics import RuntimeMetrics  # prometheus-client: after READY=1

            metrics = RuntimeMetrics(self.runtime)
            with self._metering:
                for event, at in self._unmetered:
                    metrics.observe(event, at)
                self._unmetered.clear()
                self._metrics = metrics
        return self._metrics

    def _observe(self, event: Event) -> None:
        if isinstance(event, HookCallStarted) and event.hook == "health_check":
            self._checking[event.plugin] = self._checking.get(event.plugin, 0) + 1
        elif isinstance(event, HookCallEnded) and event.hook == "health_check":
            self._checking[event.plugin] -= 1
            if not self._checking[event.plugin]:
                del self._checking[event.plugin]
        elif isinstance(event, StateChanged) and event.state is RuntimeState.STARTING:
            self._initialized = True
        with self._metering:
            if self._metrics is None:
                self._unmetered.append((event, time.time()))
                ready = isinstance(event, StateChanged) and event.state is RuntimeState.RUNNING
                if ready and self._background is not None:
                    self._background.start_soon(self._make_metrics)
                return
        self._metrics.observe(event, time.time())

    async def _make_metrics(self) -> None:
        self._meter()


def _failure(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return str(error)
    return f"raised {printable(error)}"


async def _next_request(
    stream: trio.SocketStream, connection: h11.Connection, limit: int, busy: Callable[[], object]
) -> h11.Request | None:
    """The next request on ``connection``, or ``None`` once the client has closed it;
    ``busy()`` is called as soon as any of it is there.

    Raises:
        h11.RemoteProtocolError: a malformed request, or a request line and headers
            longer than ``limit`` bytes (h11's own bound applies only to what is still
            incomplete, so a large block that arrives whole would pass it).
    """
    received = 0
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA or connection.trailing_data[0]:
            busy()
        if event is h11.NEED_DATA:
            if received > limit:
                raise h11.RemoteProtocolError(
                    f"request line and headers over {limit} bytes", error_status_hint=431
                )
            data = await stream.receive_some(limit + 1)
            received += len(data)
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            return event
        else:  # ConnectionClosed, or PAUSED after a response that left the request unread
            return None


def _read_whole(connection: h11.Connection) -> bool:
    """Whether the request just read ends in what was received already: a GET without
    a body does. A request with a body is not read further, and its connection closed."""
    while connection.their_state is h11.SEND_BODY:
        event = connection.next_event()
        if event is h11.NEED_DATA or not isinstance(event, h11.Data | h11.EndOfMessage):
            return False
    return connection.their_state in (h11.DONE, h11.MUST_CLOSE)


async def _linger(stream: trio.SocketStream, limit: int) -> None:
    """Before closing a connection whose request was not read whole: say we are done
    sending, then read and drop what the client still sends, up to ``limit`` bytes, until
    it closes. Closing with bytes unread would reset the connection, and a reset can
    overtake the answer, which the client would then never see."""
    with suppress(trio.BrokenResourceError):
        await stream.send_eof()
        dropped = 0
        while dropped <= limit and (chunk := await stream.receive_some(limit + 1)):
            dropped += len(chunk)


async def _send(
    stream: trio.SocketStream,
    connection: h11.Connection,
    response: _Response,
    *,
    head: bool,
    close: bool,
) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
        *response.headers,
    ]
    if close:
        headers.append(("Connection", "close"))
    events: list[h11.Response | h11.Data | h11.EndOfMessage] = [
        h11.Response(
            status_code=response.status,
            headers=headers,
            reason=HTTPStatus(response.status).phrase.encode(),
        )
    ]
    if not head and response.body:  # h11 refuses a body in the response to a HEAD
        events.append(h11.Data(data=response.body))
    events.append(h11.EndOfMessage())
    await stream.send_all(b"".join(connection.send(event) or b"" for event in events))
