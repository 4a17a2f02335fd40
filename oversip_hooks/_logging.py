# Logging goes through loguru's one global `logger`, with the OverSIP severities added as
# loguru levels and the module's name in `extra["log_id"]`, so that any sink a user adds
# (a file, JSON, syslog) sees every record. We rejected a stdlib `logging.Logger` per
# module: it would split records between two systems and make users configure both.
#
# The console sink is not colourised: loguru would read the `<log_id>` of OverSIP's
# `LEVEL: <log_id> message` as colour markup, and plain lines are what journald and
# containers want.
#
# No message, log_id or traceback can forge a record, in any format: every sink escapes
# control characters with `escape`, the one function for all of them. The text format
# keeps a multi-line message (and a traceback) readable instead: each line after the
# first starts with CONTINUATION, "| ", and a record line always starts with a digit of
# its time (or with "<N>" when standard error is the journal), so no continuation line
# can read as a record. Records without a newline or a control character, the usual
# case, take a fast path that only checks `str.isprintable()` and returns a constant
# template, as before.
#
# OverSIP's rule is kept: the `log_<level>` methods, which mark a line `[user]`, are for
# the user's own code, and raise LoggerMisuse while lifecycle code runs (a hook, a
# `lifespan` body, a SystemCallbacks callback), where a module logs with
# `log_system_<level>`. The runtime marks that code with a context variable holding the
# trio task that runs it: the tasks that this code starts inherit the variable but are
# other tasks, so they may log as the user, and so may services, which clear it. A worker
# thread (`trio.to_thread`), which has no task, counts as the code that started it: it is
# a blocking call of the hook's moved off the loop, and the hook waits for it. A user
# line pays one `ContextVar.get` outside lifecycle code and in services; the
# `log_system_` methods make no check.

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TextIO, overload

import trio
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

# RFC 5424's severity codes, 0 (emerg) to 7 (debug): syslog's priorities, and the "<N>"
# prefix of sd-daemon(3) that tells the journal a line's level.
SEVERITIES = {
    "emerg": 0,
    "alert": 1,
    "crit": 2,
    "error": 3,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

_LEVEL_OF_LOGURU_NAME = {loguru_name: level for level, (loguru_name, _) in LEVELS.items()}


def oversip_level(record: Record) -> str:
    """The OverSIP level of a record; a loguru level of someone else's (``WARNING``,
    ``SUCCESS``, ...) counts as the highest OverSIP level at or below its number."""
    level = _LEVEL_OF_LOGURU_NAME.get(record["level"].name)
    if level is not None:
        return level
    at_or_below = [name for name, (_, number) in LEVELS.items() if number <= record["level"].no]
    return at_or_below[-1] if at_or_below else "debug"


# -- escaping ------------------------------------------------------------------------------

# What a line must not hold raw: the C0 and C1 controls and DEL (newline, carriage return,
# NUL, the ESC of terminal sequences...), the Unicode line and paragraph separators that
# some readers split lines on, and the bidirectional embeddings, overrides and isolates,
# which make a terminal show a line's text in another order than it holds it.
_OTHER_CONTROLS = r"\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(rf"[\n{_OTHER_CONTROLS}]")
_CONTROL_BUT_NEWLINE = re.compile(f"[{_OTHER_CONTROLS}]")

CONTINUATION = "| "
"""What each line of a record after its first starts with, in the text format."""


def _escape_match(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def escape(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with each control character written as its Python escape: ``"a\\x1bb"``;
    newlines too (``"a\\nb"``, one line) unless ``keep_newlines``."""
    if type(text) is not str:  # a subclass's own isprintable or __str__ is not trusted
        text = str.__str__(text)
    if text.isprintable():  # the usual case, and much faster than the search
        return text
    return (_CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL).sub(_escape_match, text)


def exception_text(record: Record) -> str | None:
    """The traceback of the record's exception, as Python prints it, or ``None``."""
    error = record["exception"]
    if error is None:
        return None
    return "".join(traceback.format_exception(error.type, error.value, error.traceback))


def is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the systemd journal: its device and inode are the ones
    ``JOURNAL_STREAM`` names (systemd.exec(5)), so a redirected stream is not."""
    device, colon, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (colon and device.isdecimal() and inode.isdecimal()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor: a StringIO, say
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


@lru_cache(maxsize=64)
def journal_prefix(severity: int, template: str) -> str:
    """``template`` (a loguru format) with the ``<N>`` of sd-daemon(3) before it, its
    ``<`` escaped from loguru's colour markup."""
    return f"\\<{severity}>{template}"


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


# -- the rule: no log_<level> in lifecycle code ----------------------------------------

# The trio task running lifecycle code in this context, or _NO_TASK when that code runs
# outside trio; None when no lifecycle code runs.
_lifecycle_task: ContextVar[object | None] = ContextVar("oversip_hooks_lifecycle", default=None)
_NO_TASK = object()


class LoggerMisuse(RuntimeError):
    """Raised by a ``log_<level>`` method called while a lifecycle hook, a ``lifespan``
    body or a ``SystemCallbacks`` callback runs, where OverSIP's rule allows only the
    ``log_system_<level>`` methods. The message names the method to use instead."""


def begin_lifecycle_code() -> Token[object | None]:
    """Mark the current task as running lifecycle code (a hook, a ``lifespan`` body, a
    ``SystemCallbacks`` callback) until :func:`end_lifecycle_code` is given the token:
    the ``log_<level>`` methods raise :class:`LoggerMisuse` meanwhile, in this task and
    in the worker threads it runs, not in the tasks it starts. For the runtime, around
    each call of plugin code, and ended in the same task (the token is a ``Token``)."""
    try:
        task: object = trio.lowlevel.current_task()
    except RuntimeError:  # not in a trio task
        task = _NO_TASK
    return _lifecycle_task.set(task)


def end_lifecycle_code(token: Token[object | None]) -> None:
    """Undo the :func:`begin_lifecycle_code` that returned ``token``."""
    _lifecycle_task.reset(token)


def begin_service_code() -> None:
    """Mark the current context, a service's task, as no lifecycle code: a service copies
    the context of the hook that started it, and may log as the user."""
    _lifecycle_task.set(None)


@contextmanager
def lifecycle_code() -> Iterator[None]:
    """:func:`begin_lifecycle_code` and :func:`end_lifecycle_code` as a ``with`` block."""
    token = begin_lifecycle_code()
    try:
        yield
    finally:
        end_lifecycle_code(token)


@contextmanager
def outside_lifecycle_code() -> Iterator[None]:
    """Run a ``with`` block as no lifecycle code, inside lifecycle code or not (the
    runtime's own code that a hook call runs, such as its observers)."""
    token = _lifecycle_task.set(None)
    try:
        yield
    finally:
        _lifecycle_task.reset(token)


def _runs_lifecycle_code(task: object) -> bool:
    """Whether the code running now is the lifecycle code that ``task`` marked."""
    try:
        return trio.lowlevel.current_task() is task
    except RuntimeError:  # no trio task: a worker thread of the hook's, or no trio at all
        return True


def _misuse(level: str) -> LoggerMisuse:
    return LoggerMisuse(
        f"log_{level}() cannot be used within a lifecycle hook, a lifespan or a "
        f"SystemCallbacks callback; use log_system_{level}()"
    )


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
        level = self._level
        if not self._user:

            def log(msg: str | BaseException) -> None:
                emit(instance.log_id, level, msg, depth=2)

            return log

        def log_user(msg: str | BaseException) -> None:
            task = _lifecycle_task.get()
            if task is not None and _runs_lifecycle_code(task):
                raise _misuse(level)
            emit(instance.log_id, level, msg, user=True, depth=2)

        return log_user


class Logger:
    """OverSIP's logging API, as a mixin.

    Records go to loguru's ``logger`` with ``extra["log_id"]`` set to the class's
    ``log_id`` (a class attribute or a property; the class name by default) and
    ``extra["user"]`` true for the ``log_<level>`` methods, whose console lines read
    ``INFO: <log_id> [user] message``.

    As in OverSIP, the ``log_<level>`` methods are for the user's own code (services,
    module-level code): called while a lifecycle hook, a ``lifespan`` body or a
    ``SystemCallbacks`` callback runs, they raise :class:`LoggerMisuse`, which names the
    ``log_system_<level>`` method to use instead.

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


_TIME = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level}: "
_FOREIGN_LINE = _TIME + "{message}\n"
_LINE = _TIME + "<{extra[log_id]}> {message}\n"
_USER_LINE = _TIME + "<{extra[log_id]}> [user] {message}\n"
_BODY = "_oversip_text"  # the key in `extra` of a line that had to be escaped
_ESCAPED_LINE = _TIME + "{extra[" + _BODY + "]}\n"


def _plain_line(record: Record) -> str | None:
    """The template of a record that needs no escaping and has one line, else ``None``."""
    message = record["message"]
    # A str subclass could say it is printable when it is not: only a str is trusted.
    if record["exception"] is not None or type(message) is not str or not message.isprintable():
        return None
    extra = record["extra"]
    if "log_id" not in extra:
        return _FOREIGN_LINE
    log_id = extra["log_id"]
    if type(log_id) is not str or not log_id.isprintable():
        return None
    return _USER_LINE if extra.get("user") else _LINE


def _escaped_text(record: Record, newline: str) -> str:
    """What follows ``LEVEL: `` for a record, escaped, each line after the first starting
    with ``newline``."""
    extra = record["extra"]
    text = escape(record["message"], keep_newlines=True)
    if "log_id" in extra:
        user = "[user] " if extra.get("user") else ""
        text = f"<{escape(str(extra['log_id']))}> {user}{text}"
    exception = exception_text(record)
    if exception is not None:
        text += "\n" + escape(exception.removesuffix("\n"), keep_newlines=True)
    return text.replace("\n", newline)


def format_console(record: Record) -> str:
    """loguru format for OverSIP lines: ``<time> LEVEL: <log_id> [user] message``, each
    further line of the message and of a traceback after ``| ``."""
    template = _plain_line(record)
    if template is None:
        record["extra"][_BODY] = _escaped_text(record, "\n" + CONTINUATION)
        template = _ESCAPED_LINE
    return template


def format_journal(record: Record) -> str:
    """:func:`format_console` with each line, the continuation lines too, after the
    ``<N>`` of the record's syslog severity, as the journal reads it."""
    severity = SEVERITIES[oversip_level(record)]
    template = _plain_line(record)
    if template is None:
        newline = f"\n<{severity}>{CONTINUATION}"
        record["extra"][_BODY] = _escaped_text(record, newline)
        template = _ESCAPED_LINE
    return journal_prefix(severity, template)


def add_console_sink(stream: TextIO | None = None, *, level: str = "info") -> int:
    """Send records to ``stream`` (standard error by default) as OverSIP lines.

    Control characters in a message or a ``log_id`` are escaped (``\\x1b``); each line of
    a multi-line message or of a traceback after the first starts with ``| ``. When
    ``stream`` is the systemd journal (``JOURNAL_STREAM`` names it), every line starts
    with the ``<N>`` priority prefix of sd-daemon(3), so that the journal stores each
    record at its level.

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
    if stream is None:
        stream = sys.stderr
    return logger.add(
        stream,
        level=LEVELS[level][0],
        format=format_journal if is_journal(stream) else format_console,
        colorize=False,
        backtrace=False,
        diagnose=False,
    )
