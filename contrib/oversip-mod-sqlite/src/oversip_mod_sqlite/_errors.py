# One exception class per thing a caller can do something about: fix a setting, fix a
# name, stop using a pool that is not open, fix what stopped the pool from opening. Each
# derives from the builtin that a caller would already catch for it (ValueError,
# LookupError, RuntimeError), so code that does not know this module still handles them.

from __future__ import annotations

from oversip_hooks import dbpool


class SQLiteSettingsError(ValueError):
    """``add_pool()`` was given a bad setting; nothing has been opened.

    Attributes:
        setting: the argument at fault (``"name"``, ``"size"``, ``"database"``, ...).
        value: the value it was given.
        pool: the pool's name, or ``None`` when the name itself is at fault.
    """

    def __init__(self, setting: str, value: object, reason: str, pool: str | None = None) -> None:
        where = "SQLite pool" if pool is None else f"SQLite pool {pool!r}:"
        super().__init__(f"{where} {setting}={value!r} is invalid: {reason}")
        self.setting = setting
        self.value = value
        self.pool = pool


class UnknownPoolError(LookupError):
    """``pool(name)`` was asked for a pool that was not added; the message lists those
    that were."""


class PoolClosedError(dbpool.PoolClosedError):
    """A pool was used before the ``started`` hook opened it, or after it was closed.
    A ``RuntimeError``, as every pool engine's ``dbpool.PoolClosedError`` is."""


class PoolOpenError(RuntimeError):
    """A pool could not open its connections: the file is not a database, WAL mode is
    not available, ``on_connect`` raised. The ``started`` hook makes it fatal."""
