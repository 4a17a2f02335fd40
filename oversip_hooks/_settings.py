# Every option of `oversip-hooks run` that takes a value is one row of SETTINGS: its flag,
# its environment variable and the one function that parses both, so that a flag and its
# variable can never disagree about what they accept. A flag wins over the environment. We
# rejected argparse's `default=os.environ.get(...)`: argparse does not check `choices`
# against a default, and its error for a bad default blames the flag, not the variable
# the operator actually has to fix.
#
# A parser raises ConfigError, the one exception the command line turns into "one line on
# standard error, exit status 2"; the other modules of the command line raise it too.

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

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


class ConfigError(Exception):
    """Bad input found before the lifecycle begins: the command exits with status 2."""


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
    """A path (anything with a ``/``), or ``host:port`` with ``[v6 address]:port`` too.

    Example::

        parse_syslog_address("/dev/log")         # "/dev/log"
        parse_syslog_address("[::1]:514")        # ("::1", 514)
    """
    if "/" in text:
        return text
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"bad syslog address {text!r}; expected a unix socket path such as /dev/log, "
            "or HOST:PORT for UDP"
        )
    return host, int(port)


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
    """A positive number of seconds, such as ``"2.5"``."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if math.isnan(seconds) or seconds <= 0:
        raise ConfigError(f"expected a positive number of seconds, not {text!r}")
    return seconds


@dataclass(frozen=True)
class Setting:
    """One option of ``run``, settable by a flag or an environment variable."""

    dest: str
    parse: Callable[[str], object]
    default: object
    metavar: str
    help: str

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
        "time that the whole shutdown may take (default: 30)",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per setting to ``parser``; an option not given is ``None``."""
    for setting in SETTINGS:
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
    for setting in SETTINGS:
        if getattr(options, setting.dest) is not None:
            continue
        raw = environ.get(setting.env, "")
        try:
            value = setting.parse(raw) if raw else setting.default
        except ConfigError as exc:
            raise ConfigError(f"{setting.env}: {exc}") from None
        setattr(options, setting.dest, value)


def _argparse_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert
