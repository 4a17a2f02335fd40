# The runtime calls each hook implementation itself, one at a time, instead of calling
# `pm.hook.started()`: pluggy runs implementations last-registered-first, stops at the first
# that raises, and cannot await. OverSIP's rules need registration order, per-implementation
# error handling (a failing `reload` must not stop the next one) and a record of which
# plugins have started, so pluggy is used for what it is good at (markers, specs, argument
# validation, tryfirst/trylast) and the calling is done here.
#
# Everything before shutdown runs inside one cancel scope, `_until_stop`; a stop request,
# `fatal()` from a service and a startup timeout all end the running phase by cancelling
# it, so there is exactly one way into shutdown. Shutdown runs outside that scope, each
# `terminated` implementation in a scope of its own that shares one deadline: when the
# deadline passes, the one in progress is cancelled and the rest are still called.
#
# Services run in the runtime's nursery, each in a cancel scope recorded under the plugin
# that started it (a context variable set while a plugin's hook runs, inherited by the
# tasks and worker threads it starts). A service catches its own errors and turns them into
# a failure of the runtime, so the nursery never tears the lifecycle down underneath
# `terminated`.

from __future__ import annotations

import enum
import inspect
import math
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict, TypeVarTuple, Unpack

import pluggy
import trio
from loguru import logger

from ._callbacks import CALLBACKS_PLUGIN_NAME, CallbackRegistry, snapshot, using
from ._fatal import FatalError
from ._logging import add_console_sink, emit
from ._manager import LIFECYCLE_HOOKS, get_plugin_manager, readable_name, validate
from ._modules import active_plugin_manager

LOG_ID = "runtime"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

_Ts = TypeVarTuple("_Ts")
_Before = Callable[[str, str, dict[str, object]], object]
_After = Callable[[BaseException | None, str, str, dict[str, object]], object]

# The plugin whose hook, service or worker thread is running; services belong to it.
_current_plugin: ContextVar[str | None] = ContextVar("oversip_hooks_plugin", default=None)


class RuntimeState(enum.Enum):
    """Where a :class:`Runtime` is in its lifecycle."""

    CREATED = "created"
    INITIALIZING = "initializing"
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


class _Turn(NamedTuple):
    """One plugin's implementations of one hook, called in a row."""

    plugin_name: str
    impls: list[pluggy.HookImpl]


@dataclass(eq=False)
class _Service:
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)


class _TaskStatus:
    """Forwards ``started()`` and remembers that it was called."""

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self.reported = False

    def started(self, value: object = None) -> None:
        self.reported = True
        self._inner.started(value)


def leaf_exceptions(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` itself, or the exceptions inside it when it is a group, at any depth."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaf_exceptions(inner)
    else:
        yield exc


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is trio's ``Cancelled``, alone or in a group."""
    return all(isinstance(leaf, trio.Cancelled) for leaf in leaf_exceptions(exc))


def _check_timeout(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


class Runtime:
    """Runs plugins through their lifecycle: initialize, started, reload*, terminated.

    Args:
        pm: the plugin manager holding the plugins; a fresh empty one by default.
        handle_signals: handle SIGHUP (reload) and SIGTERM, SIGINT, SIGQUIT (stop) while
            running, when running in the main thread.
        startup_timeout: seconds that all ``started`` implementations together may take.
        shutdown_timeout: seconds that the whole shutdown may take.
        callbacks: the ``SystemCallbacks`` registry to start from; by default a copy of
            the callbacks registered so far outside any run.

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
        callbacks: CallbackRegistry | None = None,
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
        self.pm = pm
        self.handle_signals = bool(handle_signals)
        self.startup_timeout = _check_timeout("startup_timeout", startup_timeout)
        self.shutdown_timeout = _check_timeout("shutdown_timeout", shutdown_timeout)
        self._callbacks = callbacks
        self._state = RuntimeState.CREATED
        self._ran = False
        self._stop_signals = 0
        self._state_listeners: list[Callable[[RuntimeState], object]] = []
        self._monitors: list[tuple[_Before, _After]] = []
        self._errors: list[BaseException] = []
        self._error = False  # the way down is unexpected: `terminated` gets error=True
        self._failed = False  # the exit status is 1
        self._announced_failure = False
        self._until_stop = trio.CancelScope()
        # Set as soon as a stop is asked for, from any thread, so that the loops over
        # implementations see it at once; `_until_stop` is cancelled in the trio thread.
        self._stop_requested = False
        self._abandon_shutdown = trio.CancelScope()
        self._reload_wanted = trio.Event()
        self._started: list[str] = []
        self._services: dict[str | None, set[_Service]] = {}
        self._closed_owners: set[str | None] = set()
        self._nursery: trio.Nursery | None = None
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._trio_thread: int | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def state(self) -> RuntimeState:
        """Where the runtime is in its lifecycle."""
        return self._state

    @property
    def errors(self) -> list[BaseException]:
        """Every exception that a hook or a service raised so far, in order: a
        :class:`FatalError` for each ``fatal()``, a ``TimeoutError`` for a startup that
        ran out of time."""
        return list(self._errors)

    def add_state_listener(self, listener: Callable[[RuntimeState], object]) -> None:
        """Call ``listener(state)`` in the runtime's thread at each change of state.

        Raises:
            TypeError: ``listener`` is not callable.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        self._state_listeners.append(listener)

    def add_call_monitor(self, before: _Before, after: _After) -> Callable[[], None]:
        """Watch every call of a hook implementation, as pluggy's
        ``add_hookcall_monitoring`` does for a whole hook.

        Args:
            before: called as ``before(hook, plugin_name, kwargs)`` just before.
            after: called as ``after(outcome, hook, plugin_name, kwargs)`` just after,
                ``outcome`` being what the implementation raised, or ``None``.

        Returns:
            A function that removes the monitor.
        """
        monitor = (before, after)
        self._monitors.append(monitor)
        return lambda: self._monitors.remove(monitor)

    def hook_order(self, hook: str) -> list[str]:
        """The plugins that implement ``hook``, in the order the runtime will call them
        (for ``terminated``: were every plugin to start). ``"SystemCallbacks"`` stands for
        the callbacks registered so far.

        Raises:
            ValueError: ``hook`` is not a lifecycle hook.

        Example::

            >>> runtime.hook_order("terminated")
            ['server', 'sqlite', 'SystemCallbacks']
        """
        if hook not in LIFECYCLE_HOOKS:
            raise ValueError(f"no lifecycle hook named {hook!r}; the hooks are {LIFECYCLE_HOOKS}")
        if hook == "terminated":
            every_plugin = [turn.plugin_name for turn in self._schedule("started")]
            turns = self._termination_turns(every_plugin)
        else:
            turns = self._schedule(hook)
        return [turn.plugin_name for turn in turns if turn.impls]

    def stop(self) -> None:
        """Request a graceful stop (``terminated`` gets ``error=False``).

        Safe from hooks, services and other threads. During startup it cancels the
        ``started`` implementation in progress and skips the rest. Does nothing once
        the shutdown has begun.
        """
        if self._state not in (RuntimeState.STOPPING, RuntimeState.STOPPED):
            self._stop_requested = True
        self._in_runtime_thread(self._request_stop)

    def reload(self) -> None:
        """Request a reload: every ``reload`` implementation runs once more.

        Safe from hooks, services and other threads. Requests made while a reload runs
        are coalesced into one more reload; a request made during startup runs right
        after ``started`` completes.
        """
        self._in_runtime_thread(self._request_reload)

    def start_soon(self, async_fn: Callable[[Unpack[_Ts]], Awaitable[object]], *args: *_Ts) -> None:
        """Start a service owned by the calling plugin; it runs until that plugin's
        ``terminated`` has returned, then is cancelled.

        A service that raises (or calls ``fatal``) brings the runtime down with
        ``error=True``.

        Raises:
            RuntimeError: the runtime is not running.
        """
        nursery = self._services_nursery()
        owner = _current_plugin.get()
        nursery.start_soon(
            self._host_service, owner, self._new_service(owner), async_fn, args, False
        )

    async def start(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> Any:
        """Start a service as :meth:`start_soon` does, and wait until it reports itself
        ready with ``task_status.started(value)``; returns that value.

        Raises:
            RuntimeError: the runtime is not running.
            Exception: whatever the service raised before it reported ready.
        """
        nursery = self._services_nursery()
        owner = _current_plugin.get()
        service = self._new_service(owner)
        return await nursery.start(self._host_service, owner, service, async_fn, args, True)

    async def run(self) -> int:
        """Run the whole lifecycle; return the exit status: 0 clean stop, 1 error.

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
        modules_token = active_plugin_manager.set(self.pm)
        try:
            with using(self._callbacks), self._receiving_signals() as receiver:
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        if receiver is not None:
                            await nursery.start(self._watch_signals, receiver)
                        await self._lifecycle()
                        nursery.cancel_scope.cancel()
                finally:
                    self._nursery = None
                    self._set_state(RuntimeState.STOPPED)
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
        return 1 if self._failed else 0

    # -- the lifecycle, top to bottom -----------------------------------------------------

    async def _lifecycle(self) -> None:
        try:
            with self._until_stop:
                # 1. `initialize` once, then `started` once, one implementation at a time, in
                #    registration order. 2. An error or fatal() in either is fatal and the rest
                #    do not run. 5. `started` as a whole is bounded by startup_timeout.
                #    7. A stop during startup cancels the implementation in progress and skips
                #    the rest.
                self._set_state(RuntimeState.INITIALIZING)
                if await self._run_startup_hook("initialize"):
                    self._callbacks_registry().closed_hooks.add("started")
                    self._set_state(RuntimeState.STARTING)
                    with trio.move_on_after(self.startup_timeout) as startup:
                        started = await self._run_startup_hook("started")
                    if startup.cancelled_caught:
                        timeout = TimeoutError(
                            f"started did not complete within {self.startup_timeout:g} s"
                        )
                        self._errors.append(timeout)
                        emit(LOG_ID, "crit", str(timeout))
                        self._fail()
                    elif started:
                        # 3. Reloads, one at a time, until a stop; requests made during
                        #    startup or during a reload are coalesced into one more.
                        emit(LOG_ID, "notice", "running")
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
            # 4. `terminated` exactly once for each plugin whose `started` completed, in
            #    the reverse order, whatever the way down, a cancellation from outside or a
            #    KeyboardInterrupt included; 6. then that plugin's services are cancelled.
            with trio.CancelScope(shield=True):
                await self._shut_down()

    async def _run_startup_hook(self, hook: str) -> bool:
        for turn in self._schedule(hook):
            if self._stop_requested:
                return False  # the previous implementation asked to stop
            for impl in turn.impls:
                # A stop, a signal or the startup deadline that came during a synchronous
                # implementation takes effect here, before the next one is called.
                await trio.lowlevel.checkpoint()
                error = await self._call(hook, impl)
                if error is not None:
                    self._report(error, turn.plugin_name, hook)
                    self._fail()
                    return False
            if hook == "started":
                self._started.append(turn.plugin_name)
        await trio.lowlevel.checkpoint()  # the same, after the last one
        return True

    async def _run_reload(self) -> None:
        emit(LOG_ID, "info", "reloading")
        for turn in self._schedule("reload"):
            for impl in turn.impls:
                if self._stop_requested:
                    return
                error = await self._call("reload", impl)
                if error is not None:
                    self._report(error, turn.plugin_name, "reload")
                    if _is_fatal(error):
                        self._fail()
                        return
        emit(LOG_ID, "info", "reloaded")

    async def _shut_down(self) -> None:
        self._set_state(RuntimeState.STOPPING)
        emit(LOG_ID, "info", "terminating" + (" on error" if self._error else ""))
        self._callbacks_registry().closed_hooks.add("terminated")
        deadline = trio.current_time() + self.shutdown_timeout
        with self._abandon_shutdown:
            for turn in self._termination_turns(self._started):
                for impl in turn.impls:
                    if self._abandon_shutdown.cancel_called:
                        return
                    with trio.CancelScope(deadline=deadline) as scope:
                        error = await self._call("terminated", impl, error=self._error)
                    if scope.cancelled_caught:
                        self._shutdown_timed_out(f"terminated hook of {turn.plugin_name!r}")
                    elif error is not None:
                        self._report(error, turn.plugin_name, "terminated")
                        self._failed = True
                await self._close_services(turn.plugin_name, deadline)
            for owner in list(self._services):
                await self._close_services(owner, deadline)

    # -- calling implementations --------------------------------------------------------

    def _schedule(self, hook: str) -> list[_Turn]:
        """Every plugin's turn at ``hook``: tryfirst, then the rest, then trylast, each
        group in registration order, with the SystemCallbacks registry first of all."""
        by_plugin = {CALLBACKS_PLUGIN_NAME: self._callbacks_registry().impls(hook)}
        for name, plugin in self.pm.list_name_plugin():
            if plugin is not None:
                by_plugin[name] = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            by_plugin[impl.plugin_name].append(impl)
        first: list[_Turn] = []
        middle: list[_Turn] = []
        last: list[_Turn] = []
        for name, impls in by_plugin.items():
            head = impls[0] if impls else None
            group = first if head and head.tryfirst else last if head and head.trylast else middle
            group.append(_Turn(name, impls))
        return first + middle + last

    def _termination_turns(self, started: list[str]) -> list[_Turn]:
        by_plugin = {impl.plugin_name: [impl] for impl in self.pm.hook.terminated.get_hookimpls()}
        by_plugin[CALLBACKS_PLUGIN_NAME] = self._callbacks_registry().impls("terminated")[::-1]
        return [_Turn(name, by_plugin.get(name, [])) for name in reversed(started)]

    async def _call(
        self, hook: str, impl: pluggy.HookImpl, **kwargs: object
    ) -> BaseException | None:
        """Call one implementation; return what it raised, but for a cancellation or a
        KeyboardInterrupt, which go on up: neither is the implementation's failure."""
        kwargs["runtime"] = self
        for before, _ in self._monitors:
            before(hook, impl.plugin_name, kwargs)
        outcome: BaseException | None = None
        token = _current_plugin.set(impl.plugin_name)
        try:
            result = impl.function(*[kwargs[name] for name in impl.argnames])
            if result is not None and inspect.isawaitable(result):
                await result
        except BaseException as exc:
            outcome = exc
            if is_cancellation(exc) or isinstance(exc, KeyboardInterrupt):
                raise
        finally:
            _current_plugin.reset(token)
            for _, after in self._monitors:
                after(outcome, hook, impl.plugin_name, kwargs)
        return outcome

    # -- failures -----------------------------------------------------------------------

    def _report(self, error: BaseException, plugin_name: str | None, where: str) -> None:
        self._errors.append(error)
        log_id = self._log_id_of(plugin_name)
        for leaf in leaf_exceptions(error):
            if isinstance(leaf, FatalError):
                emit(log_id, "crit", leaf.error or leaf.message)
            elif not isinstance(leaf, trio.Cancelled):
                emit(log_id, "crit", f"{where} failed: {leaf!r}", exception=leaf)

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
        self._until_stop.cancel()

    def _shutdown_timed_out(self, what: str) -> None:
        emit(
            LOG_ID,
            "crit",
            f"{what} cancelled: the shutdown timeout of {self.shutdown_timeout:g} s ran out",
        )
        self._failed = True

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
            self._until_stop.cancel()

    def _request_reload(self) -> None:
        if self._state not in (RuntimeState.STOPPING, RuntimeState.STOPPED):
            self._reload_wanted.set()

    def _handle_signal(self, signum: int) -> None:
        """SIGHUP reloads; the first stop signal stops, the second abandons the shutdown."""
        if self._state is RuntimeState.STOPPED:
            return
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            emit(LOG_ID, "notice", f"{name} signal received, reloading...")
            self._request_reload()
            return
        self._stop_signals += 1
        if self._stop_signals == 1:
            emit(LOG_ID, "notice", f"{name} signal received, exiting...")
            self._request_stop()
        else:
            emit(LOG_ID, "crit", f"{name} signal received again, abandoning the shutdown")
            self._failed = True
            self._abandon_shutdown.cancel()

    @contextmanager
    def _receiving_signals(self) -> Iterator[AsyncIterator[int] | None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield None
            return
        # When its receiver closes, trio re-raises each signal it has not delivered yet to
        # the handler that was there before: with the default handlers, a SIGTERM or SIGHUP
        # arriving in the last moments of a run would kill the process. Those handlers are
        # set to "ignore" while the receiver is open, and put back after.
        signums = (signal.SIGHUP, *STOP_SIGNALS)
        previous = {signum: signal.getsignal(signum) for signum in signums}
        for signum in signums:
            signal.signal(signum, signal.SIG_IGN)
        try:
            with trio.open_signal_receiver(*signums) as receiver:
                yield receiver
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    async def _watch_signals(
        self,
        receiver: AsyncIterator[int],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for signum in receiver:
            self._handle_signal(signum)

    # -- services -----------------------------------------------------------------------

    def _services_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("services can only be started while the runtime is running")
        return self._nursery

    async def _host_service(
        self,
        owner: str | None,
        service: _Service,
        async_fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        reports_ready: bool,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        _current_plugin.set(owner)
        status = _TaskStatus(task_status)
        try:
            with service.scope:
                if reports_ready:
                    await async_fn(*args, task_status=status)
                else:
                    await async_fn(*args)
        except BaseException as exc:
            if is_cancellation(exc) or (reports_ready and not status.reported):
                raise  # a start() that failed before it was ready raises in its caller
            self._report(exc, owner, f"service {getattr(async_fn, '__qualname__', async_fn)}")
            self._fail()
        finally:
            self._services.get(owner, set()).discard(service)
            service.done.set()

    def _new_service(self, owner: str | None) -> _Service:
        # Recorded before its task first runs, so that closing the owner's services
        # right after `start_soon` still waits for this one.
        service = _Service()
        if owner in self._closed_owners:
            service.scope.cancel()
        self._services.setdefault(owner, set()).add(service)
        return service

    async def _close_services(self, owner: str | None, deadline: float) -> None:
        self._closed_owners.add(owner)
        services = self._services.pop(owner, set())
        for service in services:
            service.scope.cancel()
        with trio.CancelScope(deadline=deadline) as scope:
            for service in services:
                await service.done.wait()
        if scope.cancelled_caught:
            self._shutdown_timed_out(f"waiting for the services of {owner or LOG_ID!r}")

    # -- small helpers ------------------------------------------------------------------

    def _set_state(self, state: RuntimeState) -> None:
        self._state = state
        for listener in self._state_listeners:
            try:
                listener(state)
            except Exception as exc:  # an observer's bug must not take the lifecycle down
                emit(LOG_ID, "crit", f"state listener {listener!r} failed: {exc!r}", exception=exc)

    def _log_id_of(self, plugin_name: str | None) -> str:
        """A plugin's own ``log_id`` (it may be a :class:`Logger`), else its name."""
        log_id = getattr(self.pm.get_plugin(plugin_name or ""), "log_id", None)
        return log_id if isinstance(log_id, str) else plugin_name or LOG_ID

    def _callbacks_registry(self) -> CallbackRegistry:
        if self._callbacks is None:  # not running yet: what run() would start from
            return snapshot()
        return self._callbacks


def _is_fatal(error: BaseException) -> bool:
    return any(isinstance(leaf, FatalError) for leaf in leaf_exceptions(error))


async def _flush_logs() -> None:
    # loguru's complete() waits for enqueued and coroutine sinks, so that no line of the
    # way down is lost when the process exits right after run() returns.
    await logger.complete()


class RuntimeOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Runtime`, for :func:`run`."""

    handle_signals: bool
    startup_timeout: float
    shutdown_timeout: float
    callbacks: CallbackRegistry | None


def run(*plugins: object, **runtime_options: Unpack[RuntimeOptions]) -> int:
    """Run ``plugins`` through their lifecycle in a fresh trio run; return the exit status.

    The plugins are registered in the order given. If loguru still has its default
    handler, it is replaced by OverSIP-style console lines on standard error.

    Args:
        plugins: modules, classes or objects with hookimpls.
        runtime_options: keyword arguments for :class:`Runtime`.

    Raises:
        pluggy.PluginValidationError: a plugin is invalid; no hook has been called.

    Example::

        import oversip_hooks, my_module
        raise SystemExit(oversip_hooks.run(my_module))
    """
    pm = get_plugin_manager()
    for plugin in plugins:
        pm.register(plugin, name=readable_name(pm, plugin))
    runtime = Runtime(pm, **runtime_options)
    _replace_default_log_handler()
    return trio.run(runtime.run)


def _replace_default_log_handler() -> None:
    try:
        logger.remove(0)  # loguru's default handler, if the application has not removed it
    except ValueError:
        return
    add_console_sink()
