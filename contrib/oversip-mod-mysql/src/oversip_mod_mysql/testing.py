"""A private MariaDB server for tests and benchmarks: its own data directory in a folder
the caller gives, a unix socket and a free loopback port, a test user with a password,
started and stopped by the caller; never the machine's system instance.

Example::

    with PrivateServer(tmp_path) as server:
        M.mysql.add_pool("main", **server.pool_settings())
"""

# A plain class driven by blocking calls, not a pytest fixture: the module's tests wrap it
# in a session fixture, and the benchmark (a plain script) uses it as it is. It lives in
# the package, as oversip_hooks.testing does, so that both, and a user's own tests, share
# one launcher; we rejected a copy in benchmarks/ and one in tests/.
#
# Readiness is an event, not a guess: the server's standard error is read by a thread,
# and start() returns when the server prints "ready for connections". The server runs
# with `--user` set to the current user, which is what mariadbd needs when that user is
# root (CI); its data directory belongs to that user too.

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import MySQLdb

INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "install-mariadb.sh"
READY = "ready for connections"
START_TIMEOUT = 60.0  # seconds; a first start on a loaded CI machine runs InnoDB's setup

USER = "oversip"
# Distinctive, so that a test can grep every output for it: found anywhere, it leaked.
PASSWORD = "pw-Kq7vZ2xR9wLm"
DATABASE = "oversip_test"


def _find(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(
            f"{program} is not installed: MariaDB's server is needed for the MySQL module's "
            f"tests; install it with `sudo sh {INSTALL_SCRIPT}` (Debian, Ubuntu) or your "
            "distribution's mariadb-server package"
        )
    return found


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateServer:
    """A MariaDB server of the caller's own, in ``directory``; see the module's docstring.

    Attributes:
        socket: the unix socket's path.
        port: the loopback TCP port, the same after a restart.
        user, password, database: the test user, who owns ``database``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).absolute()
        self.data = self.directory / "data"
        self.socket = str(self.directory / "mysqld.sock")
        self.port = free_port()
        self.user = USER
        self.password = PASSWORD
        self.database = DATABASE
        self.log: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> PrivateServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def pool_settings(self, *, over: str = "tcp") -> dict[str, Any]:
        """The keyword arguments of ``add_pool`` that reach this server as the test user,
        over ``"tcp"`` or the unix ``"socket"``."""
        where: dict[str, Any] = (
            {"host": "127.0.0.1", "port": self.port}
            if over == "tcp"
            else {"unix_socket": self.socket}
        )
        return {**where, "user": self.user, "password": self.password, "database": self.database}

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server, creating its data directory, user and database the first
        time; return once it accepts connections.

        Raises:
            RuntimeError: MariaDB is not installed, or the server did not start.
        """
        first = not self.data.exists()
        if first:
            self.data.mkdir(parents=True)
            self._install_data_directory()
        self._spawn()
        if first:
            self.admin(
                f"CREATE DATABASE {self.database}",
                *(
                    f"CREATE USER '{self.user}'@'{host}' IDENTIFIED BY '{self.password}'"
                    for host in ("localhost", "127.0.0.1")
                ),
                *(
                    f"GRANT ALL ON {self.database}.* TO '{self.user}'@'{host}'"
                    for host in ("localhost", "127.0.0.1")
                ),
            )

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and wait for it to be gone."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM), if it runs."""
        self._end(signal.SIGTERM)

    def admin(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run ``statements`` as the server's root user, over the unix socket; the rows
        of the last one."""
        connection = MySQLdb.connect(unix_socket=self.socket, user="root", autocommit=True)
        with closing(connection), closing(connection.cursor()) as cursor:
            for statement in statements:
                cursor.execute(statement)
            return list(cursor.fetchall())

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The server stopped (SIGSTOP) for the block: it accepts connections and
        answers nothing, as an unreachable host would."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def _install_data_directory(self) -> None:
        done = subprocess.run(
            [
                _find("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={self.data}",
                f"--user={getpass.getuser()}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{done.stdout}{done.stderr}")

    def _spawn(self) -> None:
        process = subprocess.Popen(
            [
                _find("mariadbd"),
                "--no-defaults",  # never the system's my.cnf
                f"--datadir={self.data}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--user={getpass.getuser()}",
                f"--pid-file={self.directory / 'mysqld.pid'}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--userstat",  # information_schema.USER_STATISTICS: connections per user
                # Small, so that a start and a crash recovery take a moment.
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C meant for the tests is not the server's
        )
        ready = threading.Event()

        def read_log() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.log.append(line.rstrip("\n"))
                if READY in line:
                    ready.set()
            process.stderr.close()
            ready.set()  # it exited

        threading.Thread(target=read_log, name="mariadbd log", daemon=True).start()
        self._process = process
        if not ready.wait(START_TIMEOUT) or process.poll() is not None:
            self._end(signal.SIGKILL)
            raise RuntimeError("mariadbd did not start:\n" + "\n".join(self.log[-20:]))

    def _end(self, signum: int) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signum)
        try:
            process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
