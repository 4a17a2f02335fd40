"""The public names of the package, and the errors they give for bad input."""

from __future__ import annotations

import pytest
import trio

import oversip_hooks
from oversip_hooks import (
    FatalError,
    Launcher,
    M,
    Runtime,
    fatal,
    get_plugin_manager,
    hookimpl,
    modules,
)


def test_fatal_raises_a_fatal_error_that_except_exception_does_not_catch():
    assert not issubclass(FatalError, Exception)
    with pytest.raises(FatalError) as info:
        fatal("invalid module settings, exiting")
    assert info.value.message == "invalid module settings, exiting"
    assert info.value.error is None


def test_fatal_with_an_exception_keeps_it():
    error = ValueError("size must be positive")
    with pytest.raises(FatalError) as info:
        Launcher.fatal(error)
    assert info.value.message == "size must be positive (ValueError)"
    assert info.value.error is error
    assert info.value.__cause__ is error


def test_fatal_refuses_other_types():
    with pytest.raises(TypeError, match="fatal\\(\\) takes a str or an exception, not int"):
        fatal(3)  # type: ignore[arg-type]


def test_the_plugin_manager_has_the_four_hooks():
    pm = get_plugin_manager()
    assert pm.project_name == "oversip_hooks"
    for hook in ("initialize", "started", "reload", "terminated"):
        assert getattr(pm.hook, hook).has_spec()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"startup_timeout": 0}, ValueError, "startup_timeout must be a positive number"),
        ({"shutdown_timeout": -1.5}, ValueError, "shutdown_timeout must be a positive number"),
        ({"startup_timeout": float("nan")}, ValueError, "startup_timeout must be a positive"),
        ({"shutdown_timeout": "30"}, TypeError, "shutdown_timeout must be a number of seconds"),
        ({"startup_timeout": True}, TypeError, "startup_timeout must be a number of seconds"),
        ({"pm": object()}, TypeError, "pm must be a pluggy.PluginManager, not object"),
    ],
)
def test_runtime_refuses_bad_options(options, error, message):
    with pytest.raises(error, match=message):
        Runtime(**options)


def test_runtime_refuses_a_plugin_manager_without_our_specs():
    import pluggy

    with pytest.raises(ValueError, match="no oversip_hooks hook specifications"):
        Runtime(pluggy.PluginManager("oversip_hooks"))


async def test_a_runtime_runs_once():
    runtime = Runtime(handle_signals=False)
    runtime.stop()
    assert await runtime.run() == 0
    with pytest.raises(RuntimeError, match="a Runtime runs once"):
        await runtime.run()


async def test_a_stop_requested_before_run_calls_nothing(lifecycle):
    class Plugin:
        called = False

        @hookimpl
        def initialize(self) -> None:
            Plugin.called = True

    lifecycle.register(Plugin())
    runtime = Runtime(lifecycle.pm, handle_signals=False, callbacks=lifecycle.callbacks)
    runtime.stop()
    assert await runtime.run() == 0
    assert Plugin.called is False


async def test_services_need_a_running_runtime():
    async def service() -> None: ...

    with pytest.raises(RuntimeError, match="only be started while the runtime is running"):
        Runtime().start_soon(service)


async def test_stop_and_reload_are_safe_from_other_threads(lifecycle):
    class Threaded:
        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            runtime.start_soon(trio.to_thread.run_sync, runtime.reload)

        @hookimpl
        async def reload(self, runtime: Runtime) -> None:
            await trio.to_thread.run_sync(runtime.stop)

    lifecycle.register(Threaded(), name="threaded")
    async with lifecycle.running():
        assert await lifecycle.wait_stopped() == 0
    assert lifecycle.trace == ["threaded.started", "threaded.reload"]


async def test_modules_are_reachable_by_name_while_the_runtime_runs(lifecycle):
    class SQLite:
        def pool(self, name: str) -> str:
            return f"pool {name}"

        @hookimpl
        def initialize(self) -> None:
            self.seen = (M.sqlite.pool("main"), "sqlite" in modules, list(modules))

    plugin = SQLite()
    lifecycle.register(plugin, name="sqlite")
    await lifecycle.play()
    assert plugin.seen == ("pool main", True, ["sqlite"])


def test_modules_outside_a_run_say_why():
    with pytest.raises(AttributeError, match="no module named 'sqlite': no runtime is running"):
        M.sqlite  # noqa: B018


async def test_an_unknown_module_lists_the_loaded_ones(lifecycle):
    class Plugin:
        @hookimpl
        def initialize(self) -> None:
            try:
                M.mysql  # noqa: B018
            except AttributeError as exc:
                self.error = str(exc)

    plugin = Plugin()
    lifecycle.register(plugin, name="sqlite")
    await lifecycle.play()
    assert plugin.error == "no module named 'mysql' is loaded; loaded: sqlite"


def test_the_package_exports_exactly_its_public_api():
    assert sorted(oversip_hooks.__all__) == sorted(
        [
            "LEVELS", "CallbackRegistry", "ExtensionHook", "FatalError", "HookCallEnded",
            "HookCallStarted", "HookOutcome", "Launcher", "Logger", "LoggerMisuse",
            "LoopBlocked", "M", "Runtime", "RuntimeState", "ShutdownOverran", "StateChanged",
            "SystemCallbacks", "add_console_sink", "fatal", "get_logger",
            "get_plugin_manager", "hookimpl", "hookspec", "modules", "run",
        ]
    )  # fmt: skip
    for name in oversip_hooks.__all__:
        assert getattr(oversip_hooks, name) is not None
