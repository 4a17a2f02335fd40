"""`oversip-hooks new NAME`: the skeleton it writes, what it refuses, and that the module it
writes installs, passes its own tests and runs under the real command."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import trio

from .processes import (
    Datagrams,
    Spawn,
    child_env,
    command,
    notifications_until,
    venv_seeing_this_one,
)

NEW = [sys.executable, "-m", "oversip_hooks", "new"]

SKELETON = {
    "pyproject.toml",
    "README.md",
    "src/oversip_mod_heartbeat/__init__.py",
    "src/oversip_mod_heartbeat/py.typed",
    "tests/test_heartbeat.py",
}


def files(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()}


async def test_new_writes_the_skeleton(tmp_path: Path) -> None:
    done = await command(tmp_path, "heartbeat", argv=NEW)
    assert done.status == 0, done.err
    target = tmp_path / "oversip-mod-heartbeat"
    assert files(target) == SKELETON
    pyproject = (target / "pyproject.toml").read_text()
    assert '[project.entry-points.oversip_hooks]\nheartbeat = "oversip_mod_heartbeat"' in pyproject
    assert "trio_mode = true" in pyproject
    assert "$" not in "".join(path.read_text() for path in target.rglob("*") if path.is_file())


@pytest.mark.parametrize("name", ["Heartbeat", "heart-beat", "1beat", "_beat", "class", ""])
async def test_new_refuses_a_name_that_is_not_a_lowercase_identifier(
    tmp_path: Path, name: str
) -> None:
    done = await command(tmp_path, name, argv=NEW)
    assert done.status == 2
    assert len(done.err) == 1
    assert done.err[0].startswith("oversip-hooks: error: ")
    assert "lowercase identifier" in done.err[0]
    assert os.listdir(tmp_path) == []


async def test_new_overwrites_nothing(tmp_path: Path) -> None:
    target = tmp_path / "oversip-mod-heartbeat"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    done = await command(tmp_path, "heartbeat", argv=NEW)
    assert done.status == 2
    assert done.err == [f"oversip-hooks: error: {target} already exists; nothing was written"]
    assert files(target) == {"mine.txt"}

    target.rename(tmp_path / "elsewhere")
    target.symlink_to(tmp_path / "missing")  # dangling: still there, still refused
    assert (await command(tmp_path, "heartbeat", argv=NEW)).status == 2
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow
async def test_a_new_module_installs_passes_its_tests_and_runs(
    tmp_path: Path, spawn: Spawn
) -> None:
    assert (await command(tmp_path, "heartbeat", argv=NEW)).status == 0
    project = tmp_path / "oversip-mod-heartbeat"

    # The module is installed only there, not editable (hatchling's editable build needs
    # `editables`, which is not here), so its tests, under src/, run against the installed
    # package.
    python = await venv_seeing_this_one(tmp_path)
    with trio.fail_after(120):
        await trio.run_process(
            [
                *(sys.executable, "-m", "pip", "--python", python, "install", "--quiet"),
                *("--disable-pip-version-check", "--no-build-isolation", "--no-deps"),
                str(project),
            ]
        )

    env = child_env(tmp_path)
    del env["PYTHONPATH"]  # the module comes from the new environment, not tmp_path
    with trio.fail_after(120):
        tested = await trio.run_process(
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=project,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert tested.returncode == 0, tested.stdout.decode() + tested.stderr.decode()
    assert " passed" in tested.stdout.decode()

    notify = Datagrams(socket.AF_UNIX, str(tmp_path / "notify"))
    try:
        child = await spawn(
            "run",
            env={**env, "NOTIFY_SOCKET": str(notify.address), "HEARTBEAT_PERIOD": "0.2"},
            argv=[python, "-m", "oversip_hooks"],
        )
        await child.line("INFO: <heartbeat> started: a beat every 0.2 s")
        assert (await notifications_until(notify, "READY"))[-1]["READY"] == "1"
        os.kill(child.pid, signal.SIGHUP)
        await child.line("INFO: <heartbeat> reloaded: ")
        os.kill(child.pid, signal.SIGTERM)
        assert await child.finish() == 0
    finally:
        notify.close()
    assert any("INFO: <heartbeat> stopped after " in line for line in child.lines)
