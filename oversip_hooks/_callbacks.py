# OverSIP's SystemCallbacks is one global list per hook, filled as modules load. A global
# alone would leak callbacks from one runtime into the next (two tests, or a module's
# `add_pool` run by two runtimes), so the global registry holds only what is registered
# outside any run, each run works on its own copy of it, and `SystemCallbacks` forwards to
# whichever registry is current: the run's own while a runtime runs (a context variable,
# which trio tasks and `trio.to_thread` workers inherit), the global one otherwise.
#
# To the runtime a registry is one more plugin, registered before all others, whose
# implementations are pluggy `HookImpl`s: the callbacks then follow every rule that
# hookimpls follow (argument subsets, ordering, errors) with no second code path.

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import pluggy

from ._manager import plain_impl_opts, spec_argnames

CALLBACKS_PLUGIN_NAME = "SystemCallbacks"

_F = TypeVar("_F", bound=Callable[..., object])


class CallbackRegistry:
    """The callbacks registered for each of ``started``, ``reload`` and ``terminated``."""

    def __init__(self) -> None:
        self._impls: dict[str, list[pluggy.HookImpl]] = {
            "started": [],
            "reload": [],
            "terminated": [],
        }
        self.closed_hooks: set[str] = set()

    def copy(self) -> CallbackRegistry:
        clone = CallbackRegistry()
        for hook, impls in self._impls.items():
            clone._impls[hook] = list(impls)
        return clone

    def impls(self, hook: str) -> list[pluggy.HookImpl]:
        """The registered callbacks for ``hook``, in registration order."""
        return list(self._impls.get(hook, ()))

    def add(self, hook: str, fn: _F) -> _F:
        if not callable(fn):
            raise TypeError(
                f"SystemCallbacks.on_{hook}() takes a callable (a function or an async "
                f"function), not {type(fn).__name__}: {fn!r}"
            )
        if hook in self.closed_hooks:
            raise RuntimeError(
                f"SystemCallbacks.on_{hook}() called after the {hook!r} hooks have run; "
                "register callbacks at import time or from an `initialize` hook"
            )
        impl = pluggy.HookImpl(self, CALLBACKS_PLUGIN_NAME, fn, plain_impl_opts())
        allowed = spec_argnames(hook)
        unknown = [name for name in impl.argnames if name not in allowed]
        if unknown:
            raise TypeError(
                f"SystemCallbacks.on_{hook}() callback {_describe(fn)} takes "
                f"{', '.join(map(repr, unknown))}, which {hook!r} does not provide; "
                f"it may take any of: {', '.join(allowed)}"
            )
        self._impls[hook].append(impl)
        return fn


def _describe(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


_global_registry = CallbackRegistry()
_current_registry: ContextVar[CallbackRegistry] = ContextVar(
    "oversip_hooks_callbacks", default=_global_registry
)


def snapshot() -> CallbackRegistry:
    """A copy of the current registry, for a runtime about to run."""
    return _current_registry.get().copy()


@contextmanager
def using(registry: CallbackRegistry) -> Iterator[CallbackRegistry]:
    """Make ``registry`` the one ``SystemCallbacks`` adds to, inside the block."""
    # Restored by value, not with a Token: pytest-trio may end a fixture's block in
    # another context than the one that began it, where a Token cannot be used.
    previous = _current_registry.get()
    _current_registry.set(registry)
    try:
        yield registry
    finally:
        _current_registry.set(previous)


class SystemCallbacks:
    """OverSIP's registration API for modules.

    Callbacks take part in the lifecycle exactly like hookimpls of one plugin registered
    before all others, and may take any subset of their hook's arguments by name.

    Example::

        @SystemCallbacks.on_started
        async def open_pool(runtime):
            ...

        @SystemCallbacks.on_terminated
        def close_pool(error):
            ...
    """

    @staticmethod
    def on_started(fn: _F) -> _F:
        """Run ``fn(runtime)`` once the runtime has started. Returns ``fn``.

        Raises:
            TypeError: ``fn`` is not callable, or takes an argument the hook lacks.
            RuntimeError: the ``started`` hooks of the current run have already begun.
        """
        return _current_registry.get().add("started", fn)

    @staticmethod
    def on_reload(fn: _F) -> _F:
        """Run ``fn(runtime)`` on each reload (SIGHUP). Returns ``fn``.

        Raises:
            TypeError: ``fn`` is not callable, or takes an argument the hook lacks.
        """
        return _current_registry.get().add("reload", fn)

    @staticmethod
    def on_terminated(fn: _F) -> _F:
        """Run ``fn(runtime, error)`` once at shutdown. Returns ``fn``.

        Raises:
            TypeError: ``fn`` is not callable, or takes an argument the hook lacks.
            RuntimeError: the ``terminated`` hooks of the current run have already begun.
        """
        return _current_registry.get().add("terminated", fn)
