"""Declared dependencies between plugins (`requires`, `after`): the order itself
(`oversip_hooks._order`, tested directly), its validation before anything starts, the
runtime following it at every hook, the command reporting it, and a property-based test
over random plugin graphs with random failures."""

from __future__ import annotations

import itertools
import json
import types
from pathlib import Path

import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oversip_hooks import SystemCallbacks, hookimpl
from oversip_hooks._order import (
    TRYFIRST,
    TRYLAST,
    UNMARKED,
    DeclarationError,
    Declarations,
    declaration_problems,
    declarations,
    find_cycles,
    ordered,
)
from oversip_hooks.testing import LifecycleHarness, check_lifecycle_invariants
from tests.processes import command, write

from .scripted import HOOKS, Script, ScriptedPlugin

# -- the order, as plain functions ---------------------------------------------------------


def test_without_declarations_the_order_is_tryfirst_unmarked_trylast_by_registration():
    names = ["a", "b", "c", "d", "e"]
    ranks = {"b": TRYLAST, "d": TRYFIRST, "e": TRYFIRST}
    assert ordered(names, ranks, {}) == ["d", "e", "a", "c", "b"]


def test_a_plugin_comes_after_what_it_requires_and_the_rest_keep_their_order():
    names = ["reports", "web", "sqlite", "cache"]
    assert ordered(names, {}, {"reports": ["sqlite"]}) == ["web", "sqlite", "reports", "cache"]
    # Transitively, and a plugin named twice counts once.
    before = {"reports": ["sqlite", "sqlite"], "sqlite": ["cache"]}
    assert ordered(names, {}, before) == ["web", "cache", "sqlite", "reports"]


def test_declarations_win_over_tryfirst_and_trylast():
    # A tryfirst plugin waits for what it requires; that one keeps its own place.
    names = ["x", "sqlite", "reports"]
    ranks = {"reports": TRYFIRST}
    assert ordered(names, ranks, {"reports": ["sqlite"]}) == ["x", "sqlite", "reports"]
    # A trylast plugin that another needs takes its turn before that one.
    ranks = {"sqlite": TRYLAST}
    assert ordered(names, ranks, {"x": ["sqlite"]}) == ["reports", "sqlite", "x"]
    # Among the plugins that are free to go, tryfirst still goes first.
    ranks = {"reports": TRYFIRST, "x": TRYLAST}
    assert ordered(names, ranks, {"sqlite": ["x"]}) == ["reports", "x", "sqlite"]


def test_ordering_ignores_absent_plugins_and_itself_and_never_raises_on_a_cycle():
    assert ordered(["a", "b"], {}, {"a": ["ghost", "a"]}) == ["a", "b"]
    # A cycle (refused by validation) is broken at its first plugin in order.
    assert ordered(["a", "b", "c"], {}, {"a": ["b"], "b": ["a"], "c": ["a"]}) == ["a", "b", "c"]
    assert ordered(["c", "a", "b"], {}, {"a": ["b"], "b": ["a"]}) == ["c", "a", "b"]


@settings(max_examples=300)
@given(data=st.data())
def test_the_order_is_the_first_that_keeps_every_declaration(data):
    """Among every order that keeps the declarations, ``ordered`` gives the first by
    (rank, registration) at each position: brute force over all permutations."""
    count = data.draw(st.integers(1, 6))
    names = [f"p{i}" for i in range(count)]
    ranks = {name: data.draw(st.sampled_from([TRYFIRST, UNMARKED, TRYLAST])) for name in names}
    hidden = data.draw(st.permutations(names))  # only earlier plugins here: no cycle
    before = {
        name: data.draw(st.lists(st.sampled_from([*hidden[:position], "ghost"]), max_size=3))
        for position, name in enumerate(hidden)
        if position
    }
    got = ordered(names, ranks, before)
    keeps = [
        order
        for order in itertools.permutations(names)
        if all(
            order.index(other) < order.index(name)
            for name, others in before.items()
            for other in others
            if other in names
        )
    ]
    assert tuple(got) in keeps
    assert got == list(min(keeps, key=lambda order: [(ranks[n], names.index(n)) for n in order]))
    if not any(before.values()):
        assert got == sorted(names, key=lambda n: (ranks[n], names.index(n)))


def test_cycles_are_found_from_their_first_registered_plugin():
    names = ["a", "b", "c", "d"]
    assert find_cycles(names, {"a": ["b"], "b": ["c"]}) == []
    assert find_cycles(names, {"b": ["c"], "c": ["a"], "a": ["b"]}) == [["a", "b", "c", "a"]]
    assert find_cycles(names, {"d": ["d"]}) == [["d", "d"]]
    # Two disjoint cycles, each once.
    assert find_cycles(names, {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}) == [
        ["a", "b", "a"],
        ["c", "d", "c"],
    ]


# -- reading and validating declarations ---------------------------------------------------


def module(name: str, **attributes: object) -> types.ModuleType:
    plugin = types.ModuleType(name)
    vars(plugin).update(attributes)
    return plugin


def test_declarations_are_read_from_a_module_a_class_or_an_instance():
    class Reports:
        requires = ("sqlite",)
        after = ("cache", "cache")

    expected = Declarations(requires=("sqlite",), after=("cache",))
    assert declarations(Reports, "reports") == expected
    assert declarations(Reports(), "reports") == expected
    assert declarations(module("m", requires=["sqlite"]), "m") == Declarations(("sqlite",))
    assert declarations(module("plain"), "plain") == Declarations()


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            {"requires": "sqlite"},
            "plugin 'reports': 'requires' must be a list or tuple of plugin names, not str "
            "(write requires = ['sqlite'])",
        ),
        (
            {"after": {"cache"}},
            "plugin 'reports': 'after' must be a list or tuple of plugin names, not set",
        ),
        (
            {"requires": ["sqlite", 3]},
            "plugin 'reports': 'requires' must be a list or tuple of plugin names, but holds int 3",
        ),
    ],
)
def test_malformed_declarations_are_refused(attributes, message):
    with pytest.raises(DeclarationError) as refused:
        declarations(module("reports", **attributes), "reports")
    assert str(refused.value) == message
    assert isinstance(refused.value, pluggy.PluginValidationError)


def test_a_declaration_that_raises_when_read_is_refused():
    class Odd:
        @property
        def requires(self):
            raise LookupError("no")

    with pytest.raises(DeclarationError, match="reading 'requires' raised LookupError: no"):
        declarations(Odd(), "odd")


class Plugin:
    """A plugin with hooks that do nothing, and the declarations given."""

    def __init__(self, requires=None, after=None):
        self.requires, self.after = requires, after

    @hookimpl
    def started(self):
        pass


def problems_of(*plugins: tuple[str, object]) -> list[str]:
    harness = LifecycleHarness()
    for name, plugin in plugins:
        harness.register(plugin, name=name)
    return [str(problem) for problem in declaration_problems(harness.pm)]


def test_a_missing_requirement_is_one_line_naming_both():
    assert problems_of(("reports", Plugin(requires=["sqlite"]))) == [
        "plugin 'reports' requires 'sqlite', which is not loaded"
    ]
    assert problems_of(("sqlite3", Plugin()), ("reports", Plugin(requires=["sqlite"]))) == [
        "plugin 'reports' requires 'sqlite', which is not loaded; did you mean 'sqlite3'?"
    ]
    # `after` names a plugin only if it is there; the callbacks are always there.
    assert problems_of(("reports", Plugin(after=["sqlite"], requires=["SystemCallbacks"]))) == []


def test_a_cycle_is_one_line_showing_it():
    assert problems_of(("a", Plugin(requires=["b"])), ("b", Plugin(after=["a"]))) == [
        "plugins 'a' -> 'b' -> 'a' form a cycle: each requires, or comes after, the next"
    ]
    assert problems_of(("a", Plugin(after=["a"]))) == [
        "plugin 'a' requires, or comes after, itself"
    ]


def test_validation_refuses_before_any_hook_is_called():
    harness = LifecycleHarness()
    harness.register(ScriptedPlugin("a"), name="a")
    harness.register(Plugin(requires=["sqlite"]), name="reports")
    with pytest.raises(pluggy.PluginValidationError, match="requires 'sqlite'"):
        harness.run()
    assert harness.trace == []


# -- the runtime follows the order ---------------------------------------------------------


class Declaring(ScriptedPlugin):
    def __init__(self, name, requires=None, after=None, scripts=None):
        super().__init__(name, scripts or {})
        self.requires, self.after = requires, after


def test_every_hook_follows_the_declarations():
    harness = LifecycleHarness()
    harness.register(Declaring("reports", requires=["sqlite"], after=["cache"]), name="reports")
    harness.register(Declaring("web", after=["reports", "absent"]), name="web")
    harness.register(Declaring("sqlite"), name="sqlite")
    harness.register(Declaring("cache"), name="cache")
    with harness.isolated():
        assert harness.run("reload") == 0
    order = ["sqlite", "cache", "reports", "web"]
    assert harness.trace == [
        *(f"{name}.initialize" for name in order),
        *(f"{name}.started" for name in order),
        *(f"{name}.reload" for name in order),
        *(f"{name}.terminated(error=False)" for name in reversed(order)),
    ]
    runtime = harness.runtime
    assert runtime is not None
    assert runtime.hook_order("started") == ["sqlite", "cache", "reports", "web"]
    assert runtime.hook_order("terminated") == ["web", "reports", "cache", "sqlite"]


def test_the_callbacks_stay_first_and_tryfirst_holds_within_the_declarations():
    class EarlyReports(Declaring):
        @hookimpl(tryfirst=True)
        def started(self, runtime):
            return self._run("started")

    harness = LifecycleHarness()
    harness.register(Declaring("x"), name="x")
    harness.register(Declaring("sqlite"), name="sqlite")
    harness.register(EarlyReports("reports", requires=["sqlite"]), name="reports")
    harness.register(EarlyReports("free"), name="free")
    with harness.isolated():
        SystemCallbacks.on_started(lambda: None)
        assert harness.run() == 0
    started = [call.plugin for call in harness.calls_to("started")]
    assert started == ["free", "SystemCallbacks", "x", "sqlite", "reports"]
    terminated = [call.plugin for call in harness.calls_to("terminated")]
    assert terminated == ["reports", "sqlite", "x", "free"]  # the exact reverse


def test_a_plugin_whose_requirement_failed_to_start_is_never_started():
    harness = LifecycleHarness()
    harness.register(Declaring("reports", requires=["sqlite"]), name="reports")
    harness.register(Declaring("sqlite", scripts={"started": Script("raise")}), name="sqlite")
    harness.register(Declaring("other"), name="other")
    with harness.isolated():
        assert harness.run() == 1
    assert harness.trace == [
        "sqlite.initialize",
        "reports.initialize",
        "other.initialize",
        "sqlite.started raised ScriptError",
    ]


# -- random plugin graphs, random failures -------------------------------------------------

scripts = st.builds(Script, outcome=st.sampled_from(["ok", "ok", "ok", "raise", "fatal"]))
marks = st.sampled_from([{}, {}, {"tryfirst": True}, {"trylast": True}])


def with_marks(on_started: dict[str, bool], on_initialize: dict[str, bool]) -> type[Declaring]:
    """A Declaring class whose `started` and `initialize` carry these marks."""

    class Marked(Declaring):
        @hookimpl(**on_initialize)
        def initialize(self, runtime):
            return self._run("initialize")

        @hookimpl(**on_started)
        def started(self, runtime):
            return self._run("started")

    return Marked


@st.composite
def plugin_graphs(draw: st.DrawFn) -> list[Declaring]:
    """Up to 6 plugins, each requiring and coming after plugins before it in a hidden
    order (so never a cycle), and after absent ones, with random failures and marks."""
    count = draw(st.integers(1, 6))
    names = [f"p{i}" for i in range(count)]
    hidden = draw(st.permutations(names))
    plugins = []
    for name in names:
        earlier = list(hidden[: hidden.index(name)])
        requires = draw(st.lists(st.sampled_from(earlier), max_size=2)) if earlier else []
        after = draw(st.lists(st.sampled_from([*earlier, "absent"]), max_size=2))
        cls = with_marks(draw(marks), draw(marks))
        failures = draw(st.dictionaries(st.sampled_from(HOOKS), scripts, max_size=2))
        plugins.append(cls(name, requires=requires or None, after=after or None, scripts=failures))
    return plugins


def runs_of(trace: list[str], hook: str) -> list[tuple[str, bool]]:
    """(plugin, returned) for each call of ``hook``, in order."""
    calls = []
    for entry in trace:
        name, _, rest = entry.partition(".")
        if rest.startswith(hook):
            calls.append((name, "raised" not in rest))
    return calls


@settings(max_examples=120)
@given(plugins=plugin_graphs(), reloads=st.integers(0, 2))
def test_random_graphs_start_and_stop_in_the_declared_order(plugins, reloads):
    harness = LifecycleHarness()
    for plugin in plugins:
        harness.register(plugin, name=plugin.name)
    with harness.isolated():
        harness.run(*["reload"] * reloads)
    check_lifecycle_invariants(harness)
    trace = harness.trace
    names = {plugin.name for plugin in plugins}
    for plugin in plugins:
        needs = [n for n in [*(plugin.requires or ()), *(plugin.after or ())] if n in names]
        for hook in ("initialize", "started"):
            calls = runs_of(trace, hook)
            if (plugin.name, True) in calls or (plugin.name, False) in calls:
                called = [name for name, _ in calls]
                at = called.index(plugin.name)
                # Everything it needs took its turn before it, and returned: a plugin
                # whose requirement failed to start is never started.
                for need in needs:
                    assert (need, True) in calls[:at], (plugin.name, hook, need, trace)
        terminated = [name for name, _ in runs_of(trace, "terminated")]
        if plugin.name in terminated:
            for need in needs:
                # Terminated before what it needs, which had started, so terminates too.
                assert need in terminated[terminated.index(plugin.name) + 1 :], trace
        reloaded = [name for name, _ in runs_of(trace, "reload")]
        previous = -1
        for position, name in enumerate(reloaded):
            if name == plugin.name:
                for need in needs:  # in every round, what it needs reloads before it
                    assert need in reloaded[previous + 1 : position], trace
                previous = position


# -- the command ---------------------------------------------------------------------------

REPORTS = """
    from oversip_hooks import get_logger, hookimpl

    requires = ["store"]
    after = ["cache"]
    log = get_logger("reports")

    @hookimpl
    def started():
        log.log_system_info("reports started")

    @hookimpl
    def terminated():
        log.log_system_info("reports terminated")
"""
STORE = """
    from oversip_hooks import get_logger, hookimpl

    log = get_logger("store")

    @hookimpl
    def started():
        log.log_system_info("store started")

    @hookimpl
    def terminated():
        log.log_system_info("store terminated")
"""
SERVER = """
    def started(runtime):
        runtime.stop()
"""


async def test_the_command_lists_declarations_and_runs_in_their_order(tmp_path: Path) -> None:
    write(tmp_path, {"reports.py": REPORTS, "store.py": STORE, "server.py": SERVER})
    args = ["server.py", "--plugin", "reports", "--plugin", "store"]

    listed = await command(tmp_path, "plugins", *args, "--json")
    assert listed.status == 0, listed.err
    listing = json.loads(listed.out)
    assert [(p["name"], p["requires"], p["after"]) for p in listing["plugins"]] == [
        ("reports", ["store"], ["cache"]),
        ("store", [], []),
        ("server", [], []),
    ]
    assert listing["hooks"]["started"] == ["store", "reports", "server"]
    assert listing["hooks"]["terminated"] == ["reports", "store"]

    text = await command(tmp_path, "plugins", *args)
    assert f"  reports  --plugin     reports ({tmp_path / 'reports.py'}); requires store; " in (
        text.out
    )
    assert "after cache\n" in text.out

    ran = await command(tmp_path, "run", *args)
    assert ran.status == 0, ran.err
    said = [
        line.partition("INFO: ")[2]
        for line in ran.err
        if "> reports " in line or "> store " in line
    ]
    assert said == [
        "<store> store started",
        "<reports> reports started",
        "<reports> reports terminated",
        "<store> store terminated",
    ]


@pytest.mark.parametrize("subcommand", ["check", "run", "plugins"])
async def test_the_command_refuses_a_missing_requirement_and_a_cycle(
    tmp_path: Path, subcommand: str
) -> None:
    write(
        tmp_path,
        {
            "reports.py": REPORTS,
            "a.py": "requires = ['b']\n",
            "b.py": "after = ('a',)\n",
            "server.py": SERVER,
        },
    )
    args = ["server.py", "--plugin", "reports", "--plugin", "a", "--plugin", "b"]
    finished = await command(tmp_path, subcommand, *args)
    assert finished.status == 2
    assert finished.out == ""
    assert finished.err == [
        "oversip-hooks: error: plugin 'reports' requires 'store', which is not loaded",
        "oversip-hooks: error: plugins 'a' -> 'b' -> 'a' form a cycle: each requires, or "
        "comes after, the next",
    ]


async def test_the_command_refuses_a_malformed_declaration_once(tmp_path: Path) -> None:
    write(tmp_path, {"server.py": "requires = 'sqlite'\n\ndef started(runtime):\n    pass\n"})
    finished = await command(tmp_path, "check", "server.py")
    assert finished.status == 2
    assert finished.err == [
        "oversip-hooks: error: plugin 'server': 'requires' must be a list or tuple of plugin "
        "names, not str (write requires = ['sqlite'])"
    ]
