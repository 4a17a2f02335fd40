# Validation runs before anything starts and refuses, rather than ignores, what pluggy
# would accept but our runtime cannot honour: a wrapper (the runtime calls implementations
# one at a time, so there is no call for a wrapper to wrap), and tryfirst/trylast on
# `terminated`, whose order is by rule the reverse of `started`'s.

from __future__ import annotations

import difflib
import inspect

import pluggy

from . import hookspecs

LIFECYCLE_HOOKS = ("initialize", "started", "reload", "terminated")


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with the lifecycle hook specifications added.

    Example::

        pm = get_plugin_manager()
        pm.register(my_module, name="my_module")
        status = trio.run(Runtime(pm).run)
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def readable_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """A name for ``plugin`` that a person can read in a log line, unique in ``pm``:
    a module's or class's own name, an instance's class name, numbered if taken."""
    name = getattr(plugin, "__name__", None)
    if not isinstance(name, str):
        name = type(plugin).__name__
    candidate, number = name, 1
    while pm.has_plugin(candidate):
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def spec_argnames(hook: str) -> tuple[str, ...]:
    """The arguments that ``hook`` passes to its implementations."""
    return tuple(inspect.signature(getattr(hookspecs, hook)).parameters)


def plain_impl_opts() -> pluggy.HookimplOpts:
    """The options of an unmarked implementation, for a callable that is not a hookimpl."""
    return pluggy.HookimplOpts(
        wrapper=False,
        hookwrapper=False,
        optionalhook=False,
        tryfirst=False,
        trylast=False,
        specname=None,
    )


def validate(pm: pluggy.PluginManager) -> None:
    """Refuse any plugin whose hooks the runtime could not call as written.

    Raises:
        pluggy.PluginValidationError: naming the plugin and the hook, for an unknown hook
            name (with a close match when there is one), a wrapper, tryfirst/trylast on
            ``terminated``, or two implementations of one hook in one plugin. Arguments
            missing from a spec are refused by pluggy itself, at ``pm.register``.
    """
    for name, caller in vars(pm.hook).items():
        if name.startswith("_"):
            continue
        seen: set[str] = set()
        for impl in caller.get_hookimpls():
            _check_impl(name, impl, has_spec=caller.has_spec())
            if impl.plugin_name in seen:
                raise pluggy.PluginValidationError(
                    impl.plugin,
                    f"plugin {impl.plugin_name!r} implements hook {name!r} twice (through "
                    "specname); a plugin has one implementation of each lifecycle hook",
                )
            seen.add(impl.plugin_name)


def _check_impl(hook: str, impl: pluggy.HookImpl, *, has_spec: bool) -> None:
    where = f"plugin {impl.plugin_name!r}"
    if not has_spec:
        if impl.optionalhook:
            return
        close = difflib.get_close_matches(hook, LIFECYCLE_HOOKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: unknown hook {hook!r}{hint} (the hooks are {', '.join(LIFECYCLE_HOOKS)})",
        )
    if impl.wrapper or impl.hookwrapper:
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} is marked as a wrapper; lifecycle hooks are called one "
            "at a time, so wrappers are not supported",
        )
    if hook == "terminated" and (impl.tryfirst or impl.trylast):
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook 'terminated' is marked tryfirst/trylast; terminated always runs "
            "in the reverse of the started order, so mark 'started' instead",
        )
