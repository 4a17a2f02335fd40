# The harness drives the real Runtime, not a model of it: a second, simplified lifecycle in
# the test toolkit would drift from the real one and pass tests the real one fails. What
# it adds is isolation (its own plugin manager, its own SystemCallbacks registry, no
# signal handlers) and observation, through the runtime's own call monitor and state
# listener and a loguru sink that keeps records in memory.
#
# Every wait is on an event the runtime reports (a change of state, the end of the run),
# never on time, so the harness is exact under trio's MockClock(autojump_threshold=0).

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import pluggy
import trio
from loguru import logger

from .._callbacks import CallbackRegistry, snapshot, using
from .._fatal import FatalError, fatal
from .._logging import LEVELS
from .._manager import get_plugin_manager, readable_name, validate
from .._runtime import Runtime, RuntimeState, is_cancellation, leaf_exceptions
from ..hookspecs import hookimpl

_LEVEL_OF_LOGURU_NAME = {loguru_name: level for level, (loguru_name, _) in LEVELS.items()}

Hook = Literal["initialize", "started", "reload", "terminated"]


@dataclass(frozen=True)
class Fault:
    """Make the next call of ``hook`` raise (``how="raise"``) or call ``fatal``."""

    hook: Hook
    how: Literal["raise", "fatal"] = "raise"


LifecycleEvent = Literal["reload", "stop"] | signal.Signals | Fault
"""What a test can do to a running runtime: request a reload or a stop, send it a signal
(SIGHUP, SIGTERM, SIGINT, SIGQUIT), or make the next call of a hook fail (:class:`Fault`)."""


@dataclass(frozen=True)
class HookCall:
    """One call of one hook implementation, as the runtime made it.

    Attributes:
        plugin: the plugin's name (``"SystemCallbacks"`` for the callbacks).
        hook: ``"initialize"``, ``"started"``, ``"reload"`` or ``"terminated"``.
        error: the ``error`` argument given to ``terminated``; ``None`` for other hooks.
        raised: what the implementation raised, or ``None``.
        cancelled: true when the runtime cancelled it (a stop, a timeout).
    """

    plugin: str
    hook: str
    error: bool | None = None
    raised: BaseException | None = None
    cancelled: bool = False

    def __str__(self) -> str:
        text = f"{self.plugin}.{self.hook}"
        if self.hook == "terminated":
            text += f"(error={self.error})"
        if self.cancelled:
            text += " cancelled"
        elif self.raised is not None:
            text += f" raised {type(self.raised).__name__}"
        return text


@dataclass(frozen=True)
class CapturedRecord:
    """One log record: ``level`` is the OverSIP level (``"notice"``, ``"crit"``...)."""

    level: str
    log_id: str | None
    message: str
    user: bool = False

    def __str__(self) -> str:
        user = "[user] " if self.user else ""
        return f"{self.level.upper()}: <{self.log_id}> {user}{self.message}"


class FaultInjector:
    """A plugin that raises, or calls ``fatal``, in the phases it is told to.

    The harness registers one (named ``"faults"``) when a test calls
    :meth:`LifecycleHarness.inject_failure`.
    """

    def __init__(self) -> None:
        self.armed: dict[str, Literal["raise", "fatal"]] = {}

    def _maybe_fail(self, hook: str) -> None:
        how = self.armed.pop(hook, None)
        if how == "raise":
            raise RuntimeError(f"injected failure in {hook}")
        if how == "fatal":
            fatal(f"injected fatal in {hook}")

    @hookimpl
    def initialize(self) -> None:
        self._maybe_fail("initialize")

    @hookimpl
    def started(self) -> None:
        self._maybe_fail("started")

    @hookimpl
    def reload(self) -> None:
        self._maybe_fail("reload")

    @hookimpl
    def terminated(self) -> None:
        self._maybe_fail("terminated")


class LifecycleHarness:
    """Runs plugins through the real :class:`~oversip_hooks.Runtime`, in isolation.

    Each harness has a fresh plugin manager and a fresh ``SystemCallbacks`` registry,
    installs no signal handlers, and records every hook call (:attr:`calls`,
    :attr:`trace`), every log record (:attr:`records`, :attr:`lines`) and the exit status.

    Args:
        plugins: registered in the order given, under readable names (a module's name,
            a class's name, an instance's class name).
        startup_timeout, shutdown_timeout: as for :class:`~oversip_hooks.Runtime`; short
            by default, and exact under ``MockClock(autojump_threshold=0)``.
        global_callbacks: start from the callbacks registered outside any run (at import
            time), instead of an empty registry.

    Example::

        async def test_pool_lifecycle():
            harness = LifecycleHarness(PoolModule())
            async with harness.running():
                await harness.reload()
            assert harness.trace == [
                "PoolModule.initialize", "PoolModule.started",
                "PoolModule.reload", "PoolModule.terminated(error=False)",
            ]
            assert harness.exit_status == 0
    """

    def __init__(
        self,
        *plugins: object,
        startup_timeout: float = 5.0,
        shutdown_timeout: float = 5.0,
        global_callbacks: bool = False,
    ) -> None:
        self.pm: pluggy.PluginManager = get_plugin_manager()
        self.callbacks: CallbackRegistry = snapshot() if global_callbacks else CallbackRegistry()
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.calls: list[HookCall] = []
        """Every hook call, in the order they ended."""
        self.records: list[CapturedRecord] = []
        self.states: list[RuntimeState] = []
        self.errors_before_shutdown: list[BaseException] = []
        """:attr:`errors` as they were when the shutdown began."""
        self.runtime: Runtime | None = None
        self.exit_status: int | None = None
        self._faults: FaultInjector | None = None
        self._reloads_begun = 0
        self._reloads_done = 0
        self._changed = trio.Event()
        self._isolated = False
        self._active_calls: list[str] = []
        self.overlapping_calls: list[tuple[str, str]] = []
        for plugin in plugins:
            self.register(plugin)

    # -- setting up ---------------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` after those already registered; return its name.

        Raises:
            pluggy.PluginValidationError: a hook takes an argument its spec lacks.
            ValueError: the plugin or the name is already registered.
        """
        registered = self.pm.register(plugin, name=name or readable_name(self.pm, plugin))
        assert registered is not None, "a fresh harness blocks no plugin name"
        return registered

    def register_fault_injector(self) -> FaultInjector:
        """Register the :class:`FaultInjector` (named ``"faults"``) that
        :meth:`inject_failure` arms, after the plugins registered so far; once only.

        Registering it before the run lets a failure be injected into ``reload`` or
        ``terminated`` while the runtime runs.
        """
        if self._faults is None:
            self._faults = FaultInjector()
            self.register(self._faults, name="faults")
        return self._faults

    def inject_failure(self, hook: Hook, how: Literal["raise", "fatal"] = "raise") -> None:
        """Make the next call of ``hook`` fail, from the ``"faults"`` plugin, which is
        registered now if :meth:`register_fault_injector` has not been called.

        Raises:
            ValueError: ``hook`` is not a lifecycle hook, or ``how`` is unknown.
            RuntimeError: the run has begun and no fault injector was registered before.
        """
        if hook not in ("initialize", "started", "reload", "terminated"):
            raise ValueError(f"no lifecycle hook named {hook!r}")
        if how not in ("raise", "fatal"):
            raise ValueError(f"how must be 'raise' or 'fatal', not {how!r}")
        if self._faults is None and self.runtime is not None:
            raise RuntimeError(
                "inject_failure() during a run needs register_fault_injector() before it"
            )
        self.register_fault_injector().armed[hook] = how

    @contextmanager
    def isolated(self) -> Iterator[LifecycleHarness]:
        """Inside the block, ``SystemCallbacks`` adds to this harness's registry and log
        records are captured. The pytest fixtures hold it for the whole test."""
        if self._isolated:
            yield self
            return
        with ExitStack() as stack:
            stack.enter_context(using(self.callbacks))
            sink = logger.add(
                self._capture, level=0, format="{message}", filter=self._ours, catch=False
            )
            stack.callback(logger.remove, sink)
            self._isolated = True
            stack.callback(setattr, self, "_isolated", False)
            yield self

    # -- driving ------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        """Start the runtime; the block runs once every ``started`` has returned (or the
        start has failed: check :attr:`exit_status`). On leaving, the runtime is stopped
        if it still runs, and the harness waits for the end of the run.

        Raises:
            RuntimeError: this harness has already run.
            pluggy.PluginValidationError: a plugin is invalid; nothing was called.
        """
        if self.runtime is not None:
            raise RuntimeError("a LifecycleHarness runs once; make a new one")
        runtime = Runtime(
            self.pm,
            handle_signals=False,
            startup_timeout=self.startup_timeout,
            shutdown_timeout=self.shutdown_timeout,
            callbacks=self.callbacks,
        )
        validate(self.pm)  # raised here, plainly, rather than from inside a nursery
        runtime.add_state_listener(self._on_state)
        runtime.add_call_monitor(self._before_call, self._after_call)
        self.runtime = runtime
        with self.isolated():
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._run_to_the_end, runtime)
                    await self._wait_until(
                        lambda: (
                            self.stopped
                            or runtime.state in (RuntimeState.RUNNING, RuntimeState.RELOADING)
                        )
                    )
                    try:
                        yield runtime
                    finally:
                        runtime.stop()
                        with trio.CancelScope(shield=True):  # the run ends whatever happens
                            await self.wait_stopped()
            except BaseExceptionGroup as group:
                # What the test's own block raised (a failed assert, say) reaches it as
                # itself, not wrapped in the group of a nursery it never opened.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise

    async def play(self, *events: LifecycleEvent) -> int:
        """Start, apply ``events`` in order, stop; return the exit status.

        ``"reload"`` and SIGHUP wait for the reload to finish (or, if it brought the
        runtime down, for the end of the run). ``"stop"`` and the stop signals do not
        wait: two stop signals in a row are the operator's second Ctrl-C, which abandons
        the shutdown. A :class:`Fault` arms the next call of its hook; faults in
        ``initialize`` or ``started`` must come before every other event.

        Raises:
            ValueError: a fault in ``initialize`` or ``started`` after another event.
        """
        events_after_start = list(events)
        while events_after_start and isinstance(fault := events_after_start[0], Fault):
            self.inject_failure(fault.hook, fault.how)
            events_after_start.pop(0)
        for event in events_after_start:
            if isinstance(event, Fault):
                if event.hook in ("initialize", "started"):
                    raise ValueError(f"{event} can only come before every other event")
                self.register_fault_injector()
        async with self.running():
            for event in events_after_start:
                await self.apply(event)
        assert self.exit_status is not None
        return self.exit_status

    def run(self, *events: LifecycleEvent, clock: trio.abc.Clock | None = None) -> int:
        """:meth:`play` for a plain (sync) test: a ``trio.run`` of its own.

        Example::

            def test_survives_reloads():
                harness = LifecycleHarness(PoolModule())
                assert harness.run("reload", "reload", signal.SIGTERM) == 0
        """
        return trio.run(self.play, *events, clock=clock)

    async def apply(self, event: LifecycleEvent) -> None:
        """Apply one event (see :meth:`play`)."""
        if event == "reload" or event == signal.SIGHUP:
            await self.reload(via_signal=event == signal.SIGHUP)
        elif event == "stop":
            self._running_runtime().stop()
        elif isinstance(event, signal.Signals):
            self.send_signal(event)
        elif isinstance(event, Fault):
            self.inject_failure(event.hook, event.how)
        else:
            raise ValueError(f"unknown lifecycle event {event!r}")

    async def reload(self, *, via_signal: bool = False) -> None:
        """Request a reload (``runtime.reload()``, or SIGHUP) and wait until a reload
        that began after the request has finished, or, when the runtime is stopping
        (asked to, or brought down by this reload), until the run has ended."""
        runtime = self._running_runtime()
        target = self._reloads_begun + 1
        if via_signal:
            self.send_signal(signal.SIGHUP)
        else:
            runtime.reload()
        await self._wait_until(
            lambda: (
                self.stopped
                or (self._reloads_done >= target and self.states[-1] is not RuntimeState.STOPPING)
            )
        )

    async def stop(self) -> int:
        """Request a stop and wait for the end of the run; return the exit status."""
        self._running_runtime().stop()
        return await self.wait_stopped()

    def send_signal(self, signum: int) -> None:
        """Deliver ``signum`` as the runtime's signal handler would, without a real
        signal: SIGHUP reloads, SIGTERM/SIGINT/SIGQUIT stop, a second one during the
        shutdown abandons it."""
        self._running_runtime().signal_received(signum)

    async def wait_stopped(self) -> int:
        """Wait for the end of the run; return the exit status."""
        await self._wait_until(lambda: self.stopped)
        assert self.exit_status is not None
        return self.exit_status

    # -- what happened ------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """The run has ended and :attr:`exit_status` is set."""
        return self.exit_status is not None

    @property
    def trace(self) -> list[str]:
        """:attr:`calls` as text: ``"pool.started"``, ``"pool.terminated(error=False)"``,
        with ``" raised ValueError"`` or ``" cancelled"`` after a call that did."""
        return [str(call) for call in self.calls]

    def calls_to(self, hook: str) -> list[HookCall]:
        """The calls of ``hook``, in order."""
        return [call for call in self.calls if call.hook == hook]

    @property
    def lines(self) -> list[str]:
        """:attr:`records` as OverSIP console lines without the time:
        ``"CRIT: <sqlite> bad size"``."""
        return [str(record) for record in self.records]

    @property
    def errors(self) -> list[BaseException]:
        """Every exception a hook or service raised (see ``Runtime.errors``)."""
        return [] if self.runtime is None else self.runtime.errors

    @property
    def fatal_error(self) -> FatalError | None:
        """The first :class:`FatalError` of the run, wherever it was raised."""
        for error in self.errors:
            for leaf in leaf_exceptions(error):
                if isinstance(leaf, FatalError):
                    return leaf
        return None

    @property
    def fatal_message(self) -> str | None:
        """The message of :attr:`fatal_error`, or ``None`` when ``fatal`` was not called."""
        error = self.fatal_error
        return None if error is None else error.message

    # -- plumbing -----------------------------------------------------------------------

    def _running_runtime(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the harness is not running: use `async with harness.running()`")
        return self.runtime

    async def _run_to_the_end(self, runtime: Runtime) -> None:
        # Tagged so that this harness's sink takes this run's records and no other's,
        # when a test runs several harnesses at once.
        with logger.contextualize(oversip_hooks_harness=id(self)):
            self.exit_status = await runtime.run()
        self._notify()

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _on_state(self, state: RuntimeState) -> None:
        if state is RuntimeState.STOPPING:
            self.errors_before_shutdown = self.errors
        if state is RuntimeState.RELOADING:
            self._reloads_begun += 1
        elif self.states and self.states[-1] is RuntimeState.RELOADING:
            self._reloads_done += 1
        self.states.append(state)
        self._notify()

    def _before_call(self, hook: str, plugin: str, kwargs: dict[str, Any]) -> None:
        # The runtime calls one implementation at a time: any overlap is a bug, such as a
        # `terminated` running while a `reload` is still in progress.
        call = f"{plugin}.{hook}"
        self.overlapping_calls.extend((active, call) for active in self._active_calls)
        self._active_calls.append(call)

    def _after_call(
        self, outcome: BaseException | None, hook: str, plugin: str, kwargs: dict[str, Any]
    ) -> None:
        self._active_calls.remove(f"{plugin}.{hook}")
        error = kwargs.get("error") if hook == "terminated" else None
        cancelled = outcome is not None and is_cancellation(outcome)
        self.calls.append(
            HookCall(
                plugin,
                hook,
                error=None if error is None else bool(error),
                raised=None if cancelled else outcome,
                cancelled=cancelled,
            )
        )

    def _ours(self, record: Any) -> bool:
        return bool(record["extra"].get("oversip_hooks_harness", id(self)) == id(self))

    def _capture(self, message: Any) -> None:
        record = message.record
        loguru_name = record["level"].name
        self.records.append(
            CapturedRecord(
                level=_LEVEL_OF_LOGURU_NAME.get(loguru_name, loguru_name.lower()),
                log_id=record["extra"].get("log_id"),
                message=record["message"],
                user=bool(record["extra"].get("user")),
            )
        )
