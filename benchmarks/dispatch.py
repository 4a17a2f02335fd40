# Dispatch of one lifecycle event to N plugins. The runtime has no public "call one hook"
# API, so the event measured is `reload`, by two paths through one running Runtime:
#
# - the reload cycle, public API only: `runtime.reload()`, then wait for the state listener
#   to report RUNNING again. It includes waking the runtime's task and switching back.
# - dispatch alone: `await runtime._run_reload()`, the private method that the runtime's
#   task runs on a reload request: it builds the schedule (`_schedule`), calls each
#   implementation through `_call` and logs "reloading"/"reloaded" (loguru has no sink
#   here, so a log call returns early).
#
# The baselines call the very same functions: raw pluggy (`pm.hook.reload(runtime=...)`),
# a plain Python loop, and for async implementations a hand-written
# `for f in fns: await f(runtime)` inside `trio.run`.

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import trio

from oversip_hooks import Runtime, RuntimeState

from ._measure import Profile, Samples, Variant, interleave, timed
from ._plugins import AsyncCheckpoint, AsyncReload, Trivial, manager_of
from ._report import Row, Section, compare

SYNC_LIMIT = 1.2
ASYNC_LIMIT = 1.3

# (figure, subject, baseline, target), subject and baseline as (variant, metric).
FIGURES: list[tuple[str, tuple[str, str], tuple[str, str], float | None]] = [
    ("sync: dispatch / pluggy", ("runtime", "dispatch"), ("pluggy", "time"), SYNC_LIMIT),
    ("sync: dispatch / loop", ("runtime", "dispatch"), ("loop", "time"), None),
    ("sync: cycle / pluggy", ("runtime", "cycle"), ("pluggy", "time"), None),
    ("sync: pluggy / loop", ("pluggy", "time"), ("loop", "time"), None),
    ("async: dispatch / loop", ("async runtime", "dispatch"), ("async loop", "time"), ASYNC_LIMIT),
    ("async: cycle / loop", ("async runtime", "cycle"), ("async loop", "time"), None),
    (
        "async, 1 checkpoint: dispatch / loop",
        ("checkpoint runtime", "dispatch"),
        ("checkpoint loop", "time"),
        None,
    ),
]

NOTES = f"""\
The event is `reload`, sent to N plugins whose `reload(runtime)` does nothing; the figure
is the time per event (all N implementations). **dispatch** is
`await runtime._run_reload()` (private: the method the runtime's task runs on a reload
request) from a task beside a running `Runtime`: building the schedule, calling each
implementation through `Runtime._call`, two log calls with no loguru sink. **cycle** is the
public path: `runtime.reload()` and waiting until a state listener sees RUNNING again; it
adds waking the runtime's task and switching back. **pluggy** is `pm.hook.reload(runtime=r)`
on the same plugins, **loop** is `for f in fns: f(r)` over the same bound methods, and for
async implementations (`async def reload(runtime): pass`) **loop** is
`for f in fns: await f(r)` inside `trio.run`. **async, 1 checkpoint** is the same with
`async def reload(runtime): await trio.lowlevel.checkpoint()`, the least an async hook that
does I/O awaits, for context. Targets: dispatch within {SYNC_LIMIT}x of raw
pluggy (sync) and {ASYNC_LIMIT}x of the hand-written loop (async).
"""


def _runtime(plugins: Sequence[object]) -> Variant:
    pm = manager_of(plugins)  # registered once: a new Runtime may run the same manager

    def measure(count: int) -> Mapping[str, float]:
        runtime = Runtime(pm, handle_signals=False)
        running = _Running(runtime)
        times: dict[str, float] = {}

        async def drive() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(runtime.run)
                await running.event.wait()
                with timed() as cycle:
                    for _ in range(count):
                        await running.after(runtime.reload)
                with timed() as dispatch:
                    for _ in range(count):
                        await runtime._run_reload()
                runtime.stop()
            times["cycle"] = cycle.seconds / count
            times["dispatch"] = dispatch.seconds / count

        trio.run(drive)
        return times

    return measure


class _Running:
    """Lets a task wait until the runtime is RUNNING again after a request."""

    def __init__(self, runtime: Runtime) -> None:
        self.event = trio.Event()
        runtime.add_state_listener(self._on_state)

    def _on_state(self, state: RuntimeState) -> None:
        if state is RuntimeState.RUNNING:
            self.event.set()

    async def after(self, request: Callable[[], None]) -> None:
        self.event = trio.Event()
        request()
        await self.event.wait()


def _pluggy(plugins: Sequence[object]) -> Variant:
    hook = manager_of(plugins).hook.reload
    runtime = Runtime(handle_signals=False)

    def measure(count: int) -> Mapping[str, float]:
        with timed() as timer:
            for _ in range(count):
                hook(runtime=runtime)
        return {"time": timer.seconds / count}

    return measure


def _loop(plugins: list[Trivial]) -> Variant:
    functions = [plugin.reload for plugin in plugins]
    runtime = Runtime(handle_signals=False)

    def measure(count: int) -> Mapping[str, float]:
        with timed() as timer:
            for _ in range(count):
                for function in functions:
                    function(runtime)
        return {"time": timer.seconds / count}

    return measure


def _await_loop(plugins: list[AsyncReload] | list[AsyncCheckpoint]) -> Variant:
    functions = [plugin.reload for plugin in plugins]
    runtime = Runtime(handle_signals=False)

    def measure(count: int) -> Mapping[str, float]:
        async def loop() -> float:
            with timed() as timer:
                for _ in range(count):
                    for function in functions:
                        await function(runtime)
            return timer.seconds / count

        return {"time": trio.run(loop)}

    return measure


def run(profile: Profile) -> Section:
    section = Section("Dispatch of one event to N plugins", notes=NOTES)
    for n in profile.dispatch_sizes:
        sync = [Trivial() for _ in range(n)]
        asynchronous = [AsyncReload() for _ in range(n)]
        awaiting = [AsyncCheckpoint() for _ in range(n)]
        variants = {
            "runtime": _runtime(sync),
            "pluggy": _pluggy(sync),
            "loop": _loop(sync),
            "async runtime": _runtime(asynchronous),
            "async loop": _await_loop(asynchronous),
            "checkpoint runtime": _runtime(awaiting),
            "checkpoint loop": _await_loop(awaiting),
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
