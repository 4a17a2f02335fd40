# The probe server of `oversip-hooks run --http`: what it costs to start, and how fast it
# answers. Two measurements, each interleaved round by round against a baseline of the
# same run.
#
# Time to ready: `run --http 127.0.0.1:0` against `run`, the same server file, each timed
# to its READY=1 by startup.py's machinery (`until_ready`), so that the ratio is exactly
# what --http adds to a start: importing h11 and prometheus-client, building the
# registry, listening. Timing `run --http` against startup.py's floor was rejected: the
# issue's question is what --http adds, and that figure would mix it with what `run`
# costs already.
#
# Probes: sequential GETs from a client in this process (http.client, one keep-alive
# connection per sample) to a real server process, against a floor that serves the same
# GETs with h11 on trio and nothing else: what any server built as ours is must pay. The
# rows give the absolute latencies and rates the issue asks for in their subject and
# baseline columns, and the ratio says what our server adds to the floor. Rejected: a
# concurrent load generator (wrk, ab: not installed everywhere, and a probe is one
# request at a time, so many clients at once would measure a load that probes never
# make); a client inside the server's process (it would share the loop it measures); raw
# h11 over a socket for the client (the same bytes on the wire for more code; the client's
# own cost is the same on both sides of every ratio). A sample opens its own connection
# and sends one untimed request first: the server drops a connection left idle past its
# request deadline (5 s), which a connection kept across rounds could be, and fresh
# connections keep the samples independent.

from __future__ import annotations

import http.client
import math
import re
import signal
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

from ._measure import Profile, Samples, Variant, interleave, timed
from ._process import READY, TIMEOUT, Child, run_command, until_ready
from ._report import Row, Section, compare
from .startup import SERVER

READY_LIMIT = 1.1
# A sample lasts this many times the profile's shortest sample: a fifth of a second in the
# full profile, some hundreds of requests, so that its p99 is one of its slowest few and
# the rounds, each three samples, fit the profile's budget eight times or so.
SAMPLE_FACTOR = 10
PATHS = ("/livez", "/readyz")

PROBED = '''\
"""A server whose one plugin has a trivial health check: what /readyz runs at each probe."""


def health_check():
    return None
'''
FLOOR = """\
import os, socket, sys
import h11, trio

BODY = b"ok\\n"


async def serve(stream):
    connection = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.EndOfMessage):
                headers = [("Content-Type", "text/plain; charset=utf-8"),
                           ("Content-Length", str(len(BODY)))]
                await stream.send_all(
                    connection.send(h11.Response(status_code=200, headers=headers))
                    + connection.send(h11.Data(data=BODY))
                    + connection.send(h11.EndOfMessage())
                )
                connection.start_next_cycle()
            elif not isinstance(event, h11.Request):  # the client closed
                return


async def main():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    host, port = listeners[0].socket.getsockname()[:2]
    print(f"serving on http://{host}:{port}", file=sys.stderr, flush=True)
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
    await trio.serve_listeners(serve, listeners)


trio.run(main)
"""
# The line that both servers write on standard error before READY=1; the command's reads
# "serving /livez, /readyz, /metrics on http://ADDRESS".
_SERVING = re.compile(r"serving .*?on http://\[?([^\s,\]]+)\]?:(\d+)")

NOTES = f"""\
**ready**: `python -m oversip_hooks run --http 127.0.0.1:0 server.py` against
`python -m oversip_hooks run server.py`, with startup's server file (a `started` that
does nothing) and its blocking of installed entry points, each a real process timed from
just before `Popen` until `READY=1` arrives on its `NOTIFY_SOCKET`, then stopped with
SIGTERM, untimed. Target: within {READY_LIMIT}x, the cost of --http being paid only by
the runs that give it.

**probes**: one `run --http 127.0.0.1:0` process, whose server file has one plugin with a
sync `health_check` that returns `None`, so that each `/readyz` runs one check; the
**floor** is a process that serves every GET with a 200 `ok` through h11 on trio and
nothing else. The client is `http.client` in the benchmark's process, on loopback: each
sample opens a keep-alive connection, sends one untimed request, then the size column's
number of sequential requests, each timed from before it is sent until its body is read
(status 200 checked). **p50** and **p99** are that sample's 50th and 99th percentile
latency (nearest rank), **requests per second** the sample's requests over its wall time;
the floor's sample, of its own size, is `GET /livez`. Subject and baseline columns are
absolute medians over rounds; the ratio is what our server adds to the floor. No target:
the issue asks for these figures, not a bound.
"""


def run(profile: Profile) -> Section:
    """Time to ready with and without ``--http``, then the probes' latency and rate.

    Example::

        section = run(QUICK)
    """
    section = Section("HTTP probes: /livez and /readyz", notes=NOTES)
    with TemporaryDirectory() as directory:
        workdir = Path(directory)
        section.rows.append(_time_to_ready(profile, workdir))
        section.rows += _probes(profile, workdir)
    return section


def _time_to_ready(profile: Profile, workdir: Path) -> Row:
    (workdir / "server.py").write_text(SERVER)
    variants = {
        "http": until_ready(run_command("--http", "127.0.0.1:0", "server.py"), workdir, stop=True),
        "plain": until_ready(run_command("server.py"), workdir, stop=True),
    }
    samples = interleave(variants, rounds=profile.startup_rounds, budget=math.inf, min_sample=0.0)
    return compare(
        samples,
        "run --http until READY=1 / run",
        "1 process",
        ("http", "ready"),
        ("plain", "ready"),
        limit=READY_LIMIT,
    )


def _probes(profile: Profile, workdir: Path) -> list[Row]:
    (workdir / "probed.py").write_text(PROBED)
    (workdir / "floor.py").write_text(FLOOR)
    with ExitStack() as stack:
        server = stack.enter_context(
            Child(run_command("--http", "127.0.0.1:0", "probed.py"), workdir)
        )
        floor = stack.enter_context(Child(["floor.py"], workdir))
        ours, theirs = _serving(server), _serving(floor)
        variants = {path: _requests(ours, path) for path in PATHS}
        variants["floor"] = _requests(theirs, "/livez")
        samples = interleave(
            variants,
            rounds=profile.rounds,
            budget=profile.budget,
            min_sample=profile.min_sample * SAMPLE_FACTOR,
        )
        # The server took every request in its stride: it still stops cleanly.
        server.signal(signal.SIGTERM)
        status, _ = server.exit()
        if status != 0:
            server.fail(f"exited with status {status} on SIGTERM")
    return [row for path in PATHS for row in _rows(samples, path)]


def _rows(samples: Samples, path: str) -> list[Row]:
    size = f"{samples.spread(path, 'requests').median:.0f} requests"
    latency = [
        compare(samples, f"GET {path} {name} latency / floor", size, (path, name), ("floor", name))
        for name in ("p50", "p99")
    ]
    rate = compare(
        samples,
        f"GET {path} requests per second / floor",
        size,
        (path, "rps"),
        ("floor", "rps"),
        unit=_per_second,
    )
    return [*latency, rate]


def _serving(child: Child) -> tuple[str, int]:
    """Wait for the child's ``READY=1``; return the address it says it serves on."""
    child.receive(READY)
    found = _SERVING.search(child.output())
    if found is None:
        child.fail("said READY=1 without the line 'serving ... on http://ADDRESS'")
    return found[1], int(found[2])


def _requests(address: tuple[str, int], path: str) -> Variant:
    """``count`` sequential GETs of ``path`` on one fresh keep-alive connection."""

    def measure(count: int) -> Mapping[str, float]:
        connection = http.client.HTTPConnection(*address, timeout=TIMEOUT)
        try:
            _get(connection, path)  # connects: not a probe's cost on a kept connection
            latencies = []
            with timed() as total:
                for _ in range(count):
                    start = time.perf_counter()
                    _get(connection, path)
                    latencies.append(time.perf_counter() - start)
        finally:
            connection.close()
        latencies.sort()
        return {
            "p50": latencies[_rank(count, 0.50)],
            "p99": latencies[_rank(count, 0.99)],
            "rps": count / total.seconds,
            "requests": count,
        }

    return measure


def _get(connection: http.client.HTTPConnection, path: str) -> None:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:500]!r}")


def _rank(count: int, fraction: float) -> int:
    """The index, in ``count`` sorted values, of their ``fraction`` percentile by nearest
    rank: an observed value, never one interpolated between two."""
    return max(0, math.ceil(fraction * count) - 1)


def _per_second(value: float) -> str:
    return f"{value:,.0f} /s"
