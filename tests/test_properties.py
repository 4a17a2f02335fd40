"""Property-based tests: random plugin sets, with random sync/async hooks that succeed,
raise or call fatal in random phases, driven by random lifecycle events."""

from __future__ import annotations

import itertools
import signal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from oversip_hooks.testing import LifecycleHarness, check_lifecycle_invariants
from oversip_hooks.testing.hypothesis import LifecycleMachine

from .scripted import HOOKS, Script, ScriptedPlugin

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
STOPS = ("stop", *STOP_SIGNALS)
scripts = st.builds(
    Script,
    outcome=st.sampled_from(["ok", "ok", "ok", "raise", "fatal"]),
    is_async=st.booleans(),
)
plugin_sets = st.lists(
    st.dictionaries(st.sampled_from(HOOKS), scripts), min_size=1, max_size=5
).map(lambda all_scripts: [ScriptedPlugin(f"p{i}", s) for i, s in enumerate(all_scripts)])
events = st.lists(st.sampled_from(["reload", signal.SIGHUP, *STOPS]), max_size=6)


def expected_run(plugins: list[ScriptedPlugin], events: list[Any]) -> tuple[list[str], int]:
    """The trace and exit status that README's rules prescribe, worked out by hand."""
    trace: list[str] = []
    failed = False

    def call(plugin: ScriptedPlugin, hook: str, suffix: str = "") -> str:
        outcome = plugin.scripts.get(hook, Script()).outcome
        raised = {"ok": "", "raise": " raised ScriptError", "fatal": " raised FatalError"}
        trace.append(f"{plugin.name}.{hook}{suffix}{raised[outcome]}")
        return outcome

    for plugin in plugins:  # rule 2: the first failure in initialize is fatal
        if call(plugin, "initialize") != "ok":
            failed = True
            break
    started: list[ScriptedPlugin] = []
    if not failed:
        for plugin in plugins:
            if call(plugin, "started") != "ok":
                failed = True
                break
            started.append(plugin)
    abandoned = False
    if not failed:
        for index, event in enumerate(events):
            if event in STOPS:
                # Rule 7: a second stop signal abandons the shutdown. A reload after the
                # stop waits for the end of the run, so signals after it come too late.
                in_time = itertools.takewhile(lambda e: e in STOPS, events[index:])
                abandoned = sum(e in STOP_SIGNALS for e in in_time) >= 2
                break
            for plugin in plugins:  # rule 3: only fatal is fatal in reload
                if call(plugin, "reload") == "fatal":
                    failed = True
                    break
            if failed:
                break
    if abandoned:
        return trace, 1
    status = 1 if failed else 0
    for plugin in reversed(started):  # rule 4
        if call(plugin, "terminated", f"(error={failed})") != "ok":
            status = 1
    return trace, status


@given(plugins=plugin_sets, events=events)
def test_random_plugins_follow_the_rules(plugins, events):
    harness = LifecycleHarness()
    for plugin in plugins:
        harness.register(plugin, name=plugin.name)
    with harness.isolated():
        status = harness.run(*events)
    expected_trace, expected_status = expected_run(plugins, events)
    assert harness.trace == expected_trace
    assert status == expected_status
    check_lifecycle_invariants(harness)


class RandomFailures(LifecycleMachine):
    """The framework's invariants hold for plugins whose hooks fail at random."""

    def make_plugins(self) -> list[ScriptedPlugin]:
        self.plugins = [ScriptedPlugin("first"), ScriptedPlugin("second")]
        return self.plugins

    def configure(self, data: st.DataObject) -> None:
        for plugin in self.plugins:
            plugin.scripts.update(data.draw(st.dictionaries(st.sampled_from(HOOKS), scripts)))


def test_the_state_machine_finds_no_broken_invariant():
    run_state_machine_as_test(
        RandomFailures, settings=settings(max_examples=60, stateful_step_count=8)
    )
