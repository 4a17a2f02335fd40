# The event loop cannot watch itself: while plugin code blocks it (synchronous code in a
# hook, a C call that never returns) no trio deadline fires, and while a task waits for a
# worker thread that never returns, or sits in a shielded scope, or swallows its
# cancellation, `Runtime.run()` cannot return however its deadlines fire. So a thread
# watches the loop from outside. It does two things, each only when the loop could not:
# it reports a loop blocked for longer than a threshold, while it is blocked, and it
# raises an alarm that the runtime sets for a moment by which the loop must have done
# something (ended the start, ended the shutdown).
#
# Rejected: SIGALRM (`signal.setitimer`), whose Python handler runs in the main thread,
# the thread that is blocked; `faulthandler.dump_traceback_later`, which can only print
# tracebacks, not log a line, remove a PID file or choose an exit status.
#
# The alarm is one attribute holding a (deadline, action) pair, replaced whole, so that
# setting it takes no lock and is safe from a signal handler. The thread polls rather than
# waits on an event for the same reason: nothing that a signal handler may call can wake
# a thread without a lock.

from __future__ import annotations

import contextvars
import signal
import threading
import time
from collections.abc import Callable, Iterable

import trio

GRACE = 1.0  # seconds the loop has, past a deadline, to act before the watchdog does
_TICK = 0.05  # how often the watchdog looks

_Alarm = tuple[float, Callable[[], object]]


class Watchdog:
    """A thread that watches one run of the event loop.

    Args:
        token: the run's token, to ask the loop whether it answers.
        blocked_threshold: seconds without an answer after which the loop counts as
            blocked, or ``None`` not to watch for that.
        signals: the signals that this thread must leave to the main thread.
        on_blocked: called in the watchdog's thread with the seconds the loop has been
            blocked, at the threshold, then each time that duration doubles.
    """

    def __init__(
        self,
        token: trio.lowlevel.TrioToken,
        *,
        blocked_threshold: float | None,
        on_blocked: Callable[[float], object],
        signals: Iterable[int] = (),
    ) -> None:
        self._token = token
        self._blocked_signals = set(signals)
        self._threshold = blocked_threshold
        self._on_blocked = on_blocked
        self._alarm: _Alarm | None = None
        self._rung: _Alarm | None = None
        self._closed = False
        self._probe_sent = time.monotonic()
        self._probe_pending = False
        self._next_report = blocked_threshold
        # In the context of the run it watches, so that what it logs is tagged as that
        # run's (loguru's `contextualize`), as if the loop had logged it.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._watch,), name="oversip-hooks watchdog"
        )
        self._thread.daemon = True  # a process must never wait for its watchdog

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop watching; the thread ends at its next look."""
        self._closed = True

    def set_alarm(self, deadline: float, action: Callable[[], object]) -> None:
        """Call ``action()`` once in the watchdog's thread when ``time.monotonic()``
        reaches ``deadline``, unless another alarm replaces this one first. Safe from a
        signal handler and from any thread."""
        self._alarm = (deadline, action)

    def clear_alarm(self) -> None:
        self._alarm = None

    @property
    def alarm(self) -> _Alarm | None:
        """The alarm set and not rung yet."""
        alarm = self._alarm
        return None if alarm is self._rung else alarm

    def _watch(self) -> None:
        # A signal sent to the process goes to any thread that does not block it, and
        # only the main thread runs Python's handlers: one that the kernel gave this
        # thread while the main thread is stuck in a blocking call (a second stop signal
        # a moment after the first, the main thread already having one pending) would
        # not be handled until that call returned.
        signal.pthread_sigmask(signal.SIG_BLOCK, self._blocked_signals)
        while not self._closed:
            time.sleep(_TICK)
            now = time.monotonic()
            alarm = self._alarm
            if alarm is not None and alarm is not self._rung and now >= alarm[0]:
                self._rung = alarm
                alarm[1]()
            if self._threshold is not None and not self._closed:
                self._probe(now, self._threshold)

    def _probe(self, now: float, threshold: float) -> None:
        if self._probe_pending:
            blocked = now - self._probe_sent
            if self._next_report is not None and blocked >= self._next_report:
                self._on_blocked(blocked)
                self._next_report *= 2
        elif now - self._probe_sent >= threshold / 4:
            self._next_report = threshold
            self._probe_sent = now
            self._probe_pending = True
            try:
                self._token.run_sync_soon(self._answer)
            except trio.RunFinishedError:
                self._closed = True

    def _answer(self) -> None:
        self._probe_pending = False
