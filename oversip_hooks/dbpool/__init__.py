"""A pool engine for database modules: connections owned by worker threads of the pool's
own, statements from concurrent tasks queued onto them, transactions, and a bounded
shutdown. A database module supplies a :class:`Driver` (how to connect, begin, commit,
roll back, interrupt and close) and wraps a :class:`Pool` in its public API; see
``contrib/oversip-mod-sqlite`` for one.

Example::

    from oversip_hooks import dbpool

    engine = dbpool.Pool(MyDriver(settings), size=4, label="MySQL pool 'main'")
    await engine.open()                                  # in the module's started hook
    rows = await engine.call(lambda connection: fetch(connection, "SELECT 1"))
    await engine.run(insert_batch, mode="")              # one transaction, one round trip
    await engine.aclose()                                # in the module's terminated hook

For ``oversip-hooks run --http``, a module's ``health_check`` and ``metrics_collectors``
are :func:`check_pools` and a :class:`PoolCollector` over its own pools::

    @hookimpl
    async def health_check(runtime):
        return await dbpool.check_pools(pools_of(runtime))

    @hookimpl
    def metrics_collectors(runtime):
        return [dbpool.PoolCollector("oversip_mysql_", partial(pools_of, runtime))]
"""

from typing import TYPE_CHECKING

from ._engine import (
    Driver,
    HandOff,
    Pool,
    PoolClosedError,
    PoolState,
    PoolStats,
    Shutdown,
    Transaction,
    WaitForReply,
    jobs_in_flight,
)
from ._probes import ModulePool, PoolStatsView, check_pools

if TYPE_CHECKING:
    from ._metrics import PoolCollector

__all__ = [
    "Driver",
    "HandOff",
    "ModulePool",
    "Pool",
    "PoolClosedError",
    "PoolCollector",
    "PoolState",
    "PoolStats",
    "PoolStatsView",
    "Shutdown",
    "Transaction",
    "WaitForReply",
    "check_pools",
    "jobs_in_flight",
]


def __getattr__(name: str) -> object:
    # PoolCollector imports prometheus-client: only a run that serves /metrics pays for it.
    if name == "PoolCollector":
        from ._metrics import PoolCollector

        return PoolCollector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
