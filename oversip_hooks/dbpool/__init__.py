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
"""

from ._engine import (
    Driver,
    HandOff,
    Pool,
    PoolClosedError,
    PoolState,
    PoolStats,
    Shutdown,
    Transaction,
    jobs_in_flight,
)

__all__ = [
    "Driver",
    "HandOff",
    "Pool",
    "PoolClosedError",
    "PoolState",
    "PoolStats",
    "Shutdown",
    "Transaction",
    "jobs_in_flight",
]
