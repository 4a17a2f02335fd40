# `modules` (alias `M`) is a view of the running runtime's plugin manager, not a registry of
# its own: a module is reachable by the name it was registered under for exactly as long as
# a runtime that has it is running. A context variable, not a global, says which runtime
# that is, so two runtimes (two tests, say) never see each other's modules.

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import pluggy

active_plugin_manager: ContextVar[pluggy.PluginManager | None] = ContextVar(
    "oversip_hooks_active_plugin_manager", default=None
)


class _Modules:
    """OverSIP's ``OverSIP::Modules``: ``modules.sqlite`` or ``modules["sqlite"]``."""

    def __getattr__(self, name: str) -> Any:  # a module's own API, unknown to us
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __getitem__(self, name: str) -> Any:
        pm = active_plugin_manager.get()
        if pm is None:
            raise KeyError(f"no module named {name!r}: no runtime is running")
        plugin = pm.get_plugin(name)
        if plugin is None:
            raise KeyError(f"no module named {name!r} is loaded; loaded: {', '.join(self)}")
        return plugin

    def __contains__(self, name: object) -> bool:
        pm = active_plugin_manager.get()
        return pm is not None and isinstance(name, str) and pm.get_plugin(name) is not None

    def __iter__(self) -> Iterator[str]:
        pm = active_plugin_manager.get()
        names = [] if pm is None else [n for n, p in pm.list_name_plugin() if p is not None]
        return iter(names)

    def __dir__(self) -> list[str]:
        return list(self)

    def __repr__(self) -> str:
        return f"<oversip_hooks.modules: {', '.join(self) or 'none loaded'}>"


modules = _Modules()
M = modules
