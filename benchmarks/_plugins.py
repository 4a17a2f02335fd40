# The plugins every benchmark runs, in one place so that the runtime and each baseline call
# exactly the same functions. They do nothing, on purpose: a benchmark of dispatch or of
# the lifecycle must measure the framework, not the plugins' work.

from __future__ import annotations

from collections.abc import Sequence

import pluggy
import trio

from oversip_hooks import Runtime, RuntimeState, get_plugin_manager, hookimpl, hookspec


class Trivial:
    """All four hooks, synchronous and empty."""

    @hookimpl
    def initialize(self, runtime: Runtime) -> None:
        pass

    @hookimpl
    def started(self, runtime: Runtime) -> None:
        pass

    @hookimpl
    def reload(self, runtime: Runtime) -> None:
        pass

    @hookimpl
    def terminated(self, runtime: Runtime, error: bool) -> None:
        pass


class Serving:
    """Starts one service that sleeps until cancelled, as a module's server task would."""

    @hookimpl
    def started(self, runtime: Runtime) -> None:
        runtime.start_soon(trio.sleep_forever)

    @hookimpl
    def terminated(self) -> None:
        pass


# The same plugin as a module of its own, for the command line to load as an entry point.
SERVING_MODULE = """\
import trio

from oversip_hooks import hookimpl


@hookimpl
def started(runtime):
    runtime.start_soon(trio.sleep_forever)


@hookimpl
def terminated():
    pass
"""


def manager_of(plugins: Sequence[object]) -> pluggy.PluginManager:
    """A fresh plugin manager with ``plugins`` registered in order, as ``p0``, ``p1``..."""
    pm = get_plugin_manager()
    for index, plugin in enumerate(plugins):
        pm.register(plugin, name=f"p{index}")
    return pm


def stop_once_running(runtime: Runtime) -> Runtime:
    """Make ``runtime`` stop as soon as every ``started`` has returned."""

    def listener(state: RuntimeState) -> None:
        if state is RuntimeState.RUNNING:
            runtime.stop()

    runtime.add_state_listener(listener)
    return runtime


class BenchHooks:
    """The extension hooks that the dispatch benchmark calls, declared by
    :class:`DeclaresBenchHooks`."""

    @hookspec
    def bench_sync(self) -> None:
        """Implemented by :class:`SyncHook`."""

    @hookspec
    def bench_async(self) -> None:
        """Implemented by :class:`AsyncHook`."""

    @hookspec
    def bench_checkpoint(self) -> None:
        """Implemented by :class:`CheckpointHook`."""


class DeclaresBenchHooks:
    """Declares :class:`BenchHooks` and implements none of them."""

    extension_hooks = BenchHooks


class SyncHook:
    """An empty synchronous implementation: the cost of dispatch alone."""

    @hookimpl
    def bench_sync(self) -> None:
        pass


class AsyncHook:
    """An empty ``async def`` implementation: the worst case for the cost of awaiting one."""

    @hookimpl
    async def bench_async(self) -> None:
        pass


class CheckpointHook:
    """An ``async def`` implementation that awaits once, as one that does I/O does."""

    @hookimpl
    async def bench_checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()
