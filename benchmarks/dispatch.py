# Dispatch of one extension hook call to N implementations, through the public API only:
# `await runtime.hooks.NAME()` and `await runtime.hooks.NAME.call_each(...)` (the callable
# got once per sample, as pluggy's `pm.hook.NAME` on its side), called from a task beside a
# running Runtime, as a plugin's service would call them. Lifecycle hooks go
# through the same calling path (`_callers.Calling`), so this is the figure for both; the
# lifecycle's own events were measured through a private method before extension hooks
# existed, and no longer are.
#
# Each baseline calls the very same functions: raw pluggy (`pm.hook.NAME()`, a plain
# pluggy manager with the same plugin instances registered), a hand-written
# `for f in fns: await f()` inside `trio.run`, and a hand-written nursery that starts each
# function as a task. The calls are timed in a loop of `count`, the runtime's start and stop
# outside the timed part.

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial

import pluggy
import trio

from oversip_hooks import Runtime, RuntimeState, hookspecs

from ._measure import Profile, Samples, Variant, interleave, timed
from ._plugins import (
    AsyncHook,
    BenchHooks,
    CheckpointHook,
    DeclaresBenchHooks,
    SyncHook,
    manager_of,
)
from ._report import Row, Section, compare

SYNC_LIMIT = 1.2
ASYNC_LIMIT = 1.3
CONCURRENT_LIMIT = 1.3

# (figure, subject, baseline, target), subject and baseline as (variant, metric).
FIGURES: list[tuple[str, tuple[str, str], tuple[str, str], float | None]] = [
    ("sync: dispatch / pluggy", ("sync hooks", "time"), ("pluggy", "time"), SYNC_LIMIT),
    ("sync: pluggy / loop", ("pluggy", "time"), ("loop", "time"), None),
    ("async: dispatch / loop", ("async hooks", "time"), ("async loop", "time"), ASYNC_LIMIT),
    (
        "async: call_each / loop",
        ("async call_each", "time"),
        ("async loop", "time"),
        None,
    ),
    (
        "concurrent: call_each / nursery",
        ("concurrent call_each", "time"),
        ("nursery", "time"),
        CONCURRENT_LIMIT,
    ),
    (
        "async, 1 checkpoint: dispatch / loop",
        ("checkpoint hooks", "time"),
        ("checkpoint loop", "time"),
        None,
    ),
]

NOTES = f"""\
One extension hook call to N implementations, declared by a plugin of its own that
implements none; the figure is the time per call (all N implementations). **dispatch** is
`await hook()`, `hook = runtime.hooks.NAME` got once, from a task beside a running
`Runtime` (no observer, no
`--trace-hooks`, loguru with no sink), its results collected in plugin order, after one
untimed call that makes the hook's call plan (kept until a plugin comes or goes).
**sync**: N plugins whose `def bench_sync(self): pass` does nothing; **pluggy** is
`hook()`, `hook = pm.hook.bench_sync` got once, on a plain `pluggy.PluginManager` with the
same plugin instances,
**loop** `for f in fns: f()` over the same bound methods. **async**: `async def
bench_async(self): pass`; **loop** is `for f in fns: await f()` inside `trio.run`;
**call_each** is `await runtime.hooks.bench_async.call_each()` (every outcome collected,
each with its duration). **concurrent**: `call_each(concurrently=True)` on the same async
implementations, against a hand-written `async with trio.open_nursery() as n: for f in fns:
n.start_soon(f)`. **async, 1 checkpoint** is `async def ...: await
trio.lowlevel.checkpoint()`, the least an async hook that does I/O awaits, for context.
Targets: sync within {SYNC_LIMIT}x of raw pluggy, async within {ASYNC_LIMIT}x of the
hand-written loop, concurrent within {CONCURRENT_LIMIT}x of the hand-written nursery.
"""

# What a sample calls: resolved once from the running runtime, then called in the timed
# loop with no argument, as pluggy's side calls `pm.hook.NAME` resolved once.
Call = Callable[[Runtime], Callable[[], Awaitable[object]]]


def _runtime(plugins: Sequence[object], call: Call) -> Variant:
    pm = manager_of([DeclaresBenchHooks(), *plugins])  # a new Runtime may run it again

    def measure(count: int) -> Mapping[str, float]:
        runtime = Runtime(pm, handle_signals=False)
        running = trio.Event()
        stop_listening = runtime.add_state_listener(
            lambda state: running.set() if state is RuntimeState.RUNNING else None
        )
        seconds = 0.0

        async def drive() -> None:
            nonlocal seconds
            async with trio.open_nursery() as nursery:
                nursery.start_soon(runtime.run)
                await running.wait()
                # A state listener is an observer: with one, each call would build and
                # send its events, which the figure is meant to be without.
                stop_listening()
                # Untimed: the first call makes the hook's call plan, which the runtime
                # keeps until a plugin comes or goes; pluggy's side has its caller built.
                hook = call(runtime)
                await hook()
                with timed() as timer:
                    for _ in range(count):
                        await hook()
                runtime.stop()
            seconds = timer.seconds

        trio.run(drive)
        return {"time": seconds / count}

    return measure


def _sync_call(runtime: Runtime) -> Callable[[], Awaitable[object]]:
    return runtime.hooks.bench_sync


def _async_call(runtime: Runtime) -> Callable[[], Awaitable[object]]:
    return runtime.hooks.bench_async


def _async_call_each(runtime: Runtime) -> Callable[[], Awaitable[object]]:
    return runtime.hooks.bench_async.call_each


def _concurrent_call_each(runtime: Runtime) -> Callable[[], Awaitable[object]]:
    return partial(runtime.hooks.bench_async.call_each, concurrently=True)


def _checkpoint_call(runtime: Runtime) -> Callable[[], Awaitable[object]]:
    return runtime.hooks.bench_checkpoint


def _pluggy(plugins: Sequence[SyncHook]) -> Variant:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(BenchHooks)
    for index, plugin in enumerate(plugins):
        pm.register(plugin, name=f"p{index}")
    hook = pm.hook.bench_sync

    def measure(count: int) -> Mapping[str, float]:
        with timed() as timer:
            for _ in range(count):
                hook()
        return {"time": timer.seconds / count}

    return measure


def _loop(plugins: Sequence[SyncHook]) -> Variant:
    functions = [plugin.bench_sync for plugin in plugins]

    def measure(count: int) -> Mapping[str, float]:
        with timed() as timer:
            for _ in range(count):
                for function in functions:
                    function()
        return {"time": timer.seconds / count}

    return measure


def _await_loop(functions: Sequence[Callable[[], Awaitable[None]]]) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        async def loop() -> float:
            with timed() as timer:
                for _ in range(count):
                    for function in functions:
                        await function()
            return timer.seconds / count

        return {"time": trio.run(loop)}

    return measure


def _nursery(functions: Sequence[Callable[[], Awaitable[None]]]) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        async def loop() -> float:
            with timed() as timer:
                for _ in range(count):
                    async with trio.open_nursery() as nursery:
                        for function in functions:
                            nursery.start_soon(function)
            return timer.seconds / count

        return {"time": trio.run(loop)}

    return measure


def run(profile: Profile) -> Section:
    section = Section("Dispatch of one event to N plugins", notes=NOTES)
    for n in profile.dispatch_sizes:
        sync = [SyncHook() for _ in range(n)]
        asynchronous = [AsyncHook() for _ in range(n)]
        awaiting = [CheckpointHook() for _ in range(n)]
        variants = {
            "sync hooks": _runtime(sync, _sync_call),
            "pluggy": _pluggy(sync),
            "loop": _loop(sync),
            "async hooks": _runtime(asynchronous, _async_call),
            "async call_each": _runtime(asynchronous, _async_call_each),
            "async loop": _await_loop([plugin.bench_async for plugin in asynchronous]),
            "concurrent call_each": _runtime(asynchronous, _concurrent_call_each),
            "nursery": _nursery([plugin.bench_async for plugin in asynchronous]),
            "checkpoint hooks": _runtime(awaiting, _checkpoint_call),
            "checkpoint loop": _await_loop([plugin.bench_checkpoint for plugin in awaiting]),
        }
        samples = interleave(
            variants, rounds=profile.rounds, budget=profile.budget, min_sample=profile.min_sample
        )
        section.rows += _rows(samples, f"N={n}")
    return section


def _rows(samples: Samples, size: str) -> list[Row]:
    return [
        compare(samples, figure, size, subject, baseline, limit=limit)
        for figure, subject, baseline, limit in FIGURES
    ]
