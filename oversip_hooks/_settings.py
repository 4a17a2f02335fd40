# Every option of `oversip-hooks run` that takes a value, and each switch (a flag without
# one, such as --trace-hooks), is one row of SETTINGS: its flag, its environment variable
# and the one function that parses both, so that a flag and its variable can never
# disagree about what they accept. A flag wins over the environment. We
# rejected argparse's `default=os.environ.get(...)`: argparse does not check `choices`
# against a default, and its error for a bad default blames the flag, not the variable
# the operator actually has to fix.
#
# A parser raises ConfigError, the one exception the command line turns into "one line on
# standard error, exit status 2"; the other modules of the command line raise it too.
#
# Every number the command reads (an option, a variable such as WATCHDOG_USEC, a PID file)
# goes through parse_int or parse_seconds below, and nowhere else: plain ASCII decimal
# only, within stated bounds. int() and float() alone accept far more than an operator
# means (" 5 ", "1_000", "²" for isdigit() but not for int(), "1e3", "inf", a number of
# 5000 digits that int() refuses with a traceback), so a value is matched first and
# converted after.

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from ._logging import LEVELS

ENV_PREFIX = "OVERSIP_HOOKS_"

# syslog(3) facility codes; the names are the ones OverSIP accepts.
FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    **{f"local{number}": 16 + number for number in range(8)},
}

# A unix socket path, or a (host, port) pair for UDP.
SyslogAddress = str | tuple[str, int]

# Linux never hands out a process id above 2**22 (pid_max's ceiling).
LARGEST_PID = 2**22

# The bounds of --startup-timeout and --shutdown-timeout: more than nothing, at most a day.
LONGEST_TIMEOUT = 86400

_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# What the variable of a switch (a flag that takes no value) may say, in any case.
_SWITCH = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}
_LONGEST_SHOWN = 40  # characters of a bad value repeated in its error message


class ConfigError(Exception):
    """Bad input found before the lifecycle begins: the command exits with status 2."""


def shown(text: str) -> str:
    """``text`` quoted for an error message, cut short if long: a bad value of 5000
    characters still makes one readable line."""
    if len(text) <= _LONGEST_SHOWN:
        return repr(text)
    return f"{text[:_LONGEST_SHOWN]!r}... ({len(text)} characters)"


def parse_int(text: str, *, low: int, high: int, what: str = "an integer") -> int:
    """Plain ASCII decimal digits, from ``low`` to ``high`` (``low`` >= 0).

    Raises:
        ConfigError: anything else, such as ``" 5 "``, ``"+5"``, ``"1_000"``, ``"²"``, or
            a number out of bounds (one of any length: it is never converted).

    Example::

        parse_int("514", low=1, high=65535)     # 514
    """
    digits = text.lstrip("0") or "0"
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"expected {what}, plain decimal digits, not {shown(text)}")
    if len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise ConfigError(f"expected {what} from {low} to {high}, not {shown(text)}")
    return int(digits)


def parse_log_level(text: str) -> str:
    """One of the eight OverSIP levels, in any case: ``"NOTICE"`` gives ``"notice"``."""
    level = text.strip().lower()
    if level not in LEVELS:
        raise ConfigError(f"unknown log level {text!r}; expected one of {', '.join(LEVELS)}")
    return level


def parse_log_format(text: str) -> str:
    """``"text"`` or ``"json"``."""
    if text not in ("text", "json"):
        raise ConfigError(f"unknown log format {text!r}; expected text or json")
    return text


def parse_syslog_address(text: str) -> SyslogAddress:
    """A path (anything with a ``/``), or ``host:port``, an IPv6 address in brackets:
    ``[v6 address]:port``; the port from 1 to 65535.

    Example::

        parse_syslog_address("/dev/log")         # "/dev/log"
        parse_syslog_address("[::1]:514")        # ("::1", 514)
    """
    if "/" in text:
        return text
    bad = (
        f"bad syslog address {shown(text)}; expected a unix socket path such as /dev/log, "
        "or HOST:PORT for UDP ([ADDRESS]:PORT for IPv6)"
    )
    return _host_and_port(text, f"bad syslog address {shown(text)}", bad, lowest_port=1)


def parse_http_address(text: str) -> tuple[str, int]:
    """``host:port`` to serve HTTP on, an IPv6 address in brackets: ``[v6 address]:port``;
    the port from 0 (any free one, which the command logs) to 65535.

    Example::

        parse_http_address("127.0.0.1:9100")   # ("127.0.0.1", 9100)
        parse_http_address("[::]:9100")        # ("::", 9100)
    """
    bad = (
        f"bad HTTP address {shown(text)}; expected HOST:PORT such as 127.0.0.1:9100, "
        "or [ADDRESS]:PORT for IPv6 such as [::1]:9100"
    )
    return _host_and_port(text, f"bad HTTP address {shown(text)}", bad, lowest_port=0)


def _host_and_port(text: str, what: str, bad: str, *, lowest_port: int) -> tuple[str, int]:
    """``host:port`` or ``[v6 address]:port`` (the brackets removed).

    Raises:
        ConfigError: ``bad`` for a malformed address; ``what`` and why, for a bad port.
    """
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        colon, port = rest[:1], rest[1:]
        if not bracket or colon != ":" or not host or "[" in host:
            raise ConfigError(bad)
    else:
        host, colon, port = text.rpartition(":")
        if not colon or not host or any(char in host for char in "[]:"):
            raise ConfigError(bad)
    try:
        return host, parse_int(port, low=lowest_port, high=65535, what="a port")
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def parse_facility(text: str) -> str:
    """A syslog facility name: kern, user, daemon or local0 to local7."""
    if text not in FACILITIES:
        raise ConfigError(
            f"unknown syslog facility {text!r}; expected one of {', '.join(FACILITIES)}"
        )
    return text


def parse_path(text: str) -> Path:
    """A non-empty path."""
    if not text:
        raise ConfigError("expected a path, not an empty string")
    return Path(text)


def parse_seconds(text: str) -> float:
    """A positive number of seconds, at most a day, in plain ASCII decimal: digits,
    optionally a ``.`` and more digits, such as ``"30"`` or ``"2.5"``.

    Raises:
        ConfigError: anything else: ``"0"``, ``"-1"``, ``" 5 "``, ``"1e3"``, ``"inf"``,
            ``".5"``, ``"1_000"``, ``"86401"``.
    """
    if len(text) > _LONGEST_SHOWN or not _SECONDS.fullmatch(text) or float(text) <= 0:
        raise ConfigError(
            f"expected a positive number of seconds, not {shown(text)}; plain decimal "
            f"such as 30 or 2.5, at most {LONGEST_TIMEOUT}"
        )
    seconds = float(text)
    if seconds > LONGEST_TIMEOUT:
        raise ConfigError(f"expected at most {LONGEST_TIMEOUT} seconds (a day), not {shown(text)}")
    return seconds


def parse_drain(text: str) -> float:
    """Seconds to keep serving between a stop request and the shutdown: ``"0"`` (none),
    or what :func:`parse_seconds` takes.

    Raises:
        ConfigError: as :func:`parse_seconds`, for anything but 0.
    """
    if len(text) <= _LONGEST_SHOWN and _SECONDS.fullmatch(text) and float(text) == 0:
        return 0.0
    return parse_seconds(text)


def parse_switch(text: str) -> bool:
    """A yes or no, for the variable of a flag that takes no value: ``1``, ``true``,
    ``yes``, ``on``, or ``0``, ``false``, ``no``, ``off``, in any case.

    Raises:
        ConfigError: anything else, such as ``"2"`` or ``"enabled"``.

    Example::

        parse_switch("TRUE")   # True
    """
    value = _SWITCH.get(text.lower())
    if value is None:
        raise ConfigError(f"expected 1, true, yes or on, or 0, false, no or off, not {shown(text)}")
    return value


class Setting(NamedTuple):  # not a dataclass, whose code generation every start would pay
    """One option of ``run``, settable by a flag or an environment variable; a
    ``switch`` is a flag that takes no value, its variable a yes or no."""

    dest: str
    parse: Callable[[str], object]
    default: object
    metavar: str
    help: str
    switch: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


SETTINGS = (
    Setting(
        "log_level",
        parse_log_level,
        "info",
        "LEVEL",
        f"lowest level logged: {', '.join(LEVELS)} (default: info)",
    ),
    Setting(
        "log_format",
        parse_log_format,
        "text",
        "FORMAT",
        "text (OverSIP lines) or json (one object per line) on standard error (default: text)",
    ),
    Setting(
        "syslog",
        parse_syslog_address,
        None,
        "ADDRESS",
        "also log to syslog: a unix datagram socket path such as /dev/log, or HOST:PORT for UDP",
    ),
    Setting(
        "syslog_facility",
        parse_facility,
        "daemon",
        "FACILITY",
        f"{', '.join(FACILITIES)} (default: daemon)",
    ),
    Setting(
        "pidfile",
        parse_path,
        None,
        "PATH",
        "write the process id to PATH before initialize, refusing a live one already "
        "there; removed at exit",
    ),
    Setting(
        "startup_timeout",
        parse_seconds,
        None,
        "SECONDS",
        "time that all started hooks together may take (default: 30)",
    ),
    Setting(
        "shutdown_timeout",
        parse_seconds,
        None,
        "SECONDS",
        "time that the whole shutdown may take, from the stop request; past it and a grace "
        "of 1 s, the process ends with status 1 (default: 30)",
    ),
    Setting(
        "blocked_loop_threshold",
        parse_seconds,
        None,
        "SECONDS",
        "report a hook or service that blocks the event loop longer than this, while it "
        "does (default: 1)",
    ),
    Setting(
        "trace_hooks",
        parse_switch,
        False,
        "",
        "log one debug line per hook call, lifecycle and extension hooks: plugin, hook, "
        "duration and the exception if any; the log level becomes debug unless one is given",
        switch=True,
    ),
    Setting(
        "slow_hook_threshold",
        parse_seconds,
        None,
        "SECONDS",
        "log a lifecycle hook call that takes longer than this at notice, naming its plugin "
        "(\"started of 'sqlite' took 2.3 s\"); every call's duration is logged at debug "
        "(default: 1)",
    ),
    Setting(
        "http",
        parse_http_address,
        None,
        "ADDRESS",
        "serve /livez, /readyz and /metrics over HTTP on HOST:PORT ([ADDRESS]:PORT for "
        "IPv6), from before initialize to after the last terminated (default: off)",
    ),
    Setting(
        "drain",
        parse_drain,
        0.0,
        "SECONDS",
        "on a stop request, keep running this long before the first terminated, /readyz "
        "answering 503, so that load balancers stop sending traffic first; a second stop "
        "signal skips it; the shutdown timeout starts after it (default: 0)",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per setting to ``parser``; an option not given is ``None``."""
    for setting in SETTINGS:
        if setting.switch:
            parser.add_argument(
                setting.flag,
                action="store_const",
                const=True,
                help=f"{setting.help} [env: {setting.env}]",
            )
            continue
        parser.add_argument(
            setting.flag,
            type=_argparse_type(setting.parse),
            metavar=setting.metavar,
            help=f"{setting.help} [env: {setting.env}]",
        )


def resolve(options: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Fill in each setting that no flag gave from its environment variable (an empty
    one counts as unset), else from its default.

    Raises:
        ConfigError: naming the variable whose value is bad.

    Example::

        options = parser.parse_args(["run"])
        resolve(options, {"OVERSIP_HOOKS_LOG_LEVEL": "debug"})
        options.log_level   # "debug"
    """
    given_by: dict[str, str] = {}  # dest -> the flag or variable that set it
    for setting in SETTINGS:
        if getattr(options, setting.dest) is not None:
            given_by[setting.dest] = setting.flag
            continue
        raw = environ.get(setting.env, "")
        try:
            value = setting.parse(raw) if raw else setting.default
        except ConfigError as exc:
            raise ConfigError(f"{setting.env}: {exc}") from None
        if raw:
            given_by[setting.dest] = setting.env
        setattr(options, setting.dest, value)
    _debug_for_traces(options, given_by.get("log_level"))


def _debug_for_traces(options: argparse.Namespace, level_given_by: str | None) -> None:
    """Hook traces are debug lines: ``--trace-hooks`` lowers the default level to debug,
    and is refused beside a higher level that was asked for, which would hide every one
    of its lines (a flag that silently does nothing).

    Raises:
        ConfigError: ``--trace-hooks`` with a level above debug given by a flag or variable.
    """
    if not options.trace_hooks or options.log_level == "debug":
        return
    if level_given_by is None:
        options.log_level = "debug"
        return
    raise ConfigError(
        f"--trace-hooks logs at debug, which {level_given_by} {options.log_level} hides; "
        "set the level to debug, or leave it unset"
    )


def _argparse_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert
