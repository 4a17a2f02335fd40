"""Running the `oversip-hooks` command for real, for every test that needs it:
`python -m oversip_hooks` in a child process, its standard error read a line at a time,
real datagram sockets for systemd and syslog. Every wait is for an event with a timeout."""

from __future__ import annotations

import http.client
import importlib.metadata
import os
import socket
import sys
import sysconfig
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL, PIPE

import pytest
import trio

TIMEOUT = 30  # seconds for any one event; generous, for a loaded CI machine
COMMAND = (sys.executable, "-m", "oversip_hooks")

# The modules installed in this environment (oversip-mod-sqlite in CI) would join every
# run; the tests block them, as an operator would with -p, to see only their own.
BLOCK_INSTALLED = [
    arg
    for entry_point in importlib.metadata.entry_points(group="oversip_hooks")
    for arg in ("-p", f"no:{entry_point.name}")
]


def isolated(args: Sequence[str]) -> list[str]:
    """``args``, with the installed modules blocked for the commands that load plugins."""
    loads_plugins = bool(args) and args[0] in ("run", "check", "plugins")
    return [*args, *BLOCK_INSTALLED] if loads_plugins else list(args)


# An installed distribution with one entry point, as importlib.metadata finds it on
# sys.path; the real pip-installed one is in test_a_pip_installed_module_runs.
FAKE_DISTRIBUTION = {
    "oversip_mod_fake-0.1.dist-info/METADATA": """
        Metadata-Version: 2.1
        Name: oversip-mod-fake
        Version: 0.1
    """,
    "oversip_mod_fake-0.1.dist-info/entry_points.txt": """
        [oversip_hooks]
        fake = fake_mod
    """,
}

# The user's file: plain functions, which count as hooks in the server file only.
SERVER = """
    from oversip_hooks import get_logger

    log = get_logger("server")

    def initialize():
        log.log_system_info("server initialize")

    def started():
        log.log_system_info("server started")

    def reload():
        log.log_system_info("server reload")

    def terminated(error):
        log.log_system_info(f"server terminated error={error}")
"""


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def child_env(directory: Path, **variables: str) -> dict[str, str]:
    """This environment without the command's own variables, with ``directory`` on the
    module path (for --plugin modules and entry points), plus ``variables``."""
    ours = ("OVERSIP_HOOKS_", "NOTIFY_SOCKET", "WATCHDOG_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(ours)}
    env["PYTHONPATH"] = str(directory)
    env.update(variables)
    return env


@dataclass
class Finished:
    status: int
    out: str
    err: list[str]


async def command(
    directory: Path, *args: str, env: dict[str, str] | None = None, argv: Sequence[str] = COMMAND
) -> Finished:
    """Run the command to its end in ``directory``."""
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [*argv, *isolated(args)],
            cwd=directory,
            env=env if env is not None else child_env(directory),
            stdin=DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return Finished(done.returncode, done.stdout.decode(), done.stderr.decode().splitlines())


class Child:
    """A running command whose standard error is read a line at a time."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _next_line(self) -> str | None:
        assert self.process.stderr is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stderr.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        self.lines.append(line.decode())
        return self.lines[-1]

    async def line(self, text: str) -> str:
        """The next line of standard error that contains ``text``."""
        with trio.fail_after(TIMEOUT):
            while (line := await self._next_line()) is not None:
                if text in line:
                    return line
        pytest.fail(f"exited without printing {text!r}:\n" + "\n".join(self.lines))

    async def finish(self) -> int:
        """Read standard error to its end; the exit status."""
        with trio.fail_after(TIMEOUT):
            while await self._next_line() is not None:
                pass
            return await self.process.wait()


Spawn = Callable[..., Awaitable[Child]]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start the command in ``tmp_path``; whatever still runs at the end is killed."""
    children: list[Child] = []

    async def start(
        *args: str, env: dict[str, str] | None = None, argv: Sequence[str] = COMMAND
    ) -> Child:
        process = await trio.lowlevel.open_process(
            [*argv, *isolated(args)],
            cwd=tmp_path,
            env=env if env is not None else child_env(tmp_path),
            stdin=DEVNULL,
            stdout=DEVNULL,
            stderr=PIPE,
        )
        children.append(Child(process))
        return children[-1]

    yield start
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
            await child.process.wait()


class Datagrams:
    """A bound datagram socket: systemd's notification socket, or a syslog daemon's."""

    def __init__(self, family: socket.AddressFamily, address: str | tuple[str, int]) -> None:
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._socket.bind(address)

    @property
    def address(self) -> str | tuple[str, int]:
        bound: str | bytes | tuple[str, int] = self._socket.getsockname()
        if isinstance(bound, bytes):  # an abstract unix address, as NOTIFY_SOCKET spells it
            return "@" + bound.removeprefix(b"\0").decode()
        return bound

    async def receive(self) -> bytes:
        with trio.fail_after(TIMEOUT):
            while True:
                try:
                    return self._socket.recv(65536)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self._socket)

    async def collect(self, into: list[bytes]) -> None:
        """Receive into ``into`` until cancelled: a unix socket's queue is short (ten
        datagrams by default), and its sender blocks while it is full."""
        while True:
            await trio.lowlevel.wait_readable(self._socket)
            into.extend(self.drain())

    def drain(self) -> list[bytes]:
        """Every datagram already received (all of them, once the sender has exited)."""
        received = []
        while True:
            try:
                received.append(self._socket.recv(65536))
            except BlockingIOError:
                return received

    def close(self) -> None:
        self._socket.close()


def fields(datagram: bytes) -> dict[str, str]:
    """An sd_notify message as a dict: ``{"READY": "1", "STATUS": "running"}``."""
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


async def notifications_until(notify: Datagrams, key: str) -> list[dict[str, str]]:
    """The notifications received up to and including the first that sets ``key``."""
    received = [fields(await notify.receive())]
    while key not in received[-1]:
        received.append(fields(await notify.receive()))
    return received


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Datagrams]:
    datagrams = Datagrams(socket.AF_UNIX, str(tmp_path / "notify"))
    yield datagrams
    datagrams.close()


async def dead_pid() -> int:
    """The id of a process that has exited."""
    process = await trio.lowlevel.open_process(["true"])
    with trio.fail_after(TIMEOUT):
        await process.wait()
    return process.pid


async def venv_seeing_this_one(directory: Path) -> str:
    """A new virtual environment in ``directory`` that also sees this one's packages
    (oversip_hooks, its dependencies, hatchling) through a .pth file, so that installing
    into it downloads nothing; its python. `venv --system-site-packages` would not do when
    this interpreter is itself a virtual environment's: it sees the base installation."""
    venv = directory / "venv"
    with trio.fail_after(TIMEOUT):
        await trio.run_process([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    purelib = await command(
        directory, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", argv=[python]
    )
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib.out.strip()) / "_outer_environment.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in sorted(ours))
    )
    return python


def http_get(address: str, path: str) -> tuple[int, bytes]:
    """``GET path`` from ``address`` (``HOST:PORT``) with a real HTTP client; blocking: run
    it in a thread (``trio.to_thread.run_sync(http_get, address, "/readyz")``)."""
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()
