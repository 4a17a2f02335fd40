# A PID file is claimed with link(2): the process id is written in full to a temporary file
# beside it, which is then linked to the real name, and link(2) fails when that name
# exists. A reader therefore never sees a half-written file, and of two instances started
# together only one wins. O_CREAT|O_EXCL was rejected because it leaves a window in which
# the file exists but is empty, which the other instance would take for stale.
#
# What is in the way decides the rest, as OverSIP and gunicorn do: the id of a live process
# refuses the start; a dead one (or an empty file) is stale and replaced; our own id is
# stale too (a container restarted under the same PID 1 finds its previous PID file). A
# file that does not hold a process id at all is refused rather than overwritten, in case
# the path given is not a PID file. The file is removed at exit only if it still holds our
# id, so that an instance never removes another's.

from __future__ import annotations

import contextlib
import os
import tempfile
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


def _claim(path: Path) -> None:
    pid = str(os.getpid())
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            os.fchmod(file.fileno(), 0o644)  # readable by all, as PID files are
            file.write(pid + "\n")
        for _ in range(2):  # a stale file is removed once, then the link is tried again
            try:
                os.link(temporary, path)
                return
            except FileExistsError:
                holder = _holder(path)
                if holder is not None:
                    raise ConfigError(
                        f"pid file {path}: process {holder} is running; not starting"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        raise ConfigError(f"pid file {path}: another process keeps writing it; not starting")
    finally:
        os.unlink(temporary)


def _release(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()


@contextlib.contextmanager
def pid_file(path: Path) -> Iterator[None]:
    """Hold ``path`` as this process's PID file for the duration of the block.

    Args:
        path: where to write the process id; its directory must exist.

    Raises:
        ConfigError: a live process's id is in the file, the file holds something else,
            or it cannot be written.

    Example::

        with pid_file(Path("/run/oversip-hooks/pid")):
            status = trio.run(runtime.run)
    """
    try:
        _claim(path)
    except OSError as exc:
        raise ConfigError(f"pid file {path}: {exc.strerror}") from exc
    try:
        yield
    finally:
        _release(path)
