# Hypothesis drives the lifecycle from outside, as an operator and a flaky dependency
# would: reloads, stops, signals and failures injected into a phase, in any order. The
# state machine keeps one runtime alive across the steps of a test case, so it runs that
# runtime in a trio loop on a worker thread and steps it with `trio.from_thread`; each step
# waits for its effect (a finished reload, the end of the run), so the invariants are
# checked between steps on a runtime at rest, never racing it.
#
# We rejected running each step as its own `trio.run`: the runtime's whole point is the
# state it keeps between events.

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import trio
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ._harness import Fault, LifecycleEvent, LifecycleHarness
from ._invariants import check_lifecycle_invariants

_T = TypeVar("_T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def faults(
    hooks: Sequence[Literal["initialize", "started", "reload", "terminated"]] = (
        "initialize",
        "started",
        "reload",
        "terminated",
    ),
) -> st.SearchStrategy[Fault]:
    """Failures injected into one of ``hooks``, raised or through ``fatal``."""
    return st.builds(Fault, hook=st.sampled_from(hooks), how=st.sampled_from(("raise", "fatal")))


def lifecycle_events(*, max_size: int = 8) -> st.SearchStrategy[list[LifecycleEvent]]:
    """Sequences of what can happen to a running service: ``"reload"``, ``"stop"``,
    SIGHUP, a stop signal, or a :class:`Fault` in ``reload`` or ``terminated``.

    Example::

        @given(events=lifecycle_events())
        def test_pool_survives_anything(events):
            harness = LifecycleHarness(PoolModule())
            harness.run(*events)
            check_lifecycle_invariants(harness)
    """
    event: st.SearchStrategy[LifecycleEvent] = st.one_of(
        st.sampled_from(["reload", "stop", signal.SIGHUP, *STOP_SIGNALS]),
        faults(("reload", "terminated")),
    )
    return st.lists(event, max_size=max_size)


class _TrioThread:
    """A trio loop on a worker thread that holds a harness's runtime open."""

    def __init__(self, harness: LifecycleHarness) -> None:
        self._harness = harness
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._leave: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="lifecycle", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        self._raise_error()

    def call(self, async_fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        assert self._token is not None
        return trio.from_thread.run(async_fn, *args, trio_token=self._token)

    def call_sync(self, fn: Callable[..., _T], *args: Any) -> _T:
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def finish(self) -> None:
        if self._leave is not None and self._thread.is_alive():
            self.call_sync(self._leave.set)
        self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _main(self) -> None:
        try:
            trio.run(self._hold_open)
        except BaseException as exc:  # handed to the test's thread, which raises it
            self._error = exc
        finally:
            self._ready.set()

    async def _hold_open(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._leave = trio.Event()
        async with self._harness.running():
            self._ready.set()
            await self._leave.wait()


class LifecycleMachine(RuleBasedStateMachine):
    """Fuzz a plugin's lifecycle: subclass, return your plugins from
    :meth:`make_plugins` (a mapping of names to plugins, so that your invariants know
    their names), and add ``@invariant()`` methods of your own.

    Each test case calls :meth:`configure` with hypothesis's ``data``, starts the runtime
    (perhaps with a failure injected into ``initialize`` or ``started``), then applies
    random steps: reloads, stops, signals,
    failures in ``reload`` or ``terminated``. After every step, and at the end, it checks
    :func:`check_lifecycle_invariants` and your invariants. ``self.harness`` is the
    :class:`LifecycleHarness`; its ``calls``, ``calls_to(hook, plugin=name)``, ``lines``
    and ``exit_status`` are there for your invariants (``calls_to`` with a name that no
    plugin has raises, rather than finding no call).

    Example::

        class PoolMachine(LifecycleMachine):
            def make_plugins(self):
                self.pool = PoolModule()
                return {"pool": self.pool}

            @invariant()
            def connections_closed_once_stopped(self):
                if self.harness.stopped and self.harness.calls_to("terminated", "pool"):
                    assert self.pool.open_connections == 0

        TestPool = PoolMachine.TestCase
    """

    startup_timeout: float = 5.0
    shutdown_timeout: float = 5.0

    def __init__(self) -> None:
        super().__init__()
        plugins = self.make_plugins()
        self.harness = LifecycleHarness(
            *([plugins] if isinstance(plugins, Mapping) else plugins),
            startup_timeout=self.startup_timeout,
            shutdown_timeout=self.shutdown_timeout,
        )
        self.harness.register_fault_injector()
        self._loop = _TrioThread(self.harness)
        self._loop_started = False

    def make_plugins(self) -> Mapping[str, object] | Sequence[object]:
        """The plugins under test, in registration order: a mapping of names to plugins,
        each registered under its name, or a sequence of plugins, each registered under a
        readable name (a module's name, an instance's class name). Override this."""
        raise NotImplementedError("LifecycleMachine subclasses return their plugins here")

    def _running(self) -> bool:
        return self._loop_started and not self.harness.stopped

    def configure(self, data: st.DataObject) -> None:
        """Draw whatever your plugins need before the runtime starts (override this);
        ``data.draw(strategy)`` gives a value."""

    @initialize(fault=st.none() | faults(("initialize", "started")), data=st.data())
    def start(self, fault: Fault | None, data: st.DataObject) -> None:
        self.configure(data)
        if fault is not None:
            self.harness.inject_failure(fault.hook, fault.how)
        self._loop_started = True
        self._loop.start()

    @precondition(_running)
    @rule()
    def reload(self) -> None:
        self._loop.call(self.harness.reload)

    @precondition(_running)
    @rule()
    def sighup(self) -> None:
        self._loop.call(self.harness.apply, signal.SIGHUP)

    @precondition(_running)
    @rule(fault=faults(("reload", "terminated")))
    def inject(self, fault: Fault) -> None:
        self._loop.call_sync(self.harness.inject_failure, fault.hook, fault.how)

    @precondition(_running)
    @rule(signum=st.sampled_from(STOP_SIGNALS), twice=st.booleans())
    def stop_signal(self, signum: signal.Signals, twice: bool) -> None:
        self._loop.call(self._stop_by_signal, signum, twice)

    @rule()
    def stop(self) -> None:
        # Always allowed: a stop after the end of the run must be harmless.
        self._loop.call(self.harness.stop)

    async def _stop_by_signal(self, signum: signal.Signals, twice: bool) -> None:
        self.harness.send_signal(signum)
        if twice:  # the operator's second Ctrl-C: the shutdown is abandoned
            self.harness.send_signal(signum)
        await self.harness.wait_stopped()

    @invariant()
    def framework_invariants(self) -> None:
        check_lifecycle_invariants(self.harness)

    def teardown(self) -> None:
        if self._loop_started:
            self._loop.finish()
            check_lifecycle_invariants(self.harness)
