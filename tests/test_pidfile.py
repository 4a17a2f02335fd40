"""The PID file cannot be turned against the host (issue 9, section 6): whatever someone
else plants at its path in a world-writable directory (a symlink, dangling or not, a hard
link, a FIFO, a device, a file of theirs) is refused with one line and exit status 2,
and left as it was. The real command runs in a child process, as root and as nobody, in
a sticky world-writable directory (as /tmp is), with the planted files made by root."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oversip_hooks._pidfile import check_pid_file, pid_file
from oversip_hooks._settings import ConfigError
from tests.processes import COMMAND, Child, Spawn, child_env, command

NOBODY = 65534
AS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="planting files owned by another user and running the command as another user "
    "need root (CI runs as root)",
)

SERVER = "def started():\n    pass\n"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A sticky, world-writable directory that nobody can reach (pytest's tmp_path is
    under a directory only root can enter), holding a world-readable server file."""
    directory = Path(tempfile.mkdtemp(prefix="oversip-hooks-pid-", dir="/tmp"))
    directory.chmod(0o1777)
    (directory / "server.py").write_text(SERVER)
    (directory / "server.py").chmod(0o644)
    yield directory
    shutil.rmtree(directory)


USERS = [pytest.param(0, id="as-root"), pytest.param(NOBODY, id="as-nobody")]


def argv_as(uid: int) -> list[str]:
    if uid == 0:
        return list(COMMAND)
    # CAP_DAC_READ_SEARCH lets nobody read the interpreter and the project wherever the
    # checkout is (CI's is under a directory only root may enter); what the PID file
    # checks are about, writing and owning files, stays nobody's.
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        *COMMAND,
    ]


def someone_else(uid: int) -> int:
    """A user other than ``uid``, who owns the files planted for a run as ``uid``."""
    return NOBODY if uid == 0 else 0


def victim(directory: Path, owner: int) -> Path:
    """An empty file of ``owner``'s that anyone may write: only our checks protect it."""
    path = directory / "victim"
    path.touch()
    path.chmod(0o666)
    os.chown(path, owner, owner)
    return path


# Each plants something at `pid` for someone else (`owner`) and returns the line expected.
Plant = Callable[[Path, int], str]


def symlink_to_their_file(directory: Path, owner: int) -> str:
    os.symlink(victim(directory, owner), directory / "pid")
    os.lchown(directory / "pid", owner, owner)
    return "is a symbolic link; not writing through it"


def dangling_symlink(directory: Path, owner: int) -> str:
    os.symlink(directory / "nologin", directory / "pid")  # /etc/nologin would do as well
    os.lchown(directory / "pid", owner, owner)
    return "is a symbolic link; not writing through it"


def hard_link_to_their_file(directory: Path, owner: int) -> str:
    os.link(victim(directory, owner), directory / "pid")
    return "has 2 hard links; not writing to a file linked elsewhere"


def their_file(directory: Path, owner: int) -> str:
    victim(directory, owner).rename(directory / "pid")
    return rf"is owned by uid {owner}, not by us \(uid \d+\); not writing to it"


def fifo(directory: Path, owner: int) -> str:
    os.mkfifo(directory / "pid", 0o666)
    os.chown(directory / "pid", owner, owner)
    return "is a FIFO, not a regular file; not writing to it"


def device(directory: Path, owner: int) -> str:
    os.mknod(directory / "pid", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null
    os.chown(directory / "pid", owner, owner)
    return "is a character device, not a regular file; not writing to it"


def directory_(directory: Path, owner: int) -> str:
    (directory / "pid").mkdir(mode=0o777)
    os.chown(directory / "pid", owner, owner)
    return "is a directory, not a regular file; not writing to it"


PLANTS = [
    pytest.param(plant, id=plant.__name__.strip("_"))
    for plant in (
        symlink_to_their_file,
        dangling_symlink,
        hard_link_to_their_file,
        their_file,
        fifo,
        device,
        directory_,
    )
]


def snapshot(directory: Path) -> dict[str, tuple[int, int, int, int, int, bytes]]:
    """Every entry of ``directory``: kind, inode, owner, size, mtime and content."""
    found = {}
    for entry in sorted(directory.iterdir()):
        status = entry.lstat()
        content = entry.read_bytes() if stat.S_ISREG(status.st_mode) else b""
        found[entry.name] = (
            stat.S_IFMT(status.st_mode),
            status.st_ino,
            status.st_uid,
            status.st_size,
            status.st_mtime_ns,
            content,
        )
    return found


@AS_ROOT
@pytest.mark.parametrize("uid", USERS)
@pytest.mark.parametrize("plant", PLANTS)
async def test_a_planted_pid_file_is_refused_and_left_alone(
    shared: Path, uid: int, plant: Plant
) -> None:
    expected = plant(shared, someone_else(uid))
    before = snapshot(shared)

    finished = await command(
        shared, "run", "server.py", "--pidfile", "pid", env=child_env(shared), argv=argv_as(uid)
    )

    assert finished.status == 2, finished.err
    assert len(finished.err) == 1, finished.err
    assert re.fullmatch(rf"oversip-hooks: error: pid file pid: {expected}", finished.err[0])
    assert snapshot(shared) == before  # nothing written, created or removed


async def running_with_a_pid_file(shared: Path, spawn: Spawn, uid: int) -> Child:
    """The command, run as ``uid`` with the PID file ``shared/pid``, once running."""
    child = await spawn(
        "run",
        str(shared / "server.py"),
        "--pidfile",
        str(shared / "pid"),
        env=child_env(shared),
        argv=argv_as(uid),
    )
    await child.line("<runtime> running")
    return child


@AS_ROOT
@pytest.mark.parametrize("uid", USERS)
async def test_the_pid_file_is_ours_while_running_and_removed_at_exit(
    shared: Path, spawn: Spawn, uid: int
) -> None:
    child = await running_with_a_pid_file(shared, spawn, uid)
    status = (shared / "pid").lstat()
    assert (shared / "pid").read_text() == f"{child.pid}\n"
    assert (status.st_uid, status.st_nlink, stat.S_ISREG(status.st_mode)) == (uid, 1, True)

    os.kill(child.pid, signal.SIGTERM)

    assert await child.finish() == 0
    assert not (shared / "pid").exists()


@AS_ROOT
@pytest.mark.parametrize("uid", USERS)
async def test_only_the_file_this_process_created_is_removed_at_exit(
    shared: Path, spawn: Spawn, uid: int
) -> None:
    child = await running_with_a_pid_file(shared, spawn, uid)
    replacement = shared / "replacement"
    replacement.write_text("someone else's\n")
    replacement.replace(shared / "pid")  # root may, in a sticky directory

    os.kill(child.pid, signal.SIGTERM)

    assert await child.finish() == 0
    assert (shared / "pid").read_text() == "someone else's\n"


# -- in process: check_pid_file and PidFile.remove ----------------------------------------


@AS_ROOT
@pytest.mark.parametrize("plant", PLANTS)
def test_check_pid_file_refuses_what_pid_file_refuses_and_writes_nothing(
    shared: Path, plant: Plant
) -> None:
    expected = plant(shared, NOBODY)
    before = snapshot(shared)
    with pytest.raises(ConfigError) as checked:
        check_pid_file(shared / "pid")
    assert snapshot(shared) == before
    with pytest.raises(ConfigError) as taken, pid_file(shared / "pid"):
        pass
    assert snapshot(shared) == before
    assert str(checked.value) == str(taken.value)
    assert re.fullmatch(rf"pid file {shared}/pid: {expected}", str(checked.value))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda: f"{os.getppid()}\n", r"process \d+ is running; not starting"),
        (lambda: "nameserver 127.0.0.1\n", "does not hold a process id; not replacing it"),
        (lambda: "9" * 5000, "does not hold a process id; not replacing it"),
        (lambda: "\u00b2\n", "does not hold a process id; not replacing it"),
        (lambda: " 1_0\n", "does not hold a process id; not replacing it"),
    ],
)
def test_check_pid_file_refuses_a_file_in_use_or_not_a_pid_file(
    tmp_path: Path, content: Callable[[], str], expected: str
) -> None:
    path = tmp_path / "pid"
    path.write_text(content())
    with pytest.raises(ConfigError, match=rf"^pid file {path}: {expected}$"):
        check_pid_file(path)
    assert path.read_text() == content()


def test_check_pid_file_refuses_a_missing_directory_and_a_held_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file or directory"):
        check_pid_file(tmp_path / "missing" / "pid")
    check_pid_file(tmp_path / "pid")  # can be created: fine, and not created
    assert not (tmp_path / "pid").exists()
    (tmp_path / "pid").write_text("")
    check_pid_file(tmp_path / "pid")  # empty: stale
    with pid_file(tmp_path / "pid"):
        (tmp_path / "pid").write_text(f"{os.getppid()}\n")
        with pytest.raises(ConfigError, match=r"process \d+ is running; not starting"):
            check_pid_file(tmp_path / "pid")


def test_remove_from_another_thread_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "pid"
    with pid_file(path) as held:
        assert path.read_text() == f"{os.getpid()}\n"
        remover = threading.Thread(target=held.remove)
        remover.start()
        remover.join()
        assert not path.exists()
        held.remove()
        path.write_text("a new file\n")  # someone else's now: exiting leaves it
    assert path.read_text() == "a new file\n"
