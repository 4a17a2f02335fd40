# Validation runs before anything starts and refuses, rather than ignores, what pluggy
# would accept but our runtime cannot honour: a wrapper (the runtime calls implementations
# one at a time, so there is no call for a wrapper to wrap), tryfirst/trylast on
# `terminated`, whose order is by rule the reverse of `started`'s (and on `lifespan`, which
# runs in the plugin's own turns), a generator (a hook with `yield`: calling it only
# creates the generator, so its body would never run; `lifespan` alone must be one), and a
# keyword-only parameter (pluggy passes only the positional ones it names, so the call
# would fail, or the argument never arrive).

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence

import pluggy

from . import hookspecs
from ._order import check_declarations

LIFECYCLE_HOOKS = ("initialize", "lifespan", "started", "reload", "terminated")


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


def close_match(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate that ``name`` is most likely meant to be, for a "did you mean": one
    that :func:`looks_like` finds, else difflib's closest, else ``None``.

    Example::

        close_match("relaod", LIFECYCLE_HOOKS)   # "reload"
    """
    found = looks_like(name, candidates)
    if found is not None:
        return found
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
    return (
        distance <= 1
        or (distance == 2 and min(len(name), len(candidate)) >= 9)
        or difflib.SequenceMatcher(None, name, candidate).ratio() >= 0.85
    )


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
    """Refuse any plugin whose hooks the runtime could not call as written.

    Raises:
        pluggy.PluginValidationError: naming the plugin and the hook, for an unknown hook
            name (with a close match when there is one, and the hook to use for OverSIP's
            ``on_started`` and the like), a wrapper, tryfirst/trylast on ``terminated``, a
            generator (a hook with ``yield``, whose body would never run), a keyword-only
            parameter, or two implementations of one hook in one plugin. Arguments
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
    check_declarations(pm)  # requires/after (_order.py): last, once every hook is valid


def _check_impl(hook: str, impl: pluggy.HookImpl, *, has_spec: bool) -> None:
    where = f"plugin {impl.plugin_name!r}"
    if not has_spec:
        if impl.optionalhook:
            return
        instead = oversip_name(hook)
        if instead is not None:
            raise pluggy.PluginValidationError(
                impl.plugin,
                f"{where}: unknown hook {hook!r}: OverSIP's {hook} is {instead!r} here; "
                f"rename it to {instead}",
            )
        close = close_match(hook, LIFECYCLE_HOOKS)
        hint = f"; did you mean {close!r}?" if close else ""
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
    if hook in ("terminated", "lifespan") and (impl.tryfirst or impl.trylast):
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} is marked tryfirst/trylast; it runs in the plugin's "
            "started and terminated turns, so mark 'started' instead",
        )
    function = impl.function
    if hook == "lifespan":
        if not inspect.isasyncgenfunction(inspect.unwrap(function)):
            raise pluggy.PluginValidationError(
                impl.plugin,
                f"{where}: hook 'lifespan' must be an async generator that yields once "
                "(async def lifespan(runtime): ...; yield; ...)",
            )
    elif any(
        inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        for fn in (function, inspect.unwrap(function))
    ):
        raise pluggy.PluginValidationError(
            impl.plugin,
            f"{where}: hook {hook!r} is a generator (it contains 'yield'), so calling it "
            "would never run its body; generators are refused as lifecycle hooks: remove "
            "the 'yield'",
        )
    keyword_only = _keyword_only(function, spec_argnames(hook))
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
