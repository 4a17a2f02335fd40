# Child processes for the benchmarks that need real ones: time to ready, import, signals,
# the HTTP probes.
# Each child gets a unix datagram socket of its own as NOTIFY_SOCKET, the way systemd
# hands one to a service, and reports on it (READY=1 from the command line's notifier, and
# for the signal benchmarks a line of our own); nothing leaves the machine. Its exit is
# seen through a pidfd, which becomes readable the moment the process ends, so an exit is
# timed without polling; every wait has a deadline, after which the child is killed and
# the benchmark fails with the tail of the child's output. Times are `time.monotonic()`,
# CLOCK_MONOTONIC on Linux, one clock for all processes, so that a child can stamp the
# moment something happened in it and the parent can subtract.

from __future__ import annotations

import importlib.metadata
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from ._measure import Variant

TIMEOUT = 60.0  # for any one wait: a child this slow is broken, not slow
READY = "READY"
COMMAND = ("-m", "oversip_hooks")

_names = itertools.count()


def run_command(*arguments: str, subcommand: str = "run") -> list[str]:
    """``python -m oversip_hooks run`` (or another ``subcommand``) with ``arguments``, and
    ``-p no:NAME`` for each entry point of the group ``oversip_hooks`` installed here: the
    lookup is done, as in any run, but a child runs only the plugins that its benchmark
    gives it, whatever is installed."""
    installed = sorted(
        {found.name for found in importlib.metadata.entry_points(group="oversip_hooks")}
    )
    blocked = (arg for name in installed for arg in ("-p", f"no:{name}"))
    return [*COMMAND, subcommand, *blocked, *arguments]


class Child:
    """A running child process with its own NOTIFY_SOCKET; a context manager that kills
    it, if still running, on the way out. ``wrapper`` is a command that runs the
    interpreter's command line (valgrind, for an instruction count)."""

    def __init__(
        self,
        argv: Sequence[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        *,
        wrapper: Sequence[str] = (),
    ) -> None:
        name = f"child{next(_names)}"
        self._socket_path = workdir / f"{name}.sock"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self._socket_path))
        self._output_path = workdir / f"{name}.out"
        environment = {**os.environ, **(env or {}), "NOTIFY_SOCKET": str(self._socket_path)}
        with self._output_path.open("wb") as output:
            self.spawned_at = time.monotonic()
            self.process = subprocess.Popen(
                [*wrapper, sys.executable, *argv],
                cwd=workdir,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._pidfd = os.pidfd_open(self.process.pid)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)
        os.close(self._pidfd)
        self._socket.close()

    def receive(self, key: str) -> tuple[str, float]:
        """Wait for a datagram with a line ``KEY=value``; return the value and the
        ``time.monotonic()`` at which it arrived."""
        deadline = time.monotonic() + TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._socket.fileno(), self._pidfd], [], [], left)
            if self._socket.fileno() in ready:
                lines = self._socket.recv(65536).decode().splitlines()
                arrived = time.monotonic()
                for line in lines:
                    name, _, value = line.partition("=")
                    if name == key:
                        return value, arrived
            elif ready:
                self.fail(f"exited with status {self.process.wait()} before {key}=")
        self.fail(f"sent no {key}= within {TIMEOUT:g} s")

    def signal(self, signum: signal.Signals) -> float:
        """Send ``signum``; return the ``time.monotonic()`` just before it was sent."""
        sent = time.monotonic()
        os.kill(self.process.pid, signum)
        return sent

    def exit(self) -> tuple[int, float]:
        """Wait for the child to end; return its status and the time it ended."""
        ready, _, _ = select.select([self._pidfd], [], [], TIMEOUT)
        ended = time.monotonic()
        if not ready:
            self.fail(f"still running after {TIMEOUT:g} s")
        return self.process.wait(), ended

    def output(self) -> str:
        """What the child has written so far, its standard output and error together."""
        return self._output_path.read_text(errors="replace")

    def fail(self, what: str) -> NoReturn:
        tail = self.output()[-2000:]
        raise RuntimeError(f"{self.process.args!r} {what}; its output ends with:\n{tail}")


def until_ready(argv: Sequence[str], workdir: Path, *, stop: bool) -> Variant:
    """Spawn to ``READY=1``; with ``stop``, the child is then sent SIGTERM (untimed), else
    it is left to exit, and its exit is timed too."""

    def measure(count: int) -> Mapping[str, float]:
        ready_total = exit_total = 0.0
        for _ in range(count):
            with Child(argv, workdir) as child:
                _, ready = child.receive(READY)
                ready_total += ready - child.spawned_at
                if stop:
                    child.signal(signal.SIGTERM)
                status, ended = child.exit()
                if status != 0:
                    child.fail(f"exited with status {status}")
                exit_total += ended - child.spawned_at
        times = {"ready": ready_total / count}
        if not stop:
            times["exit"] = exit_total / count
        return times

    return measure
