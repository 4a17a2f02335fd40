# Validation runs before anything starts and refuses, rather than ignores, what pluggy
# would accept but our runtime cannot honour: a wrapper of a lifecycle hook (the runtime
# calls those implementations one at a time, so there is no call for a wrapper to wrap;
# extension hooks take wrappers, sync or async), an old-style `hookwrapper`, tryfirst/trylast on
# `terminated`, whose order is by rule the reverse of `started`'s (and on `lifespan`, which
# runs in the plugin's own turns), a generator (a hook with `yield`: calling it only
# creates the generator, so its body would never run; `lifespan` alone must be one), and a
# keyword-only parameter (pluggy passes only the positional ones it names, so the call
# would fail, or the argument never arrive).
#
# Extension hooks are declared by the plugins themselves, in an attribute
# `extension_hooks` (a class or module of `@hookspec` functions), and added to the manager
# when it is validated, once every plugin is registered: so the order in which the
# declaring and the implementing plugins were registered does not matter, and a plugin
# needs no hook of its own to declare some. Rejected: a `pytest_addhooks`-like hook,
# which only sees the plugins registered after it and is one more hook to get wrong.

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Sequence
from typing import Any

import pluggy

from . import hookspecs
from ._fatal import printable
from ._order import check_declarations

LIFECYCLE_HOOKS = ("initialize", "lifespan", "started", "reload", "terminated")
# The extension hooks that the runtime itself declares (`run --http` calls them).
PROBE_HOOKS = ("health_check", "metrics_collectors")
EXTENSION_HOOKS_ATTRIBUTE = "extension_hooks"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with the runtime's hook specifications added, which also takes
    async generator wrappers (pluggy takes only sync ones; the runtime calls both) and
    counts its registrations, so that the runtime can keep each hook's call order until
    a plugin comes or goes."""

    def __init__(self) -> None:
        self.generation = 0
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.add_hookspecs(hookspecs.ProbeHooks)  # PROBE_HOOKS

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self.generation += 1
        return super().register(plugin, name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        self.generation += 1
        return super().unregister(plugin, name)

    def add_hookspecs(self, module_or_class: types.ModuleType | type) -> None:
        self.generation += 1
        super().add_hookspecs(module_or_class)

    def _verify_hook(self, hook: pluggy.HookCaller, hookimpl: pluggy.HookImpl) -> None:
        if hookimpl.wrapper and inspect.isasyncgenfunction(hookimpl.function):
            # pluggy's checks but its "not a generator function", which it is not to pluggy
            opts = pluggy.HookimplOpts(**{**hookimpl.opts, "wrapper": False})
            hookimpl = pluggy.HookImpl(
                hookimpl.plugin, hookimpl.plugin_name, hookimpl.function, opts
            )
        super()._verify_hook(hook, hookimpl)


def get_plugin_manager() -> PluginManager:
    """A fresh plugin manager with the lifecycle hook specifications added, and the
    extension hooks the runtime declares (``hookspecs.ProbeHooks``).

    Example::

        pm = get_plugin_manager()
        pm.register(my_module, name="my_module")
        status = trio.run(Runtime(pm).run)
    """
    return PluginManager()


def declare_extension_hooks(pm: pluggy.PluginManager) -> None:
    """Add to ``pm`` the hook specifications that its plugins declare in their
    ``extension_hooks`` attribute; those already added are left alone.

    Raises:
        pluggy.PluginValidationError: naming the plugin, when its ``extension_hooks``
            holds no ``@hookspec`` function, declares a hook that another plugin or the
            lifecycle declares already, or asks for ``historic``.
    """
    for name, plugin in pm.list_name_plugin():
        namespace = getattr(plugin, EXTENSION_HOOKS_ATTRIBUTE, None)
        if plugin is None or namespace is None:
            continue
        where = f"plugin {name!r}"
        specs = [hook for hook in dir(namespace) if pm.parse_hookspec_opts(namespace, hook)]
        if not specs:
            raise pluggy.PluginValidationError(
                plugin,
                f"{where}: its {EXTENSION_HOOKS_ATTRIBUTE} ({printable(namespace)}) has no "
                "function marked @hookspec",
            )
        new = []
        for hook in specs:
            opts = pm.parse_hookspec_opts(namespace, hook)
            if opts is not None and opts.get("historic"):
                raise pluggy.PluginValidationError(
                    plugin,
                    f"{where}: extension hook {hook!r} is marked historic; the runtime calls "
                    "hooks only once every plugin is registered, so historic is not supported",
                )
            caller = getattr(pm.hook, hook, None)
            if caller is None or not caller.has_spec():
                new.append(hook)
            elif caller.spec.namespace is not namespace:
                owner = _declarer(pm, caller.spec.namespace) or "oversip_hooks' lifecycle"
                raise pluggy.PluginValidationError(
                    plugin,
                    f"{where} declares hook {hook!r}, which {owner!r} declares already",
                )
        if new:
            pm.add_hookspecs(namespace)  # a class or a module: it has @hookspec functions


def add_declared_hooks(pm: pluggy.PluginManager, namespaces: Sequence[object]) -> None:
    """Add to ``pm`` the hook specifications in ``namespaces`` (other plugins'
    ``extension_hooks``), to check one plugin's implementations against them; those that
    cannot be added are left out, for :func:`declare_extension_hooks` to refuse on the
    plugin that declares them."""
    for namespace in namespaces:
        try:
            pm.add_hookspecs(namespace)  # type: ignore[arg-type]  # checked by pluggy
        except (ValueError, TypeError, pluggy.PluginValidationError):
            continue


def declared_hooks(pm: pluggy.PluginManager) -> dict[str, str]:
    """Each extension hook of ``pm``, in the order of their names, with the name of the
    plugin that declares it.

    Example::

        >>> declared_hooks(pm)
        {'health_check': 'health'}
    """
    found = {}
    for hook, caller in sorted(vars(pm.hook).items()):
        if hook.startswith("_") or not caller.has_spec() or hook in LIFECYCLE_HOOKS:
            continue
        found[hook] = _declarer(pm, caller.spec.namespace) or "?"
    return found


def _declarer(pm: pluggy.PluginManager, namespace: object) -> str | None:
    if namespace is hookspecs.ProbeHooks:
        return hookspecs.PROJECT_NAME
    for name, plugin in pm.list_name_plugin():
        if getattr(plugin, EXTENSION_HOOKS_ATTRIBUTE, None) is namespace:
            return name
    return None


def known_hooks(pm: pluggy.PluginManager) -> list[str]:
    """The lifecycle hooks, then the extension hooks of ``pm``."""
    return [*LIFECYCLE_HOOKS, *declared_hooks(pm)]


def listed_hooks(pm: pluggy.PluginManager) -> list[str]:
    """The hooks named in an "unknown hook" message: the lifecycle hooks, then those
    that plugins declare (the runtime's own probe hooks are left to "did you mean")."""
    declared = declared_hooks(pm)
    return [*LIFECYCLE_HOOKS, *(h for h, by in declared.items() if by != hookspecs.PROJECT_NAME)]


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
    """The arguments that the lifecycle hook ``hook`` passes to its implementations."""
    return tuple(inspect.signature(getattr(hookspecs, hook)).parameters)


def close_match(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate that ``name`` is most likely meant to be, for a "did you mean": one
    that :func:`looks_like` finds, else difflib's closest, else ``None``.

    Example::

        close_match("relaod", LIFECYCLE_HOOKS)   # "reload"
    """
    found = looks_like(name, candidates)
    if found is not None:
        return found
    import difflib  # here, as in _is_typo: only a "did you mean" needs it, not a start

    close = difflib.get_close_matches(name, candidates, n=1)
    return close[0] if close else None


def looks_like(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate that ``name`` is close enough to, to be taken for a typo of it: an
    edit or a swap of two neighbours away (``relaod``, ``reloda``, ``startd``), two
    edits for names of nine letters or more (``intialise``), or of difflib's ratio 0.85
    or more (``initialise``, ``terminate``); ``None`` if none is."""
    if name in candidates:
        return name
    typos = sorted(
        (_distance(name, candidate), candidate)
        for candidate in candidates
        if _is_typo(name, candidate)
    )
    return typos[0][1] if typos else None


def _is_typo(name: str, candidate: str) -> bool:
    if abs(len(name) - len(candidate)) > 2:
        return False
    distance = _distance(name, candidate)
    if distance <= 1 or (distance == 2 and min(len(name), len(candidate)) >= 9):
        return True
    # difflib's ratio is 2M / T, T both lengths, M the characters of its matching blocks,
    # which are a common subsequence: an edit distance d leaves room for (T - d) / 2 of
    # them at most, so a ratio of 0.85 needs d <= 0.15 T. Past that, difflib is not even
    # imported: a start compares every name of the server file with the hooks' names.
    total = len(name) + len(candidate)
    if distance > 0.15 * total:
        return False
    import difflib

    return difflib.SequenceMatcher(None, name, candidate).ratio() >= 0.85


def _distance(a: str, b: str) -> int:
    """The edit distance from ``a`` to ``b`` counting a swap of neighbours as one edit
    (optimal string alignment)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            cost = 0 if char_a == char_b else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                value = min(value, previous2[j - 2] + 1)
            current.append(value)
        previous2, previous = previous, current
    return previous[-1]


def oversip_name(name: str) -> str | None:
    """The hook that OverSIP's name ``name`` (``on_started``) stands for here, if any."""
    hook = name.removeprefix("on_")
    return hook if hook != name and hook in LIFECYCLE_HOOKS else None


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
    """Refuse any plugin whose hooks the runtime could not call as written, once the
    extension hooks that plugins declare are added (:func:`declare_extension_hooks`).

    Raises:
        pluggy.PluginValidationError: naming the plugin and the hook, for an unknown hook
            name (with a close match when there is one, and the hook to use for OverSIP's
            ``on_started`` and the like), a wrapper of a lifecycle hook, an old-style
            ``hookwrapper``, tryfirst/trylast on ``terminated``, a generator (a hook with
            ``yield``, whose body would never run), a keyword-only parameter, two
            implementations of one hook in one plugin, or an argument that the hook's
            specification does not have.
    """
    declare_extension_hooks(pm)
    known, listed = known_hooks(pm), listed_hooks(pm)
    for name, caller in vars(pm.hook).items():
        if name.startswith("_"):
            continue
        seen: set[str] = set()
        for impl in caller.get_hookimpls():
            _check_impl(name, impl, caller, known, listed)
            if impl.plugin_name in seen:
                raise pluggy.PluginValidationError(
                    impl.plugin,
                    f"plugin {impl.plugin_name!r} implements hook {name!r} twice (through "
                    "specname); a plugin has one implementation of each hook",
                )
            seen.add(impl.plugin_name)
    check_declarations(pm)  # requires/after (_order.py): last, once every hook is valid


def _check_impl(
    hook: str,
    impl: pluggy.HookImpl,
    caller: pluggy.HookCaller,
    known: Sequence[str],
    listed: Sequence[str],
) -> None:
    where = f"plugin {impl.plugin_name!r}"
    if caller.spec is None:
        if impl.optionalhook:
            return
        instead = oversip_name(hook)
        if instead is not None:
            raise pluggy.PluginValidationError(
                impl.plugin,
                f"{where}: unknown hook {hook!r}: OverSIP's {hook} is {instead!r} here; "
                f"rename it to {instead}",
            )
        close = close_match(hook, known)
        hint = (
            f"; did you mean {close!r}?"
            if close
            else "; an extension hook of a module that may not be installed is marked "
            "@hookimpl(optionalhook=True)"
        )
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: unknown hook {hook!r}{hint} (the hooks are {', '.join(listed)})",
        )
    lifecycle = hook in LIFECYCLE_HOOKS
    if impl.hookwrapper:
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} is marked hookwrapper=True, pluggy's old style; "
            "mark it wrapper=True and return the result from the generator",
        )
    function = impl.function
    generator = any(
        inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        for fn in (function, inspect.unwrap(function))
    )
    if impl.wrapper and lifecycle:
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} is marked as a wrapper; lifecycle hooks are called one "
            "at a time, so wrappers are not supported",
        )
    if impl.wrapper and not generator:
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} is marked as a wrapper but does not yield; a wrapper "
            "is a generator that yields once, where the implementations run",
        )
    if hook in ("terminated", "lifespan") and (impl.tryfirst or impl.trylast):
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} is marked tryfirst/trylast; it runs in the plugin's "
            "started and terminated turns, so mark 'started' instead",
        )
    if hook == "lifespan":
        if not inspect.isasyncgenfunction(inspect.unwrap(function)):
            raise pluggy.PluginValidationError(
                impl.plugin,
                f"{where}: hook 'lifespan' must be an async generator that yields once "
                "(async def lifespan(runtime): ...; yield; ...)",
            )
    elif generator and not impl.wrapper:
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} is a generator (it contains 'yield'), so calling it "
            "would never run its body; generators are refused as "
            + (
                "lifecycle hooks: remove the 'yield'"
                if lifecycle
                else "extension hook implementations: remove the 'yield', or mark it "
                "@hookimpl(wrapper=True) if it is meant to wrap the call"
            ),
        )
    keyword_only = _keyword_only(function, caller.spec.argnames)
    if keyword_only:
        first = keyword_only[0]
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} takes {first!r} as a keyword-only argument, which the "
            f"runtime does not pass; take it as a normal parameter, as in "
            f"def {hook}({first}): ...",
        )


def _keyword_only(function: Callable[..., object], spec: Sequence[str]) -> list[str]:
    """The keyword-only parameters of ``function`` that a call by pluggy's rules would
    leave out: each without a default, and each named after an argument of the spec."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        parameter.name
        for parameter in parameters
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and (parameter.default is inspect.Parameter.empty or parameter.name in spec)
    ]
