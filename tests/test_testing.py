"""The testing toolkit catches real mistakes, stays isolated, and its guide runs as written."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis.stateful import invariant, run_state_machine_as_test

from oversip_hooks import Runtime, SystemCallbacks, fatal, get_logger, hookimpl
from oversip_hooks._callbacks import _global_registry
from oversip_hooks.testing import (
    Fault,
    HookCall,
    LifecycleHarness,
    LifecycleInvariantError,
    check_lifecycle_invariants,
)
from oversip_hooks.testing.hypothesis import LifecycleMachine

GUIDE = Path(__file__).parent.parent / "docs" / "testing.md"


class LeakyPool:
    """Opens a connection in started and forgets to close it in terminated."""

    def __init__(self) -> None:
        self.open_connections = 0

    @hookimpl
    def started(self) -> None:
        self.open_connections += 1

    @hookimpl
    def terminated(self) -> None:
        pass  # the bug: nothing is closed


class LeakyPoolMachine(LifecycleMachine):
    def make_plugins(self) -> list[LeakyPool]:
        self.pool = LeakyPool()
        return [self.pool]

    @invariant()
    def nothing_left_open_once_stopped(self) -> None:
        if self.harness.stopped and self.harness.calls_to("terminated"):
            assert self.pool.open_connections == 0, "a connection was left open"


def test_the_state_machine_catches_a_plugin_that_never_closes_what_it_opened():
    with pytest.raises(AssertionError, match="a connection was left open"):
        run_state_machine_as_test(LeakyPoolMachine, settings=settings(max_examples=30))


def test_the_harness_shows_a_raising_terminated(lifecycle):
    class BrokenCleanup:
        @hookimpl
        def terminated(self) -> None:
            raise OSError("disk full while flushing")

    lifecycle.register(BrokenCleanup(), name="broken")
    assert lifecycle.run() == 1
    [call] = lifecycle.calls_to("terminated")
    assert isinstance(call.raised, OSError)
    assert lifecycle.trace == ["broken.terminated(error=False) raised OSError"]
    assert lifecycle.lines[-1] == "CRIT: <runtime> exiting with error status"


def test_the_harness_shows_fatal_on_bad_settings(lifecycle):
    class Strict:
        @hookimpl
        def initialize(self) -> None:
            fatal("size must be positive")

    lifecycle.register(Strict(), name="strict")
    assert lifecycle.run("reload") == 1
    assert lifecycle.fatal_message == "size must be positive"
    assert [line for line in lifecycle.lines if not line.startswith("DEBUG")][:2] == [
        "CRIT: <strict> size must be positive",
        "CRIT: <runtime> exiting with error status",
    ]


def test_timeouts_take_no_time_under_a_mock_clock(make_lifecycle):
    class Hangs:
        @hookimpl
        async def terminated(self) -> None:
            await trio.sleep_forever()

    lifecycle = make_lifecycle(Hangs(), shutdown_timeout=3600)
    clock = trio.testing.MockClock(autojump_threshold=0)
    assert lifecycle.run(clock=clock) == 1
    assert clock.current_time() >= 3600
    assert lifecycle.trace == ["Hangs.terminated(error=False) cancelled"]


def test_inject_failure_during_a_run_needs_the_injector_registered_first(lifecycle):
    async def attempt() -> None:
        async with lifecycle.running():
            lifecycle.inject_failure("reload")

    with pytest.raises(RuntimeError, match=r"needs register_fault_injector\(\) before it"):
        trio.run(attempt)


def test_injected_faults_arrive_in_the_phase_asked_for(lifecycle):
    assert lifecycle.run("reload", Fault("reload", "fatal"), "reload") == 1
    assert lifecycle.trace == [
        "faults.initialize", "faults.started", "faults.reload",
        "faults.reload raised FatalError", "faults.terminated(error=True)",
    ]  # fmt: skip


@pytest.mark.parametrize("run", [1, 2])
def test_callbacks_registered_in_a_test_do_not_leak(lifecycle, run):
    SystemCallbacks.on_started(lambda: None)
    assert len(lifecycle.callbacks.impls("started")) == 1
    assert _global_registry.impls("started") == []


def test_caplog_sees_loguru_records(lifecycle, caplog):
    lifecycle.inject_failure("started", "fatal")
    lifecycle.run()
    messages = [(r.levelname, r.extra["log_id"], r.getMessage()) for r in caplog.records]
    assert ("CRIT", "faults", "injected fatal in started") in messages


def test_the_invariant_checker_catches_a_broken_runtime():
    harness = LifecycleHarness()
    harness.calls += [
        HookCall("a", "started"),
        HookCall("b", "started"),
        HookCall("a", "terminated", error=False),
        HookCall("b", "terminated", error=False),
        HookCall("a", "reload"),
    ]
    with pytest.raises(LifecycleInvariantError) as info:
        check_lifecycle_invariants(harness)
    assert "a.reload ran after terminated had begun" in str(info.value)
    assert "terminated order ['a', 'b'] is not the reverse of started" in str(info.value)


def test_signals_through_the_harness_reach_the_runtime(lifecycle):
    assert lifecycle.run(signal.SIGHUP, signal.SIGQUIT) == 0
    assert "NOTICE: <runtime> SIGQUIT signal received, exiting..." in lifecycle.lines
    assert "NOTICE: <runtime> SIGHUP signal received, reloading..." in lifecycle.lines


@pytest.mark.slow
def test_the_guide_runs_as_written(pytester):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    pytester.makepyfile(test_pool=f"{blocks[0]}\n{blocks[1]}")
    result = pytester.runpytest_subprocess("-p", "trio", "-o", "trio_mode=true", "-q")
    result.assert_outcomes(passed=5)


async def test_two_harnesses_at_once_each_keep_their_own_records(make_lifecycle):
    class Says:
        def __init__(self, word: str) -> None:
            self.word = word

        @hookimpl
        def started(self) -> None:
            get_logger(self.word).log_system_info(self.word)

    first, second = make_lifecycle(Says("first")), make_lifecycle(Says("second"))
    async with first.running(), second.running():
        pass
    assert "INFO: <first> first" in first.lines
    assert "INFO: <second> second" not in first.lines
    assert "INFO: <second> second" in second.lines


async def test_a_hook_cancelled_inside_its_own_nursery_is_recorded_as_cancelled(lifecycle):
    class Stopper:
        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            runtime.stop()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)

    lifecycle.register(Stopper(), name="stopper")
    assert await lifecycle.play() == 0
    assert lifecycle.trace == ["stopper.started cancelled"]


def test_play_arms_startup_faults_before_the_start_and_refuses_them_later(make_lifecycle):
    lifecycle = make_lifecycle()
    assert lifecycle.run(Fault("started", "fatal")) == 1
    assert lifecycle.fatal_message == "injected fatal in started"
    with pytest.raises(ValueError, match="can only come before every other event"):
        make_lifecycle().run("reload", Fault("initialize"))


def test_the_invariants_accept_what_the_runtime_rightly_does(lifecycle):
    """A plugin without terminated, and a service failing once the shutdown has begun."""
    lost = trio.Event()

    class Reader:
        async def read(self) -> None:
            await lost.wait()
            raise ConnectionError("connection closed under the reader")

        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.start_soon(self.read)

    class Closer:
        @hookimpl
        async def terminated(self) -> None:
            lost.set()
            await trio.testing.wait_all_tasks_blocked()

    lifecycle.register(Reader(), name="reader")
    lifecycle.register(Closer(), name="closer")
    assert lifecycle.run() == 1
    check_lifecycle_invariants(lifecycle)
