"""Lifecycle hooks for long-running trio services made of plugins.

The Python form of OverSIP's 3rd-party module framework: plugins implement ``initialize``,
``lifespan``, ``started``, ``reload`` and ``terminated``; a trio :class:`Runtime` calls
them at each point of its life; :func:`fatal` aborts cleanly.
"""

from ._callbacks import CallbackRegistry, SystemCallbacks
from ._fatal import FatalError, Launcher, fatal
from ._logging import LEVELS, Logger, LoggerMisuse, add_console_sink, get_logger
from ._manager import get_plugin_manager
from ._modules import M, modules
from ._runtime import Runtime, RuntimeState, run
from .hookspecs import hookimpl, hookspec

__all__ = [
    "LEVELS",
    "CallbackRegistry",
    "FatalError",
    "Launcher",
    "Logger",
    "LoggerMisuse",
    "M",
    "Runtime",
    "RuntimeState",
    "SystemCallbacks",
    "add_console_sink",
    "fatal",
    "get_logger",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "modules",
    "run",
]
