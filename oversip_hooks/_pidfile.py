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
#
# The PID file often lives in a directory others can write to (/tmp, /run/user/...), and
# we may be root: whatever someone else put at the path must not become a way to make us
# write or create a file of their choosing. So the file is only ever opened with
# O_NOFOLLOW (a symlink, dangling or not, is refused, never followed), created with
# O_EXCL, opened with O_NONBLOCK (a FIFO cannot hang us) and then checked with fstat on the
# open descriptor, not the path: a regular file, with one link (a hard link to a file
# elsewhere is refused), owned by our effective uid. It is read from that descriptor, at
# most _LONGEST_CONTENT bytes. At exit it is removed only if the path still names the very
# file we opened (st_dev and st_ino), and lstat, not stat, says so.

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from ._settings import LARGEST_PID, ConfigError, parse_int

# A process id and a newline, with room to spare; a longer file is not a PID file.
_LONGEST_CONTENT = 64

_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = [
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _refuse_unless_ours(path: Path, found: os.stat_result) -> None:
    """Refuse anything at ``path`` but a regular file with one link that we own."""
    mode = found.st_mode
    if stat.S_ISLNK(mode):
        raise ConfigError(f"pid file {path}: is a symbolic link; not writing through it")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise ConfigError(f"pid file {path}: is {kind}, not a regular file; not writing to it")
    if found.st_nlink != 1:
        raise ConfigError(
            f"pid file {path}: has {found.st_nlink} hard links; not writing to a file "
            "linked elsewhere"
        )
    if found.st_uid != os.geteuid():
        raise ConfigError(
            f"pid file {path}: is owned by uid {found.st_uid}, not by us (uid "
            f"{os.geteuid()}); not writing to it"
        )


def _open(path: Path, *, create: bool) -> int | None:
    """Open ``path`` for reading and writing, creating it if ``create`` and it does not
    exist; ``None`` if it does not exist and not ``create``. Never follows a symlink or
    blocks on a FIFO; whatever is opened is a regular file with one link that we own."""
    if create:
        with contextlib.suppress(FileExistsError):
            return os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        # Looked at before it is opened, so that a device is refused without being opened.
        _refuse_unless_ours(path, os.lstat(path))
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since lstat
            raise ConfigError(
                f"pid file {path}: is a symbolic link; not writing through it"
            ) from None
        raise
    try:
        _refuse_unless_ours(path, os.fstat(fd))  # what is open, whatever lstat saw
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holder(path: Path, fd: int) -> int | None:
    """The live process whose id the file open as ``fd`` holds, if any."""
    text = os.pread(fd, _LONGEST_CONTENT + 1, 0).strip()
    if not text:
        return None
    try:
        if len(text) > _LONGEST_CONTENT:
            raise ConfigError("too long")
        pid = parse_int(text.decode("ascii"), low=1, high=LARGEST_PID)
    except (ConfigError, UnicodeDecodeError):
        raise ConfigError(
            f"pid file {path}: does not hold a process id; not replacing it"
        ) from None
    return pid if pid != os.getpid() and _running(pid) else None


def _is(fd: int, path: Path) -> bool:
    """Whether ``path`` itself (not a symlink's target) names the file open as ``fd``."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (mine.st_dev, mine.st_ino)


def _in_use(path: Path, fd: int) -> ConfigError:
    """The refusal of a file that another instance holds locked."""
    holder = _holder(path, fd)
    running = f"process {holder}" if holder is not None else "another instance"
    return ConfigError(f"pid file {path}: {running} is running; not starting")


def _take(path: Path, fd: int) -> bool:
    """Lock the file open as ``fd``, refusing it if someone else holds it; ``False`` if
    ``path`` no longer names it (a holder removed it as we opened it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(path, fd) from None
    if not _is(fd, path):
        return False
    holder = _holder(path, fd)
    if holder is not None:
        raise ConfigError(f"pid file {path}: process {holder} is running; not starting")
    return True


def _claim(path: Path) -> int:
    """Lock ``path`` and write our id in it; return the descriptor that holds the lock."""
    for _ in range(3):  # each retry follows a holder that removed the file as we opened it
        fd = _open(path, create=True)
        if fd is None:
            continue
        try:
            if not _take(path, fd):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise
    raise ConfigError(f"pid file {path}: another process keeps replacing it; not starting")


class PidFile:
    """The PID file this process holds, as :func:`pid_file` yields it.

    Example::

        with pid_file(Path("/run/oversip-hooks/pid")) as held:
            ...
            held.remove()   # from any thread, e.g. right before os._exit()
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def remove(self) -> None:
        """Remove the file if ``path`` still names the file this process created, then
        release the lock. Idempotent, and safe to call from any thread; never raises."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            with contextlib.suppress(OSError):
                if _is(fd, self.path):  # unlinked before the lock goes, so that no one
                    self.path.unlink()  # takes a file about to vanish
            with contextlib.suppress(OSError):
                os.close(fd)


def _reason(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"pid file {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def pid_file(path: Path) -> Iterator[PidFile]:
    """Hold ``path`` as this process's PID file for the duration of the block; removed
    at its end (see :meth:`PidFile.remove`).

    Args:
        path: where to write the process id; its directory must exist.

    Raises:
        ConfigError: anything :func:`check_pid_file` refuses, or another instance
            took the file first.

    Example::

        with pid_file(Path("/run/oversip-hooks/pid")):
            status = trio.run(runtime.run)
    """
    try:
        fd = _claim(path)
    except OSError as exc:
        raise _reason(path, exc) from exc
    held = PidFile(path, fd)
    try:
        yield held
    finally:
        held.remove()


def check_pid_file(path: Path) -> None:
    """Refuse, as :func:`pid_file` would, a PID file that cannot be taken, writing and
    creating nothing: a symlink, a hard link, anything but a regular file, a file owned
    by another user, one held by a running instance or holding a live process's id or
    something that is not a process id, or a missing or unwritable directory.

    Raises:
        ConfigError: one line naming the file and what is wrong.

    Example::

        check_pid_file(Path("/run/oversip-hooks/pid"))
    """
    try:
        fd = _open(path, create=False)
        if fd is None:
            _check_directory(path)
            return
        try:
            try:
                # Shared, and let go at once: a start racing with us still gets the file.
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _in_use(path, fd) from None
            holder = _holder(path, fd)
            if holder is not None:
                raise ConfigError(f"pid file {path}: process {holder} is running; not starting")
        finally:
            os.close(fd)
    except OSError as exc:
        raise _reason(path, exc) from exc


def _check_directory(path: Path) -> None:
    """Refuse a directory in which ``path`` cannot be created."""
    directory = path.parent
    if not stat.S_ISDIR(os.stat(directory).st_mode):
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))
