# A PID file is held with flock(2) for the life of the process: the lock, not the id in
# the file, says whether an instance is alive, so two instances that find the same stale
# file cannot both take it (reading the id and replacing the file are two steps another
# instance could interleave), and the lock frees itself however the process ends.
# The id in the file is for readers (systemd's PIDFile=, kill `cat ...`).
#
# What is in the way decides the rest, as OverSIP and gunicorn do: a locked file, or the
# id of a live process that holds no lock (an instance of something else), refuses the
# start; a dead id (or an empty file) is stale and replaced; our own id is stale too (a
# container restarted under the same PID 1 finds its previous PID file). A file that does
# not hold a process id at all is refused rather than overwritten, in case the path given
# is not a PID file. The file is removed at exit while the lock is still held.

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ._settings import ConfigError


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


# Linux never hands out a process id above 2**22 (pid_max's ceiling).
_LARGEST_PID = 2**22


def _holder(path: Path) -> int | None:
    """The live process whose id ``path`` holds, if any."""
    try:
        text = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and 0 < int(text) <= _LARGEST_PID):
        raise ConfigError(f"pid file {path}: does not hold a process id; not replacing it")
    pid = int(text)
    return pid if pid != os.getpid() and _running(pid) else None


def _claim(path: Path) -> int:
    """Lock ``path`` and write our id in it; return the descriptor that holds the lock."""
    for _ in range(3):  # each retry follows a holder that removed the file as we opened it
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(path)
                running = f"process {holder}" if holder is not None else "another instance"
                raise ConfigError(f"pid file {path}: {running} is running; not starting") from None
            if not _is(fd, path):
                os.close(fd)
                continue
            holder = _holder(path)
            if holder is not None:
                raise ConfigError(f"pid file {path}: process {holder} is running; not starting")
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        except BaseException:
            os.close(fd)
            raise
    raise ConfigError(f"pid file {path}: another process keeps replacing it; not starting")


def _is(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (mine.st_dev, mine.st_ino)


def _release(path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        if _is(fd, path):
            path.unlink()  # before the lock goes, so no one takes a file about to vanish
    os.close(fd)


@contextlib.contextmanager
def pid_file(path: Path) -> Iterator[None]:
    """Hold ``path`` as this process's PID file for the duration of the block.

    Args:
        path: where to write the process id; its directory must exist.

    Raises:
        ConfigError: another instance holds the file, a live process's id is in it, it
            holds something else than a process id, or it cannot be written.

    Example::

        with pid_file(Path("/run/oversip-hooks/pid")):
            status = trio.run(runtime.run)
    """
    try:
        fd = _claim(path)
    except OSError as exc:
        raise ConfigError(f"pid file {path}: {exc.strerror}") from exc
    try:
        yield
    finally:
        _release(path, fd)
