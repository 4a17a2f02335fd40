"""Extension hooks: declared by a plugin, implemented by any, called through
``runtime.hooks``; one calling path with the lifecycle hooks."""

from __future__ import annotations

import time
import types
from typing import ClassVar

import pluggy
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from oversip_hooks import (
    FatalError,
    HookCallEnded,
    HookOutcome,
    Runtime,
    fatal,
    get_plugin_manager,
    hookimpl,
    hookspec,
)
from oversip_hooks.testing import LifecycleHarness


class StatusHooks:
    @hookspec
    def status_report(self, runtime: Runtime) -> str | None:
        """None when healthy, else why not."""

    @hookspec(firstresult=True)
    def route(self, path: str) -> str | None:
        """The handler's name for ``path``."""


def declaring_module(hooks: type = StatusHooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(extension_hooks=hooks)


class Healthy:
    def __init__(self, answer: str | None = None) -> None:
        self.answer = answer
        self.calls = 0

    @hookimpl
    def status_report(self) -> str | None:
        self.calls += 1
        return self.answer


class AsyncHealthy(Healthy):
    @hookimpl
    async def status_report(self) -> str | None:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        return self.answer


# -- declaring --------------------------------------------------------------------------


@pytest.mark.parametrize("declarer_first", [True, False])
async def test_implementations_are_checked_whatever_the_registration_order(
    lifecycle, declarer_first
):
    class WrongArgument:
        @hookimpl
        def status_report(self, verbose: bool) -> None: ...

    plugins = [("health", declaring_module()), ("db", WrongArgument())]
    for name, plugin in plugins if declarer_first else plugins[::-1]:
        lifecycle.register(plugin, name=name)
    with pytest.raises(pluggy.PluginValidationError, match=r"\{'verbose'\} are declared"):
        await lifecycle.play()
    assert lifecycle.trace == []


@pytest.mark.parametrize("declarer_first", [True, False])
async def test_an_extension_hook_is_called_whatever_the_registration_order(
    lifecycle, declarer_first
):
    plugins = [("health", declaring_module()), ("db", Healthy("disk full"))]
    for name, plugin in plugins if declarer_first else plugins[::-1]:
        lifecycle.register(plugin, name=name)
    async with lifecycle.running() as runtime:
        assert await runtime.hooks.status_report() == ["disk full"]


async def test_a_misspelt_extension_hook_is_refused_with_a_did_you_mean(lifecycle):
    class Typo:
        @hookimpl
        def status_reprot(self) -> None: ...

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Typo(), name="typo")
    with pytest.raises(pluggy.PluginValidationError) as info:
        await lifecycle.play()
    assert "unknown hook 'status_reprot'; did you mean 'status_report'?" in str(info.value)
    assert (
        "(the hooks are initialize, lifespan, started, reload, terminated, route, status_report)"
        in str(info.value)
    )


async def test_a_hook_of_a_module_that_is_not_installed_is_refused_unless_optional(lifecycle):
    class Required:
        @hookimpl
        def mysql_query_done(self) -> None: ...

    class Optional:
        called = False

        @hookimpl(optionalhook=True)
        def mysql_query_done(self) -> None:
            Optional.called = True

    lifecycle.register(Optional(), name="optional")
    assert await lifecycle.play() == 0  # accepted, and there is no one to call it
    assert Optional.called is False

    other = LifecycleHarness(Required())
    with other.isolated(), pytest.raises(pluggy.PluginValidationError) as info:
        await other.play()
    assert "unknown hook 'mysql_query_done'" in str(info.value)
    assert "@hookimpl(optionalhook=True)" in str(info.value)


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        (
            type("Lifecycle", (), {"started": hookspec(lambda self, runtime: None)}),
            "declares already",
        ),
        (
            type("Historic", (), {"route": hookspec(historic=True)(lambda self, path: None)}),
            "historic",
        ),
        (type("Empty", (), {"route": lambda self, path: None}), "has no function marked @hookspec"),
    ],
)
async def test_a_declaration_that_cannot_work_is_refused(lifecycle, hooks, message):
    lifecycle.register(declaring_module(hooks), name="bad")
    with pytest.raises(pluggy.PluginValidationError, match=message):
        await lifecycle.play()


async def test_two_plugins_cannot_declare_one_hook(lifecycle):
    class Again:
        @hookspec
        def status_report(self, runtime: Runtime) -> None: ...

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(declaring_module(Again), name="again")
    with pytest.raises(pluggy.PluginValidationError) as info:
        await lifecycle.play()
    assert "plugin 'again' declares hook 'status_report', which 'health' declares already" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("impl", "message"),
    [
        (hookimpl(hookwrapper=True)(lambda: (yield)), r"hookwrapper=True, pluggy's old style"),
        (hookimpl(wrapper=True)(lambda: None), "not a generator function"),
        (hookimpl(lambda: (yield)), r"or mark it @hookimpl\(wrapper=True\)"),
    ],
)
async def test_what_cannot_be_called_as_written_is_refused(lifecycle, impl, message):
    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(types.SimpleNamespace(status_report=impl), name="bad")
    with pytest.raises(pluggy.PluginValidationError, match=message):
        await lifecycle.play()


async def test_lifecycle_hooks_still_refuse_wrappers(lifecycle):
    class Wraps:
        @hookimpl(wrapper=True)
        def started(self):  # type: ignore[no-untyped-def]
            return (yield)

    lifecycle.register(Wraps(), name="wraps")
    with pytest.raises(pluggy.PluginValidationError, match="wrappers are not supported"):
        await lifecycle.play()


def test_hook_order_and_declarers_are_known_before_the_run():
    from oversip_hooks._manager import declared_hooks

    pm = get_plugin_manager()
    pm.register(Healthy(), name="late")
    pm.register(declaring_module(), name="health")

    class First(Healthy):
        @hookimpl(tryfirst=True)
        def status_report(self) -> None: ...

    pm.register(First(), name="first")
    assert Runtime(pm).hook_order("status_report") == ["first", "late"]
    assert declared_hooks(pm) == {
        "health_check": "oversip_hooks",  # the probe hooks, always declared
        "metrics_collectors": "oversip_hooks",
        "route": "health",
        "status_report": "health",
    }
    with pytest.raises(ValueError, match="no hook named 'helth'"):
        Runtime(pm).hook_order("helth")


# -- calling ----------------------------------------------------------------------------


async def test_sync_and_async_implementations_run_in_the_runtime_order(lifecycle):
    order: list[str] = []

    def plugin(name: str, *, is_async: bool, **marks: object) -> object:
        if is_async:

            async def status_report() -> str:
                await trio.lowlevel.checkpoint()
                order.append(name)
                return name
        else:

            def status_report() -> str:
                order.append(name)
                return name

        module = types.SimpleNamespace(status_report=hookimpl(**marks)(status_report))
        return module

    lifecycle.register(plugin("db", is_async=True, trylast=True), name="db")
    lifecycle.register(plugin("cache", is_async=False), name="cache")
    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(plugin("web", is_async=True, tryfirst=True), name="web")
    lifecycle.register(plugin("queue", is_async=False), name="queue")
    web_after_queue = types.SimpleNamespace(
        requires=["queue"], status_report=hookimpl(lambda: order.append("late") or "late")
    )
    lifecycle.register(web_after_queue, name="late")
    async with lifecycle.running() as runtime:
        results = await runtime.hooks.status_report()
        assert runtime.hook_order("status_report") == ["web", "cache", "queue", "late", "db"]
    assert results == order == ["web", "cache", "queue", "late", "db"]


async def test_firstresult_returns_the_first_answer_and_calls_no_more(lifecycle):
    class Route:
        def __init__(self, answer: str | None) -> None:
            self.answer, self.called = answer, False

        @hookimpl
        async def route(self, path: str) -> str | None:
            self.called = True
            return self.answer if path == "/x" else None

    silent, answering, after = Route(None), Route("x-handler"), Route("other")
    lifecycle.register(declaring_module(), name="health")
    for name, plugin in [("silent", silent), ("answering", answering), ("after", after)]:
        lifecycle.register(plugin, name=name)
    async with lifecycle.running() as runtime:
        assert await runtime.hooks.route(path="/x") == "x-handler"
        assert after.called is False
        assert await runtime.hooks.route(path="/none") is None
        assert after.called is True


async def test_the_first_error_goes_to_the_caller_naming_its_plugin(lifecycle):
    class Broken:
        @hookimpl
        async def status_report(self) -> None:
            raise ConnectionError("pool closed")

    later = Healthy()
    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Broken(), name="db")
    lifecycle.register(later, name="later")
    async with lifecycle.running() as runtime:
        with pytest.raises(ConnectionError, match="pool closed") as info:
            await runtime.hooks.status_report()
    assert "raised by status_report of plugin 'db'" in info.value.__notes__
    assert later.calls == 0
    assert lifecycle.exit_status == 0  # the caller's to handle, not the runtime's


async def test_call_each_runs_every_implementation_and_names_each_error(lifecycle):
    class Broken:
        @hookimpl
        def status_report(self) -> None:
            raise ConnectionError("pool closed")

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Broken(), name="db")
    lifecycle.register(AsyncHealthy("slow disk"), name="disk")
    lifecycle.register(Healthy(), name="cache")
    async with lifecycle.running() as runtime:
        outcomes = await runtime.hooks.status_report.call_each()
    assert [(o.plugin, o.value, type(o.error).__name__) for o in outcomes] == [
        ("db", None, "ConnectionError"),
        ("disk", "slow disk", "NoneType"),
        ("cache", None, "NoneType"),
    ]
    assert all(isinstance(o, HookOutcome) and o.seconds >= 0 for o in outcomes)


def test_concurrent_implementations_share_one_nursery_and_a_timeout_names_the_silent(
    make_lifecycle,
):
    ping, pong = trio.Event(), trio.Event()
    tasks: list[str] = []

    class Ping:
        @hookimpl
        async def status_report(self) -> str:
            tasks.append(trio.lowlevel.current_task().name)
            ping.set()
            await pong.wait()  # answered only if Pong runs at the same time
            return "ping"

    class Pong:
        @hookimpl
        async def status_report(self) -> str:
            await ping.wait()
            pong.set()
            return "pong"

    class Hung:
        @hookimpl
        async def status_report(self) -> None:
            await trio.sleep_forever()

    lifecycle = make_lifecycle()
    lifecycle.register(declaring_module(), name="health")
    for name, plugin in [("ping", Ping()), ("hung", Hung()), ("pong", Pong())]:
        lifecycle.register(plugin, name=name)
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def scenario() -> list[HookOutcome]:
        async with lifecycle.running() as runtime:
            begun = trio.current_time()
            outcomes = await runtime.hooks.status_report.call_each(concurrently=True, timeout=2)
            assert trio.current_time() - begun == pytest.approx(2)
            return outcomes

    outcomes = trio.run(scenario, clock=clock)
    assert [(o.plugin, o.value) for o in outcomes] == [
        ("ping", "ping"),
        ("hung", None),
        ("pong", "pong"),
    ]
    assert isinstance(outcomes[1].error, TimeoutError)
    assert "status_report of plugin 'hung' did not answer within the call's timeout of 2 s" in str(
        outcomes[1].error
    )
    assert "hung.status_report cancelled" in lifecycle.trace
    assert tasks == ["status_report of 'ping'"]  # what trio's debugging tools show


def test_a_sequential_timeout_names_the_one_that_hung_and_those_never_called(
    make_lifecycle,
):
    class Hung:
        @hookimpl
        async def status_report(self) -> None:
            await trio.sleep_forever()

    lifecycle = make_lifecycle()
    never = Healthy()
    lifecycle.register(declaring_module(), name="health")
    for name, plugin in [("ok", Healthy()), ("hung", Hung()), ("never", never)]:
        lifecycle.register(plugin, name=name)

    async def scenario() -> list[HookOutcome]:
        async with lifecycle.running() as runtime:
            return await runtime.hooks.status_report.call_each(timeout=1)

    outcomes = trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [o.plugin for o in outcomes] == ["ok", "hung", "never"]
    assert outcomes[0].error is None
    assert "'hung' did not answer" in str(outcomes[1].error)
    assert "'never' was not called" in str(outcomes[2].error)
    assert never.calls == 0


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "1", True])
async def test_a_bad_timeout_is_refused(lifecycle, timeout):  # noqa: ASYNC109
    lifecycle.register(declaring_module(), name="health")
    async with lifecycle.running() as runtime:
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            await runtime.hooks.status_report.call_each(timeout=timeout)


async def test_wrong_arguments_and_unknown_hooks_are_named(lifecycle):
    lifecycle.register(declaring_module(), name="health")
    async with lifecycle.running() as runtime:
        with pytest.raises(TypeError, match="hook 'route' takes path; missing: path"):
            await runtime.hooks.route()
        with pytest.raises(TypeError, match="not in its specification: verbose"):
            await runtime.hooks.route(path="/", verbose=True)
        with pytest.raises(AttributeError, match="did you mean 'status_report'"):
            runtime.hooks.statusreport  # noqa: B018
        with pytest.raises(AttributeError, match="lifecycle hook, which only the runtime calls"):
            runtime.hooks.reload  # noqa: B018


# -- wrappers ---------------------------------------------------------------------------


async def test_sync_and_async_wrappers_wrap_the_call_outermost_first(lifecycle):
    seen: list[str] = []

    class Outer:
        @hookimpl(wrapper=True, tryfirst=True)
        def status_report(self):  # type: ignore[no-untyped-def]
            seen.append("outer before")
            results = yield
            seen.append(f"outer after {results}")
            return [*results, "outer"]

    class Inner:
        @hookimpl(wrapper=True)
        async def status_report(self):  # type: ignore[no-untyped-def]
            await trio.lowlevel.checkpoint()
            seen.append("inner before")
            results = yield
            seen.append(f"inner after {results}")
            yield [*results, "inner"]  # an async generator cannot return: it yields again

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Inner(), name="inner")
    lifecycle.register(Healthy("db down"), name="db")
    lifecycle.register(Outer(), name="outer")
    async with lifecycle.running() as runtime:
        assert await runtime.hooks.status_report() == ["db down", "inner", "outer"]
    assert seen == [
        "outer before",
        "inner before",
        "inner after ['db down']",
        "outer after ['db down', 'inner']",
    ]


async def test_a_wrapper_sees_the_error_and_may_turn_it_into_a_result(lifecycle):
    class Broken:
        @hookimpl
        def status_report(self) -> None:
            raise ConnectionError("pool closed")

    class Forgiving:
        @hookimpl(wrapper=True)
        async def status_report(self):  # type: ignore[no-untyped-def]
            try:
                yield
            except ConnectionError as exc:
                yield [f"unhealthy: {exc}"]

    class PassesOn:
        @hookimpl(wrapper=True)
        def status_report(self):  # type: ignore[no-untyped-def]
            return (yield)

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Forgiving(), name="forgiving")
    lifecycle.register(PassesOn(), name="passes")
    lifecycle.register(Broken(), name="db")
    async with lifecycle.running() as runtime:
        assert await runtime.hooks.status_report() == ["unhealthy: pool closed"]
        outcomes = await runtime.hooks.status_report.call_each()  # the wrappers see outcomes
        assert [o.plugin for o in outcomes] == ["db"]


async def test_a_wrapper_that_does_not_yield_once_is_an_error_of_its_plugin(lifecycle):
    class Twice:
        @hookimpl(wrapper=True)
        def status_report(self):  # type: ignore[no-untyped-def]
            yield
            yield

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Twice(), name="twice")
    async with lifecycle.running() as runtime:
        with pytest.raises(
            RuntimeError, match="wrapper status_report of plugin 'twice' yielded more"
        ):
            await runtime.hooks.status_report()


# -- from sync code and threads ---------------------------------------------------------


async def test_sync_code_calls_sync_implementations_and_is_told_what_to_do_for_async(
    lifecycle,
):
    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Healthy("ok"), name="db")
    async with lifecycle.running() as runtime:
        assert runtime.hooks.status_report.call_sync() == ["ok"]
    second = LifecycleHarness(declaring_module(), AsyncHealthy())
    with second.isolated():
        async with second.running() as runtime:
            with pytest.raises(TypeError) as info:
                runtime.hooks.status_report.call_sync()
    assert "is async, which call_sync cannot await" in str(info.value)
    assert "call_from_thread" in str(info.value)


async def test_a_worker_thread_calls_through_the_runtime_loop(lifecycle):
    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(AsyncHealthy("from the loop"), name="db")
    async with lifecycle.running() as runtime:
        results = await trio.to_thread.run_sync(runtime.hooks.status_report.call_from_thread)
    assert results == ["from the loop"]
    with pytest.raises(RuntimeError, match="the runtime is not running"):
        runtime.hooks.status_report.call_from_thread()


# -- what belongs to the implementing plugin --------------------------------------------


async def test_fatal_in_an_implementation_is_its_plugin_s_and_stops_the_runtime(lifecycle):
    class Caller:
        outcome: ClassVar[list[HookOutcome]] = []

        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            Caller.outcome = await runtime.hooks.status_report.call_each()

        @hookimpl
        def terminated(self) -> None: ...

    class Dying:
        log_id = "dying-db"

        @hookimpl
        def status_report(self) -> None:
            fatal("the database file is gone")

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Caller(), name="caller")
    lifecycle.register(Dying(), name="dying")
    assert await lifecycle.play() == 1
    crit = [line for line in lifecycle.lines if line.startswith("CRIT")]
    assert crit == [
        "CRIT: <dying-db> the database file is gone",
        "CRIT: <runtime> exiting with error status",
    ]
    assert lifecycle.trace[-1] == "caller.terminated(error=True)"
    assert isinstance(Caller.outcome[0].error, FatalError)  # the caller got its outcome


async def test_a_fatal_that_reaches_a_lifecycle_hook_is_reported_once(lifecycle):
    class Caller:
        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            await runtime.hooks.status_report()

    class Dying:
        @hookimpl
        def status_report(self) -> None:
            fatal("gone")

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Caller(), name="caller")
    lifecycle.register(Dying(), name="dying")
    assert await lifecycle.play() == 1
    assert [line for line in lifecycle.lines if "gone" in line and line.startswith("CRIT")] == [
        "CRIT: <dying> gone"
    ]
    assert len(lifecycle.errors) == 1


async def test_services_started_by_an_implementation_belong_to_its_plugin(lifecycle):
    closed: list[str] = []

    class Starter:
        @hookimpl
        def status_report(self, runtime: Runtime) -> None:
            async def watcher() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    closed.append("watcher")

            runtime.start_soon(watcher)

        @hookimpl
        def terminated(self) -> None:
            closed.append("terminated")

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Starter(), name="starter")
    async with lifecycle.running() as runtime:
        await runtime.hooks.status_report()
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.services_running() == {"starter": 1}
    assert closed == ["terminated", "watcher"]  # closed in its plugin's turn, after it


async def test_the_harness_records_extension_calls(lifecycle):
    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Healthy(), name="db")
    async with lifecycle.running() as runtime:
        await runtime.hooks.status_report()
    assert lifecycle.trace == ["db.status_report"]
    assert [str(call) for call in lifecycle.calls_to("status_report")] == ["db.status_report"]
    assert lifecycle.calls_to("status_report", plugin="db")[0].lifecycle is False


# -- seeing what hooks do ---------------------------------------------------------------


async def test_trace_hooks_logs_one_line_per_call(make_lifecycle):
    class Broken:
        @hookimpl
        def status_report(self) -> None:
            raise ConnectionError("pool closed")

    lifecycle = make_lifecycle()
    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Healthy(), name="ok")
    lifecycle.register(Broken(), name="db")
    runtime = Runtime(lifecycle.pm, handle_signals=False, trace_hooks=True)
    lifecycle.watch(runtime)

    class Caller:
        @hookimpl
        async def started(self, runtime: Runtime) -> None:
            await runtime.hooks.status_report.call_each()
            runtime.stop()

    lifecycle.register(Caller(), name="caller")
    assert await runtime.run() == 0
    debug = [line for line in lifecycle.lines if line.startswith("DEBUG: <runtime>")]
    assert any(line.startswith("DEBUG: <runtime> status_report of 'ok' took ") for line in debug)
    assert any(
        line.startswith("DEBUG: <runtime> status_report of 'db' took ")
        and line.endswith("raised ConnectionError('pool closed')")
        for line in debug
    )
    assert any(line.startswith("DEBUG: <runtime> started of 'caller' took ") for line in debug)


async def test_extension_calls_are_not_logged_without_trace_but_lifecycle_calls_are(lifecycle):
    class Db(Healthy):
        @hookimpl
        def started(self) -> None: ...

        @hookimpl
        async def terminated(self) -> None: ...

    lifecycle.register(declaring_module(), name="health")
    lifecycle.register(Db(), name="db")
    async with lifecycle.running() as runtime:
        await runtime.hooks.status_report()
    assert not any("status_report of" in line for line in lifecycle.lines)
    assert any(
        line.startswith("DEBUG: <runtime> started of 'db' took ") for line in lifecycle.lines
    )
    assert any(
        line.startswith("DEBUG: <runtime> terminated of 'db' took ") for line in lifecycle.lines
    )


async def test_a_slow_lifecycle_hook_is_logged_at_notice(lifecycle):
    class Slow:
        @hookimpl
        def started(self, runtime: Runtime) -> None:
            time.sleep(0.05)  # what is under test: a hook that takes long
            runtime.stop()

        @hookimpl
        def terminated(self) -> None: ...

    lifecycle.register(Slow(), name="slow")
    runtime = Runtime(
        lifecycle.pm, handle_signals=False, slow_hook_threshold=0.02, callbacks=lifecycle.callbacks
    )
    ended: list[HookCallEnded] = []
    runtime.add_observer(lambda event: isinstance(event, HookCallEnded) and ended.append(event))
    assert await runtime.run() == 0
    timed = [line for line in lifecycle.lines if " of 'slow' took " in line]
    assert len(timed) == 2
    assert timed[0].startswith("NOTICE: <runtime> started of 'slow' took ")
    assert timed[1].startswith("DEBUG: <runtime> terminated of 'slow' took ")
    assert [(e.hook, e.seconds >= 0.05) for e in ended] == [
        ("started", True),
        ("terminated", False),
    ]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="slow_hook_threshold must be a positive number"):
        Runtime(slow_hook_threshold=0)
    with pytest.raises(ValueError, match="drain must be a number of seconds, 0 or more"):
        Runtime(drain=-1)
    with pytest.raises(TypeError, match="drain must be a number of seconds"):
        Runtime(drain="5")  # type: ignore[arg-type]


# -- a property: order and error collection with random implementations ------------------


implementation = st.fixed_dictionaries(
    {
        "is_async": st.booleans(),
        "mark": st.sampled_from(["tryfirst", "trylast", None]),
        "fails": st.booleans(),
        "answer": st.sampled_from([None, "x"]),
        "takes_runtime": st.booleans(),
    }
)


@given(st.lists(implementation, max_size=8))
def test_order_results_and_errors_follow_the_rules_for_any_implementations(specs):
    """Any mix of sync and async implementations, marks, failures and arguments: called in
    the runtime's order, one after the other or concurrently, each given what it takes and
    running as its own plugin (a service it starts is its plugin's), and the caller is its
    own plugin again after the call, whatever the implementations did."""
    called: list[str] = []
    running: list[Runtime] = []
    plugins: list[tuple[str, object]] = [("health", declaring_module())]
    for index, spec in enumerate(specs):
        name = f"p{index}"

        def behave(name: str = name, spec: dict[str, object] = spec) -> object:
            called.append(name)
            running[0].start_soon(trio.sleep_forever)
            if spec["fails"]:
                raise ValueError(name)
            return spec["answer"]

        if spec["is_async"] and spec["takes_runtime"]:

            async def status_report(runtime, behave=behave) -> object:  # type: ignore[no-untyped-def]
                assert runtime is running[0]
                await trio.lowlevel.checkpoint()
                return behave()
        elif spec["is_async"]:

            async def status_report(behave=behave) -> object:  # type: ignore[no-untyped-def]
                await trio.lowlevel.checkpoint()
                return behave()
        elif spec["takes_runtime"]:

            def status_report(runtime, behave=behave) -> object:  # type: ignore[no-untyped-def]
                assert runtime is running[0]
                return behave()
        else:

            def status_report(behave=behave) -> object:  # type: ignore[no-untyped-def]
                return behave()

        mark = {spec["mark"]: True} if spec["mark"] else {}
        plugins.append((name, types.SimpleNamespace(status_report=hookimpl(**mark)(status_report))))
    first = [f"p{i}" for i, s in enumerate(specs) if s["mark"] == "tryfirst"]
    middle = [f"p{i}" for i, s in enumerate(specs) if s["mark"] is None]
    last = [f"p{i}" for i, s in enumerate(specs) if s["mark"] == "trylast"]
    expected = first + middle + last
    spec_of = {f"p{i}": s for i, s in enumerate(specs)}

    harness = LifecycleHarness(dict(plugins))

    def the_caller_starts_a_service_of_its_own(runtime: Runtime, services: dict[str, int]) -> None:
        runtime.start_soon(trio.sleep_forever)
        services["runtime"] = services.get("runtime", 0) + 1
        assert runtime.services_running() == services

    async def scenario() -> None:
        async with harness.running() as runtime:
            running.append(runtime)
            services = {name: 1 for name in expected}
            outcomes = await runtime.hooks.status_report.call_each()
            assert [o.plugin for o in outcomes] == expected == called
            assert runtime.services_running() == services
            the_caller_starts_a_service_of_its_own(runtime, services)
            for outcome in outcomes:
                spec = spec_of[outcome.plugin]
                if spec["fails"]:
                    assert isinstance(outcome.error, ValueError)
                    assert str(outcome.error) == outcome.plugin
                    assert outcome.value is None  # not an async one's coroutine
                else:
                    assert outcome.error is None
                    assert outcome.value == spec["answer"]
            called.clear()
            together = await runtime.hooks.status_report.call_each(concurrently=True)
            assert sorted(called) == sorted(expected)
            assert [(o.plugin, o.value, str(o.error)) for o in together] == [
                (o.plugin, o.value, str(o.error)) for o in outcomes
            ]
            services = {name: count + (name != "runtime") for name, count in services.items()}
            the_caller_starts_a_service_of_its_own(runtime, services)
            called.clear()
            failing = [name for name in expected if spec_of[name]["fails"]]
            if failing:
                with pytest.raises(ValueError, match=r"^p\d") as info:
                    await runtime.hooks.status_report()
                assert str(info.value) == failing[0]
                assert called == expected[: expected.index(failing[0]) + 1]
            else:
                assert await runtime.hooks.status_report() == [
                    spec_of[name]["answer"] for name in expected
                ]
                assert called == expected
            for name in called:
                services[name] += 1
            the_caller_starts_a_service_of_its_own(runtime, services)

    with harness.isolated():
        trio.run(scenario)
