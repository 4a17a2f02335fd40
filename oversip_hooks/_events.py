# What the runtime tells its observers: typed events, each an immutable record, handed to
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The runtime entered ``state``."""

    state: RuntimeState


@dataclass(frozen=True, slots=True)
class HookCallStarted:
    """An implementation of ``hook`` by ``plugin`` is about to be called with ``kwargs``;
    ``lifecycle`` tells a lifecycle hook from an extension hook."""

    hook: str
    plugin: str
    kwargs: Mapping[str, object]
    lifecycle: bool


@dataclass(frozen=True, slots=True)
class HookCallEnded:
    """That call returned (``error`` is ``None``) or raised ``error``, after ``seconds``."""

    hook: str
    plugin: str
    kwargs: Mapping[str, object]
    lifecycle: bool
    seconds: float
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class LoopBlocked:
    """Plugin code has kept the event loop from running for ``seconds`` so far; sent from
    the watchdog's thread, while the loop is still blocked."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ShutdownOverran:
    """The shutdown did not complete as asked: ``what`` ran out of the shutdown timeout,
    or (``abandoned``) a second stop signal gave it up."""

    what: str
    abandoned: bool


Event = StateChanged | HookCallStarted | HookCallEnded | LoopBlocked | ShutdownOverran
Observer = Callable[[Event], object]


class Observers:
    """The observers of one runtime; falsy when there are none, so that the hot paths can
    skip building events nobody reads."""

    def __init__(self) -> None:
        # One 1-tuple per registration: its identity tells two registrations of one
        # function apart, so that each remover removes its own.
        self._entries: list[tuple[Observer]] = []

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(self, observer: Observer) -> Callable[[], None]:
        """Add ``observer``; return a function that removes it (calling it twice is
        harmless).

        Raises:
            TypeError: ``observer`` is not callable.
        """
        if not callable(observer):
            raise TypeError(f"an observer must be callable, not {type(observer).__name__}")
        entry = (observer,)
        self._entries.append(entry)
        return lambda: self._discard(entry)

    def send(self, event: Event) -> None:
        """Hand ``event`` to each observer; log and remove one that raises."""
        for entry in tuple(self._entries):
            try:
                entry[0](event)
            except Exception as exc:
                self._discard(entry)
                emit(
                    LOG_ID,
                    "crit",
                    f"observer {printable(entry[0])} failed and was removed: {printable(exc)}",
                    exception=exc,
                )

    def _discard(self, entry: tuple[Observer]) -> None:
        self._entries[:] = [each for each in self._entries if each is not entry]
