# The Prometheus metrics of `oversip-hooks run --http`, in a module of their own because
# prometheus-client costs the start about as much as the rest of the probe server: the
# server imports this module once the runtime is ready (or at the first scrape, if one
# comes sooner), after READY=1, and hands it the events it kept until then. Metrics live
# in one CollectorRegistry per runtime (prometheus-client's global one would mix two
# runtimes of one process, as tests run). The runtime's own come from its observer events
# (hook calls and their durations, failures, state, stalls of the loop) and, at each
# scrape, from the runtime itself (services running per plugin). Plugins add theirs through
# the extension hook `metrics_collectors(runtime)`; a collector that raises or yields what
# is no metric is logged once and yields nothing, so that one plugin's bug cannot empty
# or break the whole scrape.

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import Enum as EnumMetric
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._callers import HookOutcome
from ._events import Event, HookCallEnded, LoopBlocked, RuntimeState, StateChanged
from ._fatal import printable
from ._logging import emit
from ._runtime import Runtime

LOG_ID = "http"
# Seconds, for hook calls: from a quick sync hook to the default timeouts (30 s).
_HOOK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)


class RuntimeMetrics:
    """The metrics of one runtime, in a registry of their own.

    Example::

        metrics = RuntimeMetrics(runtime)
        metrics.observe(event, time.time())   # for each of the runtime's events
        body = metrics.exposition()
    """

    def __init__(self, runtime: Runtime) -> None:
        # auto_describe: the process collector's names are reserved too, so that a
        # plugin's collector cannot repeat them (a TYPE line twice is an invalid scrape)
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.started = False
        self._last_stall: float | None = None
        self.state = EnumMetric(
            "oversip_hooks_state",
            "The runtime's state",
            states=[state.value for state in RuntimeState],
            registry=registry,
        )
        self.state.state(RuntimeState.CREATED.value)
        self.start_time = Gauge(
            "oversip_hooks_start_time_seconds",
            "When the runtime first became ready (every started hook returned), in Unix "
            "time; 0 before",
            registry=registry,
        )
        self.hook_seconds = Histogram(
            "oversip_hooks_hook_duration_seconds",
            "Calls of hook implementations and their durations, per hook and plugin",
            ["hook", "plugin"],
            buckets=_HOOK_BUCKETS,
            registry=registry,
        )
        self.hook_failures = Counter(
            "oversip_hooks_hook_failures",
            "Calls of hook implementations that raised, per hook and plugin",
            ["hook", "plugin"],
            registry=registry,
        )
        self.reloads = Counter("oversip_hooks_reloads", "Reloads begun", registry=registry)
        self.stalls = Counter(
            "oversip_hooks_event_loop_stalls",
            "Times the event loop was blocked past the blocked-loop threshold",
            registry=registry,
        )
        self.last_stall = Gauge(
            "oversip_hooks_event_loop_last_stall_seconds",
            "How long the last stall of the event loop had lasted when last reported",
            registry=registry,
        )
        registry.register(_ServicesCollector(runtime))
        ProcessCollector(registry=registry)

    def observe(self, event: Event, now: float) -> None:
        """Count ``event``, which happened at ``now`` (Unix time). In the runtime's
        thread, but LoopBlocked, sent from the watchdog's thread while the loop is blocked:
        the metrics' own locks make that safe."""
        if isinstance(event, HookCallEnded):
            self.hook_seconds.labels(event.hook, event.plugin).observe(event.seconds)
            if event.error is not None:
                self.hook_failures.labels(event.hook, event.plugin).inc()
        elif isinstance(event, StateChanged):
            self.state.state(event.state.value)
            if event.state is RuntimeState.RELOADING:
                self.reloads.inc()
            elif event.state is RuntimeState.RUNNING and not self.started:
                self.started = True
                self.start_time.set(now)
        elif isinstance(event, LoopBlocked):
            # The watchdog reports a stall at its threshold, then each time its duration
            # doubles: a report no longer than the last one begins a new stall.
            if self._last_stall is None or event.seconds <= self._last_stall:
                self.stalls.inc()
            self._last_stall = event.seconds
            self.last_stall.set(event.seconds)

    def add_plugin_collectors(self, outcomes: list[HookOutcome]) -> None:
        """Register what each plugin's ``metrics_collectors`` returned; log, and leave
        out, what failed or is no collector."""
        for outcome in outcomes:
            if outcome.error is not None:
                emit(
                    LOG_ID,
                    "error",
                    f"metrics_collectors of {outcome.plugin!r} failed: {printable(outcome.error)}",
                )
                continue
            value: Any = outcome.value
            try:
                collectors = [] if value is None else list(value)
            except TypeError:
                emit(
                    LOG_ID,
                    "error",
                    f"metrics_collectors of {outcome.plugin!r} returned {printable(value)}; "
                    "it returns a list of collectors",
                )
                continue
            for collector in collectors:
                try:
                    self.registry.register(_Guarded(outcome.plugin, collector))
                except Exception as exc:  # a name taken already, or not a collector at all
                    emit(
                        LOG_ID,
                        "error",
                        f"a collector of {outcome.plugin!r} is refused: {printable(exc)}",
                    )

    content_type = CONTENT_TYPE_LATEST

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format, of ``content_type``."""
        return generate_latest(self.registry)


class _ServicesCollector:
    """Services running per plugin, read from the runtime at each scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for plugin, count in sorted(self._runtime.services_running().items()):
            family.add_metric([plugin], count)
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "oversip_hooks_services_running", "Services running, per plugin", labels=["plugin"]
        )


class _Guarded:
    """A plugin's collector whose failure is logged once and yields nothing."""

    def __init__(self, plugin: str, collector: Collector) -> None:
        self._plugin = plugin
        self._collector = collector
        self._failed = False

    def describe(self) -> Iterable[Metric]:
        describe: Callable[[], Iterable[Metric]] | None = getattr(self._collector, "describe", None)
        return self._guard(describe or self._collector.collect)

    def collect(self) -> Iterable[Metric]:
        return self._guard(self._collector.collect)

    def _guard(self, produce: Callable[[], Iterable[Metric]]) -> list[Metric]:
        try:
            metrics = list(produce())
            for metric in metrics:
                _check_metric(metric)
            return metrics
        except Exception as exc:
            if not self._failed:
                self._failed = True
                emit(
                    LOG_ID,
                    "error",
                    f"a metrics collector of {self._plugin!r} failed: {printable(exc)}; "
                    "its metrics are left out (logged once)",
                    exception=exc,
                )
            return []


def _check_metric(metric: object) -> None:
    """Raise unless ``metric`` is a metric family that the text format can write: what a
    plugin's collector yields is checked here, where its failure is its own, rather than
    in the middle of the scrape."""
    if not isinstance(metric, Metric):
        raise TypeError(f"a collector yields metric families, not {printable(metric)}")
    for sample in metric.samples:
        float(sample.value)
        if not all(isinstance(v, str) for v in (*sample.labels, *sample.labels.values())):
            raise TypeError(f"labels of {sample.name!r} are not all str")
