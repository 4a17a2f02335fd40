# Signal latency, in real processes: `oversip-hooks run` against a plain trio program that
# does the least the same job needs (a signal receiver; for SIGTERM, the same number of
# sleeping tasks to cancel). SIGHUP is timed from just before `kill` to the moment the
# first `reload` implementation is entered, stamped by the child itself on the shared
# monotonic clock; SIGHUPs are sent one at a time, each once the previous reload has
# finished, so that none is coalesced. SIGTERM is timed from just before `kill` to the
# process's end, seen through its pidfd.

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

from ._measure import Profile, Variant, interleave
from ._plugins import SERVING_MODULE
from ._process import READY, Child, run_command
from ._report import Section, compare

HUP_LIMIT = 1e-3  # seconds, median, absolute: the target
ENTERED = "ENTERED"

REPORT = """\
import os
import socket
import time

_report = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def report(message):
    _report.sendto(message.encode(), os.environ["NOTIFY_SOCKET"])
"""

HUP_SERVER = f"""\
{REPORT}

def reload():
    report(f"{ENTERED}={{time.monotonic()!r}}")
"""

HUP_FLOOR = f"""\
{REPORT}
import signal
import trio


async def main():
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM) as signals:
        report("{READY}=1")
        async for signum in signals:
            if signum == signal.SIGTERM:
                return
            report(f"{ENTERED}={{time.monotonic()!r}}")
            report("{READY}=1")


trio.run(main)
"""

TERM_FLOOR = f"""\
{REPORT}
import signal
import sys
import trio


async def main(tasks):
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(trio.sleep_forever)
            report("{READY}=1")
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


trio.run(main, int(sys.argv[1]))
"""

NOTES = f"""\
Both commands block the entry points installed here (`-p no:NAME`), so that they run only
the plugins given. **SIGHUP**: `python -m oversip_hooks run server.py` whose `reload` sends
`time.monotonic()` on its `NOTIFY_SOCKET` as its first statement; the figure is that time
minus `time.monotonic()` just before `os.kill` in the benchmark (one clock for all
processes). It includes the runtime's signal handling and its two log lines to standard
error (a file), until the hook is entered. Each SIGHUP is sent once the previous reload has
sent READY=1 again. **floor**: a trio program with `trio.open_signal_receiver(SIGHUP)` that
stamps the time as it receives the signal. The two children run side by side, signalled
alternately. **SIGTERM**: `python -m oversip_hooks run` with N modules installed as the
entry points of one distribution (a `.dist-info` on the child's `PYTHONPATH`), each
starting one service that sleeps until cancelled, sent SIGTERM once READY=1 has arrived;
the figure is the time from just before `os.kill` to the process's end (its pidfd
readable), so it includes every `terminated`, cancelling and awaiting each plugin's
service, flushing the logs and the interpreter's own exit. **floor**: a trio program with
N tasks sleeping in a nursery that cancels them on SIGTERM and exits. The same processes
give **spawn to READY=1**, for context: the runtime's from loading the entry points to
every `started` returned, the floor's once its N tasks are started. Target: SIGHUP to
hook under {HUP_LIMIT * 1e3:g} ms median (absolute; the ratio is for context).
"""


def _hup(child: Child) -> Variant:
    child.receive(READY)  # the first SIGHUP must find it running

    def measure(count: int) -> Mapping[str, float]:
        total = 0.0
        for _ in range(count):
            sent = child.signal(signal.SIGHUP)
            entered, _ = child.receive(ENTERED)
            child.receive(READY)
            total += float(entered) - sent
        return {"latency": total / count}

    return measure


def _term(argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        ready = exiting = 0.0
        for _ in range(count):
            with Child(argv, workdir, env) as child:
                _, running = child.receive(READY)
                sent = child.signal(signal.SIGTERM)
                status, ended = child.exit()
                if status != 0:
                    child.fail(f"exited with status {status} on SIGTERM")
                ready += running - child.spawned_at
                exiting += ended - sent
        return {"ready": ready / count, "exit": exiting / count}

    return measure


def _fleet(workdir: Path, n: int) -> dict[str, str]:
    """Install ``n`` serving modules as the entry points of one distribution, in a folder
    of their own; return the environment that puts it on the child's path."""
    fleet = workdir / "fleet"
    info = fleet / "bench_fleet-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-fleet\nVersion: 1.0\n")
    names = [f"serving{index}" for index in range(n)]
    entry_points = "".join(f"{name} = {name}\n" for name in names)
    (info / "entry_points.txt").write_text(f"[oversip_hooks]\n{entry_points}")
    for name in names:
        (fleet / f"{name}.py").write_text(SERVING_MODULE)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(fleet), os.environ.get("PYTHONPATH")]))}


def run(profile: Profile) -> Section:
    section = Section("Signals", notes=NOTES)
    with TemporaryDirectory() as directory, ExitStack() as children:
        workdir = Path(directory)
        for name, text in (
            ("server.py", HUP_SERVER),
            ("hup_floor.py", HUP_FLOOR),
            ("term_floor.py", TERM_FLOOR),
        ):
            (workdir / name).write_text(text)
        server = children.enter_context(Child(run_command("server.py"), workdir))
        floor = children.enter_context(Child(["hup_floor.py"], workdir))
        samples = interleave(
            {"runtime": _hup(server), "floor": _hup(floor)},
            rounds=profile.signal_rounds,
            budget=profile.budget,
            min_sample=0.0,
        )
        latency = samples.spread("runtime", "latency").median
        row = compare(
            samples,
            "SIGHUP to reload entered",
            "1 plugin",
            ("runtime", "latency"),
            ("floor", "latency"),
        )
        section.rows.append(
            replace(row, target=f"< {HUP_LIMIT * 1e3:g} ms median", met=latency < HUP_LIMIT)
        )

        n = profile.fleet
        samples = interleave(
            {
                "runtime": _term(run_command(), workdir, _fleet(workdir, n)),
                "floor": _term(["term_floor.py", str(n)], workdir),
            },
            rounds=profile.rounds,
            budget=profile.budget,
            min_sample=0.0,
        )
        section.rows += [
            compare(samples, "SIGTERM to exit", f"N={n}", ("runtime", "exit"), ("floor", "exit")),
            compare(
                samples, "spawn to READY=1", f"N={n}", ("runtime", "ready"), ("floor", "ready")
            ),
        ]
    return section
