# Logging goes through loguru's one global `logger`, with the OverSIP severities added as
# loguru levels and the module's name in `extra["log_id"]`, so that any sink a user adds
# (a file, JSON, syslog) sees every record. We rejected a stdlib `logging.Logger` per
# module: it would split records between two systems and make users configure both.
#
# The console sink is not colourised: loguru would read the `<log_id>` of OverSIP's
# `LEVEL: <log_id> message` as colour markup, and plain lines are what journald and
# containers want.

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TextIO, overload

from loguru import logger

if TYPE_CHECKING:
    from loguru import Logger as LoguruLogger
    from loguru import Record

# OverSIP's eight syslog severities, low to high, with the loguru level each maps to.
# DEBUG, INFO and ERROR are loguru's own; the others are added beside them.
LEVELS: dict[str, tuple[str, int]] = {
    "debug": ("DEBUG", 10),
    "info": ("INFO", 20),
    "notice": ("NOTICE", 25),
    "warn": ("WARN", 30),
    "error": ("ERROR", 40),
    "crit": ("CRIT", 50),
    "alert": ("ALERT", 60),
    "emerg": ("EMERG", 70),
}


def _add_levels() -> None:
    for name, number in LEVELS.values():
        try:
            logger.level(name)
        except ValueError:
            logger.level(name, no=number)


_add_levels()


@lru_cache(maxsize=1024)  # bounded: a log_id may be per connection
def _bound(log_id: str, user: bool) -> LoguruLogger:
    return logger.bind(log_id=log_id, user=user)


def emit(
    log_id: str,
    level: str,
    msg: str | BaseException,
    *,
    user: bool = False,
    exception: BaseException | None = None,
    depth: int = 1,
) -> None:
    """Log ``msg`` at the OverSIP ``level`` (``"info"``, ``"crit"``, ...) as ``log_id``.

    An exception given as ``msg`` is logged as ``message (TypeName)`` with its traceback;
    ``exception`` attaches a traceback to a text message. ``depth`` is how many frames up
    the caller that the record names is.
    """
    text = msg if isinstance(msg, str) else f"{msg} ({type(msg).__name__})"
    if isinstance(msg, BaseException):
        exception = msg
    _bound(log_id, user).opt(exception=exception, depth=depth).log(LEVELS[level][0], text)


class _LogMethod:
    """One ``log_<level>`` method: a descriptor, so the sixteen share one implementation."""

    def __init__(self, level: str, *, user: bool) -> None:
        self._level = level
        self._user = user

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> _LogMethod: ...
    @overload
    def __get__(
        self, instance: Logger, owner: type[Any]
    ) -> Callable[[str | BaseException], None]: ...
    def __get__(
        self, instance: Logger | None, owner: type[Any]
    ) -> _LogMethod | Callable[[str | BaseException], None]:
        if instance is None:
            return self
        level, user = self._level, self._user

        def log(msg: str | BaseException) -> None:
            emit(instance.log_id, level, msg, user=user, depth=2)

        return log


class Logger:
    """OverSIP's logging API, as a mixin.

    Records go to loguru's ``logger`` with ``extra["log_id"]`` set to the class's
    ``log_id`` (a class attribute or a property; the class name by default) and
    ``extra["user"]`` true for the ``log_<level>`` methods, whose console lines read
    ``INFO: <log_id> [user] message``.

    Example::

        class Pool(Logger):
            log_id = "SQLite module"

            def open(self):
                self.log_system_info("opening")   # INFO: <SQLite module> opening
    """

    @property
    def log_id(self) -> str:
        return type(self).__name__

    log_system_debug: _LogMethod = _LogMethod("debug", user=False)
    log_system_info: _LogMethod = _LogMethod("info", user=False)
    log_system_notice: _LogMethod = _LogMethod("notice", user=False)
    log_system_warn: _LogMethod = _LogMethod("warn", user=False)
    log_system_error: _LogMethod = _LogMethod("error", user=False)
    log_system_crit: _LogMethod = _LogMethod("crit", user=False)
    log_system_alert: _LogMethod = _LogMethod("alert", user=False)
    log_system_emerg: _LogMethod = _LogMethod("emerg", user=False)
    log_debug: _LogMethod = _LogMethod("debug", user=True)
    log_info: _LogMethod = _LogMethod("info", user=True)
    log_notice: _LogMethod = _LogMethod("notice", user=True)
    log_warn: _LogMethod = _LogMethod("warn", user=True)
    log_error: _LogMethod = _LogMethod("error", user=True)
    log_crit: _LogMethod = _LogMethod("crit", user=True)
    log_alert: _LogMethod = _LogMethod("alert", user=True)
    log_emerg: _LogMethod = _LogMethod("emerg", user=True)


class _NamedLogger(Logger):
    def __init__(self, log_id: str) -> None:
        self._log_id = log_id

    @property
    def log_id(self) -> str:
        return self._log_id


def get_logger(log_id: str) -> Logger:
    """A :class:`Logger` for code that is not a class, such as a module's functions.

    Args:
        log_id: the name shown between angle brackets, e.g. ``"SQLite module"``.

    Raises:
        TypeError: when ``log_id`` is not a non-empty ``str``.

    Example::

        log = get_logger("SQLite module")
        log.log_system_notice("pool ready")   # NOTICE: <SQLite module> pool ready
    """
    if not isinstance(log_id, str) or not log_id:
        raise TypeError(f"get_logger() needs a non-empty str log_id, not {log_id!r}")
    return _NamedLogger(log_id)


_FOREIGN_LINE = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level}: {message}\n{exception}"
_LINE = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level}: <{extra[log_id]}> {message}\n{exception}"
_USER_LINE = _LINE.replace("{message}", "[user] {message}")


def format_console(record: Record) -> str:
    """loguru format for OverSIP lines: ``<time> LEVEL: <log_id> [user] message``."""
    extra = record["extra"]
    if "log_id" not in extra:
        return _FOREIGN_LINE
    return _USER_LINE if extra.get("user") else _LINE


def add_console_sink(stream: TextIO | None = None, *, level: str = "info") -> int:
    """Send records to ``stream`` (standard error by default) as OverSIP lines.

    Args:
        stream: where the lines go.
        level: the lowest OverSIP level shown (``"debug"`` ... ``"emerg"``).

    Returns:
        The loguru handler id, for ``logger.remove``.

    Raises:
        ValueError: for a level that is not one of the eight OverSIP levels.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    return logger.add(
        stream if stream is not None else sys.stderr,
        level=LEVELS[level][0],
        format=format_console,
        colorize=False,
        backtrace=False,
        diagnose=False,
    )
