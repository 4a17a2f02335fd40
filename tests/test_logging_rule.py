"""OverSIP's logging rule: ``log_<level>()`` cannot be used within lifecycle code (a hook,
a ``lifespan`` body, a ``SystemCallbacks`` callback); ``log_system_<level>()`` is the
method to use there. The services and tasks that code starts may use either."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from oversip_hooks import LEVELS, Logger, Runtime, SystemCallbacks, get_logger, hookimpl
from oversip_hooks._logging import LoggerMisuse, begin_service_code, lifecycle_code
from oversip_hooks.testing import LifecycleHarness

HOOKS = ("initialize", "started", "reload", "terminated")
log = get_logger("mod")


def misuse(level: str) -> str:
    return (
        f"log_{level}() cannot be used within a lifecycle hook, a lifespan or a "
        f"SystemCallbacks callback; use log_system_{level}()"
    )


def try_every_user_method(seen: list[str]) -> None:
    """Call each level's ``log_<level>``; record what each raised, or ``"logged"``."""
    for level in LEVELS:
        try:
            getattr(log, f"log_{level}")(f"user {level}")
        except LoggerMisuse as error:
            seen.append(str(error))
        else:
            seen.append("logged")


def user_lines(lifecycle: LifecycleHarness) -> list[str]:
    return [str(record) for record in lifecycle.records if record.user]


# -- the rule, in each kind of lifecycle code ----------------------------------------------


class EveryHook:
    """Tries every user method in each of its hooks, synchronously or not."""

    def __init__(self, is_async: bool) -> None:
        self.is_async = is_async
        self.seen: dict[str, list[str]] = {}

    def _try(self, hook: str) -> object:
        seen = self.seen.setdefault(hook, [])

        async def in_async_hook() -> None:
            await trio.lowlevel.checkpoint()
            try_every_user_method(seen)

        if self.is_async:
            return in_async_hook()
        try_every_user_method(seen)
        return None

    @hookimpl
    def initialize(self) -> object:
        return self._try("initialize")

    @hookimpl
    def started(self) -> object:
        return self._try("started")

    @hookimpl
    def reload(self) -> object:
        return self._try("reload")

    @hookimpl
    def terminated(self) -> object:
        return self._try("terminated")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_every_user_method_raises_within_every_hook(lifecycle, is_async):
    plugin = EveryHook(is_async)
    lifecycle.register(plugin, name="mod")
    assert await lifecycle.play("reload") == 0
    expected = [misuse(level) for level in LEVELS]
    assert plugin.seen == {hook: expected for hook in HOOKS}
    assert user_lines(lifecycle) == []


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_every_user_method_raises_within_every_system_callback(lifecycle, is_async):
    seen: dict[str, list[str]] = {}

    def callback(hook: str) -> Callable[[], object]:
        def sync_callback() -> None:
            try_every_user_method(seen.setdefault(hook, []))

        async def async_callback() -> None:
            await trio.lowlevel.checkpoint()
            try_every_user_method(seen.setdefault(hook, []))

        return async_callback if is_async else sync_callback

    SystemCallbacks.on_started(callback("started"))
    SystemCallbacks.on_reload(callback("reload"))
    SystemCallbacks.on_terminated(callback("terminated"))
    assert await lifecycle.play("reload") == 0
    expected = [misuse(level) for level in LEVELS]
    assert seen == {hook: expected for hook in ("started", "reload", "terminated")}
    assert user_lines(lifecycle) == []


async def test_the_system_methods_work_within_hooks(lifecycle):
    class System(Logger):
        log_id = "mod"

        @hookimpl
        def started(self) -> None:
            for level in LEVELS:
                getattr(self, f"log_system_{level}")(f"system {level}")

    lifecycle.register(System(), name="mod")
    assert await lifecycle.play() == 0
    for level in LEVELS:
        assert f"{level.upper()}: <mod> system {level}" in lifecycle.lines


async def test_a_caught_misuse_leaves_the_hook_and_the_run_alone(lifecycle):
    class Careful:
        @hookimpl
        def started(self) -> None:
            with pytest.raises(RuntimeError):  # LoggerMisuse is a RuntimeError
                log.log_info("hello")
            log.log_system_info("hello")

    lifecycle.register(Careful(), name="careful")
    assert await lifecycle.play() == 0
    assert "INFO: <mod> hello" in lifecycle.lines


# -- what the phase makes of it ------------------------------------------------------------


@pytest.mark.parametrize("level", list(LEVELS))
async def test_a_user_method_in_started_is_fatal_with_a_crit_line_naming_the_method(
    lifecycle, level
):
    class Early:
        @hookimpl
        def started(self) -> None: ...

        @hookimpl
        def terminated(self) -> None: ...

    class Careless:
        @hookimpl
        async def started(self) -> None:
            getattr(log, f"log_{level}")("hello")

    class Late:
        @hookimpl
        def started(self) -> None: ...

    lifecycle.register(Early(), name="early")
    lifecycle.register(Careless(), name="careless")
    lifecycle.register(Late(), name="late")
    assert await lifecycle.play() == 1
    assert lifecycle.trace[-3:] == [
        "early.started",
        "careless.started raised LoggerMisuse",
        "early.terminated(error=True)",
    ]
    crit = [line for line in lifecycle.lines if line.startswith("CRIT")]
    assert crit == [
        f"CRIT: <careless> started failed: LoggerMisuse({misuse(level)!r})",
        "CRIT: <runtime> exiting with error status",
    ]
    assert f"use log_system_{level}()" in crit[0]
    assert user_lines(lifecycle) == []


async def test_a_user_method_in_initialize_is_fatal(lifecycle):
    class Careless:
        @hookimpl
        def initialize(self) -> None:
            log.log_notice("configuring")

    lifecycle.register(Careless(), name="careless")
    assert await lifecycle.play() == 1
    assert lifecycle.trace == ["careless.initialize raised LoggerMisuse"]
    assert f"CRIT: <careless> initialize failed: LoggerMisuse({misuse('notice')!r})" in (
        lifecycle.lines
    )


async def test_a_user_method_in_reload_is_logged_and_not_fatal(lifecycle):
    class Careless:
        @hookimpl
        def reload(self) -> None:
            log.log_warn("reloading")

    class Next:
        @hookimpl
        async def reload(self) -> None:
            await trio.lowlevel.checkpoint()

    lifecycle.register(Careless(), name="careless")
    lifecycle.register(Next(), name="next")
    assert await lifecycle.play("reload", "reload") == 0
    assert [str(call) for call in lifecycle.calls_to("reload")] == [
        "careless.reload raised LoggerMisuse", "next.reload",
        "careless.reload raised LoggerMisuse", "next.reload",
    ]  # fmt: skip
    line = f"CRIT: <careless> reload failed: LoggerMisuse({misuse('warn')!r})"
    assert lifecycle.lines.count(line) == 2
    assert "CRIT: <runtime> exiting with error status" not in lifecycle.lines


async def test_a_user_method_in_a_system_callback_names_its_module(lifecycle):
    def open_pool() -> None:
        log.log_error("no pool")

    SystemCallbacks.on_started(open_pool)
    assert await lifecycle.play() == 1
    assert any(
        line.endswith(f"started failed: LoggerMisuse({misuse('error')!r})")
        for line in lifecycle.lines
    )


# -- where the rule does not apply -------------------------------------------------------


def test_user_methods_work_outside_any_run():
    try_every_user_method(seen := [])
    assert seen == ["logged"] * len(LEVELS)


async def test_user_methods_work_in_services_a_hook_starts(lifecycle):
    seen: dict[str, list[str]] = {}
    done = {name: trio.Event() for name in ("start_soon", "start", "nested", "thread")}

    class Owner:
        async def serve(self, name: str, runtime: Runtime) -> None:
            try_every_user_method(seen.setdefault(name, []))
            if name == "start_soon":
                runtime.start_soon(self.serve, "nested", runtime)
                await trio.to_thread.run_sync(try_every_user_method, seen.setdefault("thread", []))
                done["thread"].set()
            done[name].set()
            await trio.sleep_forever()

        async def serve_ready(self, runtime: Runtime, task_status: Any) -> None:
            try_every_user_method(seen.setdefault("start", []))
            task_status.started()
            done["start"].set()
            await trio.sleep_forever()

        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            runtime.start_soon(self.serve, "start_soon", runtime)
            await runtime.start(self.serve_ready, runtime)

    lifecycle.register(Owner(), name="owner")
    async with lifecycle.running():
        for event in done.values():
            await event.wait()
    assert lifecycle.exit_status == 0
    assert seen == {name: ["logged"] * len(LEVELS) for name in done}
    assert len(user_lines(lifecycle)) == len(done) * len(LEVELS)
    assert "INFO: <mod> [user] user info" in user_lines(lifecycle)


async def test_user_methods_work_in_tasks_of_a_hook_s_own_nursery(lifecycle):
    seen: list[str] = []
    in_hook: list[str] = []

    class Fanout:
        @hookimpl
        async def started(self) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, lambda: None)
                nursery.start_soon(self.task)
            try_every_user_method(in_hook)  # the hook itself, after its tasks

        async def task(self) -> None:
            await trio.lowlevel.checkpoint()
            try_every_user_method(seen)

    lifecycle.register(Fanout(), name="fanout")
    assert await lifecycle.play() == 0
    assert seen == ["logged"] * len(LEVELS)
    assert in_hook == [misuse(level) for level in LEVELS]


async def test_user_methods_work_between_hooks_in_the_code_driving_the_run(lifecycle):
    class Quiet:
        @hookimpl
        def started(self) -> None: ...

    lifecycle.register(Quiet(), name="quiet")
    async with lifecycle.running():
        log.log_info("from the test")
        await lifecycle.reload()
        log.log_info("after a reload")
    assert user_lines(lifecycle)[-2:] == [
        "INFO: <mod> [user] from the test",
        "INFO: <mod> [user] after a reload",
    ]


# -- worker threads: a hook's own are part of the hook ------------------------------------


async def test_a_worker_thread_of_a_hook_is_part_of_the_hook(lifecycle):
    seen: list[str] = []

    class Threaded:
        @hookimpl
        async def started(self) -> None:
            await trio.to_thread.run_sync(try_every_user_method, seen)

    lifecycle.register(Threaded(), name="threaded")
    assert await lifecycle.play() == 0
    assert seen == [misuse(level) for level in LEVELS]


async def test_a_worker_thread_that_raises_makes_started_fatal(lifecycle):
    class Threaded:
        @hookimpl
        async def started(self) -> None:
            await trio.to_thread.run_sync(log.log_info, "from a thread")

    lifecycle.register(Threaded(), name="threaded")
    assert await lifecycle.play() == 1
    assert lifecycle.trace == ["threaded.started raised LoggerMisuse"]


# -- the marking functions, for the runtime ----------------------------------------------


def test_lifecycle_code_outside_trio_covers_the_block_only():
    with lifecycle_code():
        with pytest.raises(LoggerMisuse, match=r"^log_debug\(\) cannot"):
            log.log_debug("no")
        log.log_system_debug("yes")
    log.log_debug("yes again")


async def test_lifecycle_code_marks_its_task_not_the_tasks_it_starts():
    seen: list[str] = []

    async def child() -> None:
        try_every_user_method(seen)

    async def service() -> None:
        begin_service_code()
        try_every_user_method(seen)

    with lifecycle_code():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            nursery.start_soon(service)
        with pytest.raises(LoggerMisuse):
            log.log_info("no")
    log.log_info("yes")
    assert seen == ["logged"] * (2 * len(LEVELS))


def test_misuse_is_a_runtime_error_whose_message_names_the_method_to_use():
    assert issubclass(LoggerMisuse, RuntimeError)
    with lifecycle_code(), pytest.raises(LoggerMisuse) as info:
        Logger().log_emerg("x")
    assert str(info.value) == misuse("emerg")


# -- lifespan ------------------------------------------------------------------------------


# The lifespan runs in a task of its own, whose steps (setup, teardown) are lifecycle code
# and whose nursery's tasks are not.
async def test_user_methods_raise_in_a_lifespan_body_not_in_its_tasks(lifecycle):
    seen: dict[str, list[str]] = {}

    class Lived:
        @hookimpl
        async def lifespan(self) -> AsyncIterator[None]:
            try_every_user_method(seen.setdefault("setup", []))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.task)
                yield
                nursery.cancel_scope.cancel()
            try_every_user_method(seen.setdefault("teardown", []))

        async def task(self) -> None:
            try_every_user_method(seen.setdefault("task", []))

    lifecycle.register(Lived(), name="lived")
    assert await lifecycle.play() == 0
    assert seen == {
        "setup": [misuse(level) for level in LEVELS],
        "task": ["logged"] * len(LEVELS),
        "teardown": [misuse(level) for level in LEVELS],
    }
