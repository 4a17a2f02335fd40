"""The lifecycle rules of README, one section per rule, through the real runtime."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pluggy
import pytest
import trio
import trio.testing
from loguru import logger

from oversip_hooks import (
    CallbackRegistry,
    HookCallEnded,
    HookCallStarted,
    Runtime,
    RuntimeState,
    SystemCallbacks,
    fatal,
    get_logger,
    get_plugin_manager,
    hookimpl,
)
from oversip_hooks.testing import LifecycleHarness

from .scripted import Script, ScriptedPlugin


def scripted(lifecycle: LifecycleHarness, *specs: str) -> None:
    """Register plugins from specs like ``"b: started=raise async"``."""
    for spec in specs:
        name, _, rest = spec.partition(":")
        plugin = ScriptedPlugin(name.strip())
        for item in rest.split(","):
            if item.strip():
                hook, _, how = item.strip().partition("=")
                outcome, *flags = how.split()
                plugin.scripts[hook] = Script(outcome, is_async="async" in flags)  # type: ignore[arg-type]
        lifecycle.register(plugin, name=plugin.name)


class Sync:
    @hookimpl
    def initialize(self) -> None: ...

    @hookimpl
    def started(self) -> None: ...

    @hookimpl
    def reload(self) -> None: ...

    @hookimpl
    def terminated(self, error: bool) -> None: ...


class StartsLast:
    @hookimpl(trylast=True)
    def started(self) -> None: ...

    @hookimpl
    def terminated(self) -> None: ...


class OnlyTerminated:
    @hookimpl
    def terminated(self) -> None: ...


class Async:
    @hookimpl
    async def initialize(self) -> None:
        await trio.lowlevel.checkpoint()

    @hookimpl
    async def started(self, runtime: Runtime) -> None:
        await trio.lowlevel.checkpoint()

    @hookimpl
    async def reload(self) -> None:
        await trio.lowlevel.checkpoint()

    @hookimpl
    async def terminated(self, runtime: Runtime, error: bool) -> None:
        await trio.lowlevel.checkpoint()


# -- 1. Order ----------------------------------------------------------------------------


async def test_hooks_run_in_registration_order_and_terminated_in_reverse(lifecycle):
    for name, plugin in [("a", Sync()), ("b", Async()), ("c", Sync())]:
        lifecycle.register(plugin, name=name)
    assert await lifecycle.play("reload", "reload") == 0
    assert lifecycle.trace == [
        "a.initialize", "b.initialize", "c.initialize",
        "a.started", "b.started", "c.started",
        "a.reload", "b.reload", "c.reload",
        "a.reload", "b.reload", "c.reload",
        "c.terminated(error=False)", "b.terminated(error=False)", "a.terminated(error=False)",
    ]  # fmt: skip


async def test_tryfirst_and_trylast_are_honoured_and_terminated_mirrors_started(lifecycle):
    class First:
        @hookimpl(tryfirst=True)
        def started(self) -> None: ...

        @hookimpl(tryfirst=True)
        def reload(self) -> None: ...

        @hookimpl
        def terminated(self) -> None: ...

    lifecycle.register(StartsLast(), name="last")
    lifecycle.register(Sync(), name="plain")
    lifecycle.register(First(), name="first")
    await lifecycle.play("reload")
    assert [str(c) for c in lifecycle.calls if c.hook != "initialize"] == [
        "first.started", "plain.started", "last.started",
        "first.reload", "plain.reload",
        "last.terminated(error=False)", "plain.terminated(error=False)",
        "first.terminated(error=False)",
    ]  # fmt: skip


async def test_a_plugin_without_started_terminates_in_its_registration_place(lifecycle):
    lifecycle.register(Sync(), name="a")
    lifecycle.register(OnlyTerminated(), name="b")
    lifecycle.register(Sync(), name="c")
    await lifecycle.play()
    assert [str(c) for c in lifecycle.calls_to("terminated")] == [
        "c.terminated(error=False)", "b.terminated(error=False)", "a.terminated(error=False)",
    ]  # fmt: skip


async def test_initialize_is_not_run_again_on_reload(lifecycle):
    lifecycle.register(Sync(), name="a")
    await lifecycle.play("reload", signal.SIGHUP, "reload")
    assert len(lifecycle.calls_to("initialize")) == 1
    assert len(lifecycle.calls_to("reload")) == 3


async def test_callbacks_act_as_one_plugin_registered_before_all_others(lifecycle):
    order: list[str] = []
    lifecycle.register(Sync(), name="module")

    @SystemCallbacks.on_started
    def first_started() -> None:
        order.append("started 1")

    @SystemCallbacks.on_started
    async def second_started(runtime: Runtime) -> None:
        order.append("started 2")

    SystemCallbacks.on_reload(lambda: order.append("reload"))
    SystemCallbacks.on_terminated(lambda error: order.append(f"terminated 1 error={error}"))
    SystemCallbacks.on_terminated(lambda: order.append("terminated 2"))

    await lifecycle.play("reload")
    assert order == ["started 1", "started 2", "reload", "terminated 2", "terminated 1 error=False"]
    assert [str(c) for c in lifecycle.calls if c.hook in ("started", "terminated")] == [
        "SystemCallbacks.started", "SystemCallbacks.started", "module.started",
        "module.terminated(error=False)",
        "SystemCallbacks.terminated(error=False)", "SystemCallbacks.terminated(error=False)",
    ]  # fmt: skip


async def test_callbacks_added_while_initialize_runs_take_part_in_that_run(lifecycle):
    events: list[str] = []

    class PoolModule:
        @hookimpl
        def initialize(self) -> None:
            # as oversip-mod-mysql's add_pool does
            SystemCallbacks.on_started(lambda: events.append("pool opened"))
            SystemCallbacks.on_terminated(lambda error: events.append(f"pool closed {error}"))

    lifecycle.register(PoolModule(), name="pool")
    assert await lifecycle.play() == 0
    assert events == ["pool opened", "pool closed False"]


async def test_callbacks_of_one_run_do_not_leak_into_the_next(make_lifecycle):
    events: list[str] = []

    class PoolModule:
        @hookimpl
        def initialize(self) -> None:
            SystemCallbacks.on_started(lambda: events.append("opened"))

    for _ in range(2):
        assert await make_lifecycle(PoolModule()).play() == 0
    assert events == ["opened", "opened"]


def test_a_callback_registered_after_started_began_is_refused(lifecycle):
    class Late:
        @hookimpl
        def reload(self) -> None:
            SystemCallbacks.on_started(lambda: None)

    lifecycle.register(Late(), name="late")
    assert lifecycle.run("reload") == 0
    assert any(
        "on_started() called after the 'started' hooks have run" in line for line in lifecycle.lines
    )


def test_callbacks_reject_what_is_not_callable_or_takes_unknown_arguments(lifecycle):
    with pytest.raises(TypeError, match=r"on_started\(\) takes a callable .* not int"):
        SystemCallbacks.on_started(42)  # type: ignore[type-var]
    with pytest.raises(TypeError, match=r"takes 'error', which 'reload' does not provide"):
        SystemCallbacks.on_reload(lambda error: None)
    with pytest.raises(TypeError, match=r"it may take any of: runtime, error"):
        SystemCallbacks.on_terminated(lambda exit_code: None)

    def handler(runtime: Runtime, error: bool) -> None: ...

    assert SystemCallbacks.on_terminated(handler) is handler


# -- 2. A failed start is fatal -----------------------------------------------------------


async def test_an_exception_in_started_stops_the_rest_and_terminates_the_started(lifecycle):
    scripted(lifecycle, "a:", "b: started=raise async", "c:")
    assert await lifecycle.play("reload") == 1
    assert lifecycle.trace == [
        "a.initialize", "b.initialize", "c.initialize",
        "a.started", "b.started raised ScriptError",
        "a.terminated(error=True)",
    ]  # fmt: skip
    crit = [r for r in lifecycle.records if r.level == "crit"]
    assert [r.log_id for r in crit] == ["b", "runtime"]
    assert "started failed: ScriptError('b.started failed')" in crit[0].message
    assert crit[1].message == "exiting with error status"


async def test_fatal_in_started_logs_the_message_then_exiting_with_error_status(lifecycle):
    scripted(lifecycle, "a:", "b: started=fatal", "c:")
    assert await lifecycle.play() == 1
    assert lifecycle.fatal_message == "b.started called fatal"
    assert [line for line in lifecycle.lines if line.startswith("CRIT")] == [
        "CRIT: <b> b.started called fatal",
        "CRIT: <runtime> exiting with error status",
    ]
    assert lifecycle.trace[-1] == "a.terminated(error=True)"


@pytest.mark.parametrize("outcome", ["raise", "fatal"])
async def test_a_failure_in_initialize_starts_nothing(lifecycle, outcome):
    scripted(lifecycle, "a:", f"b: initialize={outcome}", "c:")
    assert await lifecycle.play() == 1
    assert lifecycle.trace == [
        "a.initialize",
        "b.initialize raised " + ("ScriptError" if outcome == "raise" else "FatalError"),
    ]


async def test_the_traceback_of_a_failed_hook_is_logged(lifecycle, loguru_caplog):
    scripted(lifecycle, "a: started=raise")
    await lifecycle.play()
    [record] = [r for r in loguru_caplog.records if r.levelname == "CRIT" and r.exc_info]
    assert record.exc_info[0].__name__ == "ScriptError"
    assert record.extra["log_id"] == "a"


async def test_fatal_with_an_exception_logs_its_type_and_traceback(lifecycle, loguru_caplog):
    class Checker:
        @hookimpl
        def started(self) -> None:
            try:
                int("ten")
            except ValueError as exc:
                fatal(exc)

    lifecycle.register(Checker(), name="checker")
    assert await lifecycle.play() == 1
    assert "CRIT: <checker> invalid literal for int() with base 10: 'ten' (ValueError)" in (
        lifecycle.lines
    )
    [record] = [r for r in loguru_caplog.records if r.exc_info]
    assert record.exc_info[0] is ValueError


# -- 3. Reloads never bring the service down ----------------------------------------------


async def test_a_raising_reload_is_logged_and_the_others_still_run(lifecycle):
    scripted(lifecycle, "a: reload=raise", "b: reload=ok async")
    assert await lifecycle.play("reload", "reload") == 0
    assert [str(c) for c in lifecycle.calls_to("reload")] == [
        "a.reload raised ScriptError", "b.reload",
        "a.reload raised ScriptError", "b.reload",
    ]  # fmt: skip
    assert sum("reload failed" in line for line in lifecycle.lines if "CRIT" in line) == 2
    assert lifecycle.trace[-1] == "a.terminated(error=False)"


async def test_fatal_in_reload_is_fatal(lifecycle):
    scripted(lifecycle, "a: reload=fatal", "b:")
    assert await lifecycle.play("reload", "reload") == 1
    assert lifecycle.trace[-5:] == [
        "a.started", "b.started",
        "a.reload raised FatalError",
        "b.terminated(error=True)", "a.terminated(error=True)",
    ]  # fmt: skip


async def test_reload_requests_during_a_reload_coalesce_into_one_more(lifecycle):
    release = trio.Event()
    entered = trio.Event()

    class SlowReload:
        @hookimpl
        async def reload(self) -> None:
            entered.set()
            await release.wait()

    lifecycle.register(SlowReload(), name="slow")
    async with lifecycle.running() as runtime:
        runtime.reload()
        await entered.wait()
        for _ in range(3):
            runtime.reload()
        release.set()
        await lifecycle.reload()  # returns once a reload begun after this request is done
    assert len(lifecycle.calls_to("reload")) == 2
    assert lifecycle.overlapping_calls == []


async def test_a_reload_requested_during_startup_runs_once_right_after_started(lifecycle):
    class EarlyReloader:
        @hookimpl
        def initialize(self, runtime: Runtime) -> None:
            runtime.reload()

        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.reload()

    lifecycle.register(EarlyReloader(), name="early")
    lifecycle.register(Sync(), name="other")
    async with lifecycle.running():
        await lifecycle._wait_until(lambda: lifecycle._reloads_done == 1)
    assert lifecycle.trace[:5] == [
        "early.initialize", "other.initialize", "early.started", "other.started", "other.reload",
    ]  # fmt: skip
    assert len(lifecycle.calls_to("reload")) == 1


# -- 4. terminated runs exactly once per started plugin -----------------------------------

WAYS_DOWN: dict[str, tuple[tuple[Any, ...], str, bool, int]] = {
    # name: (events, failing script, error flag, exit status)
    "stop": (("stop",), "", False, 0),
    "SIGTERM": ((signal.SIGTERM,), "", False, 0),
    "SIGINT": ((signal.SIGINT,), "", False, 0),
    "SIGQUIT": ((signal.SIGQUIT,), "", False, 0),
    "fatal in reload": (("reload",), "reload=fatal", True, 1),
    "crash in started": ((), "started=raise", True, 1),
}


@pytest.mark.parametrize("way_down", WAYS_DOWN, ids=list(WAYS_DOWN))
async def test_terminated_runs_exactly_once_per_started_plugin(lifecycle, way_down):
    events, failure, error, status = WAYS_DOWN[way_down]
    scripted(lifecycle, "a:", "b:", f"z: {failure}")
    assert await lifecycle.play(*events) == status
    terminated = lifecycle.calls_to("terminated")
    expected = ["b", "a"] if "started" in failure else ["z", "b", "a"]
    assert [c.plugin for c in terminated] == expected
    assert {c.error for c in terminated} == {error}
    assert lifecycle.trace[-len(expected) :] == [str(c) for c in terminated]


async def test_a_raising_terminated_is_logged_and_the_others_still_run(lifecycle):
    scripted(lifecycle, "a:", "b: terminated=raise async")
    assert await lifecycle.play() == 1
    assert lifecycle.trace[-2:] == [
        "b.terminated(error=False) raised ScriptError",
        "a.terminated(error=False)",
    ]
    assert any(line.startswith("CRIT: <b> terminated failed") for line in lifecycle.lines)


async def test_the_shutdown_timeout_cancels_the_one_in_progress_and_calls_the_rest(
    make_lifecycle, autojump_clock
):
    reached: list[str] = []

    class Hangs:
        @hookimpl
        async def terminated(self) -> None:
            await trio.sleep_forever()

    class AsyncCleanup:
        @hookimpl
        async def terminated(self) -> None:
            reached.append("async entered")
            await trio.lowlevel.checkpoint()
            reached.append("async finished")

    class SyncCleanup:
        @hookimpl
        def terminated(self) -> None:
            reached.append("sync ran")

    lifecycle = make_lifecycle(shutdown_timeout=10)
    lifecycle.register(SyncCleanup(), name="sync")
    lifecycle.register(AsyncCleanup(), name="async")
    lifecycle.register(Hangs(), name="hangs")
    start = trio.current_time()
    assert await lifecycle.play() == 1
    assert trio.current_time() - start == pytest.approx(10)
    assert lifecycle.trace[-3:] == [
        "hangs.terminated(error=False) cancelled",
        "async.terminated(error=False) cancelled",
        "sync.terminated(error=False)",
    ]
    assert reached == ["async entered", "sync ran"]
    assert (
        "CRIT: <runtime> terminated of 'hangs' cancelled: the shutdown timeout of 10 s ran out"
    ) in lifecycle.lines


class Drained:
    """Records, on trio's clock, when its service last ran and when it was terminated."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.terminated_at: float | None = None
        self.terminated_error: bool | None = None

    @hookimpl
    def started(self, runtime: Runtime) -> None:
        async def serve() -> None:
            while True:
                self.ticks.append(trio.current_time())
                await trio.sleep(1)

        runtime.start_soon(serve)

    @hookimpl
    def terminated(self, error: bool) -> None:
        self.terminated_at = trio.current_time()
        self.terminated_error = error


async def drained_run(
    lifecycle: LifecycleHarness, *stop_signals_at: float, drain: float = 10, **options: object
) -> tuple[Drained, float, int]:
    """Run a Drained plugin under a drain; send a stop signal at each of the given
    seconds after it is running; return it, when the first signal came, the status."""
    plugin = Drained()
    lifecycle.register(plugin, name="drained")
    runtime = Runtime(
        lifecycle.pm, handle_signals=False, callbacks=lifecycle.callbacks, drain=drain, **options
    )
    lifecycle.watch(runtime)
    running = trio.Event()
    runtime.add_state_listener(lambda state: state is RuntimeState.RUNNING and running.set())
    status: list[int] = []

    async def run() -> None:
        status.append(await runtime.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await running.wait()
        stopped_at = trio.current_time()
        for at in stop_signals_at:
            await trio.sleep_until(stopped_at + at)
            runtime.signal_received(signal.SIGTERM)
    return plugin, stopped_at, status[0]


async def test_a_stop_drains_first_with_everything_still_running(
    lifecycle: LifecycleHarness, autojump_clock: trio.testing.MockClock
) -> None:
    plugin, stopped_at, status = await drained_run(lifecycle, 0, drain=10)
    assert status == 0
    assert plugin.terminated_at == stopped_at + 10
    assert plugin.terminated_error is False
    assert max(plugin.ticks) >= stopped_at + 9  # the service ran through the drain
    assert lifecycle.states[-3:] == [
        RuntimeState.DRAINING,
        RuntimeState.STOPPING,
        RuntimeState.STOPPED,
    ]
    assert "NOTICE: <runtime> draining for 10 s before terminating" in lifecycle.lines


async def test_a_second_stop_signal_ends_the_drain_and_a_third_abandons(
    lifecycle: LifecycleHarness, autojump_clock: trio.testing.MockClock
) -> None:
    plugin, stopped_at, status = await drained_run(lifecycle, 0, 3, drain=10)
    assert plugin.terminated_at == stopped_at + 3
    assert status == 0  # ending the drain early is no failure
    assert "NOTICE: <runtime> SIGTERM signal received again, ending the drain" in lifecycle.lines
    assert not lifecycle.shutdown_overruns


async def test_a_third_stop_signal_abandons_the_shutdown_after_a_drain(
    lifecycle: LifecycleHarness, autojump_clock: trio.testing.MockClock
) -> None:
    class Hangs:
        @hookimpl
        async def terminated(self) -> None:
            await trio.sleep(100)

    lifecycle.register(Hangs(), name="hangs")
    plugin, stopped_at, status = await drained_run(lifecycle, 0, 1, 2, drain=10)
    assert status == 1
    assert [overrun.abandoned for overrun in lifecycle.shutdown_overruns] == [True]
    assert plugin.terminated_at == stopped_at + 1  # terminated first, then "hangs" is given up


async def test_the_shutdown_timeout_counts_from_the_end_of_the_drain(
    lifecycle: LifecycleHarness, autojump_clock: trio.testing.MockClock
) -> None:
    closed_at: list[float] = []

    class SlowToClose:
        @hookimpl
        async def terminated(self) -> None:
            await trio.sleep(4)  # within the shutdown timeout of 5, though 14 s after the stop
            closed_at.append(trio.current_time())

    lifecycle.register(SlowToClose(), name="slow")
    _, stopped_at, status = await drained_run(lifecycle, 0, drain=10, shutdown_timeout=5)
    assert status == 0
    assert closed_at == [stopped_at + 14]
    assert not lifecycle.shutdown_overruns


@contextlib.contextmanager
def stop_signals_when_running_is_said(runtime: Runtime, count: int) -> Iterator[None]:
    """Send ``count`` SIGTERMs from within the call that logs "running", as a script that
    reads that line and stops the runtime at once would, before anything else runs."""

    def send(message: Any) -> None:
        if message.record["message"] == "running":
            for _ in range(count):
                runtime.signal_received(signal.SIGTERM)

    sink = logger.add(send, level="TRACE")
    try:
        yield
    finally:
        logger.remove(sink)


@pytest.mark.slow
async def test_a_stop_the_moment_running_is_announced_drains_within_the_watchdogs_bound(
    lifecycle: LifecycleHarness,
) -> None:
    """A stop sent by whoever reads the "running" line drains, and the watchdog's bound on
    the shutdown counts the drain: it once set that bound without it when the stop came
    between the line and the drain becoming due, and ended the run in the middle of the
    drain. Real time: the watchdog is a thread."""
    plugin = Drained()
    lifecycle.register(plugin, name="drained")
    # Without the drain, the bound would fall 1.1 s after the stop, inside the drain.
    runtime = Runtime(
        lifecycle.pm,
        handle_signals=False,
        callbacks=lifecycle.callbacks,
        drain=1.5,
        shutdown_timeout=0.1,
    )
    lifecycle.watch(runtime)
    with stop_signals_when_running_is_said(runtime, 1):
        status = await runtime.run()
    assert status == 0
    assert not lifecycle.shutdown_overruns
    assert "NOTICE: <runtime> draining for 1.5 s before terminating" in lifecycle.lines
    assert plugin.terminated_error is False


async def test_stop_signals_that_abandon_the_shutdown_before_the_drain_skip_it(
    lifecycle: LifecycleHarness, autojump_clock: trio.testing.MockClock
) -> None:
    """Two stop signals before the drain was due: the second abandons the shutdown (a
    third during a drain would), and an abandoned shutdown does not drain first."""
    plugin = Drained()
    lifecycle.register(plugin, name="drained")
    runtime = Runtime(lifecycle.pm, handle_signals=False, callbacks=lifecycle.callbacks, drain=10)
    lifecycle.watch(runtime)
    with stop_signals_when_running_is_said(runtime, 2):
        status = await runtime.run()
    assert status == 1
    assert [overrun.abandoned for overrun in lifecycle.shutdown_overruns] == [True]
    assert RuntimeState.DRAINING not in lifecycle.states
    assert plugin.terminated_at is None  # what is left of an abandoned shutdown is skipped
    assert "draining" not in "\n".join(lifecycle.lines)


async def test_there_is_no_drain_on_an_error_or_before_the_start_completed(
    lifecycle: LifecycleHarness, autojump_clock: trio.testing.MockClock
) -> None:
    class FailsLater:
        @hookimpl
        def started(self, runtime: Runtime) -> None:
            async def fail() -> None:
                await trio.sleep(2)
                fatal("the disk is gone")

            runtime.start_soon(fail)

    lifecycle.register(FailsLater(), name="fails")
    plugin = Drained()
    lifecycle.register(plugin, name="drained")
    runtime = Runtime(lifecycle.pm, handle_signals=False, callbacks=lifecycle.callbacks, drain=10)
    lifecycle.watch(runtime)
    assert await runtime.run() == 1
    assert plugin.terminated_at == 2
    assert RuntimeState.DRAINING not in lifecycle.states

    stopped_early = LifecycleHarness(Sync())
    runtime = Runtime(
        stopped_early.pm, handle_signals=False, callbacks=stopped_early.callbacks, drain=10
    )
    stopped_early.watch(runtime)
    runtime.stop()
    with stopped_early.isolated():
        assert await runtime.run() == 0
    assert RuntimeState.DRAINING not in stopped_early.states


# -- 5. started is bounded ----------------------------------------------------------------


async def test_started_past_the_startup_timeout_is_fatal(make_lifecycle, autojump_clock):
    class Hangs:
        @hookimpl
        async def started(self) -> None:
            await trio.sleep_forever()

        @hookimpl
        def terminated(self) -> None: ...

    lifecycle = make_lifecycle(startup_timeout=8)
    lifecycle.register(Sync(), name="a")
    lifecycle.register(Hangs(), name="hangs")
    lifecycle.register(Sync(), name="c")
    assert await lifecycle.play() == 1
    assert [str(c) for c in lifecycle.calls if c.hook != "initialize"] == [
        "a.started", "hangs.started cancelled", "a.terminated(error=True)",
    ]  # fmt: skip
    assert (
        "CRIT: <runtime> started of 'hangs' did not complete within the startup timeout of 8 s"
    ) in lifecycle.lines


async def test_the_startup_timeout_bounds_started_as_a_whole(make_lifecycle, autojump_clock):
    class Slow:
        @hookimpl
        async def started(self) -> None:
            await trio.sleep(3)

    lifecycle = make_lifecycle(startup_timeout=5)
    lifecycle.register(Slow(), name="one")
    lifecycle.register(Slow(), name="two")
    assert await lifecycle.play() == 1
    assert lifecycle.trace[-1] == "two.started cancelled"


# -- 6. Services belong to the plugin that started them -----------------------------------


async def test_services_run_until_their_plugin_has_terminated(lifecycle):
    events: list[str] = []

    class Owner:
        def __init__(self, name: str) -> None:
            self.name = name

        async def serve(self) -> None:
            try:
                await trio.sleep_forever()
            finally:
                events.append(f"{self.name} service cancelled")

        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.start_soon(self.serve)

        @hookimpl
        async def terminated(self) -> None:
            await trio.lowlevel.checkpoint()
            events.append(f"{self.name} terminated")

    lifecycle.register(Owner("a"), name="a")
    lifecycle.register(Owner("b"), name="b")
    await lifecycle.play()
    assert events == [
        "b terminated", "b service cancelled", "a terminated", "a service cancelled",
    ]  # fmt: skip


async def test_start_waits_for_the_service_to_be_ready_and_returns_its_value(lifecycle):
    class Server:
        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            self.port = await runtime.start(self.serve, 8080)

        async def serve(self, port: int, task_status: Any) -> None:
            task_status.started(port + 1)
            await trio.sleep_forever()

    server = Server()
    lifecycle.register(server, name="server")
    assert await lifecycle.play() == 0
    assert server.port == 8081


async def test_a_service_failing_before_it_is_ready_fails_the_start(lifecycle):
    class Server:
        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            await runtime.start(self.serve)

        async def serve(self, task_status: Any) -> None:
            raise OSError("address already in use")

    lifecycle.register(Server(), name="server")
    assert await lifecycle.play() == 1
    assert lifecycle.trace[-1] == "server.started raised OSError"


@pytest.mark.parametrize("failure", ["raise", "fatal"])
async def test_a_failing_service_brings_the_runtime_down_with_error(lifecycle, failure):
    crashed = trio.Event()

    class Flaky:
        async def serve(self) -> None:
            await crashed.wait()
            if failure == "fatal":
                fatal("lost the database")
            raise ConnectionError("lost the database")

        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.start_soon(self.serve)

        @hookimpl
        def terminated(self) -> None: ...

    lifecycle.register(Flaky(), name="flaky")
    async with lifecycle.running():
        crashed.set()
        assert await lifecycle.wait_stopped() == 1
    assert lifecycle.trace[-1] == "flaky.terminated(error=True)"
    assert "CRIT: <runtime> exiting with error status" in lifecycle.lines
    if failure == "fatal":
        assert "CRIT: <flaky> lost the database" in lifecycle.lines


async def test_fatal_works_from_a_worker_thread(lifecycle):
    class Threaded:
        @hookimpl
        async def started(self) -> None:
            await trio.to_thread.run_sync(fatal, "bad settings, seen by a thread")

    lifecycle.register(Threaded(), name="threaded")
    assert await lifecycle.play() == 1
    assert lifecycle.fatal_message == "bad settings, seen by a thread"


async def test_fatal_cannot_be_swallowed_by_except_exception(lifecycle):
    class Careless:
        @hookimpl
        def started(self) -> None:
            with contextlib.suppress(Exception):  # what plugin code is full of
                fatal("really stop")

    lifecycle.register(Careless(), name="careless")
    assert await lifecycle.play() == 1


async def test_a_service_started_from_a_service_belongs_to_the_same_plugin(lifecycle):
    events: list[str] = []

    class Nested:
        async def outer(self, runtime: Runtime) -> None:
            runtime.start_soon(self.inner)
            await trio.sleep_forever()

        async def inner(self) -> None:
            try:
                await trio.sleep_forever()
            finally:
                events.append("inner cancelled")

        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.start_soon(self.outer, runtime)

        @hookimpl
        def terminated(self) -> None:
            events.append("terminated")

    class Later:
        @hookimpl
        def terminated(self) -> None:
            events.append("later terminated")

    lifecycle.register(Later(), name="later")
    lifecycle.register(Nested(), name="nested")
    async with lifecycle.running():
        await trio.testing.wait_all_tasks_blocked()
    assert events == ["terminated", "inner cancelled", "later terminated"]


# -- 7. Signals and stops during startup --------------------------------------------------


async def test_a_stop_during_startup_cancels_the_started_in_progress(lifecycle):
    class Stopper:
        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            runtime.stop()
            await trio.sleep_forever()

        @hookimpl
        def terminated(self) -> None: ...

    lifecycle.register(Sync(), name="a")
    lifecycle.register(Stopper(), name="stopper")
    lifecycle.register(Sync(), name="c")
    assert await lifecycle.play() == 0
    assert [str(c) for c in lifecycle.calls if c.hook != "initialize"] == [
        "a.started", "stopper.started cancelled", "a.terminated(error=False)",
    ]  # fmt: skip


async def test_a_stop_from_a_sync_started_skips_the_rest(lifecycle):
    class Stopper:
        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.stop()

        @hookimpl
        def terminated(self) -> None: ...

    lifecycle.register(Stopper(), name="stopper")
    lifecycle.register(OnlyTerminated(), name="no_started")
    lifecycle.register(Sync(), name="b")
    assert await lifecycle.play() == 0
    assert [str(c) for c in lifecycle.calls if c.hook != "initialize"] == [
        "stopper.started", "stopper.terminated(error=False)",
    ]  # fmt: skip


async def test_a_second_stop_signal_abandons_the_shutdown(lifecycle):
    class SlowCleanup:
        @hookimpl
        async def terminated(self) -> None:
            await trio.sleep_forever()

    lifecycle.register(Sync(), name="a")
    lifecycle.register(SlowCleanup(), name="slow")
    async with lifecycle.running():
        lifecycle.send_signal(signal.SIGTERM)
        await trio.testing.wait_all_tasks_blocked()
        lifecycle.send_signal(signal.SIGINT)
    assert lifecycle.exit_status == 1
    assert lifecycle.trace[-1] == "slow.terminated(error=False) cancelled"
    assert "a.terminated(error=False)" not in lifecycle.trace
    assert "CRIT: <runtime> SIGINT signal received again, abandoning the shutdown" in (
        lifecycle.lines
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
async def test_real_stop_signals_stop_gracefully(signum):
    """A real signal, raised in this process, caught by the runtime's own handler."""
    harness = LifecycleHarness()

    class RaisesSignal:
        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.start_soon(self.send)

        async def send(self) -> None:
            signal.raise_signal(signum)
            await trio.sleep_forever()

        @hookimpl
        def terminated(self, error: bool) -> None:
            self.error = error

    plugin = RaisesSignal()
    harness.pm.register(plugin, name="raiser")
    with harness.isolated():
        status = await Runtime(harness.pm, callbacks=harness.callbacks).run()
    assert status == 0
    assert plugin.error is False
    name = signal.Signals(signum).name
    assert f"NOTICE: <runtime> {name} signal received, exiting..." in harness.lines


async def test_a_real_sighup_during_startup_is_held_until_started_completes():
    harness = LifecycleHarness()
    events: list[str] = []

    class Plugin:
        @hookimpl
        def started(self) -> None:
            signal.raise_signal(signal.SIGHUP)
            events.append("started")

        @hookimpl
        def reload(self, runtime: Runtime) -> None:
            events.append("reload")
            runtime.stop()

    class Later:
        @hookimpl
        async def started(self) -> None:
            await trio.lowlevel.checkpoint()  # the signal is handled by now
            events.append("later started")

    harness.pm.register(Plugin(), name="p")
    harness.pm.register(Later(), name="later")
    with harness.isolated():
        runtime = Runtime(harness.pm, callbacks=harness.callbacks)
        runtime.add_state_listener(lambda state: events.append(state.value))
        assert await runtime.run() == 0
    assert events == [
        "initializing", "starting", "started", "later started", "running", "reloading",
        "reload", "stopping", "stopped",
    ]  # fmt: skip
    assert "NOTICE: <runtime> SIGHUP signal received, reloading..." in harness.lines


# -- 8. Invalid plugins never start -------------------------------------------------------


class Typo:
    @hookimpl
    def startd(self) -> None: ...


class Recorder:
    called = False

    @hookimpl
    def initialize(self) -> None:
        Recorder.called = True


def test_an_unknown_hook_name_is_refused_before_anything_runs():
    from oversip_hooks import run

    with pytest.raises(pluggy.PluginValidationError) as info:
        run(Recorder(), Typo())
    assert type(info.value) is pluggy.PluginValidationError
    assert str(info.value) == (
        "plugin 'Typo': unknown hook 'startd'; did you mean 'started'? "
        "(the hooks are initialize, lifespan, started, reload, terminated)"
    )
    assert Recorder.called is False


async def test_runtime_run_refuses_an_unknown_hook_plainly(lifecycle):
    lifecycle.register(Recorder(), name="recorder")
    lifecycle.register(Typo(), name="typo")
    with pytest.raises(pluggy.PluginValidationError, match="plugin 'typo': unknown hook"):
        await Runtime(lifecycle.pm, handle_signals=False).run()
    assert Recorder.called is False


def test_an_argument_missing_from_the_spec_is_refused():
    from oversip_hooks import run

    class Wrong:
        @hookimpl
        def started(self, runtime: Runtime, config: dict[str, str]) -> None: ...

    with pytest.raises(pluggy.PluginValidationError, match=r"(?s)'Wrong'.*'started'.*config"):
        run(Recorder(), Wrong())
    assert Recorder.called is False


@pytest.mark.parametrize(
    ("marks", "message"),
    [
        ({"wrapper": True}, "marked as a wrapper"),
        ({"tryfirst": True}, "it runs in the plugin's started and terminated turns"),
    ],
)
def test_hooks_the_runtime_cannot_honour_are_refused(lifecycle, marks, message):
    class Odd:
        @hookimpl(**marks)
        def terminated(self):  # type: ignore[no-untyped-def]
            yield

    lifecycle.register(Odd(), name="odd")
    with pytest.raises(pluggy.PluginValidationError, match=message):
        lifecycle.run()
    assert lifecycle.calls == []


# -- 9. No log line is lost -----------------------------------------------------------------


def test_no_log_line_is_lost_on_the_fatal_path(tmp_path):
    from oversip_hooks import run

    class Fails:
        @hookimpl
        def started(self) -> None:
            fatal("cannot go on")

    log_file = tmp_path / "server.log"
    sink = logger.add(log_file, enqueue=True, format="{level}: {message}")
    try:
        assert run(Fails(), handle_signals=False) == 1
        # No logger.complete() here: run() must have waited for the queue already.
        lines = log_file.read_text().splitlines()
    finally:
        logger.remove(sink)
    assert lines[-3:] == [
        "CRIT: cannot go on",
        "CRIT: exiting with error status",
        "INFO: terminating on error",
    ]


async def test_a_real_second_stop_signal_abandons_the_shutdown():
    harness = LifecycleHarness()

    class Plugin:
        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.start_soon(self.interrupt)

        async def interrupt(self) -> None:
            signal.raise_signal(signal.SIGINT)
            await trio.sleep_forever()

        @hookimpl
        async def terminated(self) -> None:
            signal.raise_signal(signal.SIGTERM)
            await trio.sleep_forever()

    harness.pm.register(Sync(), name="first")
    harness.pm.register(Plugin(), name="plugin")
    with harness.isolated():
        assert await Runtime(harness.pm, callbacks=harness.callbacks).run() == 1
    assert [line for line in harness.lines if "signal" in line] == [
        "NOTICE: <runtime> SIGINT signal received, exiting...",
        "CRIT: <runtime> SIGTERM signal received again, abandoning the shutdown",
    ]


def test_hook_order_tells_the_order_before_the_run(lifecycle):
    lifecycle.register(StartsLast(), name="last")
    lifecycle.register(OnlyTerminated(), name="no_started")
    lifecycle.register(Sync(), name="plain")
    SystemCallbacks.on_terminated(lambda: None)
    runtime = Runtime(lifecycle.pm, handle_signals=False)
    assert runtime.hook_order("started") == ["plain", "last"]
    assert runtime.hook_order("terminated") == ["last", "plain", "no_started", "SystemCallbacks"]
    with pytest.raises(ValueError, match="no hook named 'stopped'"):
        runtime.hook_order("stopped")
    lifecycle.run()
    assert [c.plugin for c in lifecycle.calls_to("terminated")] == runtime.hook_order("terminated")


# -- Hard cases: each of these once broke a rule ---------------------------------------


async def test_a_signal_raised_at_the_very_end_does_not_kill_the_process():
    """trio re-raises undelivered signals when its receiver closes (rules 4 and 7)."""
    harness = LifecycleHarness()

    class LateSignals:
        @hookimpl
        def terminated(self) -> None:
            signal.raise_signal(signal.SIGHUP)  # a logrotate during the last hook
            signal.raise_signal(signal.SIGTERM)

    harness.pm.register(LateSignals(), name="late")
    with harness.isolated():
        runtime = Runtime(harness.pm, callbacks=harness.callbacks)
        runtime.stop()
        assert await runtime.run() == 0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


async def test_a_cancellation_from_outside_still_terminates_the_started(lifecycle):
    lifecycle.register(Sync(), name="a")
    runtime = Runtime(lifecycle.pm, handle_signals=False, callbacks=lifecycle.callbacks)
    lifecycle.watch(runtime)
    with trio.move_on_after(5) as outside:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert not outside.cancelled_caught
    assert lifecycle.trace[-1] == "a.terminated(error=False)"
    assert runtime.state is RuntimeState.STOPPED


async def test_a_keyboard_interrupt_is_never_taken_for_a_hook_error(lifecycle):
    class Interrupted:
        @hookimpl
        def reload(self) -> None:
            raise KeyboardInterrupt

    lifecycle.register(Sync(), name="a")
    lifecycle.register(Interrupted(), name="interrupted")
    runtime = Runtime(lifecycle.pm, handle_signals=False, callbacks=lifecycle.callbacks)
    lifecycle.watch(runtime)
    runtime.reload()
    with pytest.raises(KeyboardInterrupt):
        await runtime.run()
    assert lifecycle.trace[-1] == "a.terminated(error=False)"


async def test_a_stop_from_another_thread_during_sync_started_skips_the_rest(lifecycle):
    class StopsFromAThread:
        @hookimpl
        def started(self, runtime: Runtime) -> None:
            thread = threading.Thread(target=runtime.stop)
            thread.start()
            thread.join()  # the request is queued for the trio thread by now

    lifecycle.register(StopsFromAThread(), name="a")
    lifecycle.register(Sync(), name="b")
    assert await lifecycle.play() == 0
    assert "b.started" not in lifecycle.trace


async def test_a_synchronous_overrun_of_the_startup_timeout_is_fatal(
    make_lifecycle, autojump_clock
):
    class Slow:
        @hookimpl
        def started(self) -> None:
            autojump_clock.jump(10)  # what a blocking call of ten seconds is to trio

    lifecycle = make_lifecycle(startup_timeout=5)
    lifecycle.register(Slow(), name="slow")
    lifecycle.register(Sync(), name="next")
    assert await lifecycle.play() == 1
    assert (
        "CRIT: <runtime> started of 'slow' did not complete within the startup timeout of 5 s"
    ) in lifecycle.lines
    assert "next.started" not in lifecycle.trace


async def test_a_start_that_the_watchdog_ended_first_is_ended_once(make_lifecycle, autojump_clock):
    """The loop blocked past the startup timeout: the watchdog ends the start; trio's
    deadline, passing after it, must not end it again (Runtime.run() raised an
    UnboundLocalError when the task saw that deadline before trio ran the watchdog's stop:
    trio orders the two at random, hence ten starts)."""

    def block_the_loop_until_the_watchdog_acts(harness: LifecycleHarness) -> None:
        give_up = time.monotonic() + 10
        while not any("startup timeout" in line for line in harness.lines):
            assert time.monotonic() < give_up, "the watchdog never ended the start"
            time.sleep(0.01)  # what is under test: the loop blocked, the watchdog acts

    for _ in range(10):
        lifecycle = make_lifecycle(startup_timeout=0.1)

        class Slow:
            @hookimpl
            async def started(self, harness: LifecycleHarness = lifecycle) -> None:
                block_the_loop_until_the_watchdog_acts(harness)
                autojump_clock.jump(1)  # and then trio's deadline passes too
                await trio.sleep(10)

        lifecycle.register(Slow(), name="slow")
        assert await lifecycle.play() == 1
        assert [line for line in lifecycle.lines if "startup timeout" in line] == [
            "CRIT: <runtime> started of 'slow' did not complete within the startup timeout of 0.1 s"
        ]


async def test_a_failing_state_listener_is_logged_removed_and_the_lifecycle_goes_on(lifecycle):
    seen: list[RuntimeState] = []

    def exporter(state: RuntimeState) -> None:
        seen.append(state)
        raise ValueError("metrics exporter is down")

    lifecycle.register(Sync(), name="a")
    async with lifecycle.running() as runtime:
        runtime.add_state_listener(exporter)
    assert lifecycle.exit_status == 0
    assert lifecycle.trace[-1] == "a.terminated(error=False)"
    assert seen == [RuntimeState.STOPPING]  # removed once it failed
    failed = [line for line in lifecycle.lines if "metrics exporter is down" in line]
    assert len(failed) == 1
    assert failed[0].startswith("CRIT: <runtime> observer <function ")
    assert "exporter" in failed[0]
    assert "failed and was removed" in failed[0]


@pytest.mark.parametrize("where", ["state", "call"])
async def test_an_observer_that_raises_never_breaks_the_run(lifecycle, where):
    """A raising call monitor used to escape Runtime.run() with no exit status."""

    def observer(event: object) -> None:
        if where == "state" or isinstance(event, HookCallStarted):
            raise RuntimeError("observer bug")

    lifecycle.register(Sync(), name="a")
    async with lifecycle.running() as runtime:
        runtime.add_observer(observer)
    assert lifecycle.exit_status == 0
    assert lifecycle.trace[-1] == "a.terminated(error=False)"
    assert sum("observer bug" in line for line in lifecycle.lines) == 1


async def test_an_observer_is_the_runtime_s_code_and_hears_of_calls_in_pairs(lifecycle):
    """Told of a hook call, an observer is no plugin's and runs no lifecycle code: it may
    log as the user, and a service it starts is the runtime's; added during a call, it
    hears of the calls after that one, each a HookCallStarted then a HookCallEnded."""
    heard: list[str] = []
    exporter = get_logger("exporter")
    runtimes: list[Runtime] = []

    def observer(event: object) -> None:
        if isinstance(event, HookCallStarted | HookCallEnded):
            kind = "Started" if isinstance(event, HookCallStarted) else "Ended"
            heard.append(f"{kind}:{event.plugin}.{event.hook}")
            exporter.log_info(heard[-1])  # LoggerMisuse if this ran as lifecycle code
            if len(heard) == 1:
                runtimes[0].start_soon(trio.sleep_forever)

    class Watches:
        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtimes.append(runtime)
            runtime.add_observer(observer)

    lifecycle.register(Watches(), name="a")
    lifecycle.register(Sync(), name="b")
    async with lifecycle.running() as watching:
        assert watching.services_running() == {"runtime": 1}
    assert heard == [
        "Started:b.started",
        "Ended:b.started",
        "Started:b.terminated",
        "Ended:b.terminated",
    ]
    assert [line for line in lifecycle.lines if "<exporter>" in line] == [
        f"INFO: <exporter> [user] {each}" for each in heard
    ]
    assert lifecycle.exit_status == 0


async def test_every_error_in_a_group_is_logged(lifecycle):
    class Both:
        @hookimpl
        async def started(self) -> None:
            async def denied() -> None:
                raise PermissionError("no access to /var/lib/pool")

            async def refused() -> None:
                fatal("bad settings")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(denied)
                nursery.start_soon(refused)

    lifecycle.register(Both(), name="both")
    assert await lifecycle.play() == 1
    crit = [line for line in lifecycle.lines if line.startswith("CRIT: <both>")]
    assert "CRIT: <both> bad settings" in crit
    assert any("PermissionError('no access to /var/lib/pool')" in line for line in crit)


async def test_a_callbacks_registry_can_start_two_runs():
    registry = CallbackRegistry()
    registry.add("started", lambda: None)

    class AddsOne:
        @hookimpl
        def initialize(self) -> None:
            SystemCallbacks.on_started(lambda: None)

    for _ in range(2):
        pm = get_plugin_manager()
        pm.register(AddsOne())
        runtime = Runtime(pm, handle_signals=False, callbacks=registry)
        runtime.stop()
        assert await runtime.run() == 0
    assert len(registry.impls("started")) == 1


async def test_two_concurrent_runs_of_one_runtime_are_refused():
    runtime = Runtime(handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="a Runtime runs once"):
            await runtime.run()
        runtime.stop()


def test_two_implementations_of_one_hook_in_one_plugin_are_refused(lifecycle):
    class Twice:
        @hookimpl(specname="terminated")
        def close_pool(self) -> None: ...

        @hookimpl(specname="terminated")
        def close_cache(self) -> None: ...

    lifecycle.register(Twice(), name="twice")
    with pytest.raises(pluggy.PluginValidationError, match="implements hook 'terminated' twice"):
        lifecycle.run()


# -- At the edges: plugin code cannot crash the runtime, stops and signals at any instant --


class Unprintable(Exception):
    """An exception that cannot print itself."""

    def __str__(self) -> str:
        raise ValueError("no str")

    def __repr__(self) -> str:
        raise ValueError("no repr")


class Raiser:
    """Raises ``exc`` in ``where`` (a hook, or its service), then lets the run end."""

    def __init__(self, where: str, exc: BaseException) -> None:
        self.where = where
        self.exc = exc

    @hookimpl
    def started(self, runtime: Runtime) -> None:
        if self.where == "started":
            raise self.exc
        if self.where == "service":
            runtime.start_soon(self.service)
        elif self.where == "reload":
            runtime.reload()
        else:
            runtime.stop()

    async def service(self) -> None:
        await trio.lowlevel.checkpoint()
        raise self.exc

    @hookimpl
    def reload(self, runtime: Runtime) -> None:
        runtime.stop()
        raise self.exc

    @hookimpl
    def terminated(self) -> None:
        if self.where == "terminated":
            raise self.exc


RAISED = {
    "unprintable": Unprintable(),
    "KeyboardInterrupt": KeyboardInterrupt(),
    "SystemExit": SystemExit(3),
    "GeneratorExit": GeneratorExit(),
    "group": ExceptionGroup("two", [ValueError("one"), Unprintable()]),
}
# Under each phase's rule: a failed start or service is fatal, a failed reload is not, a
# failed terminated makes the status 1 and the others still run.
STATUS = {"started": 1, "service": 1, "reload": 0, "terminated": 1}


@pytest.mark.parametrize("where", list(STATUS))
@pytest.mark.parametrize("raised", list(RAISED.values()), ids=list(RAISED))
async def test_whatever_plugin_code_raises_is_a_failure_of_that_plugin(
    where: str, raised: BaseException
) -> None:
    harness = LifecycleHarness()
    other = Sync()
    harness.pm.register(other, name="other")
    harness.pm.register(Raiser(where, raised), name="raiser")
    harness.pm.register(OnlyTerminated(), name="after")
    terminated_with: list[bool] = []
    # Handling signals, the runtime knows a KeyboardInterrupt is plugin code's own.
    runtime = Runtime(harness.pm, callbacks=harness.callbacks)
    runtime.add_observer(
        lambda event: (
            terminated_with.append(bool(event.kwargs["error"]))
            if isinstance(event, HookCallStarted) and event.hook == "terminated"
            else None
        )
    )
    with harness.isolated():
        assert await runtime.run() == STATUS[where]
    failures = [line for line in harness.lines if line.startswith("CRIT: <raiser>")]
    assert failures, harness.lines
    if isinstance(raised, Unprintable):
        assert "<Unprintable object; its repr() raised ValueError>" in failures[0]
    assert terminated_with, "the other plugins were terminated"
    assert set(terminated_with) == {where in ("started", "service")}
    assert [line for line in harness.lines if "SIGINT" in line] == []


@pytest.mark.parametrize("hook", ["initialize", "started"])
async def test_a_stop_from_a_sync_hook_takes_effect_before_the_next_one(
    lifecycle: LifecycleHarness, hook: str
) -> None:
    class Stopper:
        @hookimpl(specname=hook)
        def stop_now(self, runtime: Runtime) -> None:
            runtime.stop()

    lifecycle.register(Stopper(), name="stopper")
    lifecycle.register(Sync(), name="next")
    assert await lifecycle.play() == 0
    assert f"next.{hook}" not in lifecycle.trace
    assert "next.started" not in lifecycle.trace


async def test_signals_received_before_the_run_are_acted_on_as_it_begins() -> None:
    stopped_early = LifecycleHarness(Sync())
    runtime = Runtime(stopped_early.pm, handle_signals=False, callbacks=stopped_early.callbacks)
    stopped_early.watch(runtime)
    runtime.signal_received(signal.SIGTERM)
    with stopped_early.isolated():
        assert await runtime.run() == 0
    assert stopped_early.trace == []
    assert "NOTICE: <runtime> SIGTERM signal received, exiting..." in stopped_early.lines

    reloaded = LifecycleHarness()

    class StopsOnReload(Sync):
        @hookimpl
        def reload(self, runtime: Runtime) -> None:
            runtime.stop()

    reloaded.register(StopsOnReload(), name="a")
    runtime = Runtime(reloaded.pm, handle_signals=False, callbacks=reloaded.callbacks)
    reloaded.watch(runtime)
    runtime.signal_received(signal.SIGHUP)
    with reloaded.isolated():
        assert await runtime.run() == 0
    assert reloaded.trace == ["a.initialize", "a.started", "a.reload", "a.terminated(error=False)"]


async def test_a_sync_terminated_past_the_deadline_is_blamed_not_the_next(
    make_lifecycle, autojump_clock
) -> None:
    class Slow:
        @hookimpl
        def terminated(self) -> None:
            autojump_clock.jump(20)  # what a blocking call of twenty seconds is to trio

    lifecycle = make_lifecycle(shutdown_timeout=10)
    lifecycle.register(Async(), name="innocent")
    lifecycle.register(Slow(), name="slow")
    assert await lifecycle.play() == 1
    crit = [line for line in lifecycle.lines if line.startswith("CRIT")]
    assert (
        "CRIT: <runtime> terminated of 'slow' returned late: the shutdown timeout of 10 s ran out"
    ) in crit
    assert not any("innocent" in line for line in crit)
    assert lifecycle.trace[-1] == "innocent.terminated(error=False) cancelled"


def test_fatal_from_a_module_callback_logs_under_the_module_log_id(lifecycle) -> None:
    module = types.ModuleType("oversip_mod_checked")
    exec(
        "from oversip_hooks import Launcher, SystemCallbacks, hookimpl\n"
        "log_id = 'Checked module'\n"
        "def check():\n"
        "    Launcher.fatal('invalid module settings, exiting')\n"
        "@hookimpl\n"
        "def initialize():\n"
        "    SystemCallbacks.on_started(check)\n",
        module.__dict__,
    )
    sys.modules[module.__name__] = module
    try:
        lifecycle.register(module, name="checked")
        assert lifecycle.run() == 1
    finally:
        del sys.modules[module.__name__]
    assert "CRIT: <Checked module> invalid module settings, exiting" in lifecycle.lines


@pytest.mark.slow
@pytest.mark.parametrize("on_overrun", [None, "given"])
async def test_an_embedded_run_logs_the_overrun_and_cannot_end_the_process(
    on_overrun: str | None,
) -> None:
    overruns: list[str] = []
    release = threading.Event()

    class Stuck:
        @hookimpl
        def started(self, runtime: Runtime) -> None:
            runtime.start_soon(self.wait)
            runtime.stop()

        async def wait(self) -> None:
            await trio.to_thread.run_sync(release.wait)

    harness = LifecycleHarness(Stuck())
    runtime = Runtime(
        harness.pm,
        handle_signals=False,
        shutdown_timeout=0.2,
        callbacks=harness.callbacks,
        on_overrun=(lambda: (overruns.append("called"), release.set())) if on_overrun else None,
    )
    if on_overrun is None:
        # Nothing ends this run but the thread: released once the watchdog has spoken.
        def release_after_the_crit_line() -> None:
            while not any("still running" in line for line in harness.lines):
                time.sleep(0.01)
            release.set()

        threading.Thread(target=release_after_the_crit_line, daemon=True).start()
    with harness.isolated():
        assert await runtime.run() == 1
    [overrun] = [line for line in harness.lines if "still running" in line]
    assert "'Stuck': service Stuck.wait, a worker thread running Event.wait" in overrun
    if on_overrun:
        assert overruns == ["called"]
        assert overrun.endswith("ending the process")
    else:
        assert overrun.endswith("Runtime.run() waits for them")


# -- lifespan: setup and teardown in one function ------------------------------------------


class Heartbeat:
    """The issue's module: a lifespan whose own task writes while the plugin runs."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    @hookimpl
    async def lifespan(self, runtime: Runtime) -> AsyncIterator[None]:
        self.events.append("setup")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.beat)
            yield
            self.events.append(f"teardown error={runtime.error}")
            nursery.cancel_scope.cancel()
        self.events.append("closed")

    async def beat(self) -> None:
        while True:
            self.events.append("running")
            await trio.sleep(1)

    @hookimpl
    def started(self) -> None:
        self.events.append("started")

    @hookimpl
    def terminated(self, error: bool) -> None:
        self.events.append("stopped")


async def test_a_lifespan_wraps_started_and_terminated_and_its_tasks_end_before_closing(
    lifecycle: LifecycleHarness, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []
    lifecycle.register(Sync(), name="before")
    lifecycle.register(Heartbeat(events), name="heartbeat")
    async with lifecycle.running():
        await trio.sleep(2.5)
    assert lifecycle.exit_status == 0
    assert events[0] == "setup"
    assert events.count("started") == 1
    assert events[-3:] == ["stopped", "teardown error=False", "closed"]
    assert "running" not in events[events.index("stopped") :]
    assert lifecycle.trace[-1] == "before.terminated(error=False)"  # after heartbeat's teardown
    assert Runtime(lifecycle.pm).hook_order("lifespan") == ["heartbeat"]


async def test_a_lifespan_is_torn_down_on_error_with_runtime_error_set(
    lifecycle: LifecycleHarness,
) -> None:
    events: list[str] = []

    class FailsLater:
        @hookimpl
        def started(self) -> None:
            fatal("cannot go on")

    lifecycle.register(Heartbeat(events), name="heartbeat")
    lifecycle.register(FailsLater(), name="fails")
    assert await lifecycle.play() == 1
    assert events[-2:] == ["teardown error=True", "closed"]


async def test_a_lifespan_whose_setup_failed_is_not_torn_down(lifecycle: LifecycleHarness) -> None:
    events: list[str] = []

    class SetupFails:
        @hookimpl
        async def lifespan(self) -> AsyncIterator[None]:
            events.append("setup")
            raise ValueError("no connection")
            yield
            events.append("teardown")  # never reached

    lifecycle.register(Heartbeat(events), name="heartbeat")
    lifecycle.register(SetupFails(), name="db")
    assert await lifecycle.play() == 1
    assert events.count("setup") == 2
    assert events[-2:] == ["teardown error=True", "closed"]
    assert any(
        line.startswith("CRIT: <db> lifespan failed: ValueError('no connection')")
        for line in lifecycle.lines
    )


async def test_a_lifespan_set_up_before_a_failed_started_is_torn_down(
    lifecycle: LifecycleHarness,
) -> None:
    events: list[str] = []

    class StartedFails(Heartbeat):
        @hookimpl
        def started(self) -> None:
            raise RuntimeError("started failed")

    lifecycle.register(StartedFails(events), name="half")
    assert await lifecycle.play() == 1
    assert "stopped" not in events  # its terminated does not run: its started did not complete
    assert events[-2:] == ["teardown error=True", "closed"]


async def test_a_failing_task_of_a_lifespan_brings_the_runtime_down(
    lifecycle: LifecycleHarness,
) -> None:
    events: list[str] = []

    class Crashes:
        @hookimpl
        async def lifespan(self, runtime: Runtime) -> AsyncIterator[None]:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.crash)
                yield
            events.append("after the nursery")

        async def crash(self) -> None:
            await trio.lowlevel.checkpoint()
            raise OSError("connection lost")

    lifecycle.register(Heartbeat(events), name="heartbeat")
    lifecycle.register(Crashes(), name="crashes")
    async with lifecycle.running():
        await lifecycle.wait_stopped()
    assert lifecycle.exit_status == 1
    assert "after the nursery" not in events
    assert events[-2:] == ["teardown error=True", "closed"]
    assert any("connection lost" in line for line in lifecycle.lines if "<crashes>" in line)


@pytest.mark.parametrize("yields", [0, 2])
async def test_a_lifespan_that_does_not_yield_exactly_once_is_a_failure_named(
    lifecycle: LifecycleHarness, yields: int
) -> None:
    class Wrong:
        @hookimpl
        async def lifespan(self) -> AsyncIterator[None]:
            for _ in range(yields):
                yield

    lifecycle.register(Wrong(), name="wrong")
    assert await lifecycle.play() == 1
    said = "ended without yielding" if yields == 0 else "yielded more than once"
    assert any(f"lifespan of 'wrong' {said}" in line for line in lifecycle.lines)


async def test_the_lifespan_setup_is_under_the_startup_timeout(make_lifecycle, autojump_clock):
    class Hangs:
        @hookimpl
        async def lifespan(self) -> AsyncIterator[None]:
            await trio.sleep_forever()
            yield

    lifecycle = make_lifecycle(startup_timeout=3)
    lifecycle.register(Hangs(), name="hangs")
    assert await lifecycle.play() == 1
    assert (
        "CRIT: <runtime> lifespan of 'hangs' did not complete within the startup timeout of 3 s"
    ) in lifecycle.lines


async def test_the_lifespan_teardown_is_under_the_shutdown_deadline(make_lifecycle, autojump_clock):
    class SlowTeardown:
        @hookimpl
        async def lifespan(self) -> AsyncIterator[None]:
            yield
            await trio.sleep_forever()

    lifecycle = make_lifecycle(shutdown_timeout=4)
    lifecycle.register(SlowTeardown(), name="slow")
    assert await lifecycle.play() == 1
    assert (
        "CRIT: <runtime> lifespan of 'slow' cancelled: the shutdown timeout of 4 s ran out"
    ) in lifecycle.lines


def test_a_lifespan_that_is_not_an_async_generator_is_refused() -> None:
    class NotAGenerator:
        @hookimpl
        async def lifespan(self) -> None: ...

    pm = get_plugin_manager()
    pm.register(NotAGenerator(), name="plain")
    with pytest.raises(pluggy.PluginValidationError, match="must be an async generator"):
        trio.run(Runtime(pm, handle_signals=False).run)
