# What the database modules' benchmarks (sqlite.py, mysql.py) share: statements spread over
# concurrent workers on either event loop, and the module's side, timed from a `started`
# hook of a real Runtime with the module's pool open.

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

import trio

from oversip_hooks import Runtime, get_plugin_manager, hookimpl

from ._measure import Samples, Variant, timed
from ._report import Section, compare

Workers = list[Callable[[], Awaitable[None]]]


def cycling_ids(rows: int) -> Iterator[int]:
    """The primary keys 1 to ``rows``, over and over: the point SELECTs' keys."""
    return itertools.cycle(range(1, rows + 1))


async def spread(
    count: int,
    tasks: int,
    statement: Callable[[], Awaitable[object]],
    run_all: Callable[[Workers], Awaitable[None]],
) -> None:
    """``count`` statements shared by ``tasks`` workers, which ``run_all`` runs
    concurrently, on its own event loop."""
    per_task = [count // tasks + (1 if n < count % tasks else 0) for n in range(tasks)]

    def worker(n: int) -> Callable[[], Awaitable[None]]:
        async def statements() -> None:
            for _ in range(n):
                await statement()

        return statements

    await run_all([worker(n) for n in per_task if n])


async def in_nursery(workers: Workers) -> None:
    """``run_all`` for trio: each worker a task of one nursery."""
    async with trio.open_nursery() as nursery:
        for worker in workers:
            nursery.start_soon(worker)


def in_runtime(
    module: ModuleType,
    name: str,
    add_pool: Callable[[], object],
    body: Callable[[Any, int], Awaitable[None]],
) -> Variant:
    """A variant that runs ``body(pool, count)`` timed, from a ``started`` hook of a real
    Runtime where ``module`` is loaded as ``name`` and ``add_pool()``, called from
    ``initialize``, added its pool ``"bench"``."""

    class Bench:
        def __init__(self, count: int) -> None:
            self.count = count
            self.seconds = 0.0

        @hookimpl
        def initialize(self) -> None:
            add_pool()

        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            pool = module.pool("bench")
            with timed() as timer:
                await body(pool, self.count)
            self.seconds = timer.seconds
            runtime.stop()

    def measure(count: int) -> Mapping[str, float]:
        bench = Bench(count)
        pm = get_plugin_manager()
        pm.register(module, name=name)
        pm.register(bench, name="bench")
        status = trio.run(Runtime(pm, handle_signals=False).run)
        if status != 0:
            raise RuntimeError(f"the {name} module's benchmark runtime exited with {status}")
        return {"op": bench.seconds / count}

    return measure


def workload_rows(
    section: Section, samples: Samples, workload: str, rival: str, sizes: list[str], limit: float
) -> None:
    """The rows of one workload: the module against ``rival`` (with the target ``limit``)
    and against the floor, for each size; the variants are named ``"module SIZE"``,
    ``"RIVAL SIZE"`` and ``"floor"``."""
    for size in sizes:
        module = (f"module {size}", "op")
        section.rows.append(
            compare(
                samples,
                f"{workload}: module / {rival}",
                size,
                module,
                (f"{rival} {size}", "op"),
                limit=limit,
            )
        )
        section.rows.append(
            compare(samples, f"{workload}: module / floor", size, module, ("floor", "op"))
        )
