# One exception class per thing a caller can do something about, each derived from the
# builtin a caller would already catch for it, as in the SQLite module: fix a setting, fix
# a name, stop using a pool that is not open, fix the server or the address, and, new
# here, a connection that the server or the network took away in the middle of a call.
# Errors of the statements themselves (bad SQL, a duplicate key) are the driver's own
# (MySQLdb.Error and its subclasses), raised as they are.

from __future__ import annotations

from oversip_hooks import dbpool


class MySQLSettingsError(ValueError):
    """``add_pool()`` was given a bad setting; nothing has been opened.

    The value is shown in the message, except the password's, which never is.

    Attributes:
        setting: the argument at fault (``"name"``, ``"port"``, ``"user"``, ...).
        pool: the pool's name, or ``None`` when the name itself is at fault.
    """

    def __init__(self, setting: str, shown: str, reason: str, pool: str | None = None) -> None:
        where = "MySQL pool" if pool is None else f"MySQL pool {pool!r}:"
        super().__init__(f"{where} {setting}={shown} is invalid: {reason}")
        self.setting = setting
        self.pool = pool


class UnknownPoolError(LookupError):
    """``pool(name)`` was asked for a pool that was not added; the message lists those
    that were."""


class PoolClosedError(dbpool.PoolClosedError):
    """A pool was used before the ``started`` hook opened it, or after it was closed
    (a RuntimeError, through the pool engine's own)."""


class PoolOpenError(RuntimeError):
    """A pool could not connect before the startup deadline (the server is unreachable,
    the password is refused, the database does not exist) or ``on_connect`` failed; the
    message names ``user@host:port`` and the driver's reason. ``started`` makes it
    fatal."""


class ConnectionLostError(ConnectionError):
    """The connection that a call was using was lost (the server restarted or was
    killed, ``KILL`` ended it, ``wait_timeout`` closed it, the network failed), or could
    not be opened again for this call.

    The call was not retried: a write may or may not have been committed when the
    connection was lost during its COMMIT, and only the caller knows whether running it
    again is safe. The pool replaces the connection, so later calls succeed once the
    server answers again. The driver's error is the ``__cause__``.
    """
