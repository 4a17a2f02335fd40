# The order in which plugins take their turns at a hook, and the declarations it obeys.
#
# A plugin may declare, on itself (a module-level variable, or a class or instance
# attribute), `requires` (plugin names that must be loaded; they start before it and
# terminate after it) and `after` (plugin names that, when loaded, start before it and
# terminate after it), as Home Assistant's `dependencies`/`after_dependencies` and
# systemd's `Requires=`/`After=` do. pluggy has no way to say it (pluggy #51), so the
# runtime, which calls every implementation itself, orders them.
#
# Each hook's order is a stable topological sort (Kahn's algorithm): at each step the next
# plugin is, among those whose declared plugins have all had their turn, the first by
# (tryfirst, unmarked, trylast) and then registration order. With no declarations that is
# exactly the order without them; with some, it is the lexicographically first order that
# keeps every declaration. A declaration always wins over tryfirst/trylast: a tryfirst
# plugin that requires an unmarked one waits for it, and that one keeps its own place
# among the unmarked (it is not pulled forward); a trylast plugin that another requires
# takes its turn before that one. `terminated` needs nothing here: it runs in the exact
# reverse of the `started` order, so a plugin terminates before every plugin it requires.
#
# Validation is strict and ordering is lenient. `declaration_problems` refuses, before
# anything starts, declarations that are not a list or tuple of names, a `requires` that
# names a plugin not loaded, and cycles. `ordered` never raises: it ignores names that are
# not loaded and, should it meet a cycle (only on a manager that was never validated, as
# `Runtime.hook_order` may be given), breaks it at the first plugin in the order above, so
# that listing a plugin manager never fails on its declarations.

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import pluggy

DECLARATIONS = ("requires", "after")

# The rank of an implementation marked tryfirst, unmarked, and marked trylast.
TRYFIRST, UNMARKED, TRYLAST = 0, 1, 2


class DeclarationError(pluggy.PluginValidationError):
    """A plugin's ``requires`` or ``after`` is not a list or tuple of plugin names, names
    a required plugin that is not loaded, or takes part in a cycle."""


class Declarations(NamedTuple):
    """What a plugin declares about its place in the order.

    Attributes:
        requires: plugins that must be loaded; they start before it, terminate after it.
        after: plugins that, when loaded, start before it and terminate after it.
    """

    requires: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    @property
    def before_it(self) -> tuple[str, ...]:
        """Every plugin that, when loaded, takes its turn before this one, once each."""
        return tuple(dict.fromkeys(self.requires + self.after))


NONE = Declarations()


def declarations(plugin: object, name: str) -> Declarations:
    """``plugin``'s declarations, checked.

    Raises:
        DeclarationError: ``requires`` or ``after`` is anything but a list or tuple of
            ``str`` (a ``str`` alone included), or reading it raised.

    Example::

        declarations(reports_module, "reports")   # Declarations(requires=('sqlite',))
    """
    found: dict[str, tuple[str, ...]] = {}
    for attribute in DECLARATIONS:
        try:
            value = getattr(plugin, attribute, None)
        except Exception as exc:
            raise DeclarationError(
                plugin,
                f"plugin {name!r}: reading {attribute!r} raised {type(exc).__name__}: {exc}",
            ) from exc
        if value is None:
            continue
        if not isinstance(value, list | tuple):
            example = f"{attribute} = [{value!r}]" if isinstance(value, str) else ""
            hint = f" (write {example})" if example else ""
            raise DeclarationError(
                plugin,
                f"plugin {name!r}: {attribute!r} must be a list or tuple of plugin names, "
                f"not {type(value).__name__}{hint}",
            )
        for item in value:
            if not isinstance(item, str):
                raise DeclarationError(
                    plugin,
                    f"plugin {name!r}: {attribute!r} must be a list or tuple of plugin "
                    f"names, but holds {type(item).__name__} {item!r}",
                )
        found[attribute] = tuple(dict.fromkeys(value))
    return Declarations(**found) if found else NONE


def declared(plugin: object) -> Declarations:
    """``plugin``'s declarations for ordering, leniently: a malformed one counts as
    none (validation refuses it before anything starts)."""
    try:
        return declarations(plugin, "")
    except DeclarationError:
        return NONE


def ordered(
    names: Sequence[str],
    ranks: Mapping[str, int],
    before: Mapping[str, Iterable[str]],
) -> list[str]:
    """``names`` in the order they take their turns.

    Args:
        names: the plugins, in registration order.
        ranks: each plugin's ``TRYFIRST``, ``UNMARKED`` (the default) or ``TRYLAST``.
        before: for each plugin, the plugins that take their turn before it when they are
            in ``names``; others, and the plugin itself, are ignored.

    Returns:
        At each step, among the plugins whose ``before`` have all had their turn, the
        first by rank and then registration order. Never raises: a cycle is broken at
        its first plugin in that order.

    Example::

        ordered(["reports", "sqlite"], {}, {"reports": ["sqlite"]})  # ['sqlite', 'reports']
    """
    index = {name: position for position, name in enumerate(names)}

    def key(name: str) -> tuple[int, int]:
        return ranks.get(name, UNMARKED), index[name]

    if not any(before.values()):  # the common case, and the order without declarations
        return sorted(index, key=key)
    waiting_on = dict.fromkeys(index, 0)
    needed_by: dict[str, list[str]] = {name: [] for name in index}
    for name in index:
        for other in dict.fromkeys(before.get(name, ())):
            if other in index and other != name:
                waiting_on[name] += 1
                needed_by[other].append(name)
    ready = [key(name) for name in index if not waiting_on[name]]
    heapq.heapify(ready)
    result: list[str] = []
    placed: set[str] = set()
    while len(result) < len(index):
        if ready:
            name = names[heapq.heappop(ready)[1]]
            if name in placed:
                continue
        else:  # a cycle: only in a manager that validation would refuse
            name = min((name for name in index if name not in placed), key=key)
        placed.add(name)
        result.append(name)
        for other in needed_by[name]:
            waiting_on[other] -= 1
            if waiting_on[other] == 0 and other not in placed:
                heapq.heappush(ready, key(other))
    return result


def find_cycles(names: Sequence[str], before: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Cycles among ``names`` along ``before``, as ``[a, b, a]`` (``a`` needs ``b``
    before it, and ``b`` needs ``a``), each starting at its first-registered plugin, no
    two sharing a plugin; none when the declarations can be kept."""
    index = {name: position for position, name in enumerate(names)}
    edges = {
        name: [other for other in dict.fromkeys(before.get(name, ())) if other in index]
        for name in names
    }
    done: set[str] = set()
    cycles: list[list[str]] = []
    in_cycles: set[str] = set()
    for root in names:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root: 0}
        pending = [iter(edges[root])]
        while pending:
            other = next(pending[-1], None)
            if other is None:
                pending.pop()
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
            elif other in on_path:
                cycle = path[on_path[other] :]
                if in_cycles.isdisjoint(cycle):
                    start = min(range(len(cycle)), key=lambda at: index[cycle[at]])
                    cycle = cycle[start:] + cycle[:start]
                    cycles.append([*cycle, cycle[0]])
                    in_cycles.update(cycle)
            elif other not in done:
                on_path[other] = len(path)
                path.append(other)
                pending.append(iter(edges[other]))
    return cycles


def declaration_problems(pm: pluggy.PluginManager) -> list[DeclarationError]:
    """Every problem with the declarations of the plugins in ``pm``, in registration
    order: malformed declarations, then required plugins not loaded, then cycles. The
    ``SystemCallbacks`` pseudo-plugin counts as loaded, and always comes first."""
    from ._callbacks import CALLBACKS_PLUGIN_NAME  # _callbacks imports _manager, which us

    plugins = [(name, plugin) for name, plugin in pm.list_name_plugin() if plugin is not None]
    problems: list[DeclarationError] = []
    declared_by: dict[str, Declarations] = {}
    for name, plugin in plugins:
        try:
            declared_by[name] = declarations(plugin, name)
        except DeclarationError as exc:
            problems.append(exc)
    loaded = [name for name, _ in plugins]
    present = {CALLBACKS_PLUGIN_NAME, *loaded}
    for name, plugin in plugins:
        for required in declared_by.get(name, NONE).requires:
            if required not in present:
                import difflib  # here: only an error message needs it

                close = difflib.get_close_matches(required, sorted(present), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    DeclarationError(
                        plugin,
                        f"plugin {name!r} requires {required!r}, which is not loaded{hint}",
                    )
                )
    before = {name: declared.before_it for name, declared in declared_by.items()}
    for cycle in find_cycles(loaded, before):
        if len(cycle) == 2:
            message = f"plugin {cycle[0]!r} requires, or comes after, itself"
        else:
            chain = " -> ".join(map(repr, cycle))
            message = f"plugins {chain} form a cycle: each requires, or comes after, the next"
        problems.append(DeclarationError(pm.get_plugin(cycle[0]), message))
    return problems


def check_declarations(pm: pluggy.PluginManager) -> None:
    """Refuse the declarations of ``pm``'s plugins that cannot be kept.

    Raises:
        DeclarationError: a ``pluggy.PluginValidationError``, for the first of
            :func:`declaration_problems`.
    """
    problems = declaration_problems(pm)
    if problems:
        raise problems[0]
