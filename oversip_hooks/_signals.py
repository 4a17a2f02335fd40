# Signals are caught by a handler of our own, installed with `signal.signal`, rather than
# through `trio.open_signal_receiver`. trio hands a signal to a task, so one that arrives
# while a synchronous hook runs is seen some scheduler passes after that hook returned,
# when the next hook may already have been called; and when its receiver closes, trio
# re-raises each signal it had not delivered yet to the previous handler, which, at the
# end of a run, is the default one that kills the process.
#
# A Python-level handler runs in the main thread between two bytecodes, as soon as the
# signal arrives (a `time.sleep` in a hook is interrupted for it). So it can only do what
# is safe at any point of any code: it takes no lock and logs nothing (the code it
# interrupted may hold either), it only sets flags that the runtime reads before calling
# each implementation, and hands the rest to the event loop through
# `TrioToken.run_sync_soon`, which trio documents as safe from a signal handler.
#
# The catcher outlives any one runtime: the command installs it on its first line, so that
# a signal that arrives before the runtime runs (during the imports, or as soon as the PID
# file names the process) is kept and handed to the runtime when it attaches, and one that
# arrives after the last `terminated` is ignored: the handlers then become SIG_IGN, which,
# unlike a Python handler, the interpreter keeps through its finalization.

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
HANDLED_SIGNALS = (signal.SIGHUP, *STOP_SIGNALS)

_Target = Callable[[int], object]


class StoppedBySignal(KeyboardInterrupt):
    """How a command that has no runtime to stop (``check``, ``plugins``) stops on a
    signal: unlike a KeyboardInterrupt that plugin code raises, not a plugin's failure."""


_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class SignalCatcher:
    """Catches SIGHUP, SIGTERM, SIGINT and SIGQUIT for one runtime at a time, keeping
    those that arrive while no runtime is attached.

    Only the main thread can install or remove signal handlers.
    """

    def __init__(self, *, then_ignore: bool = False) -> None:
        self._then_ignore = then_ignore
        self._target: _Target | None = None
        self._pending: list[int] = []
        self._previous: dict[int, _Handler] = {}

    def install(self) -> None:
        """Put the catcher's handler in place for each handled signal."""
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._caught)

    def restore(self) -> None:
        """Put back the handlers that :meth:`install` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def ignore_from_now_on(self) -> None:
        """Ignore every handled signal from now until the process exits."""
        self._target = None
        _quiet_about_ignored_signals()
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def attach(self, target: _Target) -> None:
        """Send each signal to ``target``: first those kept so far, then each as it comes."""
        self._target = target
        pending, self._pending = self._pending, []
        for signum in pending:
            target(signum)

    def detach(self) -> None:
        """Keep the signals that come from now on, for the next :meth:`attach`; or, for
        a catcher that ignores them once done, ignore them from now on: its runtime has
        run its last `terminated`, and the process is about to end."""
        if self._then_ignore:
            self.ignore_from_now_on()
        self._target = None

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        target = self._target
        if target is None:
            self._pending.append(signum)
        else:
            target(signum)


def _quiet_about_ignored_signals() -> None:
    """Keep CPython from printing "Signal 1 ignored due to race condition" for a signal
    that came while its handler became SIG_IGN (under a flood of them): ignoring it is
    what was asked, and an operator would read the line as a crash."""
    previous = sys.unraisablehook
    if getattr(previous, "_oversip_hooks_quiet", False):
        return

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        error = unraisable.exc_value
        if isinstance(error, OSError) and "ignored due to race condition" in str(error):
            return
        previous(unraisable)

    hook._oversip_hooks_quiet = True  # type: ignore[attr-defined]  # marks it as ours
    sys.unraisablehook = hook


_installed: SignalCatcher | None = None


@contextmanager
def signals_caught(*, then_ignore: bool = False) -> Iterator[SignalCatcher]:
    """Catch the handled signals inside the block, keeping them for a runtime to attach.

    Nested blocks share the outermost one's catcher. When the outermost block ends, the
    handlers that were there before come back, or, with ``then_ignore``, the signals are
    ignored until the process exits (for a process about to exit).

    Raises:
        ValueError: not in the main thread, where alone handlers can be installed.

    Example::

        with signals_caught(then_ignore=True):
            ...  # a SIGTERM here is kept, and stops the runtime as soon as it runs
    """
    global _installed
    if _installed is not None:
        yield _installed
        return
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("signals can only be caught in the main thread")
    catcher = _installed = SignalCatcher(then_ignore=then_ignore)
    catcher.install()
    try:
        yield catcher
    finally:
        _installed = None
        if then_ignore:
            catcher.ignore_from_now_on()
        else:
            catcher.restore()
