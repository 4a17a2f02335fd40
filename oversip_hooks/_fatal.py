# fatal() raises rather than tearing the process down (OverSIP's Launcher.fatal exits on
# the spot): raising lets the runtime run every started plugin's `terminated` hook and
# return an exit status, which is what a library embedded in a test or another program
# needs. FatalError derives from BaseException so that the `except Exception:` blocks that
# plugin code is full of cannot swallow it, the same choice Python made for SystemExit.

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn


class FatalError(BaseException):
    """Raised by :func:`fatal`; the runtime shuts down with ``error=True`` and status 1.

    Attributes:
        message: the text logged at crit.
        error: the exception given to :func:`fatal`, or ``None`` for a text message.
    """

    def __init__(self, message: str, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error = error


def fatal(msg: str | BaseException) -> NoReturn:
    """Abort the runtime: log ``msg`` at crit, run ``terminated(error=True)``, exit 1.

    Works from any hook (``initialize``, ``started``, ``reload``, ``terminated``), from a
    service started with ``runtime.start_soon``, and from a worker thread run through
    ``trio.to_thread``.

    Args:
        msg: a message, or an exception, which is logged with its type and traceback.

    Raises:
        FatalError: always.
        TypeError: when ``msg`` is neither a ``str`` nor an exception.

    Example::

        @hookimpl
        def started(runtime):
            if not settings_are_valid():
                fatal("invalid module settings, exiting")
    """
    if isinstance(msg, BaseException):
        raise FatalError(f"{printable(msg, str)} ({type(msg).__name__})", msg) from msg
    if isinstance(msg, str):
        raise FatalError(msg)
    raise TypeError(f"fatal() takes a str or an exception, not {type(msg).__name__}")


def printable(value: object, show: Callable[[object], str] = repr) -> str:
    """``show(value)``, or a stand-in naming its type when that raises: plugin code may
    hand the runtime an exception whose ``__str__`` or ``__repr__`` fails, and reporting
    it must not fail too."""
    try:
        return show(value)
    except BaseException as exc:  # whatever plugin code raises, a stand-in is printed
        return f"<{type(value).__name__} object; its {show.__name__}() raised {type(exc).__name__}>"


class Launcher:
    """OverSIP's ``Launcher``: ``Launcher.fatal(msg)`` is :func:`fatal`."""

    fatal = staticmethod(fatal)
