"""No silent no-op (issue 9, section 4, and the server-file items of section 5): what
`check` used to pass with "ok" and `run` then ignored, or only `run` refused, is refused
before anything starts, one line with exit status 2; a plugin with no hook is one warning.
The bad-input cases run `main()` in process; what is about a process (a FIFO, /dev/zero,
a KeyboardInterrupt, a run to its end) runs the real command."""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pluggy
import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st
from loguru import logger

from oversip_hooks import Runtime, get_plugin_manager, hookimpl
from oversip_hooks._callbacks import CallbackRegistry, using
from oversip_hooks._cli import main
from oversip_hooks._manager import LIFECYCLE_HOOKS, PROBE_HOOKS, _distance, looks_like
from tests.processes import FAKE_DISTRIBUTION, Datagrams, child_env, command, isolated, write

ERROR = "oversip-hooks: error: "

# An installed distribution with one entry point, found on sys.path, whose module has a hook.
FAKE_WITH_A_HOOK = {
    **FAKE_DISTRIBUTION,
    "fake_mod.py": """
        from oversip_hooks import hookimpl

        @hookimpl
        def started():
            pass
    """,
}

GOOD_SERVER = """
    def started(runtime):
        runtime.stop()
"""


@dataclass
class Finished:
    status: int
    out: str
    err: list[str]


Cli = Callable[..., Finished]


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    """``main([...])`` in process, in ``tmp_path`` (also on sys.path, for --plugin modules
    and entry points), with the installed modules blocked and none of the command's
    variables but those given; sys.modules, sys.path and loguru's sinks are restored."""
    for name in list(os.environ):
        if name.startswith(("OVERSIP_HOOKS_", "NOTIFY_SOCKET", "WATCHDOG_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = set(sys.modules)
    path = list(sys.path)

    def run(*args: str, env: dict[str, str] | None = None) -> Finished:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            status = main(isolated(args))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Finished(status, out, err.splitlines())

    try:
        yield run
    finally:
        logger.remove()
        logger.add(sys.stderr)
        for name in set(sys.modules) - modules:
            del sys.modules[name]
        sys.path[:] = path


def refused(finished: Finished, pattern: str) -> None:
    """``finished`` is exit status 2 and one line that matches ``pattern``."""
    assert finished.status == 2, finished
    assert len(finished.err) == 1, finished.err
    assert re.fullmatch(r"oversip-hooks( check| run)?: error: " + pattern, finished.err[0]), (
        finished.err[0]
    )


# -- the server file ---------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["initialize", "started", "reload", "terminated"])
def test_oversips_hook_names_in_the_server_file_say_which_hook_to_use(
    cli: Cli, tmp_path: Path, hook: str
) -> None:
    write(tmp_path, {"server.py": f"import os\n\ndef on_{hook}():\n    pass\n"})
    refused(
        cli("check", "server.py"),
        rf"server\.py:3: plugin 'server': unknown hook 'on_{hook}': OverSIP's on_{hook} is "
        rf"'{hook}' here; rename it to {hook}",
    )


def test_oversips_hook_names_in_a_module_say_which_hook_to_use(cli: Cli, tmp_path: Path) -> None:
    write(
        tmp_path,
        {"mod.py": "from oversip_hooks import hookimpl\n\n@hookimpl\ndef on_reload():\n    pass\n"},
    )
    refused(
        cli("check", "--plugin", "mod"),
        r".*mod\.py:3: plugin 'mod': unknown hook 'on_reload': OverSIP's on_reload is 'reload' "
        r"here; rename it to reload",
    )


@pytest.mark.parametrize(
    ("name", "hook"),
    [
        ("relaod", "reload"),
        ("reloda", "reload"),
        ("strated", "started"),
        ("intialise", "initialize"),
    ],
)
def test_swapped_letters_in_a_hook_name_are_refused_with_did_you_mean(
    cli: Cli, tmp_path: Path, name: str, hook: str
) -> None:
    write(tmp_path, {"server.py": f"def {name}(runtime):\n    pass\n"})
    refused(
        cli("check", "server.py"),
        rf"server\.py:1: plugin 'server': unknown hook '{name}'; did you mean '{hook}'\? .*",
    )


@st.composite
def misspelt(draw: st.DrawFn) -> tuple[str, str]:
    """A hook's name and that name after a few random edits: letters dropped, added,
    replaced or swapped with their neighbour."""
    hook = draw(st.sampled_from([*LIFECYCLE_HOOKS, *PROBE_HOOKS]))
    letters = list(hook)
    for _ in range(draw(st.integers(0, 5))):
        edit = draw(st.sampled_from(["drop", "add", "replace", "swap"]))
        where = draw(st.integers(0, len(letters)))
        letter = draw(st.sampled_from("abdeilnorst_"))
        if edit == "add":
            letters.insert(where, letter)
        elif edit == "swap" and where + 1 < len(letters):
            letters[where], letters[where + 1] = letters[where + 1], letters[where]
        elif edit in ("drop", "replace") and where < len(letters):
            letters[where : where + 1] = [] if edit == "drop" else [letter]
    return "".join(letters), hook


@given(misspelt())
@example(("staartd", "started"))  # the edges: distances of 0.14 T that difflib calls typos
@example(("initiloizel", "initialize"))
def test_a_typo_is_what_the_edit_distance_or_difflibs_ratio_says(pair: tuple[str, str]) -> None:
    """The rule in looks_like's docstring, computed the long way: skipping difflib when
    the distance alone rules its ratio out changes no answer."""
    name, hook = pair
    distance = _distance(name, hook)
    typo = abs(len(name) - len(hook)) <= 2 and (
        distance <= 1
        or (distance == 2 and min(len(name), len(hook)) >= 9)
        or difflib.SequenceMatcher(None, name, hook).ratio() >= 0.85
    )
    assert looks_like(name, [hook]) == (hook if typo else None)


def test_helpers_named_like_a_hook_with_a_leading_underscore_or_far_enough_still_pass(
    cli: Cli, tmp_path: Path
) -> None:
    write(
        tmp_path,
        {
            "server.py": """
                def _relaod():
                    pass

                def start_pool():
                    pass

                def stop():
                    pass

                def started(runtime):
                    runtime.stop()
            """
        },
    )
    finished = cli("check", "server.py")
    assert (finished.status, finished.out, finished.err) == (
        0,
        "oversip-hooks: ok (plugins: server)\n",
        [],
    )


@pytest.mark.parametrize(
    ("text", "line", "bound_to"),
    [
        pytest.param(
            "import os\nfrom mylib import started\n",
            2,
            r"started\(\) imported from mylib",
            id="imported-function",
        ),
        pytest.param("import os\n\nstarted = 5\n", 3, r"an int \(5\)", id="int"),
        pytest.param(
            "import functools\n\ndef _start(x, runtime):\n    pass\n\n"
            "started = functools.partial(_start, 1)\n",
            6,
            r"a functools\.partial \(.*\)",
            id="partial",
        ),
        pytest.param(
            "class started:\n    def __init__(self, runtime):\n        pass\n",
            1,
            r"the class started",
            id="class",
        ),
        pytest.param("terminated = None\n", 1, r"None", id="none"),
    ],
)
def test_a_hook_name_bound_to_anything_but_a_function_of_the_file_is_refused(
    cli: Cli, tmp_path: Path, text: str, line: int, bound_to: str
) -> None:
    write(tmp_path, {"server.py": text, "mylib.py": "def started(runtime):\n    pass\n"})
    hook = "terminated" if "terminated" in text else "started"
    refused(
        cli("check", "server.py"),
        rf"server\.py:{line}: '{hook}' is bound to {bound_to}, which would not run as the "
        rf"hook '{hook}': in the server file a hook's name is for a function defined there "
        rf"\(def {hook}\(\.\.\.\): \.\.\.\); rename the other",
    )


def test_functions_of_the_file_and_marked_hooks_count_under_a_hooks_name(
    cli: Cli, tmp_path: Path
) -> None:
    write(
        tmp_path,
        {
            "mylib.py": """
                from oversip_hooks import hookimpl

                @hookimpl
                def reload():
                    pass
            """,
            "server.py": """
                from mylib import reload

                async def _start(runtime):
                    runtime.stop()

                started = _start
                initialize = lambda: None
            """,
        },
    )
    finished = cli("plugins", "server.py", "--json")
    assert finished.status == 0, finished.err
    hooks = json.loads(finished.out)["hooks"]
    assert hooks == {
        "initialize": ["server"],
        "lifespan": [],
        "started": ["server"],
        "reload": ["server"],
        "terminated": [],
    }
    assert cli("check", "server.py").status == 0


# -- hooks whose body would never run, or that fail when called ------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("def started(runtime):\n    yield\n", id="generator"),
        pytest.param("async def started(runtime):\n    yield\n", id="async-generator"),
        pytest.param(
            "import contextlib\n\n@contextlib.contextmanager\ndef started():\n    yield\n",
            id="contextmanager",
        ),
    ],
)
def test_a_generator_hook_is_refused(cli: Cli, tmp_path: Path, text: str) -> None:
    write(tmp_path, {"server.py": text})
    refused(
        cli("check", "server.py"),
        r"server\.py:\d: plugin 'server': hook 'started' is a generator \(it contains "
        r"'yield'\), so calling it would never run its body; generators are refused as "
        r"lifecycle hooks: remove the 'yield'",
    )


def test_a_reload_hook_with_yield_is_refused_in_a_module(cli: Cli, tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "mod.py": """
                from oversip_hooks import hookimpl

                @hookimpl
                def reload():
                    yield
            """
        },
    )
    refused(
        cli("check", "--plugin", "mod"),
        r".*mod\.py:3: plugin 'mod': hook 'reload' is a generator .* generators are refused "
        r"as lifecycle hooks: remove the 'yield'",
    )


@pytest.mark.parametrize(
    ("signature", "name"),
    [("*, runtime", "runtime"), ("runtime, *, error", "error"), ("*, colour", "colour")],
)
def test_a_keyword_only_argument_is_refused_by_check(
    cli: Cli, tmp_path: Path, signature: str, name: str
) -> None:
    write(tmp_path, {"server.py": f"def terminated({signature}):\n    pass\n"})
    refused(
        cli("check", "server.py"),
        rf"server\.py:1: plugin 'server': hook 'terminated' takes '{name}' as a keyword-only "
        rf"argument, which the runtime does not pass; take it as a normal parameter, as in "
        rf"def terminated\({name}\): \.\.\.",
    )


def test_a_keyword_only_argument_with_a_default_outside_the_spec_is_fine(
    cli: Cli, tmp_path: Path
) -> None:
    write(tmp_path, {"server.py": "def started(runtime, *, retries=3):\n    runtime.stop()\n"})
    assert cli("check", "server.py").status == 0


class _KeywordOnly:
    @hookimpl
    def started(self, *, runtime: Runtime) -> None:
        runtime.stop()


class _Generator:
    @hookimpl
    def started(self, runtime: Runtime) -> None:
        runtime.stop()

    @hookimpl
    def reload(self) -> Iterator[None]:
        yield


@pytest.mark.parametrize(
    ("plugin", "message"),
    [(_KeywordOnly(), "keyword-only argument"), (_Generator(), "generators are refused")],
)
async def test_the_runtime_refuses_them_too(plugin: object, message: str) -> None:
    pm = get_plugin_manager()
    pm.register(plugin)
    with trio.fail_after(10), pytest.raises(pluggy.PluginValidationError, match=message):
        await Runtime(pm, handle_signals=False).run()


def test_a_hook_implemented_twice_in_one_plugin_is_refused_by_check(
    cli: Cli, tmp_path: Path
) -> None:
    write(
        tmp_path,
        {
            "mod.py": """
                from oversip_hooks import hookimpl

                @hookimpl(specname="started")
                def open_pool():
                    pass

                @hookimpl(specname="started")
                def open_cache():
                    pass
            """
        },
    )
    refused(
        cli("check", "--plugin", "mod"),
        r"plugin 'mod' implements hook 'started' twice \(through specname\); .*",
    )


# -- plugins with no hook, and -p -----------------------------------------------------------


def test_a_module_with_no_hook_is_one_warning_and_check_passes(cli: Cli, tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "nohooks.py": """
                def started():
                    pass

                def terminated():
                    pass
            """,
            "api.py": """
                from oversip_hooks import SystemCallbacks

                @SystemCallbacks.on_started
                def _open():
                    pass
            """,
            "server.py": GOOD_SERVER,
        },
    )
    with using(CallbackRegistry()):
        finished = cli("check", "server.py", "--plugin", "nohooks", "--plugin", "api")
    assert finished.status == 0
    assert finished.out == "oversip-hooks: ok (plugins: nohooks, api, server)\n"
    assert len(finished.err) == 1, finished.err
    assert re.fullmatch(
        r"\S+ \S+ WARN: <runtime> --plugin 'nohooks' has no hook: started\(\), terminated\(\) "
        r"are not marked @hookimpl; it is loaded, and never called",
        finished.err[0],
    ), finished.err[0]


def test_a_module_with_oversips_names_unmarked_is_one_warning_naming_the_hook(
    cli: Cli, tmp_path: Path
) -> None:
    write(tmp_path, {"legacy.py": "def on_started():\n    pass\n", "server.py": GOOD_SERVER})
    finished = cli("check", "server.py", "--plugin", "legacy")
    assert finished.status == 0
    assert [line.split(" WARN: ")[1] for line in finished.err] == [
        "<runtime> --plugin 'legacy' has no hook: on_started() is not marked @hookimpl "
        "(OverSIP's on_started is 'started' here); it is loaded, and never called"
    ]


async def test_a_module_with_no_hook_is_one_warning_on_run(tmp_path: Path) -> None:
    write(tmp_path, {"nohooks.py": "def reload():\n    pass\n", "server.py": GOOD_SERVER})
    finished = await command(tmp_path, "run", "server.py", "--plugin", "nohooks")
    assert finished.status == 0
    warnings = [line for line in finished.err if "WARN" in line]
    assert len(warnings) == 1, finished.err
    assert warnings[0].endswith(
        "WARN: <runtime> --plugin 'nohooks' has no hook: reload() is not marked @hookimpl; "
        "it is loaded, and never called"
    )


def test_blocking_an_entry_point_that_is_not_installed_is_refused(cli: Cli, tmp_path: Path) -> None:
    write(tmp_path, {**FAKE_WITH_A_HOOK, "server.py": GOOD_SERVER})
    refused(
        cli("check", "server.py", "-p", "no:fkae"),
        r"-p no:fkae: no entry point named 'fkae' is installed; did you mean -p no:fake\?",
    )
    refused(
        cli("run", "server.py", "-p", "no:typo"),
        r"-p no:typo: no entry point named 'typo' is installed \(installed: .*fake.*\)",
    )
    # A real one is still blocked.
    finished = cli("plugins", "server.py", "-p", "no:fake", "--json")
    assert [plugin["name"] for plugin in json.loads(finished.out)["plugins"]] == ["server"]


# -- check refuses all that run refuses -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        pytest.param(
            [],
            {"OVERSIP_HOOKS_LOG_LEVEL": "loud"},
            r"OVERSIP_HOOKS_LOG_LEVEL: .*",
            id="log-level-var",
        ),
        pytest.param(
            ["--log-level", "loud"], {}, r"argument --log-level: unknown log level .*", id="flag"
        ),
        pytest.param(
            [], {"OVERSIP_HOOKS_LOG_FORMAT": "xml"}, r"OVERSIP_HOOKS_LOG_FORMAT: .*", id="format"
        ),
        pytest.param(
            [],
            {"OVERSIP_HOOKS_STARTUP_TIMEOUT": "soon"},
            r"OVERSIP_HOOKS_STARTUP_TIMEOUT: .*",
            id="timeout",
        ),
        pytest.param(
            ["--syslog", "nowhere/log"], {}, r"syslog socket nowhere/log: .*", id="syslog-socket"
        ),
        pytest.param(
            [],
            {"OVERSIP_HOOKS_SYSLOG": "a..b:514"},
            r"syslog address a\.\.b:514: .*",
            id="syslog-host",
        ),
        pytest.param(
            [], {"NOTIFY_SOCKET": "notify"}, r"NOTIFY_SOCKET: .*'notify'.*", id="notify-socket"
        ),
        pytest.param(
            [],
            {"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "soon"},
            r"WATCHDOG_USEC: .*",
            id="watchdog-usec",
        ),
        pytest.param(
            ["--pidfile", "pid"],
            {},
            rf"pid file pid: process {os.getppid()} is running; .*",
            id="pid-live",
        ),
        pytest.param(
            [],
            {"OVERSIP_HOOKS_PIDFILE": "resolv.conf"},
            r"pid file resolv\.conf: .*",
            id="pid-file-of-something-else",
        ),
        pytest.param(
            ["--pidfile", "no/such/dir/pid"], {}, r"pid file no/such/dir/pid: .*", id="pid-dir"
        ),
    ],
)
def test_check_refuses_the_options_and_variables_that_run_refuses(
    cli: Cli, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    write(
        tmp_path,
        {"server.py": GOOD_SERVER, "pid": f"{os.getppid()}\n", "resolv.conf": "nameserver ::1\n"},
    )
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    for subcommand in ("check", "run"):
        refused(cli(subcommand, "server.py", *args, env=env), message)
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    assert after == before


def test_check_takes_the_options_of_run_and_starts_nothing(
    cli: Cli, tmp_path: Path, notify: Datagrams
) -> None:
    write(
        tmp_path,
        {
            "server.py": """
                from oversip_hooks import get_logger

                get_logger("server").log_system_notice("loading")

                def started(runtime):
                    runtime.stop()
            """
        },
    )
    syslog = Datagrams(socket.AF_UNIX, str(tmp_path / "log"))
    try:
        finished = cli(
            "check",
            "server.py",
            *("--log-level", "notice", "--log-format", "json", "--syslog", str(syslog.address)),
            *("--pidfile", "pid", "--startup-timeout", "5", "--syslog-facility", "local3"),
            env={"NOTIFY_SOCKET": str(notify.address), "OVERSIP_HOOKS_SHUTDOWN_TIMEOUT": "5"},
        )
        assert syslog.drain() == []  # the sink was made, to check it, and removed
    finally:
        syslog.close()
    assert (finished.status, finished.out) == (0, "oversip-hooks: ok (plugins: server)\n")
    assert [json.loads(line)["message"] for line in finished.err] == ["loading"]
    assert not (tmp_path / "pid").exists()
    assert notify.drain() == []


# -- the server file: what is not a file, and what it raises --------------------------------


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
async def test_a_server_file_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        os.mkfifo(tmp_path / "server.py")  # nobody writes: reading it would hang
        path, what = "server.py", "a FIFO"
    else:
        path, what = "/dev/zero", "a character device"
    for subcommand in ("check", "run"):
        finished = await command(tmp_path, subcommand, path)
        refused(
            Finished(finished.status, finished.out, finished.err),
            rf"{path}: cannot read the server file: not a regular file \({what}\)",
        )


def test_a_server_file_over_10_mib_is_refused(cli: Cli, tmp_path: Path) -> None:
    with open(tmp_path / "server.py", "wb") as file:
        file.truncate(10 * 1024 * 1024 + 1)  # sparse: no disk space taken
    refused(
        cli("check", "server.py"),
        r"server\.py: cannot read the server file: larger than 10 MiB, the most read",
    )


@pytest.mark.parametrize(
    ("raised", "name"),
    [
        ("KeyboardInterrupt", "KeyboardInterrupt"),
        ("GeneratorExit", "GeneratorExit"),
        ("type('Custom', (BaseException,), {})('stop here')", "Custom"),
    ],
)
async def test_a_base_exception_raised_by_the_server_file_is_one_line(
    tmp_path: Path, raised: str, name: str
) -> None:
    write(tmp_path, {"server.py": f"import os\n\nraise {raised}\n"})
    for subcommand in ("check", "run"):
        finished = await command(tmp_path, subcommand, "server.py")
        refused(
            Finished(finished.status, finished.out, finished.err),
            rf"server\.py:3: {name}(: stop here)? \(while loading the server file\)",
        )


async def test_a_keyboard_interrupt_stops_the_loading(tmp_path: Path) -> None:
    write(tmp_path, {"first.py": "raise KeyboardInterrupt\n", "second.py": "import not_there\n"})
    finished = await command(tmp_path, "check", "--plugin", "first", "--plugin", "second")
    refused(
        Finished(finished.status, finished.out, finished.err),
        r".*first\.py:1: KeyboardInterrupt \(while loading --plugin 'first'\)",
    )


# -- plugins lists SystemCallbacks -----------------------------------------------------------


async def test_plugins_lists_the_system_callbacks_among_the_plugins(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pool.py": """
                from oversip_hooks import SystemCallbacks

                @SystemCallbacks.on_started
                def open_pool():
                    pass

                @SystemCallbacks.on_terminated
                async def close_pool():
                    pass
            """,
            "server.py": """
                import pool

                def started(runtime):
                    runtime.stop()
            """,
        },
    )
    listed = await command(tmp_path, "plugins", "server.py", "--json")
    assert listed.status == 0, listed.err
    listing = json.loads(listed.out)
    assert listing["plugins"] == [
        {
            "name": "SystemCallbacks",
            "origin": "callbacks",
            "target": "pool.open_pool, pool.close_pool",
            "path": None,
            "distribution": None,
            "version": None,
            "requires": [],
            "after": [],
        },
        {
            "name": "server",
            "origin": "server file",
            "target": "server.py",
            "path": "server.py",
            "distribution": None,
            "version": None,
            "requires": [],
            "after": [],
        },
    ]
    assert listing["hooks"]["started"] == ["SystemCallbacks", "server"]
    listed_names = {plugin["name"] for plugin in listing["plugins"]}
    assert {name for names in listing["hooks"].values() for name in names} <= listed_names

    text = await command(tmp_path, "plugins", "server.py")
    assert text.out.splitlines()[:3] == [
        "plugins, in registration order:",
        "  SystemCallbacks  callbacks    pool.open_pool, pool.close_pool",
        "  server           server file  server.py",
    ]


async def test_a_run_with_a_bad_server_file_never_starts(tmp_path: Path) -> None:
    """The whole refusal, end to end: exit 2 and nothing but the line, no hook run, not
    even the module's."""
    write(
        tmp_path,
        {
            "mod.py": """
                from oversip_hooks import get_logger, hookimpl

                @hookimpl
                def initialize():
                    get_logger("mod").log_system_info("mod initialize")
            """,
            "server.py": "def on_started():\n    pass\n",
        },
    )
    finished = await command(
        tmp_path, "run", "server.py", "--plugin", "mod", env=child_env(tmp_path)
    )
    assert finished.status == 2
    assert len(finished.err) == 1, finished.err
    assert "OverSIP's on_started is 'started' here" in finished.err[0]
