# add_pool() checks every setting before anything connects, and refuses rather than
# corrects, as the SQLite module does: each refusal is one MySQLSettingsError naming the
# setting, so that the runtime's crit line for the failed `initialize` says what to fix.
# What only the server can tell (the password is wrong, the database is missing) is found
# in `started`.
#
# The password is kept in a Secret, never in a plain attribute: a Secret's repr, str and
# format are a placeholder, so no repr of the settings, no log line and no exception
# message can show it by accident; only the code that connects calls reveal(). We
# rejected `field(repr=False)`: it hides the value from the dataclass's repr only, not
# from an f-string, a `vars()` dump or a debugger's variable view.
#
# The connect options are an allow-list, not passed through to the driver: `autocommit`
# and `client_flag` are the pool's to set, `passwd`/`db` would be second spellings of
# settings already checked, and a misspelt option must be refused, not ignored.

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import MySQLSettingsError

OnConnect = Callable[[Any], object]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 3306


class Secret:
    """A password that never shows itself: ``repr``, ``str`` and ``format`` give
    ``'<hidden>'``; :meth:`reveal` gives the value, for the driver only."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'<hidden>'"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled: it would write the password out")


@dataclass(frozen=True)
class PoolSettings:
    """A pool's settings, all checked: what :func:`check_settings` returns.

    ``connect_timeout`` bounds each connection attempt, in seconds; ``read_timeout`` and
    ``write_timeout``, when set, bound each network read and write of a statement.
    """

    name: str
    host: str
    port: int
    unix_socket: str | None
    user: str
    password: Secret
    database: str
    size: int
    on_connect: OnConnect | None = None
    connect_timeout: int = 5
    read_timeout: int | None = None
    write_timeout: int | None = None
    charset: str = "utf8mb4"
    init_command: str | None = None
    sql_mode: str | None = None

    @property
    def address(self) -> str:
        """``user@host:port``, or ``user@unix:PATH``: how messages name the server."""
        if self.unix_socket is not None:
            return f"{self.user}@unix:{self.unix_socket}"
        return f"{self.user}@{self.host}:{self.port}"

    def driver_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``MySQLdb.connect``, the password revealed; never
        log or show them."""
        where: dict[str, Any] = (
            {"unix_socket": self.unix_socket}
            if self.unix_socket is not None
            else {"host": self.host, "port": self.port}
        )
        optional = {
            "read_timeout": self.read_timeout,
            "write_timeout": self.write_timeout,
            "init_command": self.init_command,
            "sql_mode": self.sql_mode,
        }
        return {
            **where,
            "user": self.user,
            "password": self.password.reveal(),
            "database": self.database,
            "connect_timeout": self.connect_timeout,
            "charset": self.charset,
            "autocommit": True,  # transaction() says BEGIN and COMMIT itself
            **{key: value for key, value in optional.items() if value is not None},
        }


def _is_timeout(value: object) -> bool:
    # The driver takes whole seconds (an unsigned int in libmariadb).
    return type(value) is int and 1 <= value <= 31_536_000


def _is_text(value: object) -> bool:
    return isinstance(value, str) and value != "" and "\0" not in value


# Each connect option: how to check it, and what it should be, for the error message.
_OPTIONS: dict[str, tuple[Callable[[object], bool], str]] = {
    "connect_timeout": (_is_timeout, "expected a whole number of seconds, at least 1"),
    "read_timeout": (_is_timeout, "expected a whole number of seconds, at least 1"),
    "write_timeout": (_is_timeout, "expected a whole number of seconds, at least 1"),
    "charset": (_is_text, "expected a character set's name, such as 'utf8mb4'"),
    "init_command": (_is_text, "expected an SQL statement"),
    "sql_mode": (_is_text, "expected an SQL mode, such as 'STRICT_ALL_TABLES'"),
}


def check_settings(
    name: object,
    *,
    host: object,
    port: object,
    unix_socket: object,
    user: object,
    password: object,
    database: object,
    size: object,
    on_connect: object,
    connect_options: Mapping[str, object],
    taken: Collection[str],
) -> PoolSettings:
    """Check everything ``add_pool()`` was given; return the settings.

    Args:
        taken: the names of the pools already added in this runtime.

    Raises:
        MySQLSettingsError: for the first bad setting, in the order of the arguments.

    Example::

        settings = check_settings(
            "main", host="db", port=3306, unix_socket=None, user="app", password="...",
            database="app", size=4, on_connect=None, connect_options={}, taken=(),
        )
        settings.address   # "app@db:3306"
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise MySQLSettingsError("name", repr(name), "expected an identifier, such as 'main'")
    if name in taken:
        raise MySQLSettingsError("name", repr(name), "a pool with this name was already added")

    def refuse(setting: str, value: object, reason: str) -> MySQLSettingsError:
        return MySQLSettingsError(setting, repr(value), reason, name)

    if not _is_text(host):
        raise refuse("host", host, "expected a host name or an IP address")
    if type(port) is not int or not 1 <= port <= 65535:
        raise refuse("port", port, "expected a TCP port, an int from 1 to 65535")
    socket_path = _check_unix_socket(unix_socket, host, port, name)
    if not _is_text(user):
        raise refuse("user", user, "expected a user name")
    if not isinstance(password, str):
        # Never the value: a wrong type may still be the password, as bytes for example.
        raise MySQLSettingsError(
            "password", "<hidden>", f"expected a str, not {type(password).__name__}", name
        )
    if not _is_text(database) or len(database) > 64:  # type: ignore[arg-type]
        raise refuse("database", database, "expected a database name (64 characters at most)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise refuse("size", size, "expected a positive int")
    callback = _check_on_connect(on_connect, name)
    options: dict[str, Any] = {}
    for option, value in connect_options.items():
        if option not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            shown = "<hidden>" if "pass" in option.lower() else repr(value)
            raise MySQLSettingsError(
                option, shown, f"unknown option; the options are {known}", name
            )
        is_valid, expected = _OPTIONS[option]
        if not is_valid(value):
            raise refuse(option, value, expected)
        options[option] = value
    assert isinstance(host, str)
    assert isinstance(user, str)
    assert isinstance(database, str)
    return PoolSettings(
        name,
        host,
        port,
        socket_path,
        user,
        Secret(password),
        database,
        size,
        callback,
        **options,
    )


def _check_unix_socket(unix_socket: object, host: object, port: object, pool: str) -> str | None:
    if unix_socket is None:
        return None
    text = os.fspath(unix_socket) if isinstance(unix_socket, str | os.PathLike) else None
    if not isinstance(text, str) or not _is_text(text):
        raise MySQLSettingsError(
            "unix_socket", repr(unix_socket), "expected the server socket's path", pool
        )
    if host != DEFAULT_HOST or port != DEFAULT_PORT:
        raise MySQLSettingsError(
            "unix_socket",
            repr(text),
            "give either unix_socket, or host and port, not both",
            pool,
        )
    return os.path.abspath(text)


def _check_on_connect(on_connect: object, pool: str) -> OnConnect | None:
    if on_connect is None:
        return None
    if not callable(on_connect):
        raise MySQLSettingsError(
            "on_connect",
            repr(on_connect),
            "expected a function of the new MySQLdb connection",
            pool,
        )
    if inspect.iscoroutinefunction(on_connect):
        raise MySQLSettingsError(
            "on_connect",
            repr(on_connect),
            "expected a plain function: it runs in the connection's worker thread, so it "
            "cannot be async",
            pool,
        )
    return on_connect
