"""The testing toolkit without traps (issue 10 §4): trio's autojump clock does not jump
while a worker thread of the run works, the guide documents every default and attribute
of the harness, and log records stay in memory."""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import trio
import trio.testing

from oversip_hooks import hookimpl
from oversip_hooks.testing import LifecycleHarness

GUIDE = Path(__file__).parent.parent / "docs" / "testing.md"

WORK = 0.2  # real seconds of blocking work in a worker thread


class Blocking:
    """Blocking work in `trio.to_thread`, as the building guide says: in `started`, in
    `reload` and in `terminated`."""

    def __init__(self) -> None:
        self.done: list[str] = []

    async def _work(self, hook: str) -> None:
        await trio.to_thread.run_sync(time.sleep, WORK)
        self.done.append(hook)

    @hookimpl
    async def started(self) -> None:
        await self._work("started")

    @hookimpl
    async def reload(self) -> None:
        await self._work("reload")

    @hookimpl
    async def terminated(self) -> None:
        await self._work("terminated")


# -- the clock -------------------------------------------------------------------------------


async def test_the_autojump_clock_does_not_jump_while_a_worker_thread_works(
    lifecycle, autojump_clock
):
    blocking = Blocking()
    lifecycle.register(blocking, name="blocking")
    assert await lifecycle.play("reload") == 0
    assert blocking.done == ["started", "reload", "terminated"]
    assert not [line for line in lifecycle.lines if "within" in line], lifecycle.lines
    assert trio.current_time() < 1  # no timeout's worth of virtual time went by


def test_a_sync_test_s_mock_clock_does_not_jump_while_a_worker_thread_works(lifecycle):
    blocking = Blocking()
    lifecycle.register(blocking, name="blocking")
    clock = trio.testing.MockClock(autojump_threshold=0)
    assert lifecycle.run("reload", clock=clock) == 0
    assert blocking.done == ["started", "reload", "terminated"]
    assert clock.autojump_threshold == 0  # given back after the run


class ThreadThenForever:
    """Works in a thread, then waits for ever: the startup timeout must still end it,
    in no time."""

    @hookimpl
    async def started(self) -> None:
        await trio.to_thread.run_sync(time.sleep, WORK)
        await trio.sleep_forever()


async def test_the_clock_jumps_again_once_the_threads_are_done(make_lifecycle, autojump_clock):
    harness = make_lifecycle({"slow": ThreadThenForever()}, startup_timeout=30)
    began = time.monotonic()
    assert await harness.play() == 1
    assert time.monotonic() - began < 10  # a real 30 s timeout would have taken 30
    crit = [line for line in harness.lines if line.startswith("CRIT:")]
    assert "did not complete within" in crit[0]
    assert "30 s" in crit[0]
    assert autojump_clock.autojump_threshold == 0
    assert trio.current_time() >= 30


async def test_two_harnesses_in_one_run_share_the_clock_s_hold(make_lifecycle, autojump_clock):
    first, second = make_lifecycle({"a": Blocking()}), make_lifecycle({"b": Blocking()})
    async with first.running(), second.running():
        await trio.to_thread.run_sync(time.sleep, WORK / 2)
    assert (first.exit_status, second.exit_status) == (0, 0)
    assert autojump_clock.autojump_threshold == 0


async def test_a_real_clock_is_left_alone(lifecycle):
    lifecycle.register(Blocking(), name="blocking")
    assert await lifecycle.play() == 0
    assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


async def test_a_threshold_the_test_sets_during_the_run_is_kept(lifecycle, autojump_clock):
    class SetsItsOwn:
        @hookimpl
        async def started(self) -> None:
            await trio.to_thread.run_sync(time.sleep, 0.01)
            autojump_clock.autojump_threshold = math.inf

    lifecycle.register(SetsItsOwn(), name="own")
    async with lifecycle.running():
        pass
    assert autojump_clock.autojump_threshold == math.inf


# -- the guide -------------------------------------------------------------------------------


def test_the_guide_gives_every_default_of_the_harness():
    guide = GUIDE.read_text()
    for name, parameter in inspect.signature(LifecycleHarness).parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            row = f"| `{name}` | `{parameter.default!r}` |"
            assert row in guide, f"docs/testing.md has no row {row!r}"


def test_the_guide_documents_every_attribute_of_the_harness():
    guide = GUIDE.read_text()
    harness = LifecycleHarness()
    public = {name for name in [*dir(harness), *vars(harness)] if not name.startswith("_")}
    documented = set(re.findall(r"`(?:await |async with |with )?harness\.(\w+)", guide))
    assert public - documented == set(), "missing from docs/testing.md"
    assert documented - public == set(), "documented but not an attribute"


def test_the_guide_gives_the_harness_s_own_timeouts():
    guide = GUIDE.read_text()
    assert "5 s" in guide
    assert "trio.to_thread" in guide


# -- log records stay in memory -----------------------------------------------------------


def test_the_default_handler_prints_nothing_while_a_harness_is_isolated():
    script = textwrap.dedent(
        """
        from loguru import logger
        from oversip_hooks import get_logger, hookimpl
        from oversip_hooks.testing import LifecycleHarness

        class Says:
            @hookimpl
            def started(self):
                get_logger("says").log_system_notice("from the run")

        mine = []
        sink = logger.add(mine.append, format="{message}")
        harness = LifecycleHarness({"says": Says()})
        with harness.isolated():
            get_logger("test").log_system_notice("from the test")
            assert harness.run() == 0
        assert "NOTICE: <says> from the run" in harness.lines, harness.lines
        assert "NOTICE: <test> from the test" in harness.lines, harness.lines
        assert any("from the run" in line for line in mine), mine  # other sinks: all
        logger.remove(sink)
        get_logger("test").log_system_notice("after the harness")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "from the run" not in done.stderr
    assert "from the test" not in done.stderr
    assert "after the harness" in done.stderr  # the default handler is back as it was
