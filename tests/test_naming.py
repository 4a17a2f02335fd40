"""Plugins have the names users give them, everywhere: through `run()`, the harness, the
state machine; and a check that names a plugin no one has fails loudly (issue 10 §3)."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant, run_state_machine_as_test

from oversip_hooks import M, Runtime, hookimpl, run
from oversip_hooks.testing import LifecycleHarness
from oversip_hooks.testing.hypothesis import LifecycleMachine


class Pool:
    def __init__(self) -> None:
        self.open = False

    @hookimpl
    def started(self) -> None:
        self.open = True

    @hookimpl
    def terminated(self) -> None:
        self.open = False


class Looks:
    """Records, from its `started`, the names of the run's plugins and what `M` finds."""

    def __init__(self, *lookups: str) -> None:
        self.lookups = lookups
        self.names: list[str] = []
        self.found: dict[str, object] = {}

    @hookimpl
    def started(self, runtime: Runtime) -> None:
        self.names = [name for name, plugin in runtime.pm.list_name_plugin() if plugin]
        self.found = {name: getattr(M, name, None) for name in self.lookups}


class Stops:
    """Given last, stops the runtime once every `started` has returned."""

    @hookimpl
    def started(self, runtime: Runtime) -> None:
        runtime.stop()


def heartbeat_module() -> types.ModuleType:
    module = types.ModuleType("oversip_mod_heartbeat")

    @hookimpl
    def started() -> None:
        pass

    module.started = started  # type: ignore[attr-defined]
    return module


# -- run() ----------------------------------------------------------------------------------


def test_run_registers_a_mapping_s_plugins_under_their_keys_so_m_finds_them():
    heartbeat = heartbeat_module()
    looks = Looks("heartbeat")
    assert run({"heartbeat": heartbeat, "looks": looks}, Stops(), handle_signals=False) == 0
    assert looks.found == {"heartbeat": heartbeat}
    assert looks.names == ["heartbeat", "looks", "Stops"]


def test_run_keeps_the_order_given_and_readable_names_for_plugins_given_bare():
    heartbeat = heartbeat_module()
    looks = Looks()
    assert run(Pool(), {"heartbeat": heartbeat}, looks, Stops(), handle_signals=False) == 0
    assert looks.names == ["Pool", "heartbeat", "Looks", "Stops"]


def test_run_refuses_a_name_that_is_not_a_string_or_is_taken():
    with pytest.raises(TypeError, match="a plugin's name must be a str, not 1"):
        run({1: Pool()}, Stops(), handle_signals=False)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="pool"):
        run({"pool": Pool()}, {"pool": Pool()}, Stops(), handle_signals=False)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Two entry points of the group `oversip_hooks`, found in an order that is not their
    names' order; the modules they name are on sys.path. Returns the calls' log."""
    calls: list[str] = []
    for module in ("mod_zeta", "mod_alpha"):
        (tmp_path / f"{module}.py").write_text(
            textwrap.dedent(
                f"""
                from oversip_hooks import hookimpl
                CALLS = None

                @hookimpl
                def started():
                    CALLS.append({module!r})
                """
            )
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [
        importlib.metadata.EntryPoint("zeta", "mod_zeta", "oversip_hooks"),
        importlib.metadata.EntryPoint("alpha", "mod_alpha", "oversip_hooks"),
    ]

    def entry_points(**selection: Any) -> list[importlib.metadata.EntryPoint]:
        assert selection == {"group": "oversip_hooks"}
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    for module in ("mod_zeta", "mod_alpha"):
        monkeypatch.setattr(importlib.import_module(module), "CALLS", calls)
    yield calls
    for module in ("mod_zeta", "mod_alpha"):
        sys.modules.pop(module, None)


def test_run_loads_the_installed_entry_points_only_when_asked(installed):
    looks = Looks()
    assert run(looks, Stops(), handle_signals=False) == 0
    assert looks.names == ["Looks", "Stops"]
    assert installed == []


def test_run_loads_entry_points_in_name_order_under_their_names_before_the_plugins(
    installed,
):
    looks = Looks("alpha", "zeta")
    assert run({"looks": looks}, Stops(), entry_points=True, handle_signals=False) == 0
    assert looks.names == ["alpha", "zeta", "looks", "Stops"]
    assert looks.found == {
        "alpha": importlib.import_module("mod_alpha"),
        "zeta": importlib.import_module("mod_zeta"),
    }
    assert installed == ["mod_alpha", "mod_zeta"]


# -- the harness -------------------------------------------------------------------------


def test_the_harness_registers_a_mapping_s_plugins_under_the_names_the_test_gives():
    harness = LifecycleHarness(Pool(), {"pool": Pool(), "heartbeat": heartbeat_module()})
    assert harness.plugin_names == ["Pool", "pool", "heartbeat"]
    with harness.isolated():
        assert harness.run() == 0
    assert [str(call) for call in harness.calls_to("started")] == [
        "Pool.started",
        "pool.started",
        "heartbeat.started",
    ]
    assert [str(call) for call in harness.calls_to("terminated", plugin="pool")] == [
        "pool.terminated(error=False)"
    ]


def test_make_lifecycle_takes_names_too(make_lifecycle):
    harness = make_lifecycle({"pool": Pool()}, shutdown_timeout=1)
    assert harness.plugin_names == ["pool"]


def test_calls_to_a_plugin_no_one_is_named_fails_with_the_names_there_are(lifecycle):
    lifecycle.register(heartbeat_module(), name="heartbeat")
    lifecycle.run()
    with pytest.raises(ValueError, match="no plugin named") as info:
        lifecycle.calls_to("started", plugin="oversip_mod_heartbeat")
    assert str(info.value) == (
        "no plugin named 'oversip_mod_heartbeat' in this harness; its plugins are "
        "'heartbeat', 'SystemCallbacks'"
    )
    assert lifecycle.calls_to("started", plugin="SystemCallbacks") == []
    assert lifecycle.check_plugin_name("heartbeat") == "heartbeat"


def test_calls_to_a_hook_that_does_not_exist_fails(lifecycle):
    with pytest.raises(ValueError, match="no hook named 'terminate'"):
        lifecycle.calls_to("terminate")


# -- the state machine ----------------------------------------------------------------------


class NamedPoolMachine(LifecycleMachine):
    def make_plugins(self) -> dict[str, object]:
        self.pool = Pool()
        return {"pool": self.pool}

    @invariant()
    def closed_once_terminated(self) -> None:
        if self.harness.calls_to("terminated", plugin="pool"):
            assert not self.pool.open


def test_the_machine_registers_its_plugins_under_the_names_make_plugins_gives():
    machine = NamedPoolMachine()
    try:
        assert machine.harness.plugin_names == ["pool", "faults"]
    finally:
        machine.teardown()
    run_state_machine_as_test(NamedPoolMachine, settings=settings(max_examples=5))


class MisnamedPoolMachine(LifecycleMachine):
    """The author's mistake: the invariant names the plugin after its module, while the
    machine registers it as "pool"; it must fail, not pass without ever checking."""

    def make_plugins(self) -> dict[str, object]:
        return {"pool": Pool()}

    @invariant()
    def closed_once_terminated(self) -> None:
        self.harness.calls_to("terminated", plugin="oversip_mod_pool")


def test_an_invariant_that_names_an_unknown_plugin_fails_loudly():
    with pytest.raises(ValueError, match=r"no plugin named 'oversip_mod_pool'.*'pool'"):
        run_state_machine_as_test(MisnamedPoolMachine, settings=settings(max_examples=5))
