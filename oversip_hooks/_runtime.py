# This module holds the lifecycle's rules, in README's order (`_lifecycle` and the methods
# it calls), and what enforces them: stop, drain and reload requests, signals, the
# shutdown's deadline. Calling an implementation is `_callers.py`'s (one path for lifecycle
# and extension hooks), the call order `_order.py`'s, what observers are told `_events.py`'s,
# services `_services.py`'s.
#
# Everything before shutdown runs inside one cancel scope, `_until_stop`; a stop request,
# `fatal()` from a service and a startup timeout all end the running phase by cancelling
# it, so there is exactly one way into shutdown. Shutdown runs outside that scope, each
# `terminated` implementation in a scope of its own that shares one deadline: when the
# deadline passes, the one in progress is cancelled and the rest are still called.
#
# No deadline of the loop's own can bound what blocks the loop or never returns to it, so
# a watchdog thread (`_watchdog.py`) stands behind each one: it ends a start that a
# synchronous `started` keeps past its deadline, and when the shutdown has not ended
# `GRACE` seconds after its deadline (or after a second stop signal), it logs what is
# still running and calls `on_overrun`, with which the command ends the process.
#
# Services (`_services.py`) run in the runtime's nursery, each recorded under the plugin
# that started it, and are closed in that plugin's turn of the shutdown.

from __future__ import annotations

import collections
import math
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from contextvars import Context
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, TypedDict, TypeVarTuple, Unpack, cast

import pluggy
import trio
from loguru import logger

from ._callbacks import CALLBACKS_PLUGIN_NAME, CallbackRegistry, snapshot, using
from ._callers import (
    Calling,
    HookRelay,
    current_plugin,
    fork_generation,
    is_cancellation,
    is_fatal,
    leaf_exceptions,
)
from ._events import (
    LOG_ID,
    LoopBlocked,
    Observer,
    Observers,
    RuntimeState,
    ShutdownOverran,
    StateChanged,
)
from ._fatal import FatalError, printable
from ._logging import add_console_sink, emit, lifecycle_code
from ._manager import (
    LIFECYCLE_HOOKS,
    declare_extension_hooks,
    declared_hooks,
    get_plugin_manager,
    readable_name,
    validate,
)
from ._modules import active_plugin_manager
from ._order import TRYFIRST, TRYLAST, UNMARKED, declared, ordered
from ._services import Service, Services, name_of
from ._signals import HANDLED_SIGNALS, STOP_SIGNALS, signals_caught
from ._watchdog import GRACE, Watchdog

_ACTED_ON = frozenset((signal.SIGHUP, *STOP_SIGNALS))

_Ts = TypeVarTuple("_Ts")


class _Turn(NamedTuple):
    """One plugin's implementations of one hook, called in a row."""

    plugin_name: str
    impls: list[pluggy.HookImpl]


class LifespanError(Exception):
    """A ``lifespan`` that did not yield exactly once."""


def _check_timeout(name: str, value: object, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not zero):
        kind = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
        raise ValueError(f"{name} must be {kind}, not {value!r}")
    return float(value)


class Runtime:
    """Runs plugins through their lifecycle: initialize, started, reload*, terminated.

    Args:
        pm: the plugin manager holding the plugins; a fresh empty one by default.
        handle_signals: handle SIGHUP (reload) and SIGTERM, SIGINT, SIGQUIT (stop) while
            running, when running in the main thread.
        startup_timeout: seconds that all ``started`` implementations together may take.
        shutdown_timeout: seconds that the whole shutdown may take, from the stop request.
        blocked_loop_threshold: seconds after which an event loop blocked by a hook or a
            service is reported, while it lasts, with a warn line naming them; ``None``
            not to watch for it.
        callbacks: the ``SystemCallbacks`` registry to start from; by default a copy of
            the callbacks registered so far outside any run.
        on_overrun: called, in a thread of its own, when the shutdown has not ended
            ``GRACE`` (1) second after its deadline or after a second stop signal, once
            the crit line naming what still runs has been logged. The command and
            :func:`run` pass one that ends the process with status 1.
        trace_hooks: log one debug line for every hook call, extension hooks included:
            hook, plugin, duration, and what it raised.
        slow_hook_threshold: seconds over which a lifecycle hook call is logged at
            notice ("started of 'sqlite' took 2.3 s") rather than debug; ``None``: never.
        drain: seconds to keep running, in the state ``DRAINING``, between a stop
            request and the first ``terminated``, for load balancers to stop sending
            traffic; a second stop signal ends it early. The shutdown timeout counts
            from its end. Only after a complete start, and not on an error.

    Raises:
        TypeError, ValueError: for an argument of the wrong type or value.

    Example::

        pm = get_plugin_manager()
        pm.register(my_module, name="my_module")
        status = trio.run(Runtime(pm, shutdown_timeout=5).run)
    """

    def __init__(
        self,
        pm: pluggy.PluginManager | None = None,
        *,
        handle_signals: bool = True,
        startup_timeout: float = 30.0,
        shutdown_timeout: float = 30.0,
        blocked_loop_threshold: float | None = 1.0,
        callbacks: CallbackRegistry | None = None,
        on_overrun: Callable[[], object] | None = None,
        trace_hooks: bool = False,
        slow_hook_threshold: float | None = 1.0,
        drain: float = 0.0,
    ) -> None:
        if pm is None:
            pm = get_plugin_manager()
        elif not isinstance(pm, pluggy.PluginManager):
            raise TypeError(f"pm must be a pluggy.PluginManager, not {type(pm).__name__}")
        elif not getattr(pm.hook, "started", None) or not pm.hook.started.has_spec():
            raise ValueError(
                "pm has no oversip_hooks hook specifications; make it with get_plugin_manager()"
            )
        if callbacks is not None and not isinstance(callbacks, CallbackRegistry):
            raise TypeError(f"callbacks must be a CallbackRegistry, not {type(callbacks).__name__}")
        if on_overrun is not None and not callable(on_overrun):
            raise TypeError(f"on_overrun must be callable, not {type(on_overrun).__name__}")
        self.pm = pm
        self.handle_signals = bool(handle_signals)
        self.startup_timeout = _check_timeout("startup_timeout", startup_timeout)
        self.shutdown_timeout = _check_timeout("shutdown_timeout", shutdown_timeout)
        self.blocked_loop_threshold = (
            None
            if blocked_loop_threshold is None
            else _check_timeout("blocked_loop_threshold", blocked_loop_threshold)
        )
        self.drain = _check_timeout("drain", drain, zero=True)
        self._callbacks = callbacks
        self._on_overrun = on_overrun
        self._state = RuntimeState.CREATED
        self._ran = False
        self._observers = Observers()
        # What each frame of a hook call or a service in progress belongs to, for the
        # watchdog to say what blocks the loop or what the shutdown is waiting for.
        self._running: dict[FrameType, tuple[str | None, str]] = {}
        self._calling = Calling(
            self,
            lambda hook: [turn.impls for turn in self._schedule(hook)],
            self._observers,
            self._running,
            self._fatal_in_extension_hook,
        )
        self._calling.trace = bool(trace_hooks)
        self._calling.slow_threshold = (
            None
            if slow_hook_threshold is None
            else _check_timeout("slow_hook_threshold", slow_hook_threshold)
        )
        self.hooks = HookRelay(self._calling, pm)
        """The extension hooks, to call: ``await runtime.hooks.<name>(...)``."""
        self._errors: list[BaseException] = []
        self._error = False  # the way down is unexpected: `terminated` gets error=True
        self._failed = False  # the exit status is 1
        self._announced_failure = False
        self._until_stop = trio.CancelScope()
        # Set as soon as a stop is asked for, from any thread or a signal handler, so that
        # the loops over implementations see it at once; `_until_stop` is cancelled in the
        # trio thread.
        self._stop_requested = False
        self._stop_time: float | None = None  # trio's clock, when asked in its thread
        self._stop_monotonic: float | None = None
        self._abandon_shutdown = trio.CancelScope()
        self._end_drain = trio.CancelScope()
        self._reload_wanted = trio.Event()
        self._stop_signals = 0
        # A stop now would drain first (running, with a drain); a second stop signal
        # then ends the drain, once, and the next one abandons the shutdown.
        self._drain_due = False
        self._drain_cut = False
        self._abandoning = False
        self._signals_received: collections.deque[tuple[int, str]] = collections.deque()
        self._reload_signal_pending = False
        self._act_on_signals_soon = False
        self._started: list[str] = []
        self._turn: tuple[str, str] | None = None  # (plugin, hook) being called
        self._services = Services(self._running, self._service_failed, fork_generation())
        self._interrupted: KeyboardInterrupt | None = None
        # Each lifespan set up and not torn down yet: its task, and what tells it to end.
        self._lifespans: dict[str, tuple[Service, trio.Event]] = {}
        # The start ends once: completed, failed, or timed out by the loop or the watchdog.
        self._startup_lock = threading.Lock()
        self._startup_settled = False
        self._watchdog: Watchdog | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._trio_thread: int | None = None
        self._fork_generation = fork_generation()

    # -- public API ---------------------------------------------------------------------

    @property
    def state(self) -> RuntimeState:
        """Where the runtime is in its lifecycle."""
        return self._state

    @property
    def error(self) -> bool:
        """Whether the runtime is going down on an error: the ``error`` that
        ``terminated`` gets, readable from any hook (a lifespan's teardown, say)."""
        return self._error

    @property
    def errors(self) -> list[BaseException]:
        """Every exception that a hook or a service raised so far, in order: a
        :class:`FatalError` for each ``fatal()``, a ``TimeoutError`` for a startup that
        ran out of time."""
        return list(self._errors)

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for (or the runtime is going down on an error): from
        that instant on, the runtime is not ready for new work."""
        return self._stop_requested

    def add_observer(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event)`` for each event of the runtime (``_events.py``):
        ``StateChanged``, ``HookCallStarted`` and ``HookCallEnded`` for every hook call,
        extension hooks included, ``ShutdownOverran``, in the runtime's thread, and
        ``LoopBlocked``, from the watchdog's thread. An observer that raises is logged
        at crit and removed; it never breaks the runtime.

        Returns:
            A function that removes the observer.

        Raises:
            TypeError: ``observer`` is not callable.

        Example::

            runtime.add_observer(lambda event: print(event))
        """
        return self._observers.add(observer)

    def add_state_listener(self, listener: Callable[[RuntimeState], object]) -> Callable[[], None]:
        """Call ``listener(state)`` at each change of state: :meth:`add_observer` for
        ``StateChanged`` events alone.

        Raises:
            TypeError: ``listener`` is not callable.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        return self._observers.add(_StateListener(listener), calls=False)

    def services_running(self) -> dict[str, int]:
        """How many services each plugin has running now (``"runtime"`` for those started
        outside any plugin), for metrics."""
        return {owner or LOG_ID: count for owner, count in self._services.counts().items()}

    def hook_order(self, hook: str) -> list[str]:
        """The plugins that implement ``hook``, in the order the runtime will call them
        (for ``terminated``: were every plugin to start). ``"SystemCallbacks"`` stands for
        the callbacks registered so far.

        Raises:
            ValueError: ``hook`` is neither a lifecycle hook nor an extension hook that a
                plugin declares.

        Example::

            >>> runtime.hook_order("terminated")
            ['server', 'sqlite', 'SystemCallbacks']
        """
        declare_extension_hooks(self.pm)
        if hook not in LIFECYCLE_HOOKS and hook not in declared_hooks(self.pm):
            known = [*LIFECYCLE_HOOKS, *declared_hooks(self.pm)]
            raise ValueError(f"no hook named {hook!r}; the hooks are {', '.join(known)}")
        if hook == "terminated":
            every_plugin = [turn.plugin_name for turn in self._schedule("started")]
            turns = self._termination_turns(every_plugin)
        elif hook == "lifespan":  # set up in each plugin's `started` turn
            lifespans = self._lifespan_impls()
            turns = [turn for turn in self._schedule("started") if turn.plugin_name in lifespans]
            return [turn.plugin_name for turn in turns]
        else:
            turns = self._schedule(hook)
        return [turn.plugin_name for turn in turns if turn.impls]

    def stop(self) -> None:
        """Request a graceful stop (``terminated`` gets ``error=False``).

        Safe from hooks, services and other threads. Takes effect before the next
        implementation is called; during startup it also cancels the ``started``
        implementation in progress. Does nothing once the shutdown has begun.
        """
        if self._state not in (RuntimeState.STOPPING, RuntimeState.STOPPED):
            self._stop_requested = True
            self._note_stop()
        self._in_runtime_thread(self._request_stop)

    def reload(self) -> None:
        """Request a reload: every ``reload`` implementation runs once more.

        Safe from hooks, services and other threads. Requests made while a reload runs
        are coalesced into one more reload; a request made during startup runs right
        after ``started`` completes.
        """
        self._in_runtime_thread(self._request_reload)

    def signal_received(self, signum: int) -> None:
        """Act on ``signum`` as the runtime's own signal handler does: SIGHUP reloads,
        the first SIGTERM, SIGINT or SIGQUIT stops, a second one abandons the shutdown.

        For tests, and for programs that receive signals themselves
        (``handle_signals=False``). Safe from a signal handler and from any thread; before
        :meth:`run`, the signal is kept and acted on as soon as the run begins. Does
        nothing once the run has ended.

        Raises:
            ValueError: ``signum`` is none of these four signals.
        """
        # As little as can be: as a handler, this is re-entered by a signal that comes
        # before it returns, so a flood of them must not make it recurse deep (the rest
        # is done in the trio thread, once per batch, by `_act_on_signals`).
        if signum not in _ACTED_ON:
            raise ValueError(f"the runtime acts on SIGHUP and the stop signals, not {signum}")
        if self._state is RuntimeState.STOPPED:
            return
        if signum == signal.SIGHUP:
            if self._reload_signal_pending:
                return  # coalesced, as the reloads it asks for would be
            self._reload_signal_pending = True
            action = "reload"
        else:
            self._stop_signals += 1
            if self._stop_signals == 1:
                action = "stop"
                self._stop_requested = True
                self._note_stop()
            elif self._drain_due and not self._drain_cut:
                action = "end the drain"
                self._drain_cut = True
            elif not self._abandoning:
                action = "abandon"
                self._abandoning = self._failed = True
                self._cut_shutdown_short()
            else:
                return  # the shutdown is already cut short
        self._signals_received.append((signum, action))
        if self._act_on_signals_soon or self._trio_token is None:
            return
        self._act_on_signals_soon = True
        # try/except rather than contextlib.suppress: no context manager to build here
        try:  # noqa: SIM105
            self._trio_token.run_sync_soon(self._act_on_signals)
        except trio.RunFinishedError:
            pass  # the run is over: nothing left to act on

    def start_soon(self, async_fn: Callable[[Unpack[_Ts]], Awaitable[object]], *args: *_Ts) -> None:
        """Start a service owned by the calling plugin; it runs until that plugin's
        ``terminated`` has returned, then is cancelled.

        A service that raises (or calls ``fatal``) brings the runtime down with
        ``error=True``.

        Raises:
            RuntimeError: the runtime is not running.
        """
        self._services.start_soon(async_fn, args)

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> Any:
        """Start a service as :meth:`start_soon` does, and wait until it reports itself
        ready with ``task_status.started(value)``; returns that value.

        Raises:
            RuntimeError: the runtime is not running.
            Exception: whatever the service raised before it reported ready.
        """
        return await self._services.start(async_fn, args)

    async def run(self) -> int:
        """Run the whole lifecycle; return the exit status: 0 clean stop, 1 error.

        What it cannot bound: ``run()`` returns only once every hook call and service has
        returned. Plugin code that never returns to the event loop (a worker thread that
        never ends, a shielded scope, a swallowed cancellation, synchronous code that
        blocks) keeps it from returning, however its deadlines fire. ``GRACE`` (1) second
        after the shutdown's deadline, a watchdog thread then logs at crit what is still
        running and calls ``on_overrun``; without one, nothing ends the process: that is
        the embedding program's to decide.

        Raises:
            pluggy.PluginValidationError: a plugin implements an unknown hook or a hook
                the runtime cannot call; raised before any hook of any plugin is called.
            RuntimeError: this runtime has already run.
        """
        if self._ran:
            raise RuntimeError("a Runtime runs once; make a new one to run again")
        self._ran = True
        # 8. An invalid plugin is refused before any hook of any plugin is called.
        validate(self.pm)
        self._callbacks = self._callbacks_registry().copy()
        self._trio_token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.get_ident()
        self.hooks._attach(self._trio_token)
        self._watchdog = Watchdog(
            self._trio_token,
            blocked_threshold=self.blocked_loop_threshold,
            on_blocked=self._report_blocked_loop,
            signals=HANDLED_SIGNALS,
        )
        self._watchdog.start()
        modules_token = active_plugin_manager.set(self.pm)
        try:
            with using(self._callbacks), self._signals_attached():
                try:
                    async with trio.open_nursery() as nursery:
                        self._services.nursery = nursery
                        await self._lifecycle()
                        nursery.cancel_scope.cancel()
                finally:
                    self._services.nursery = None
                    self.hooks._attach(None)
                    self._set_state(RuntimeState.STOPPED)
                    self._watchdog.close()
                    if self._failed and not self._announced_failure:
                        emit(LOG_ID, "crit", "exiting with error status")
                    with trio.CancelScope(shield=True):  # 9. no log line is lost
                        await _flush_logs()
        except BaseExceptionGroup as group:
            # A Ctrl-C under handle_signals=False, or a cancellation from outside: the
            # caller sees the exception itself, not the group of a nursery it never saw.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            active_plugin_manager.reset(modules_token)
        if self._interrupted is not None:
            raise self._interrupted
        return 1 if self._failed else 0

    # -- the lifecycle, top to bottom -----------------------------------------------------

    async def _lifecycle(self) -> None:
        try:
            with self._until_stop:
                # 1. `initialize` once, then `started` once, one implementation at a time, in
                #    registration order. 2. An error or fatal() in either is fatal and the rest
                #    do not run. 5. `started` as a whole is bounded by startup_timeout, even
                #    when a synchronous one blocks the loop (the watchdog ends it then).
                #    7. A stop or a signal, from the first instant, takes effect before the
                #    next implementation is called; during `started` it also cancels the
                #    one in progress.
                self._set_state(RuntimeState.INITIALIZING)
                if await self._run_startup_hook("initialize"):
                    self._callbacks_registry().closed_hooks.add("started")
                    self._set_state(RuntimeState.STARTING)
                    if await self._run_started():
                        # 3. Reloads, one at a time, until a stop; requests made during
                        #    startup or during a reload are coalesced into one more.
                        emit(LOG_ID, "notice", "running")
                        self._drain_due = self.drain > 0
                        self._set_state(RuntimeState.RUNNING)
                        while True:
                            await self._reload_wanted.wait()
                            self._reload_wanted = trio.Event()
                            self._set_state(RuntimeState.RELOADING)
                            await self._run_reload()
                            if self._stop_requested:
                                break  # stopped from within the reload: not running again
                            self._set_state(RuntimeState.RUNNING)
        finally:
            # 4. A requested stop of a running runtime first drains: everything keeps
            #    running `drain` seconds (a second stop signal ends it sooner). Then
            #    `terminated` exactly once for each plugin whose `started` completed, in
            #    the reverse order, whatever the way down, a cancellation from outside or a
            #    KeyboardInterrupt included; 6. then that plugin's services are cancelled.
            #    The shutdown is bounded from the stop request (or the drain's end), by the
            #    watchdog when plugin code keeps the loop from bounding it.
            with trio.CancelScope(shield=True):
                await self._drain()
                await self._shut_down()

    async def _drain(self) -> None:
        if not (
            self._drain_due and self._stop_requested and not self._error and not self._abandoning
        ):
            self._drain_due = False
            self._arm_shutdown_alarm(0.0)  # the stop request may have counted a drain
            return
        self._set_state(RuntimeState.DRAINING)
        emit(LOG_ID, "notice", f"draining for {self.drain:g} s before terminating")
        self._act_on_signals()  # a second stop signal that came already ends it at once
        with self._end_drain:
            await trio.sleep(self.drain)
        self._drain_due = False
        if not self._abandoning:  # the shutdown timeout counts from here
            self._stop_monotonic = None
            self._note_stop()

    async def _run_started(self) -> bool:
        deadline = trio.current_time() + self.startup_timeout
        assert self._watchdog is not None
        self._watchdog.set_alarm(time.monotonic() + self.startup_timeout, self._startup_overran)
        try:
            with trio.CancelScope(deadline=deadline) as startup:
                started = await self._run_startup_hook("started", deadline)
        finally:
            ours = self._settle_startup()  # not when it timed out already, in the watchdog
        if startup.cancelled_caught:
            if ours:  # else the watchdog ended the start first, and said so
                self._startup_timed_out()
            return False
        return started and ours

    async def _run_startup_hook(self, hook: str, deadline: float | None = None) -> bool:
        lifespans = self._lifespan_impls() if hook == "started" else {}
        for turn in self._schedule(hook):
            # In its `started` turn, a plugin's lifespan is set up first, then its `started`.
            lifespan = lifespans.get(turn.plugin_name)
            steps = [("lifespan", lifespan)] if lifespan is not None else []
            steps += [(hook, impl) for impl in turn.impls]
            if not steps and self._stop_came():
                return False  # a plugin without this hook has had its turn only before a stop
            for step, impl in steps:
                # A stop, a signal or the startup deadline that came during a synchronous
                # implementation takes effect here, before the next one is called.
                if self._stop_came():
                    return False
                await trio.lowlevel.checkpoint()
                self._turn = (turn.plugin_name, step)
                if step == "lifespan":
                    error = await self._enter_lifespan(turn.plugin_name, impl)
                else:
                    error = await self._call(hook, impl)
                if error is not None:
                    self._report(error, turn.plugin_name, step, impl)
                    self._fail()
                    return False
            if hook == "started":
                self._started.append(turn.plugin_name)
            if deadline is not None and self._past(deadline):
                if self._settle_startup():  # a synchronous one overran: a timeout all the same
                    self._startup_timed_out()
                return False
        await trio.lowlevel.checkpoint()  # the same, after the last one
        return not self._stop_came()

    def _stop_came(self) -> bool:
        self._act_on_signals()
        return self._stop_requested

    async def _run_reload(self) -> None:
        emit(LOG_ID, "info", "reloading")
        for turn in self._schedule("reload"):
            for impl in turn.impls:
                self._act_on_signals()
                if self._stop_requested:
                    return
                self._turn = (turn.plugin_name, "reload")
                error = await self._call("reload", impl)
                if error is not None:
                    self._report(error, turn.plugin_name, "reload", impl)
                    if is_fatal(error):
                        self._fail()
                        return
        emit(LOG_ID, "info", "reloaded")

    async def _shut_down(self) -> None:
        self._note_stop()
        self._act_on_signals()
        self._set_state(RuntimeState.STOPPING)
        emit(LOG_ID, "info", "terminating" + (" on error" if self._error else ""))
        self._callbacks_registry().closed_hooks.add("terminated")
        started_at = self._stop_time if self._stop_time is not None else trio.current_time()
        deadline = started_at + self.shutdown_timeout
        # A plugin whose lifespan was set up but whose `started` then failed is torn down
        # too, first, without its `terminated`.
        started = set(self._started)
        set_up = [name for name in self._lifespans if name not in started]
        with self._abandon_shutdown:
            for turn in self._termination_turns(self._started + set_up):
                impls = turn.impls if turn.plugin_name in started else []
                for impl in impls:
                    self._act_on_signals()
                    if self._abandon_shutdown.cancel_called:
                        return
                    await self._terminate(turn.plugin_name, impl, deadline)
                # Within the plugin: `terminated` first, then its lifespan's teardown.
                await self._end_lifespan(turn.plugin_name, deadline)
                await self._close_services(turn.plugin_name, deadline)
            for owner in self._services.owners():
                await self._close_services(owner, deadline)

    async def _terminate(self, plugin_name: str, impl: pluggy.HookImpl, deadline: float) -> None:
        """Call one `terminated`, and say whose fault it was if the deadline passed."""
        no_time_left = self._past(deadline)
        self._turn = (plugin_name, "terminated")
        error: BaseException | None = None
        with trio.CancelScope(deadline=deadline) as scope:
            try:
                error = await self._call("terminated", impl, error=self._error)
            except KeyboardInterrupt as interrupt:  # a Ctrl-C under handle_signals=False
                self._interrupted = interrupt
        what = f"terminated of {plugin_name!r}"
        if no_time_left:
            if scope.cancelled_caught:
                emit(LOG_ID, "error", f"{what} was cancelled: the shutdown timeout had run out")
        elif scope.cancelled_caught:
            self._shutdown_timed_out(f"{what} cancelled")
        elif self._past(deadline):
            self._shutdown_timed_out(f"{what} returned late")
        if error is not None:
            self._report(error, plugin_name, "terminated", impl)
            self._failed = True

    # -- lifespans ----------------------------------------------------------------------

    def _lifespan_impls(self) -> dict[str, pluggy.HookImpl]:
        return {impl.plugin_name: impl for impl in self.pm.hook.lifespan.get_hookimpls()}

    async def _enter_lifespan(
        self, plugin_name: str, impl: pluggy.HookImpl
    ) -> BaseException | None:
        """Run a lifespan's setup, up to its ``yield``, in a task of its own, so that the
        nurseries and cancel scopes it opens may stay open across the ``yield`` (trio's
        rule: a scope is exited by the task that entered it). Return what it raised."""
        service = self._services.new(plugin_name, "lifespan")
        ending = trio.Event()
        token = current_plugin.set(plugin_name)
        try:
            await self._services.start_as(
                plugin_name, service, self._live, (plugin_name, impl, ending)
            )
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            return exc
        finally:
            current_plugin.reset(token)
        self._lifespans[plugin_name] = (service, ending)
        return None

    async def _live(
        self,
        plugin_name: str,
        impl: pluggy.HookImpl,
        ending: trio.Event,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Drive one lifespan: setup, report ready, wait for the teardown, teardown. What
        ends the wait early (a task of the lifespan's own nursery that failed, or the
        shutdown deadline) is thrown in at the ``yield``, as ``asynccontextmanager`` does."""
        kwargs = {"runtime": self}
        generator = cast(
            AsyncGenerator[None, None], impl.function(*[kwargs[name] for name in impl.argnames])
        )
        try:
            with lifecycle_code():
                await generator.__anext__()
        except StopAsyncIteration:
            raise LifespanError(f"lifespan of {plugin_name!r} ended without yielding") from None
        task_status.started()
        try:
            await ending.wait()
        except BaseException as exc:
            try:
                with lifecycle_code():
                    await generator.athrow(exc)
            except StopAsyncIteration:
                return
        else:
            try:
                with lifecycle_code():
                    await generator.__anext__()
            except StopAsyncIteration:
                return
        await generator.aclose()
        raise LifespanError(f"lifespan of {plugin_name!r} yielded more than once")

    async def _end_lifespan(self, plugin_name: str, deadline: float) -> None:
        """Let a plugin's lifespan run its teardown, and wait for it until the deadline."""
        lifespan = self._lifespans.pop(plugin_name, None)
        if lifespan is None:
            return
        service, ending = lifespan
        self._turn = (plugin_name, "lifespan")
        ending.set()
        with trio.CancelScope(deadline=deadline) as scope:
            await service.done.wait()
        if scope.cancelled_caught:
            service.scope.cancel()
            self._services.forget(plugin_name, service)
            self._shutdown_timed_out(f"lifespan of {plugin_name!r} cancelled")

    # -- calling implementations --------------------------------------------------------

    def _schedule(self, hook: str) -> list[_Turn]:
        """Every plugin's turn at ``hook``: each after the plugins it ``requires`` or
        comes ``after``, and otherwise tryfirst, then the rest, then trylast, each group
        in registration order, with the SystemCallbacks registry first of all
        (``_order.ordered``)."""
        by_plugin = {CALLBACKS_PLUGIN_NAME: self._callbacks_registry().impls(hook)}
        before: dict[str, tuple[str, ...]] = {}
        for name, plugin in self.pm.list_name_plugin():
            if plugin is not None:
                by_plugin[name] = []
                before[name] = declared(plugin).before_it
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            by_plugin[impl.plugin_name].append(impl)
        ranks = {
            name: TRYFIRST if impls[0].tryfirst else TRYLAST if impls[0].trylast else UNMARKED
            for name, impls in by_plugin.items()
            if impls
        }
        return [_Turn(name, by_plugin[name]) for name in ordered(list(by_plugin), ranks, before)]

    def _termination_turns(self, started: list[str]) -> list[_Turn]:
        by_plugin = {impl.plugin_name: [impl] for impl in self.pm.hook.terminated.get_hookimpls()}
        by_plugin[CALLBACKS_PLUGIN_NAME] = self._callbacks_registry().impls("terminated")[::-1]
        return [_Turn(name, by_plugin.get(name, [])) for name in reversed(started)]

    async def _call(
        self, hook: str, impl: pluggy.HookImpl, **kwargs: object
    ) -> BaseException | None:
        return await self._calling.call_one(hook, impl, kwargs)

    # -- failures -----------------------------------------------------------------------

    def _report(
        self,
        error: BaseException,
        plugin_name: str | None,
        where: str,
        impl: pluggy.HookImpl | None = None,
    ) -> None:
        if any(error is reported for reported in self._errors):
            return  # a fatal() in an extension hook, reported as its plugin's already
        self._errors.append(error)
        log_id = self._log_id_of(plugin_name, impl)
        for leaf in leaf_exceptions(error):
            if any(leaf is reported for reported in self._errors[:-1]):
                continue
            if isinstance(leaf, FatalError):
                emit(log_id, "crit", leaf.message, exception=leaf.error)
            elif not isinstance(leaf, trio.Cancelled):
                emit(log_id, "crit", f"{where} failed: {printable(leaf)}", exception=leaf)

    def _fatal_in_extension_hook(self, error: BaseException, plugin_name: str) -> None:
        """A ``fatal()`` in an extension hook implementation is its plugin's, whoever
        called the hook: reported as that plugin's, and fatal to the runtime."""
        self._report(error, plugin_name, "fatal")
        for leaf in leaf_exceptions(error):
            if leaf is not error:
                self._errors.append(leaf)  # what the caller re-raises is not reported again
        self._fail()

    def _fail(self) -> None:
        """End the running phase with error=True, or just mark the exit status during
        shutdown, when `terminated` already has its error flag."""
        self._failed = True
        if self._state in (RuntimeState.STOPPING, RuntimeState.STOPPED) or self._error:
            return
        self._error = True
        self._announced_failure = True
        emit(LOG_ID, "crit", "exiting with error status")
        self._stop_requested = True
        self._note_stop()
        self._until_stop.cancel()
        self._end_drain.cancel()

    def _past(self, deadline: float) -> bool:
        return trio.current_time() >= deadline

    def _settle_startup(self) -> bool:
        """End the start; whether it was still ours to end (the watchdog may have ended
        it while a synchronous `started` blocked the loop)."""
        with self._startup_lock:
            if self._startup_settled:
                return False
            self._startup_settled = True
            assert self._watchdog is not None
            alarm = self._watchdog.alarm
            if alarm is not None and alarm[1] == self._startup_overran:
                self._watchdog.clear_alarm()
            return True

    def _startup_timed_out(self) -> None:
        self._log_startup_timeout()
        self._fail()

    def _log_startup_timeout(self) -> None:
        timeout = TimeoutError(
            f"{self._in_turn()} did not complete within the startup timeout of "
            f"{self.startup_timeout:g} s"
        )
        self._errors.append(timeout)
        emit(LOG_ID, "crit", str(timeout))

    def _startup_overran(self) -> None:
        """The watchdog's end of a start that a synchronous `started` keeps past its
        deadline: what `_startup_timed_out` does, from another thread."""
        with self._startup_lock:
            if self._startup_settled:
                return
            self._startup_settled = True
            self._error = self._failed = self._announced_failure = True
            self._stop_requested = True
            self._note_stop()
        self._log_startup_timeout()
        emit(LOG_ID, "crit", "exiting with error status")
        if self._trio_token is not None:
            with suppress(trio.RunFinishedError):
                self._trio_token.run_sync_soon(self._until_stop.cancel)

    def _shutdown_timed_out(self, what: str) -> None:
        emit(
            LOG_ID,
            "crit",
            f"{what}: the shutdown timeout of {self.shutdown_timeout:g} s ran out",
        )
        self._failed = True
        self._observers.send(ShutdownOverran(what, abandoned=False))

    def _note_stop(self) -> None:
        """Start the shutdown's clock at the first stop request, and the watchdog's."""
        if self._stop_monotonic is not None:
            return
        self._stop_monotonic = time.monotonic()
        if self._trio_thread is not None and threading.get_ident() == self._trio_thread:
            self._stop_time = trio.current_time()
        self._arm_shutdown_alarm(self.drain if self._drain_due else 0.0)

    def _arm_shutdown_alarm(self, drain: float) -> None:
        """Have the watchdog end the run ``drain`` seconds, the shutdown timeout and GRACE
        after the stop request, if the loop has not ended it by then; a shutdown cut short
        by a stop signal keeps its nearer bound, even one that came as this was set."""
        deadline = self._shutdown_bound(drain)
        if self._watchdog is None or deadline is None:
            return
        self._watchdog.set_alarm(deadline, self._shutdown_overdue)
        if self._abandoning:
            self._cut_shutdown_short()

    def _shutdown_bound(self, drain: float) -> float | None:
        stopped = self._stop_monotonic
        return None if stopped is None else stopped + drain + self.shutdown_timeout + GRACE

    def _shutdown_overdue(self) -> None:
        """In the watchdog's thread, at the bound on the shutdown. A stop request that
        came as the drain became due (one sent by whatever read the "running" line) may
        have set the bound without the drain: a drain due or running moves it to its own."""
        if self._drain_due and not self._abandoning:
            deadline = self._shutdown_bound(self.drain)
            if deadline is not None and time.monotonic() < deadline:
                self._arm_shutdown_alarm(self.drain)
                return
        self._overran(
            f"the shutdown did not end within the shutdown timeout of "
            f"{self.shutdown_timeout:g} s and {GRACE:g} s of grace"
        )

    def _cut_shutdown_short(self) -> None:
        """A second stop signal: the process ends within GRACE, whatever plugins do."""
        if self._watchdog is None:
            return
        deadline = time.monotonic() + GRACE
        alarm = self._watchdog.alarm
        if alarm is None or alarm[0] > deadline:
            self._watchdog.set_alarm(
                deadline,
                lambda: self._overran(
                    f"the shutdown did not end within {GRACE:g} s of a second stop signal"
                ),
            )

    def _overran(self, reason: str) -> None:
        """In the watchdog's thread: the loop could not end the run in time."""
        self._failed = True
        still = "; ".join(self._still_running()) or "nothing that a plugin owns"
        ending = "ending the process" if self._on_overrun else "Runtime.run() waits for them"
        emit(LOG_ID, "crit", f"{reason}; still running: {still}; {ending}")
        self._observers.send(ShutdownOverran(reason, abandoned=False))
        with suppress(Exception):
            logger.complete()
            sys.stderr.flush()
        if self._on_overrun is not None:
            self._on_overrun()

    def _report_blocked_loop(self, seconds: float) -> None:
        self._observers.send(LoopBlocked(seconds))
        emit(
            LOG_ID,
            "warn",
            f"the event loop has been blocked for {seconds:.1f} s {self._blocking_code()}",
        )

    # -- what is running, seen from the watchdog's thread ---------------------------------

    def _in_turn(self) -> str:
        if self._turn is None:
            return "started"
        plugin_name, hook = self._turn
        return f"{hook} of {plugin_name!r}"

    def _blocking_code(self) -> str:
        """``in started of 'server'``: the hook or service that the trio thread runs."""
        frame = sys._current_frames().get(self._trio_thread or 0)
        while frame is not None:
            owner = self._running.get(frame)
            if owner is not None:
                plugin_name, what = owner
                return f"in {what} of {plugin_name or LOG_ID!r}"
            frame = frame.f_back
        return "outside any plugin's hook or service"

    def _still_running(self) -> list[str]:
        """For each plugin, what of it has not returned: hooks, services, worker threads."""
        by_plugin: dict[str, list[str]] = {}
        for plugin_name, what in list(self._running.values()):
            by_plugin.setdefault(plugin_name or LOG_ID, []).append(what)
        for plugin_name, function in _worker_threads():
            by_plugin.setdefault(plugin_name or LOG_ID, []).append(
                f"a worker thread running {function}"
            )
        return [f"{name!r}: {', '.join(whats)}" for name, whats in by_plugin.items()]

    # -- requests and signals -----------------------------------------------------------

    def _in_runtime_thread(self, request: Callable[[], None]) -> None:
        if self._trio_token is None or threading.get_ident() == self._trio_thread:
            request()
            return
        with suppress(trio.RunFinishedError):  # the run is over: nothing left to act on
            self._trio_token.run_sync_soon(request)

    def _request_stop(self) -> None:
        if self._state not in (RuntimeState.STOPPING, RuntimeState.STOPPED):
            self._stop_requested = True
            self._note_stop()
            self._until_stop.cancel()

    def _request_reload(self) -> None:
        if self._state not in (RuntimeState.STOPPING, RuntimeState.STOPPED):
            self._reload_wanted.set()

    def _act_on_signals(self) -> None:
        """Log and act on the signals received so far, in the trio thread: called soon
        after each arrives, and before every implementation, so that the lines come in
        order and a stop takes effect before the next implementation."""
        self._act_on_signals_soon = False
        while self._signals_received:
            signum, action = self._signals_received.popleft()
            name = signal.Signals(signum).name
            if action == "reload":
                self._reload_signal_pending = False
                if not self._stop_requested:
                    emit(LOG_ID, "notice", f"{name} signal received, reloading...")
                    self._request_reload()
            elif action == "stop":
                emit(LOG_ID, "notice", f"{name} signal received, exiting...")
                self._request_stop()
            elif action == "end the drain":
                emit(LOG_ID, "notice", f"{name} signal received again, ending the drain")
                self._end_drain.cancel()
            else:
                emit(LOG_ID, "crit", f"{name} signal received again, abandoning the shutdown")
                self._abandon_shutdown.cancel()
                self._observers.send(
                    ShutdownOverran(f"{name} signal received again", abandoned=True)
                )

    @contextmanager
    def _signals_attached(self) -> Iterator[None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        with signals_caught() as catcher:
            self._calling.signals_handled = True
            catcher.attach(self.signal_received)
            try:
                yield
            finally:
                catcher.detach()

    # -- services -----------------------------------------------------------------------

    def _service_failed(self, error: BaseException, owner: str | None, name: str) -> None:
        self._report(error, owner, name)
        self._fail()

    async def _close_services(self, owner: str | None, deadline: float) -> None:
        if not await self._services.close(owner, deadline):
            self._shutdown_timed_out(f"waiting for the services of {owner or LOG_ID!r}")

    # -- small helpers ------------------------------------------------------------------

    def _set_state(self, state: RuntimeState) -> None:
        self._state = state
        self._observers.send(StateChanged(state))

    def _log_id_of(self, plugin_name: str | None, impl: pluggy.HookImpl | None = None) -> str:
        """A plugin's own ``log_id`` (it may be a :class:`Logger`), else its name. For a
        ``SystemCallbacks`` callback, that of the module that defined it."""
        plugin: object = self.pm.get_plugin(plugin_name or "")
        if plugin_name == CALLBACKS_PLUGIN_NAME and impl is not None:
            plugin = sys.modules.get(getattr(impl.function, "__module__", None) or "")
            name = self.pm.get_name(plugin) if plugin is not None else None
            plugin_name = name or plugin_name
        log_id = getattr(plugin, "log_id", None)
        return log_id if isinstance(log_id, str) else plugin_name or LOG_ID

    def _callbacks_registry(self) -> CallbackRegistry:
        if self._callbacks is None:  # not running yet: what run() would start from
            return snapshot()
        return self._callbacks


class _StateListener:
    """An observer that hands ``StateChanged`` events to a state listener."""

    def __init__(self, listener: Callable[[RuntimeState], object]) -> None:
        self._listener = listener

    def __repr__(self) -> str:
        return printable(self._listener)  # named as the listener when it fails

    def __call__(self, event: object) -> None:
        if isinstance(event, StateChanged):
            self._listener(event.state)


def _worker_threads() -> Iterator[tuple[str | None, str]]:
    """The plugin and function of each of trio's worker threads that runs a job now.

    trio copies the caller's context into the worker, so the plugin is the one the
    `current_plugin` variable names in the context that trio's `worker_fn` runs."""
    for ident, frame in list(sys._current_frames().items()):
        if ident == threading.get_ident():
            continue
        inner: FrameType | None = frame
        while inner is not None:
            code = inner.f_code
            if code.co_name == "worker_fn" and Path(code.co_filename).parts[-2:] == (
                "trio",
                "_threads.py",
            ):
                context = inner.f_locals.get("context")
                function = inner.f_locals.get("sync_fn")
                if isinstance(context, Context):
                    yield context.get(current_plugin), name_of(function)
                break
            inner = inner.f_back


async def _flush_logs() -> None:
    # loguru's complete() waits for enqueued and coroutine sinks, so that no line of the
    # way down is lost when the process exits right after run() returns.
    await logger.complete()


class RuntimeOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Runtime`, for :func:`run`."""

    handle_signals: bool
    startup_timeout: float
    shutdown_timeout: float
    blocked_loop_threshold: float | None
    callbacks: CallbackRegistry | None
    on_overrun: Callable[[], object] | None


def run(
    *plugins: object, entry_points: bool = False, **runtime_options: Unpack[RuntimeOptions]
) -> int:
    """Run ``plugins`` through their lifecycle in a fresh trio run; return the exit status.

    The plugins are registered in the order given. If loguru still has its default
    handler, it is replaced by OverSIP-style console lines on standard error. With
    ``handle_signals`` (the default) in the main thread, the signals are caught from the
    moment ``run`` is called, and the handlers found are put back when it returns. As
    for the command, a shutdown that has not ended ``GRACE`` (1) second after its
    deadline ends the process with status 1, unless ``on_overrun`` says otherwise.

    Args:
        plugins: modules, classes or objects with hookimpls, each registered under a
            readable name (a module's ``__name__``, a class's name, an instance's class
            name); or mappings of names to plugins, each registered under its key, the
            name that ``M`` knows it by: ``run({"heartbeat": oversip_mod_heartbeat})``.
        entry_points: first load the installed entry points of the group
            ``oversip_hooks``, in the order of their names, each registered under its
            name, as the command does.
        runtime_options: keyword arguments for :class:`Runtime`.

    Raises:
        pluggy.PluginValidationError: a plugin is invalid; no hook has been called.
        ValueError: a name is taken twice, or a plugin is given twice.
        TypeError: a name is not a ``str``.

    Example::

        import oversip_hooks, oversip_mod_heartbeat, server
        raise SystemExit(
            oversip_hooks.run({"heartbeat": oversip_mod_heartbeat, "server": server})
        )
    """
    import importlib.metadata  # here: the runtime itself never reads installed metadata
    from collections.abc import Mapping

    runtime_options.setdefault("on_overrun", _end_process)
    named: list[tuple[str | None, object]] = []
    if entry_points:
        found = importlib.metadata.entry_points(group="oversip_hooks")
        named += [(each.name, each.load()) for each in sorted(found, key=lambda ep: ep.name)]
    for plugin in plugins:
        named += plugin.items() if isinstance(plugin, Mapping) else [(None, plugin)]
    pm = get_plugin_manager()
    for name, plugin in named:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"a plugin's name must be a str, not {name!r}")
        pm.register(plugin, name=readable_name(pm, plugin) if name is None else name)
    runtime = Runtime(pm, **runtime_options)
    _replace_default_log_handler()
    catching = runtime.handle_signals and threading.current_thread() is threading.main_thread()
    with signals_caught() if catching else nullcontext():
        return trio.run(runtime.run)


def _end_process() -> None:
    os._exit(1)


def _replace_default_log_handler() -> None:
    try:
        logger.remove(0)  # loguru's default handler, if the application has not removed it
    except ValueError:
        return
    add_console_sink()
