# Calling hook implementations: one path for lifecycle and extension hooks. The runtime
# does not call `pm.hook.<name>()`: pluggy runs implementations last-registered-first,
# stops at the first that raises, and cannot await. So pluggy provides the markers, the
# specifications and the argument checks, and `Calling.sequence` calls implementations
# itself, one at a time, in the runtime's order (`_order.py`), sync and async mixed, each in
# its plugin's context (the plugin that `fatal()`, services and log lines belong to).
#
# A lifecycle hook call is a sequence of one implementation whose outcome is collected;
# an extension hook call is a sequence of every implementation, its first error raised
# (pluggy's rule) or every outcome collected, optionally each in a task of one nursery,
# and inside the hook's wrappers. Everything a call needs is decided once per hook and
# kept in a `_Plan` until a plugin comes or goes, and nothing is timed or sent to observers
# when nobody watches: an extension hook is called on hot paths (a health check, a request).
#
# Rejected: a coroutine per implementation (it doubled the cost of calling a sync one), a
# second loop for synchronous callers (`call_sync` drives the same coroutine without an
# event loop and refuses what would need one), and pluggy's `_multicall` with async
# support bolted on (its order is not ours, and its wrappers are sync only).

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Mapping,
    Sequence,
)
from contextlib import nullcontext
from contextvars import ContextVar, Token
from functools import partial
from time import perf_counter
from types import FrameType
from typing import Any, NamedTuple

import pluggy
import trio

from ._events import LOG_ID, HookCallEnded, HookCallStarted, Observers, Registration
from ._fatal import FatalError, printable
from ._logging import begin_lifecycle_code, emit, end_lifecycle_code, outside_lifecycle_code
from ._manager import LIFECYCLE_HOOKS, close_match, declared_hooks

# The plugin whose hook, service or worker thread is running; services belong to it.
current_plugin: ContextVar[str | None] = ContextVar("oversip_hooks_plugin", default=None)

# Counts the forks this process is the child of: a child that a hook forked and that
# returns into the runtime is ended there, rather than run a second copy of the services.
_fork_generation = 0


def _count_fork() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_count_fork)


def fork_generation() -> int:
    """How many forks this process is the child of."""
    return _fork_generation


def leave_if_forked_child(generation: int) -> None:
    """End a child process that a hook forked and that came back into the runtime."""
    if _fork_generation != generation:
        os.write(2, b"oversip-hooks: a hook forked and the child returned to the runtime\n")
        os._exit(1)


def leaf_exceptions(exc: BaseException) -> Generator[BaseException, None, None]:
    """``exc`` itself, or the exceptions inside it when it is a group, at any depth."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaf_exceptions(inner)
    else:
        yield exc


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is trio's ``Cancelled``, alone or in a group."""
    return all(isinstance(leaf, trio.Cancelled) for leaf in leaf_exceptions(exc))


class HookOutcome(NamedTuple):
    """What one implementation of an extension hook did, from
    :meth:`ExtensionHook.call_each`.

    Attributes:
        plugin: the name of the plugin that implements it.
        value: what it returned (``None`` when it raised).
        error: what it raised, or ``None``; a ``TimeoutError`` when the call's timeout
            ran out before it answered.
        seconds: how long it ran.
    """

    plugin: str
    value: Any
    error: BaseException | None
    seconds: float


class _Step(NamedTuple):
    """One implementation, as the calling loop needs it: unpacked there, in this order."""

    plugin: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    is_async: bool
    where: tuple[str, str]  # (plugin, hook), what the watchdog reports
    task_name: str  # for trio, when it runs in a task of its own: given, not worked out

    @classmethod
    def of(cls, hook: str, impl: pluggy.HookImpl) -> _Step:
        function = impl.function
        is_async = inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
        plugin = impl.plugin_name
        # One tuple object for equal argument lists: the calling loop compares them by
        # identity, to build the arguments again only when they change.
        argnames = tuple(impl.argnames)
        argnames = _interned_argnames.setdefault(argnames, argnames)
        where = (plugin, hook)
        return cls(plugin, function, argnames, is_async, where, f"{hook} of {plugin!r}")


_interned_argnames: dict[tuple[str, ...], tuple[str, ...]] = {}


class _Plan(NamedTuple):
    """An extension hook's calls, decided once: implementations and wrappers in the
    runtime's order, the arguments its specification takes, its options."""

    generation: object
    steps: list[_Step]
    wrappers: list[_Step]
    argnames: frozenset[str]
    takes_runtime: bool
    firstresult: bool


Order = Callable[[str], list[list[pluggy.HookImpl]]]


class Calling:
    """Calls implementations for one runtime.

    Args:
        runtime: passed as the ``runtime`` argument of the hooks whose spec takes one.
        order: each plugin's implementations of a hook, in the runtime's call order.
        observers: sent a ``HookCallStarted`` and a ``HookCallEnded`` for each call.
        running: where each call in progress records its frame, for the watchdog.
        on_fatal: told of a ``fatal()`` in an extension hook implementation, with the
            plugin's name; the runtime reports it as that plugin's and goes down.
    """

    def __init__(
        self,
        runtime: object,
        order: Order,
        observers: Observers,
        running: dict[FrameType, tuple[str | None, str]],
        on_fatal: Callable[[BaseException, str], None],
    ) -> None:
        self.runtime = runtime
        self.order = order
        self.observers = observers
        self.running = running
        self.on_fatal = on_fatal
        self.trace = False
        self.slow_threshold: float | None = None
        self.signals_handled = False  # a KeyboardInterrupt is then a plugin's failure
        self.generation = fork_generation()

    async def call_one(
        self, hook: str, impl: pluggy.HookImpl, kwargs: dict[str, object]
    ) -> BaseException | None:
        """Call one lifecycle hook implementation, as lifecycle code; return what it
        raised, but for the runtime's own cancellation, which goes on up. A
        KeyboardInterrupt is the implementation's failure when the runtime handles SIGINT
        (a real Ctrl-C never raises one then), and goes on up otherwise."""
        kwargs["runtime"] = self.runtime
        outcomes: list[Any] = []
        in_hook = begin_lifecycle_code()
        try:
            await self.sequence(
                hook, [_Step.of(hook, impl)], kwargs, outcomes, lifecycle=True, collect=True
            )
        finally:
            end_lifecycle_code(in_hook)
        error: BaseException | None = outcomes[0].error
        return error

    async def sequence(
        self,
        hook: str,
        steps: list[_Step],
        kwargs: Mapping[str, object],
        results: list[Any],
        *,
        lifecycle: bool = False,
        collect: bool = False,
        firstresult: bool = False,
    ) -> Any:
        """Call ``steps`` one after the other, appending to ``results`` a
        :class:`HookOutcome` each (``collect``) or each value; return ``results``, or,
        with ``firstresult``, the first value that is not ``None`` (the rest are not
        called) or ``None``. Without ``collect``, the first error is raised and the rest
        are not called. Cancellations always go on up."""
        # Locals and unpacked tuples: this loop is the cost of every hook call. The plugin's
        # context variable is set for each implementation but put back once, at the end
        # (a reset per implementation cost as much as the set); the arguments are built
        # again only when an implementation takes other ones than the one before it; the
        # frame is let go before the coroutine ends, or ending it would copy the frame.
        observed = self.observers.watching_calls
        reported = lifecycle or self.trace or observed  # what `_report` logs or sends
        timed = collect or reported
        frame = sys._getframe()
        running = self.running
        generation = self.generation
        put_back: Token[str | None] | None = None
        names: tuple[str, ...] = ()  # the empty tuple is one object: no list to build
        args: list[object] = []
        told: Sequence[Registration] = ()
        begun = 0.0
        error: BaseException | None = None
        try:
            for plugin, function, argnames, is_async, where, _ in steps:
                running[frame] = where
                token = current_plugin.set(plugin)
                if put_back is None:
                    put_back = token
                if argnames is not names:
                    names, args = argnames, [kwargs[name] for name in argnames]
                if timed:
                    if observed:
                        told = self._send(HookCallStarted(hook, plugin, kwargs, lifecycle))
                    begun = perf_counter()
                try:
                    value = function(*args)
                    if is_async or (value is not None and inspect.isawaitable(value)):
                        value = await value
                except BaseException as exc:
                    if not collect or self._goes_on_up(exc):
                        if reported:
                            seconds = perf_counter() - begun
                            self._report(hook, plugin, kwargs, lifecycle, seconds, exc, told)
                        self._own(exc, hook, plugin, lifecycle)
                        raise
                    if not lifecycle and is_fatal(exc):
                        self.on_fatal(exc, plugin)
                    value, error = None, exc
                finally:
                    if _fork_generation != generation:
                        leave_if_forked_child(generation)
                if timed:
                    seconds = perf_counter() - begun
                    if reported:
                        self._report(hook, plugin, kwargs, lifecycle, seconds, error, told)
                    if collect:
                        # tuple's own constructor: a NamedTuple's is a Python function,
                        # which made collecting an outcome cost more than calling an
                        # empty implementation
                        outcome = tuple.__new__(HookOutcome, (plugin, value, error, seconds))
                        results.append(outcome)
                        error = None
                        continue
                if not firstresult:
                    results.append(value)
                elif value is not None:
                    return value
        finally:
            if put_back is not None:
                current_plugin.reset(put_back)
            running.pop(frame, None)
            del frame
        return None if firstresult else results

    async def concurrently(
        self, hook: str, steps: list[_Step], kwargs: Mapping[str, object], limit: float | None
    ) -> list[HookOutcome]:
        """Call ``steps`` each in a task of one nursery; collect every outcome, in the
        order of ``steps``. Those still running after ``limit`` seconds are cancelled
        and get a ``TimeoutError``."""
        outcomes: list[list[Any]] = [[] for _ in steps]
        collect_one = partial(self.sequence, collect=True)
        begun = trio.current_time()
        with nullcontext() if limit is None else trio.move_on_after(limit):
            async with trio.open_nursery() as nursery:
                for step, outcome in zip(steps, outcomes, strict=True):
                    nursery.start_soon(
                        collect_one, hook, [step], kwargs, outcome, name=step.task_name
                    )
        elapsed = trio.current_time() - begun
        return [
            outcome[0] if outcome else _timed_out(hook, step, limit, elapsed, called=True)
            for step, outcome in zip(steps, outcomes, strict=True)
        ]

    async def wrapped(
        self,
        hook: str,
        wrappers: list[_Step],
        kwargs: Mapping[str, object],
        inner: Callable[[], Awaitable[Any]],
    ) -> Any:
        """Run ``inner()`` inside ``wrappers``, the first outermost, as pluggy's
        ``wrapper=True`` implementations: each yields once, gets at its ``yield`` what
        the call returns, or has what it raised thrown in there. A sync wrapper returns
        the result to pass on; an async one, which cannot return a value, yields it a
        second time, or passes the result on unchanged by ending."""
        entered: list[tuple[_Step, Any]] = []
        try:
            for step in wrappers:
                generator = step.function(*[kwargs[name] for name in step.argnames])
                await self._advance(hook, step, generator, first=True)
                entered.append((step, generator))
            result, error = await inner(), None
        except BaseException as exc:
            result, error = None, exc
        for step, generator in reversed(entered):
            try:
                result = await self._advance(hook, step, generator, result=result, error=error)
                error = None
            except BaseException as exc:
                error = exc
        if error is not None:
            raise error
        return result

    def _goes_on_up(self, exc: BaseException) -> bool:
        return is_cancellation(exc) or (
            isinstance(exc, KeyboardInterrupt) and not self.signals_handled
        )

    def _own(self, exc: BaseException, hook: str, plugin: str, lifecycle: bool) -> None:
        """Tell the runtime of a ``fatal()`` in an extension hook implementation, and
        note on what it raised the plugin and hook it came from."""
        if lifecycle or self._goes_on_up(exc):
            return
        if is_fatal(exc):
            self.on_fatal(exc, plugin)
        exc.add_note(f"raised by {hook} of plugin {plugin!r}")

    async def _advance(
        self,
        hook: str,
        step: _Step,
        generator: Any,
        *,
        first: bool = False,
        result: Any = None,
        error: BaseException | None = None,
    ) -> Any:
        """Resume a wrapper: to its ``yield`` (``first``), or past it with ``result`` or
        ``error``; return the result it passes on."""
        where = f"wrapper {hook} of plugin {step.plugin!r}"
        token = current_plugin.set(step.plugin)
        try:
            if inspect.isasyncgen(generator):
                agen: AsyncGenerator[Any, Any] = generator
                try:
                    if first:
                        return await agen.__anext__()
                    replaced = await (agen.athrow(error) if error else agen.asend(result))
                except StopAsyncIteration:
                    if first:
                        raise RuntimeError(f"{where} ended without yielding") from None
                    return result
                await agen.aclose()
                return replaced
            sgen: Generator[Any, Any, Any] = generator
            try:
                if first:
                    return next(sgen)
                sgen.throw(error) if error else sgen.send(result)
            except StopIteration as stop:
                if first:
                    raise RuntimeError(f"{where} ended without yielding") from None
                return stop.value
            sgen.close()
            raise RuntimeError(f"{where} yielded more than once")
        finally:
            current_plugin.reset(token)

    def _report(
        self,
        hook: str,
        plugin: str,
        kwargs: Mapping[str, object],
        lifecycle: bool,
        seconds: float,
        error: BaseException | None,
        told: Sequence[Registration],
    ) -> None:
        """Log a call that ended (lifecycle hooks and ``--trace-hooks``), and send its
        ``HookCallEnded`` to the observers ``told`` of its ``HookCallStarted`` that are
        still there: no observer hears the end of a call whose start it did not hear."""
        if lifecycle or self.trace:
            slow = lifecycle and self.slow_threshold is not None and seconds > self.slow_threshold
            raised = "" if error is None else f", raised {printable(error)}"
            emit(
                LOG_ID,
                "notice" if slow else "debug",
                f"{hook} of {plugin!r} took {_seconds(seconds)}{raised}",
            )
        if told:
            self._send(HookCallEnded(hook, plugin, kwargs, lifecycle, seconds, error), told)

    def _send(
        self, event: HookCallStarted | HookCallEnded, to: Sequence[Registration] | None = None
    ) -> Sequence[Registration]:
        """Hand ``event`` to the observers (or those of ``to``) as the runtime's own code:
        not as the plugin whose hook it tells of, nor as lifecycle code, whatever the
        call's context (so an observer may log, and a service it starts is the
        runtime's). Return the observers that took it."""
        token = current_plugin.set(None)
        try:
            with outside_lifecycle_code():
                return self.observers.send(event, to)
        finally:
            current_plugin.reset(token)


class ExtensionHook:
    """How plugins call an extension hook: ``runtime.hooks.<name>``.

    Each implementation runs in its plugin's context (a ``fatal()`` in it is that
    plugin's, and so are the services it starts), in the runtime's plugin order (the
    order ``started`` uses), inside the hook's wrappers. The ``runtime`` argument is
    passed when the specification takes one.
    """

    def __init__(self, name: str, calling: Calling, pm: pluggy.PluginManager) -> None:
        self.name = name
        self._calling = calling
        self._pm = pm
        self._plan: _Plan | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    def __repr__(self) -> str:
        return f"<extension hook {self.name!r}>"

    def __call__(self, **kwargs: object) -> Coroutine[Any, Any, Any]:
        """Call every implementation, one after the other; return their results in
        order (with ``firstresult``: the first that is not ``None``, or ``None``). A plain
        function returning the calling loop's own coroutine: one frame less per call.

        Raises:
            TypeError: an argument is missing or not in the hook's specification.
            Exception: the first that an implementation raised (with a note naming its
                plugin); the ones after it are not called.

        Example::

            results = await runtime.hooks.health_check()
        """
        plan = self._planned(kwargs)
        if plan.wrappers:
            inner = partial(self._values, plan, kwargs)
            return self._calling.wrapped(self.name, plan.wrappers, kwargs, inner)
        return self._calling.sequence(
            self.name, plan.steps, kwargs, [], firstresult=plan.firstresult
        )

    async def call_each(
        self,
        kwargs: Mapping[str, object] | None = None,
        /,
        *,
        concurrently: bool = False,
        # not trio.fail_after around the call, as ASYNC109 advises: what has answered
        # by then is returned, and what has not is named
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[HookOutcome]:
        """Call every implementation and collect what each did, error or result, in the
        plugins' order; never raises what an implementation raised.

        Args:
            kwargs: the hook's arguments, by name.
            concurrently: run the implementations each in a task of one nursery (sync
                ones still run one at a time, in the event loop).
            timeout: seconds for the whole call; the implementations still running then
                are cancelled, and they and those not called yet get a
                ``TimeoutError`` naming the plugin. ``firstresult`` is ignored here: every
                implementation is called.

        Raises:
            TypeError: an argument is missing or not in the hook's specification.
            ValueError: ``timeout`` is not a positive number.

        Example::

            for outcome in await runtime.hooks.health_check.call_each(
                concurrently=True, timeout=1
            ):
                if outcome.error or outcome.value:
                    print(outcome.plugin, "is unhealthy:", outcome.error or outcome.value)
        """
        arguments = dict(kwargs or {})
        plan = self._planned(arguments)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        inner = partial(self._outcomes, plan, arguments, concurrently, timeout)
        if plan.wrappers:
            outcomes: list[HookOutcome] = await self._calling.wrapped(
                self.name, plan.wrappers, arguments, inner
            )
            return outcomes
        return await inner()

    def call_sync(self, **kwargs: object) -> Any:
        """:meth:`__call__` for synchronous code, in the runtime's thread or outside any
        event loop: every implementation and wrapper must be synchronous.

        Raises:
            TypeError: an implementation or wrapper is async (the message says what to
                call instead), or an argument is wrong.
        """
        plan = self._planned(kwargs)
        for step in (*plan.wrappers, *plan.steps):
            if step.is_async:
                raise TypeError(
                    f"{self.name} of plugin {step.plugin!r} is async, which call_sync cannot "
                    f"await: from async code, await runtime.hooks.{self.name}(...); from a "
                    f"worker thread, call runtime.hooks.{self.name}.call_from_thread(...)"
                )
        coroutine = self(**kwargs)
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        coroutine.close()
        raise TypeError(
            f"an implementation of {self.name} returned an awaitable, which call_sync cannot "
            f"await: await runtime.hooks.{self.name}(...) from async code instead"
        )

    def call_from_thread(self, **kwargs: object) -> Any:
        """:meth:`__call__` from a worker thread (``trio.to_thread.run_sync``): run in
        the runtime's event loop, waited for here.

        Raises:
            RuntimeError: the runtime is not running, or this is its own thread.
        """
        if self._token is None:
            raise RuntimeError(
                f"runtime.hooks.{self.name}.call_from_thread(): the runtime is not running"
            )
        return trio.from_thread.run(partial(self, **kwargs), trio_token=self._token)

    async def _values(self, plan: _Plan, kwargs: Mapping[str, object]) -> Any:
        return await self._calling.sequence(
            self.name, plan.steps, kwargs, [], firstresult=plan.firstresult
        )

    async def _outcomes(
        self, plan: _Plan, kwargs: Mapping[str, object], concurrently: bool, limit: float | None
    ) -> list[HookOutcome]:
        calling = self._calling
        if concurrently:
            return await calling.concurrently(self.name, plan.steps, kwargs, limit)
        outcomes: list[HookOutcome] = []
        begun = trio.current_time()
        with nullcontext() if limit is None else trio.move_on_after(limit):
            await calling.sequence(self.name, plan.steps, kwargs, outcomes, collect=True)
        elapsed = trio.current_time() - begun
        return outcomes + [
            _timed_out(self.name, step, limit, elapsed, called=index == 0)
            for index, step in enumerate(plan.steps[len(outcomes) :])
        ]

    def _planned(self, kwargs: dict[str, object]) -> _Plan:
        """The plan, made again if a plugin came or went; ``kwargs`` checked against the
        specification, with ``runtime`` added where it takes one."""
        plan = self._plan
        generation = getattr(self._pm, "generation", None)
        if plan is None or generation is None or plan.generation != generation:
            plan = self._plan = self._make_plan(generation)
        if plan.takes_runtime and "runtime" not in kwargs:
            kwargs["runtime"] = self._calling.runtime
        if (kwargs or plan.argnames) and kwargs.keys() != plan.argnames:
            missing = ", ".join(sorted(plan.argnames - kwargs.keys()))
            unknown = ", ".join(sorted(kwargs.keys() - plan.argnames))
            raise TypeError(
                f"hook {self.name!r} takes {', '.join(sorted(plan.argnames)) or 'no argument'}"
                + (f"; missing: {missing}" if missing else "")
                + (f"; not in its specification: {unknown}" if unknown else "")
            )
        return plan

    def _make_plan(self, generation: object) -> _Plan:
        caller = getattr(self._pm.hook, self.name)
        assert caller.spec is not None
        steps: list[_Step] = []
        wrappers: list[_Step] = []
        for impls in self._calling.order(self.name):
            for impl in impls:
                (wrappers if impl.wrapper else steps).append(_Step.of(self.name, impl))
        spec = caller.spec
        argnames = frozenset(spec.argnames) | frozenset(spec.kwargnames)
        return _Plan(
            generation,
            steps,
            wrappers,
            argnames,
            "runtime" in argnames,
            bool(spec.opts.get("firstresult")),
        )


class HookRelay:
    """``runtime.hooks``: an :class:`ExtensionHook` for each extension hook.

    Raises:
        AttributeError: for a name that is no extension hook (with a "did you mean"),
            or a lifecycle hook, which only the runtime calls.
    """

    def __init__(self, calling: Calling, pm: pluggy.PluginManager) -> None:
        self._calling = calling
        self._pm = pm
        self._hooks: dict[str, ExtensionHook] = {}
        self._token: trio.lowlevel.TrioToken | None = None

    def __getattr__(self, name: str) -> ExtensionHook:
        hook = self._hooks.get(name)
        if hook is not None:
            return hook
        if name.startswith("_"):
            raise AttributeError(name)
        if name in LIFECYCLE_HOOKS:
            raise AttributeError(f"{name!r} is a lifecycle hook, which only the runtime calls")
        caller = getattr(self._pm.hook, name, None)
        if caller is None or caller.spec is None:
            declared = list(declared_hooks(self._pm))
            close = close_match(name, declared)
            hint = f"; did you mean {close!r}?" if close else ""
            known = ", ".join(declared) or "none: no plugin declares extension_hooks"
            raise AttributeError(
                f"no extension hook named {name!r}{hint} (the extension hooks are {known})"
            )
        hook = self._hooks[name] = ExtensionHook(name, self._calling, self._pm)
        hook._token = self._token
        setattr(self, name, hook)  # found as an attribute from now on: no __getattr__ call
        return hook

    def _attach(self, token: trio.lowlevel.TrioToken | None) -> None:
        """Let ``call_from_thread`` reach the run that ``token`` names (None: no run);
        underscored, for no extension hook can have its name."""
        self._token = token
        for hook in self._hooks.values():
            hook._token = token


def _timed_out(
    hook: str, step: _Step, timeout: float | None, elapsed: float, *, called: bool
) -> HookOutcome:
    what = "did not answer" if called else "was not called"
    error = TimeoutError(
        f"{hook} of plugin {step.plugin!r} {what} within the call's timeout of {timeout:g} s"
    )
    return HookOutcome(step.plugin, None, error, elapsed if called else 0.0)


def is_fatal(error: BaseException) -> bool:
    """Whether ``error`` is, or holds, a :class:`FatalError`."""
    return any(isinstance(leaf, FatalError) for leaf in leaf_exceptions(error))


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"
