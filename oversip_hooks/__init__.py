"""Lifecycle hooks for long-running trio services made of plugins.

The Python form of OverSIP's 3rd-party module framework: plugins implement ``initialize``,
``lifespan``, ``started``, ``reload`` and ``terminated``; a trio :class:`Runtime` calls
them at each point of its life; :func:`fatal` aborts cleanly. Plugins declare extension
hooks of their own, which any plugin implements and calls through ``runtime.hooks``.
"""

from ._callbacks import CallbackRegistry, SystemCallbacks
from ._callers import ExtensionHook, HookOutcome
from ._events import (
    HookCallEnded,
    HookCallStarted,
    LoopBlocked,
    RuntimeState,
    ShutdownOverran,
    StateChanged,
)
from ._fatal import FatalError, Launcher, fatal
from ._logging import LEVELS, Logger, LoggerMisuse, add_console_sink, get_logger
from ._manager import get_plugin_manager
from ._modules import M, modules
from ._runtime import Runtime, run
from .hookspecs import hookimpl, hookspec

__all__ = [
    "LEVELS",
    "CallbackRegistry",
    "ExtensionHook",
    "FatalError",
    "HookCallEnded",
    "HookCallStarted",
    "HookOutcome",
    "Launcher",
    "Logger",
    "LoggerMisuse",
    "LoopBlocked",
    "M",
    "Runtime",
    "RuntimeState",
    "ShutdownOverran",
    "StateChanged",
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
