# The Prometheus metrics of a database module's pools, for `oversip-hooks run --http`: a
# collector read at each scrape, rather than counters updated on each call, so that a
# call costs nothing more when nobody scrapes (the engine keeps a count and a sum of call
# times, as it keeps the calls served). This module is the only one of dbpool that
# imports prometheus-client, and dbpool's __init__ imports it on first use of
# PoolCollector, so a run that does not serve /metrics never loads it. See _probes.py for
# why it reads the module's Pool, and for what it reads of it.

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from ._probes import ModulePool, PoolStatsView

S = TypeVar("S", bound=PoolStatsView)


class PoolCollector(Generic[S]):
    """The metrics of the pools that ``pools()`` returns at each scrape, labelled by pool
    name: ``PREFIXpool_size``, ``PREFIXpool_open_connections``, ``PREFIXpool_in_use``,
    ``PREFIXpool_waiting``, ``PREFIXqueries_served_total``, the summary
    ``PREFIXcall_duration_seconds`` and, given ``reconnects``,
    ``PREFIXpool_reconnects_total``.

    Args:
        prefix: the module's, ending in ``_``: ``"oversip_sqlite_"``.
        pools: the pools of this collector's runtime, now (a module looks them up by
            runtime: the health server scrapes from a task of its own).
        reconnects: how many connections a pool's stats say were opened to replace lost
            ones, for a module whose connections can be lost.

    Example::

        @hookimpl
        def metrics_collectors(runtime):
            return [dbpool.PoolCollector("oversip_mysql_", partial(pools_of, runtime))]
    """

    def __init__(
        self,
        prefix: str,
        pools: Callable[[], Iterable[ModulePool[S]]],
        *,
        reconnects: Callable[[S], int] | None = None,
    ) -> None:
        self._prefix = prefix
        self._pools = pools
        self._reconnects = reconnects

    def collect(self) -> Iterable[Metric]:
        prefix, labels = self._prefix, ["pool"]
        size = GaugeMetricFamily(f"{prefix}pool_size", "Connections configured", labels=labels)
        opened = GaugeMetricFamily(
            f"{prefix}pool_open_connections", "Connections open", labels=labels
        )
        in_use = GaugeMetricFamily(
            f"{prefix}pool_in_use", "Connections running, queueing or holding work", labels=labels
        )
        waiting = GaugeMetricFamily(
            f"{prefix}pool_waiting", "Calls waiting for a connection", labels=labels
        )
        served = CounterMetricFamily(
            f"{prefix}queries_served", "Calls completed without an error", labels=labels
        )
        seconds = SummaryMetricFamily(
            f"{prefix}call_duration_seconds",
            "Time of the pool's own calls, queueing included",
            labels=labels,
        )
        reconnects = CounterMetricFamily(
            f"{prefix}pool_reconnects",
            "Connections opened to replace lost ones",
            labels=labels,
        )
        for pool in self._pools():
            stats = pool.stats()
            name = [stats.name]
            size.add_metric(name, pool.size)
            opened.add_metric(name, stats.open_connections)
            in_use.add_metric(name, stats.in_use)
            waiting.add_metric(name, stats.queries_waiting)
            served.add_metric(name, stats.queries_served)
            seconds.add_metric(name, count_value=stats.calls_timed, sum_value=stats.call_seconds)
            if self._reconnects is not None:
                reconnects.add_metric(name, self._reconnects(stats))
        families: list[Metric] = [size, opened, in_use, waiting, served, seconds]
        if self._reconnects is not None:
            families.append(reconnects)
        return families
