# The harness drives the real Runtime, not a model of it: a second, simplified lifecycle in
# the test toolkit would drift from the real one and pass tests the real one fails. What
# it adds is isolation (its own plugin manager, its own SystemCallbacks registry, no
# signal handlers) and observation, through the runtime's own call monitor and state
# listener and a loguru sink that keeps records in memory.
#
# Every wait is on an event the runtime reports (a change of state, the end of the run),
# never on time, so the harness is exact under trio's MockClock(autojump_threshold=0).
# Such a clock jumps to the next deadline as soon as every task waits, and a task waiting
# for a `trio.to_thread` worker waits too: the startup timeout would fire while the thread
# still works. So while a harness runs under a MockClock, an instrument holds the clock's
# autojump whenever a worker thread of the run is busy (trio's own count,
# `trio.testing.active_thread_count()`, read after every task step, which is where a
# thread is started or its result taken), and gives it back when none is. Threads that
# trio does not start for a task that waits for them (`threading.Thread`,
# `trio.lowlevel.start_thread_soon`, an abandoned `abandon_on_cancel` thread) are not
# counted: nothing in the run waits for them.
#
# Rejected: a subclass of MockClock (trio forbids it) and a Clock of our own that jumps by
# itself (trio's runner autojumps only a MockClock, after its I/O check and its
# `wait_all_tasks_blocked` waiters; a clock of our own would have to redo both).
#
# Log records stay in memory: while a harness is isolated, loguru's default handler (id 0,
# standard error) is given a filter that drops the records the harness captures, and its
# own filter back afterwards. loguru has no public way to change a handler's filter;
# removing and re-adding the handler would give it another id, and `run()` and users find
# the default handler by its id 0.

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import pluggy
import trio
import trio.testing
from loguru import logger

from .._callbacks import CALLBACKS_PLUGIN_NAME, CallbackRegistry, snapshot, using
from .._callers import is_cancellation, leaf_exceptions
from .._events import (
    Event,
    HookCallEnded,
    HookCallStarted,
    RuntimeState,
    ShutdownOverran,
    StateChanged,
)
from .._fatal import FatalError, fatal
from .._logging import LEVELS
from .._manager import get_plugin_manager, known_hooks, readable_name, validate
from .._runtime import Runtime
from ..dbpool import jobs_in_flight
from ..hookspecs import hookimpl

_LEVEL_OF_LOGURU_NAME = {loguru_name: level for level, (loguru_name, _) in LEVELS.items()}

# The `extra` key that tags the records of one harness's run with the harness's id.
_TAG = "oversip_hooks_harness"

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
        hook: ``"initialize"``, ``"started"``, ``"reload"``, ``"terminated"``, or the
            name of an extension hook.
        error: the ``error`` argument given to ``terminated``; ``None`` for other hooks.
        raised: what the implementation raised, or ``None``.
        cancelled: true when the runtime cancelled it (a stop, a timeout).
        lifecycle: false for a call of an extension hook.
    """

    plugin: str
    hook: str
    error: bool | None = None
    raised: BaseException | None = None
    cancelled: bool = False
    lifecycle: bool = True

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


# The threshold that holds the autojump: larger than any timeout trio's loop waits for (a
# day), so it never jumps, and unlike a test's own math.inf, so that a threshold the test
# sets meanwhile is kept.
_HELD = 1e300


class _AutojumpHold(trio.abc.Instrument):
    """Holds a MockClock's autojump while a ``trio.to_thread`` worker or a database pool's
    worker thread (``oversip_hooks.dbpool``) is busy.

    One per run (in :data:`_HOLD`), shared by the harnesses that run in it."""

    def __init__(self, clock: trio.testing.MockClock) -> None:
        self.clock = clock
        self.users = 0
        self._held: float | None = None  # the threshold put aside while threads work

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        busy = trio.testing.active_thread_count() > 0 or jobs_in_flight() > 0
        if busy and self._held is None:
            self._held = self.clock.autojump_threshold
            self.clock.autojump_threshold = _HELD
        elif not busy:
            self.release()

    def release(self) -> None:
        if self._held is not None:
            if self.clock.autojump_threshold == _HELD:  # unless the test has set its own
                self.clock.autojump_threshold = self._held
            self._held = None


_HOLD: trio.lowlevel.RunVar[_AutojumpHold | None] = trio.lowlevel.RunVar(
    "oversip_hooks_autojump_hold", default=None
)


@contextmanager
def _autojump_held_while_threads_work() -> Iterator[None]:
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        yield
        return
    hold = _HOLD.get()
    if hold is None:
        hold = _AutojumpHold(clock)
        _HOLD.set(hold)
        trio.lowlevel.add_instrument(hold)
    hold.users += 1
    try:
        yield
    finally:
        hold.users -= 1
        if hold.users == 0:
            trio.lowlevel.remove_instrument(hold)
            hold.release()
            _HOLD.set(None)


class _QuietDefaultHandler:
    """Keeps the records that isolated harnesses capture from loguru's default handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._harnesses: set[int] = set()
        self._handler: Any = None
        self._original: Any = None

    @contextmanager
    def holding(self, harness: int) -> Iterator[None]:
        with self._lock:
            if not self._harnesses:
                self._install()
            self._harnesses.add(harness)
        try:
            yield
        finally:
            with self._lock:
                self._harnesses.discard(harness)
                if not self._harnesses:
                    self._uninstall()

    def _filter(self, record: Any) -> bool:
        tag = record["extra"].get(_TAG)
        if self._harnesses and (tag is None or tag in self._harnesses):
            return False  # an isolated harness captures it
        return self._original is None or bool(self._original(record))

    def _install(self) -> None:
        # loguru's default handler, if the application has not removed it; nothing to do
        # if loguru's internals ever change shape.
        handler = getattr(getattr(logger, "_core", None), "handlers", {}).get(0)
        if handler is not None and hasattr(handler, "_filter"):
            self._handler, self._original = handler, handler._filter
            handler._filter = self._filter

    def _uninstall(self) -> None:
        if self._handler is not None and self._handler._filter == self._filter:
            self._handler._filter = self._original
        self._handler = self._original = None


_QUIET_DEFAULT_HANDLER = _QuietDefaultHandler()


def _expand(plugins: tuple[object, ...]) -> Iterator[tuple[str | None, object]]:
    """``(name, plugin)`` for each plugin; ``None`` for a plugin given without a name."""
    for plugin in plugins:
        if isinstance(plugin, Mapping):
            for name, named in plugin.items():
                if not isinstance(name, str):
                    raise TypeError(f"a plugin's name must be a str, not {name!r}")
                yield name, named
        else:
            yield None, plugin


class LifecycleHarness:
    """Runs plugins through the real :class:`~oversip_hooks.Runtime`, in isolation.

    Each harness has a fresh plugin manager and a fresh ``SystemCallbacks`` registry,
    installs no signal handlers, and records every hook call (:attr:`calls`,
    :attr:`trace`), every log record (:attr:`records`, :attr:`lines`) and the exit status.

    Args:
        plugins: registered in the order given, each under a readable name (a module's
            name, a class's name, an instance's class name), or mappings of names to
            plugins, each registered under its key: ``LifecycleHarness({"pool": pool})``.
        startup_timeout, shutdown_timeout: as for :class:`~oversip_hooks.Runtime`; short
            by default (5 s), and exact under ``MockClock(autojump_threshold=0)``, which
            does not jump while a ``trio.to_thread`` worker of the run is busy.
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
        """Every hook call, extension hooks included, in the order they ended."""
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
        self.shutdown_overruns: list[ShutdownOverran] = []
        """Each part of the shutdown that ran out of time, and an abandoned shutdown."""
        for name, plugin in _expand(plugins):
            self.register(plugin, name=name)

    # -- setting up ---------------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` after those already registered; return its name.

        Raises:
            pluggy.PluginValidationError: a hook takes an argument its spec lacks.
            ValueError: the plugin or the name is already registered.
        """
        if name is None:
            name = readable_name(self.pm, plugin)
        registered = self.pm.register(plugin, name=name)
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
        records are captured, in memory only: loguru's default handler (standard error)
        does not get them; other sinks do. The pytest fixtures hold it for the whole
        test."""
        if self._isolated:
            yield self
            return
        with ExitStack() as stack:
            stack.enter_context(using(self.callbacks))
            stack.enter_context(_QUIET_DEFAULT_HANDLER.holding(id(self)))
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
        self.watch(runtime)
        self.runtime = runtime
        with self.isolated(), _autojump_held_while_threads_work():
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

    def watch(self, runtime: Runtime) -> None:
        """Record what ``runtime``, one that the test made and runs itself, does, as the
        harness records its own run: :attr:`calls`, :attr:`trace`, :attr:`states`.

        Example::

            runtime = Runtime(harness.pm, handle_signals=False)
            harness.watch(runtime)
            assert await runtime.run() == 0
            assert harness.trace == ["pool.initialize", ...]
        """
        runtime.add_observer(self._observe)

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

    def calls_to(self, hook: str, plugin: str | None = None) -> list[HookCall]:
        """The calls of ``hook``, in order; only those of the plugin named ``plugin``
        when given.

        Raises:
            ValueError: ``hook`` is neither a lifecycle hook nor an extension hook that a
                plugin declares, or no plugin of this harness is named ``plugin`` (the
                message lists those that are), so that a check that names a plugin
                wrongly fails instead of never seeing a call.
        """
        known = known_hooks(self.pm)
        if hook not in known:
            raise ValueError(f"no hook named {hook!r} (the hooks are {', '.join(known)})")
        if plugin is not None:
            self.check_plugin_name(plugin)
        return [
            call
            for call in self.calls
            if call.hook == hook and (plugin is None or call.plugin == plugin)
        ]

    @property
    def plugin_names(self) -> list[str]:
        """The names of the registered plugins, in registration order (with ``"faults"``
        once the fault injector is registered)."""
        return [name for name, plugin in self.pm.list_name_plugin() if plugin is not None]

    def check_plugin_name(self, name: str) -> str:
        """Return ``name`` if a plugin of this harness has it (or it is
        ``"SystemCallbacks"``, the callbacks' name).

        Raises:
            ValueError: no plugin has it; the message lists the names there are.
        """
        if name == CALLBACKS_PLUGIN_NAME or name in self.plugin_names:
            return name
        known = ", ".join(repr(each) for each in [*self.plugin_names, CALLBACKS_PLUGIN_NAME])
        raise ValueError(f"no plugin named {name!r} in this harness; its plugins are {known}")

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
        with logger.contextualize(**{_TAG: id(self)}):
            self.exit_status = await runtime.run()
        self._notify()

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _observe(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            self._on_state(event.state)
        elif isinstance(event, HookCallStarted):
            self._call_started(event)
        elif isinstance(event, HookCallEnded):
            self._call_ended(event)
        elif isinstance(event, ShutdownOverran):
            self.shutdown_overruns.append(event)

    def _on_state(self, state: RuntimeState) -> None:
        if state is RuntimeState.STOPPING:
            self.errors_before_shutdown = self.errors
        if state is RuntimeState.RELOADING:
            self._reloads_begun += 1
        elif self.states and self.states[-1] is RuntimeState.RELOADING:
            self._reloads_done += 1
        self.states.append(state)
        self._notify()

    def _call_started(self, event: HookCallStarted) -> None:
        # The runtime calls one lifecycle hook implementation at a time: any overlap is a
        # bug, such as a `terminated` running while a `reload` is still in progress. An
        # extension hook is called from within them, or concurrently on purpose.
        if not event.lifecycle:
            return
        call = f"{event.plugin}.{event.hook}"
        self.overlapping_calls.extend((active, call) for active in self._active_calls)
        self._active_calls.append(call)

    def _call_ended(self, event: HookCallEnded) -> None:
        if event.lifecycle:
            self._active_calls.remove(f"{event.plugin}.{event.hook}")
        error = event.kwargs.get("error") if event.hook == "terminated" else None
        raised = event.error
        cancelled = raised is not None and is_cancellation(raised)
        self.calls.append(
            HookCall(
                event.plugin,
                event.hook,
                error=None if error is None else bool(error),
                raised=None if cancelled else raised,
                cancelled=cancelled,
                lifecycle=event.lifecycle,
            )
        )

    def _ours(self, record: Any) -> bool:
        return bool(record["extra"].get(_TAG, id(self)) == id(self))

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
