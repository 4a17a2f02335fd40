"""Fixtures of the SQLite module's tests: real database files under tmp_path, the real
runtime through oversip_hooks.testing, real worker threads, and the real command in a
child process."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from subprocess import DEVNULL, PIPE
from typing import Any

import pytest
import trio
from oversip_hooks.testing import LifecycleHarness

from sqlite_helpers import Child, Connections, PoolUser, Spawn, register_pool


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def with_pool(
    lifecycle: LifecycleHarness, database: Path
) -> Callable[..., tuple[PoolUser, Connections]]:
    """:func:`register_pool` on the ``lifecycle`` harness and the ``database`` file."""

    def register(**settings: Any) -> tuple[PoolUser, Connections]:
        return register_pool(lifecycle, database, **settings)

    return register


# -- the command, in a child process -----------------------------------------------------


@pytest.fixture
def entry_point_installed() -> None:
    found = importlib.metadata.entry_points(group="oversip_hooks", name="sqlite")
    if not found:
        pytest.fail(
            "the entry point 'sqlite' is not installed: pip install -e contrib/oversip-mod-sqlite"
        )


@pytest.fixture
async def spawn(entry_point_installed: None, tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start ``python -m oversip_hooks ARGS`` in ``tmp_path``; killed at the end if it
    still runs."""
    children: list[Child] = []
    async with trio.open_nursery() as nursery:

        async def start(*args: str, **environ: str) -> Child:
            # The command's own settings come from the test alone.
            env = {k: v for k, v in os.environ.items() if not k.startswith("OVERSIP_HOOKS_")}
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "oversip_hooks", *args],
                cwd=tmp_path,
                env={**env, **environ},
                stdin=DEVNULL,
                stdout=PIPE,
                stderr=PIPE,
            )
            child = Child(process)
            assert process.stdout is not None
            assert process.stderr is not None
            nursery.start_soon(child.read, process.stdout, child.out)
            nursery.start_soon(child.read, process.stderr, child.err)
            children.append(child)
            return child

        try:
            yield start
        finally:
            for child in children:
                if child.process.returncode is None:
                    child.process.kill()
