# The command line is a thin layer over the library: it turns options and the environment
# into log sinks, a plugin manager, a PID file and a systemd notifier, and hands the rest
# to Runtime. All bad input is found here, before Runtime.run() is called, and each problem
# is reported as one line on standard error with exit status 2, argparse's own status for
# usage errors, with a traceback only under --debug; from run() on, the runtime's exit
# status (0 or 1) is the command's. Subcommands (run, check, plugins), as pip and
# systemctl have, rather than flags of one command, because each has options of its own.
#
# Bad input is printed as plain lines rather than sent through the log sinks, as every
# command's usage errors are: part of it is found before the sinks exist, and it is read by
# a person, at a terminal or in the journal, where standard error goes under systemd.
#
# `run` and `check` take the same options and variables and go through one function,
# _prepare, for everything before the lifecycle, so that they cannot drift apart: `check`
# passing means `run` starts. Only what cannot be tried without its effect differs: `check`
# removes the syslog sink as soon as it is made, and looks at the PID file without taking it.

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn, TypedDict

import pluggy
import trio
from loguru import logger

from . import _settings
from ._callbacks import CALLBACKS_PLUGIN_NAME
from ._discovery import ENTRY_POINT_GROUP, Plugins, Source, callbacks_source, load
from ._logging import add_console_sink, emit
from ._manager import LIFECYCLE_HOOKS, declare_extension_hooks, declared_hooks
from ._notify import Notifier
from ._order import NONE as NO_DECLARATIONS
from ._order import declarations
from ._pidfile import PidFile, check_pid_file, pid_file
from ._runtime import Runtime
from ._settings import ConfigError
from ._signals import StoppedBySignal, signals_caught
from ._watchdog import GRACE

PROG = "oversip-hooks"
LOG_ID = "runtime"

_Command = Callable[[argparse.Namespace], int]  # a subcommand: its options -> exit status
_AddArguments = Callable[[argparse.ArgumentParser], None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``oversip-hooks`` command; return its exit status: 0 clean stop, 1 error
    once the lifecycle has begun, 2 bad input (nothing was started).

    From its first line until it returns, SIGHUP, SIGTERM, SIGINT and SIGQUIT are caught:
    for ``run``, one that comes before the runtime runs is kept for it (a stop: no hook
    runs, status 0), one that comes after the last ``terminated`` is ignored; ``check``
    and ``plugins`` stop with one line and status 130. Called as the program
    (``argv`` not given), it leaves them ignored, for the moments until the process has
    exited; given ``argv``, it puts back the handlers it found.

    Args:
        argv: the arguments after the program's name; ``sys.argv[1:]`` by default.

    Example::

        raise SystemExit(main(["check", "server.py"]))
    """
    with signals_caught(then_ignore=argv is None) as catcher:
        words = list(sys.argv[1:] if argv is None else argv)  # read twice
        options = _parser(words).parse_args(words)
        command: _Command = options.command
        try:
            if command is not _run:
                catcher.attach(_interrupt)  # `check` and `plugins` just stop
            status = command(options)
        except ConfigError as exc:
            _report(str(exc), exc, debug=options.debug)
            status = 2
        except StoppedBySignal as interrupt:
            print(f"{PROG}: stopped: {interrupt}", file=sys.stderr)
            status = 128 + signal.SIGINT
    if argv is None:
        _exit_within_grace()
    return status


def _exit_within_grace() -> None:
    """Once the command is done, end the process ``GRACE`` seconds later if it has not
    exited by then: a plugin's thread that is not a daemon, or an atexit handler of its,
    would otherwise keep it alive, its signals ignored and its PID file gone."""

    _end_unless(
        threading.Event(),  # never set: the process exits before, or this ends it
        lambda: os._exit(1),
        f"the process did not exit within {GRACE:g} s of the end of the run (a plugin's "
        "thread or atexit handler still runs); ending it",
    )


# -- the commands ------------------------------------------------------------------------


def _run(options: argparse.Namespace) -> int:
    notifier, plugins = _prepare(options, for_run=True)
    if plugins.problems:
        return _refuse(plugins, debug=options.debug)
    timeouts = {
        name: getattr(options, name)
        for name in (
            "startup_timeout",
            "shutdown_timeout",
            "blocked_loop_threshold",
            "slow_hook_threshold",
            "drain",
        )
        if getattr(options, name)  # None: the runtime's default; a drain of 0 is its default
    }
    with ExitStack() as stack:
        held = None if options.pidfile is None else stack.enter_context(pid_file(options.pidfile))
        runtime = Runtime(
            plugins.pm,
            on_overrun=lambda: _end_now(held),
            trace_hooks=options.trace_hooks,
            **timeouts,
        )
        return trio.run(_serve, runtime, notifier, options.http, lambda: _end_now(held))


def _interrupt(signum: int) -> NoReturn:
    raise StoppedBySignal(f"{signal.Signals(signum).name} signal received")


def _end_now(held: PidFile | None) -> NoReturn:
    """End the process from the watchdog's thread, the shutdown having overrun its grace
    (the runtime has logged what still runs): the PID file goes, nothing else runs."""
    if held is not None:
        held.remove()
    os._exit(1)


async def _serve(
    runtime: Runtime,
    notifier: Notifier | None,
    http: tuple[str, int] | None,
    end_process: Callable[[], object],
) -> int:
    """Run ``runtime`` with what stands around it: the HTTP probe server (listening
    before ``initialize``, closed after the last ``terminated``) and systemd's
    notifications. An HTTP address that cannot be listened on is bad input (status 2,
    nothing run), as a live PID file is. What stands around the runtime has ``GRACE``
    seconds to close after it: a plugin's health check stuck in a worker thread, which no
    cancellation reaches, would otherwise keep the process alive, its signals ignored."""
    if notifier is None and http is None:
        return await runtime.run()
    listening = None
    if http is not None:
        from . import _health  # h11 and prometheus-client: only for the runs that serve

        server = _health.HealthServer(runtime)
        try:
            listening = await _health.open_listeners(*http)
        except OSError as exc:
            _report(_listen_failure(http, exc), exc, debug=False)
            return 2
    if notifier is not None:
        runtime.add_state_listener(notifier.on_state)
    async with trio.open_nursery() as nursery:
        if listening is not None:
            await nursery.start(server.serve, listening)
        if notifier is not None and notifier.watchdog_interval is not None:
            await nursery.start(notifier.keep_alive)
        status = await runtime.run()
        closed = threading.Event()
        _end_unless(
            closed,
            end_process,
            f"what serves beside the runtime (--http, systemd's watchdog) did not close "
            f"within {GRACE:g} s of its end (a health check stuck in a thread?); ending",
        )
        nursery.cancel_scope.cancel()
    closed.set()
    return status


def _end_unless(done: threading.Event, end_process: Callable[[], object], why: str) -> None:
    """Say ``why`` on standard error and call ``end_process`` ``GRACE`` seconds from now,
    in a thread of its own, unless ``done`` is set by then."""

    def watch() -> None:
        if not done.wait(GRACE):
            os.write(2, f"{PROG}: {why}\n".encode())
            end_process()

    threading.Thread(target=watch, name=f"{PROG} closing", daemon=True).start()


async def _cannot_listen(http: tuple[str, int]) -> str | None:
    """Why ``run --http`` could not listen on ``http`` now, or ``None`` when it could:
    for ``check``, which listens and closes at once."""
    from . import _health

    try:
        listeners = await _health.open_listeners(*http)
    except OSError as exc:
        return _listen_failure(http, exc)
    for listener in listeners:
        await listener.aclose()
    return None


def _listen_failure(http: tuple[str, int], exc: OSError) -> str:
    host, port = http
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"--http: cannot listen on {where}: {exc.strerror or exc}"


def _check(options: argparse.Namespace) -> int:
    _, plugins = _prepare(options, for_run=False)
    if plugins.problems:
        return _refuse(plugins, debug=options.debug)
    if options.http is not None and (unavailable := trio.run(_cannot_listen, options.http)):
        _report(unavailable, None, debug=False)
        return 2
    names = ", ".join(source.name for source in plugins.sources)
    print(f"{PROG}: ok (plugins: {names or 'none'})")
    return 0


def _list_plugins(options: argparse.Namespace) -> int:
    plugins = _load_for_inspection(options)
    if plugins.problems:
        return _refuse(plugins, debug=options.debug)
    order = _hook_order(plugins.pm)
    extension = _extension_hook_order(plugins.pm)
    sources = plugins.sources
    if any(CALLBACKS_PLUGIN_NAME in names for names in order.values()):
        sources = [callbacks_source(), *sources]  # registered before all others
    declared = {source.name: _declared(plugins.pm, source.name) for source in sources}
    if options.json:
        listed = [{**source._asdict(), **declared[source.name]} for source in sources]
        listing = {"plugins": listed, "hooks": order, "extension_hooks": extension}
        print(json.dumps(listing, indent=2))
        return 0
    print("plugins, in registration order:")
    rows = [
        (source.name, source.origin, _where(source) + _declarations(declared[source.name]))
        for source in sources
    ]
    print("\n".join(_columns(rows)) if rows else "  (none)")
    print("\nhooks, in call order:")
    hooks = [(hook, ", ".join(names) or "(none)") for hook, names in order.items()]
    print("\n".join(_columns(hooks)))
    print("\nextension hooks, in call order:")
    declared_here = [
        (hook, f"{', '.join(found['order']) or '(none)'} (declared by {found['declared_by']})")
        for hook, found in extension.items()
    ]
    print("\n".join(_columns(declared_here)) if declared_here else "  (none)")
    return 0


def _new(options: argparse.Namespace) -> int:
    from ._scaffold import create  # only `new` writes files: no start pays for it

    target = create(options.name, Path.cwd())
    print(f"{PROG}: wrote {target}; next: pip install -e '{target}[test]', then pytest there")
    return 0


# -- helpers -----------------------------------------------------------------------------


def _prepare(options: argparse.Namespace, *, for_run: bool) -> tuple[Notifier | None, Plugins]:
    """Everything ``run`` does and checks before the lifecycle begins, for ``run`` and
    ``check`` alike: the settings from flags and variables, the PID file (looked at, not
    taken), the log sinks, the systemd variables, and the plugins, whose warnings are
    logged. Unless ``for_run``, the syslog sink and the notifier are only made, and let
    go at once.

    Raises:
        ConfigError: a setting, a variable or the PID file is bad.
    """
    _settings.resolve(options, os.environ)
    if options.pidfile is not None:
        check_pid_file(options.pidfile)
    logger.remove()
    if options.log_format == "json":
        from ._sinks import add_json_sink  # imported by the runs that use it only

        add_json_sink(sys.stderr, level=options.log_level)
    else:
        add_console_sink(sys.stderr, level=options.log_level)
    if options.syslog is not None:
        from ._sinks import add_syslog_sink

        sink = add_syslog_sink(
            options.syslog, facility=options.syslog_facility, level=options.log_level
        )
        if not for_run:
            with warnings.catch_warnings():
                # Removing the sink drops its socket, which is closed as it goes.
                warnings.simplefilter("ignore", ResourceWarning)
                logger.remove(sink)
    notifier = Notifier.from_environ(os.environ)
    if notifier is not None and not for_run:
        notifier.close()
        notifier = None
    return notifier, _load(options)


def _hook_order(pm: pluggy.PluginManager) -> dict[str, list[str]]:
    """The plugins whose implementations of each hook run, in the order they run, with
    ``SystemCallbacks`` standing for the callbacks registered so far."""
    runtime = Runtime(pm, handle_signals=False)
    return {hook: runtime.hook_order(hook) for hook in LIFECYCLE_HOOKS}


class _ExtensionHook(TypedDict):
    declared_by: str
    order: list[str]


def _extension_hook_order(pm: pluggy.PluginManager) -> dict[str, _ExtensionHook]:
    """Each extension hook, by name: the plugin that declares it (``declared_by``) and
    the plugins whose implementations run, in the order they run (``order``)."""
    declare_extension_hooks(pm)  # as validation does; `pm` passed it, so this cannot fail
    runtime = Runtime(pm, handle_signals=False)
    return {
        hook: _ExtensionHook(declared_by=declarer, order=runtime.hook_order(hook))
        for hook, declarer in declared_hooks(pm).items()
    }


def _load(options: argparse.Namespace) -> Plugins:
    """Load the plugins; unless there are problems, which alone are then said, log a
    warning line for each plugin that has no hook."""
    plugins = load(
        options.server,
        options.modules,
        entry_points=not options.no_entrypoints,
        blocked=set(options.blocked),
    )
    if not plugins.problems:
        for warning in plugins.warnings:
            emit(LOG_ID, "warn", warning)
    return plugins


def _load_for_inspection(options: argparse.Namespace) -> Plugins:
    """Load as ``run`` does, with whatever the plugins log at import on standard error."""
    logger.remove()
    add_console_sink(sys.stderr)
    return _load(options)


def _refuse(plugins: Plugins, *, debug: bool) -> int:
    for problem in plugins.problems:
        _report(problem.message, problem.error, debug=debug)
    return 2


def _report(message: str, error: BaseException | None, *, debug: bool) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    if debug and error is not None:
        traceback.print_exception(error, file=sys.stderr)


def _declared(pm: pluggy.PluginManager, name: str) -> dict[str, list[str]]:
    """``{"requires": [...], "after": [...]}``: what the plugin ``name`` declares (the
    ``SystemCallbacks`` pseudo-plugin, not in ``pm``, declares nothing)."""
    plugin = pm.get_plugin(name)
    declared = NO_DECLARATIONS if plugin is None else declarations(plugin, name)
    return {"requires": list(declared.requires), "after": list(declared.after)}


def _declarations(declared: dict[str, list[str]]) -> str:
    """``; requires sqlite; after cache``, each part when there is one."""
    return "".join(f"; {what} {', '.join(names)}" for what, names in declared.items() if names)


def _where(source: Source) -> str:
    """``target from dist 1.0 (path)``, each part when known and not said already."""
    where = source.target
    if source.distribution:
        where += f" from {source.distribution} {source.version}"
    if source.path and source.path != source.target:
        where += f" ({source.path})"
    return where


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Indented lines with every column but the last padded to its widest cell."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return ["  " + "  ".join([*map(str.ljust, row, widths), row[-1]]) for row in rows]


# -- the parser --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with each usage error on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _blocked(text: str) -> str:
    name = text.removeprefix("no:")
    if name == text or not name:
        raise argparse.ArgumentTypeError(
            f"expected no:NAME to block the entry point NAME, not {text!r}; load a module "
            "with --plugin MODULE"
        )
    return name


class _Version(argparse.Action):
    """``--version``, which reads the installed version only when asked: importing
    importlib.metadata and reading a distribution's metadata would cost every start
    milliseconds (argparse's own ``action="version"`` wants the text up front)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show the program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        from importlib.metadata import version

        print(f"{PROG} {version('oversip-hooks')}")
        parser.exit()


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The command's parser, with the arguments of the command that ``argv`` names (the
    first word that is not an option: the parser's own options take no value), and only
    the names and help of the others, which are all that ``--help`` shows of them."""
    parser = _Parser(
        prog=PROG,
        description="Run plugins through their lifecycle: initialize, started, reload "
        "(SIGHUP), terminated (SIGTERM, SIGINT).",
        epilog="Exit status: 0 clean stop, 1 error once the lifecycle has begun, "
        "2 bad input (nothing started).",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    named = next((word for word in argv if not word.startswith("-")), None)
    for name, (summary, description, adders, function) in _COMMANDS.items():
        subparser = commands.add_parser(name, help=summary, description=description)
        if name == named:
            for add_arguments in adders:
                add_arguments(subparser)
            subparser.set_defaults(command=function)
    return parser


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``run``, ``check`` and ``plugins``: where the plugins come from."""
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "server",
        nargs="?",
        type=Path,
        metavar="SERVER_PY",
        help="the server file: its hook functions form the plugin 'server', registered "
        "last (functions named initialize, started, reload and terminated count even "
        "without @hookimpl)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        dest="modules",
        metavar="MODULE",
        help="load the module MODULE (a dotted path) as a plugin, after the entry points; "
        "repeatable, loaded in the order given",
    )
    parser.add_argument(
        "-p",
        action="append",
        default=[],
        dest="blocked",
        type=_blocked,
        metavar="no:NAME",
        help="do not load the entry point NAME, as 'plugins' lists it; repeatable",
    )
    parser.add_argument(
        "--no-entrypoints",
        action="store_true",
        help=f"load no entry points of the group {ENTRY_POINT_GROUP!r}",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback behind bad input"
    )


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON, for machines")


def _add_module_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the module's name, a lowercase identifier")
    parser.set_defaults(debug=False)  # no --debug: nothing to load, no traceback to show


# Each command: its help in the list of commands, its description, what adds its
# arguments, and the function that carries it out.
_COMMANDS: dict[str, tuple[str, str, tuple[_AddArguments, ...], _Command]] = {
    "run": (
        "load the plugins and run them until stopped",
        "Load the plugins, validate them and run their lifecycle. "
        "A flag wins over its environment variable.",
        (_add_common_arguments, _settings.add_arguments),
        _run,
    ),
    "check": (
        "load and validate the plugins and the options of run, without starting them",
        "Load and validate every plugin, and the options and variables of run, "
        "as run does, without starting anything; list every problem.",
        (_add_common_arguments, _settings.add_arguments),
        _check,
    ),
    "plugins": (
        "list the plugins and the order in which each hook runs",
        "List every plugin, where it came from, and for each hook the order "
        "in which its implementations run.",
        (_add_common_arguments, _add_json_option),
        _list_plugins,
    ),
    "new": (
        "write the skeleton of a module, oversip-mod-NAME, that passes its own tests",
        "Write oversip-mod-NAME/ in the current directory: a pyproject with the "
        "entry point NAME, the package oversip_mod_NAME, its tests and a README. Nothing "
        "is overwritten: an existing oversip-mod-NAME is refused.",
        (_add_module_name,),
        _new,
    ),
}
