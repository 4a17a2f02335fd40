# What a database module built on this engine answers to `oversip-hooks run --http`: the
# health check (here) and the metrics (_metrics.py), written once for every such module
# and read through the module's own public Pool, not the engine, since only the module
# knows what its stats mean (MySQL counts a lost connection out until it is replaced,
# and counts reconnections, which the engine never sees). The two Protocols below are
# what both take of a module's Pool: the SQLite and MySQL modules' Pool and PoolStats
# have that shape already. We rejected a collector and a check in each module (two copies
# that differed only by a prefix and would drift) and an adapter object per module
# (a third shape to keep in step with the first two).
#
# The check is a `SELECT 1` through every pool at once, through the module's fetchone(),
# so that it goes the way a user's statement goes: queued like one, on a connection no
# transaction holds, and through the module's reconnection when the server came back.
# The health server bounds the whole check (ProbeHooks.health_check); a pool that does
# not answer then is named by the server's timeout, as the plugin's.

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

import trio


class PoolStatsView(Protocol):
    """What the probes read of a module's ``PoolStats`` (see :class:`PoolStats`)."""

    @property
    def name(self) -> str: ...
    @property
    def open_connections(self) -> int: ...
    @property
    def in_use(self) -> int: ...
    @property
    def queries_served(self) -> int: ...
    @property
    def queries_waiting(self) -> int: ...
    @property
    def calls_timed(self) -> int: ...
    @property
    def call_seconds(self) -> float: ...


S_co = TypeVar("S_co", bound=PoolStatsView, covariant=True)


class ModulePool(Protocol[S_co]):
    """What the probes take of a database module's public ``Pool``."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    def stats(self) -> S_co: ...
    async def fetchone(self, sql: str) -> Any: ...


async def check_pools(pools: Iterable[ModulePool[Any]]) -> str | None:
    """A module's ``health_check``: ``SELECT 1`` through every pool at once.

    Args:
        pools: the pools of the runtime being checked (none: healthy).

    Returns:
        ``None`` when every pool answered, else the pools that failed and why, sorted
        by name: ``"pool 'main': ConnectionLostError: ..."``, joined by ``"; "``. The
        reason is the exception's message, which the modules keep free of passwords.

    Example::

        @hookimpl
        async def health_check(runtime):
            return await dbpool.check_pools(pools_of(runtime))
    """
    failing: list[str] = []

    async def probe(pool: ModulePool[Any]) -> None:
        try:
            await pool.fetchone("SELECT 1")
        except Exception as exc:
            failing.append(f"pool {pool.name!r}: {type(exc).__name__}: {exc}")

    async with trio.open_nursery() as nursery:
        for pool in pools:
            nursery.start_soon(probe, pool)
    return "; ".join(sorted(failing)) or None
