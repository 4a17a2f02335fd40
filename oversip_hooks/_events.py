# What the runtime tells its observers: typed events, each an immutable record (a
# NamedTuple: a frozen dataclass compiles its methods as the module is imported, which every
# start of the command would pay), handed to
# every observer in the runtime's thread, in the order things happen. An observer is
# plugin or test code watching the runtime (the command's systemd notifier, the testing
# harness, metrics); it must never be able to break what it watches, so one that raises is
# logged once and removed, as trio does with a failing instrument. Rejected: a callback
# per kind of event (`add_state_listener`, `add_call_monitor`, ...), which multiplied
# registration methods and let each fail its own way (a raising call monitor escaped
# `Runtime.run()` with no exit status); and pluggy's `add_hookcall_monitoring`, which wraps
# a whole hook call and so cannot see implementations one by one.

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from ._fatal import printable
from ._logging import emit

LOG_ID = "runtime"


class RuntimeState(enum.Enum):
    """Where a :class:`Runtime` is in its lifecycle."""

    CREATED = "created"
    INITIALIZING = "initializing"
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"


class StateChanged(NamedTuple):
    """The runtime entered ``state``."""

    state: RuntimeState


class HookCallStarted(NamedTuple):
    """An implementation of ``hook`` by ``plugin`` is about to be called with ``kwargs``;
    ``lifecycle`` tells a lifecycle hook from an extension hook."""

    hook: str
    plugin: str
    kwargs: Mapping[str, object]
    lifecycle: bool


class HookCallEnded(NamedTuple):
    """That call returned (``error`` is ``None``) or raised ``error``, after ``seconds``."""

    hook: str
    plugin: str
    kwargs: Mapping[str, object]
    lifecycle: bool
    seconds: float
    error: BaseException | None


class LoopBlocked(NamedTuple):
    """Plugin code has kept the event loop from running for ``seconds`` so far; sent from
    the watchdog's thread, while the loop is still blocked."""

    seconds: float


class ShutdownOverran(NamedTuple):
    """The shutdown did not complete as asked: ``what`` ran out of the shutdown timeout,
    or (``abandoned``) a second stop signal gave it up."""

    what: str
    abandoned: bool


Event = StateChanged | HookCallStarted | HookCallEnded | LoopBlocked | ShutdownOverran
Observer = Callable[[Event], object]
Registration = tuple[Observer, bool]


class Observers:
    """The observers of one runtime. ``watching_calls`` is false when none wants the
    events of hook calls, so that the calling path builds none: a state listener (the
    command's systemd notifier) must not make every hook call dearer."""

    def __init__(self) -> None:
        # One tuple per registration, (observer, wants hook calls): its identity tells two
        # registrations of one function apart, so that each remover removes its own.
        self._entries: list[Registration] = []
        self.watching_calls = False

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(self, observer: Observer, *, calls: bool = True) -> Callable[[], None]:
        """Add ``observer``; return a function that removes it (calling it twice is
        harmless). ``calls=False``: it is not sent ``HookCallStarted``/``HookCallEnded``.

        Raises:
            TypeError: ``observer`` is not callable.
        """
        if not callable(observer):
            raise TypeError(f"an observer must be callable, not {type(observer).__name__}")
        entry = (observer, calls)
        self._entries.append(entry)
        self._update()
        return lambda: self._discard(entry)

    def send(self, event: Event, to: Sequence[Registration] | None = None) -> list[Registration]:
        """Hand ``event`` to each observer that wants it, or only to those of ``to`` that
        are still registered; log and remove one that raises. Return the observers that
        took it: the end of a hook call goes to those told of its start, and only them."""
        call = isinstance(event, HookCallStarted | HookCallEnded)
        took = []
        for entry in tuple(self._entries) if to is None else to:
            observer, calls = entry
            if (call and not calls) or not any(each is entry for each in self._entries):
                continue
            try:
                observer(event)
            except Exception as exc:
                self._discard(entry)
                emit(
                    LOG_ID,
                    "crit",
                    f"observer {printable(observer)} failed and was removed: {printable(exc)}",
                    exception=exc,
                )
            else:
                took.append(entry)
        return took

    def _discard(self, entry: Registration) -> None:
        self._entries[:] = [each for each in self._entries if each is not entry]
        self._update()

    def _update(self) -> None:
        self.watching_calls = any(calls for _, calls in self._entries)
