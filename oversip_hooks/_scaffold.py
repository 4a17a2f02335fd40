# `oversip-hooks new NAME`: a module skeleton that passes its own tests from the first
# minute, as datasette's `datasette-plugin` template, pytest's `cookiecutter-pytest-plugin`
# and Home Assistant's `script/scaffold` give their plugin authors. It follows
# docs/building-a-module.md: the distribution `oversip-mod-NAME`, the package
# `oversip_mod_NAME` under src/, the entry point NAME, module-level hooks marked
# @hookimpl, a settings function that `initialize` calls, a `lifespan`, and tests with the
# `lifecycle` fixture and a `LifecycleMachine`.
#
# The templates are strings here rather than package data: five small files, no loader.
# string.Template's `$name` does not clash with the braces of f-strings and TOML tables.
# Nothing is ever overwritten: the target directory is created exclusively, so a directory
# (or a file, or a dangling symlink) already there refuses the whole run, before anything
# is written.

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from ._settings import ConfigError

_NAME = re.compile(r"[a-z][a-z0-9_]*")

_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "$distribution"
version = "0.1.0"
description = "The $name module for oversip-hooks"
readme = "README.md"
requires-python = ">=3.11"
dependencies = [
    "oversip-hooks>=0.1.0.dev0",
    "trio>=0.27",
]

[project.optional-dependencies]
test = ["oversip-hooks[test]"]

# How `oversip-hooks run` finds the module once it is installed.
[project.entry-points.oversip_hooks]
$name = "$package"

[tool.hatch.build.targets.wheel]
packages = ["src/$package"]

[tool.pytest.ini_options]
testpaths = ["tests"]
trio_mode = true
addopts = "-ra --strict-markers"
filterwarnings = ["error"]

[tool.ruff]
line-length = 100
"""

_README = """\
# $distribution

The `$name` module for oversip-hooks: while the service runs, it
logs a beat every `$variable` seconds (1 by default) from a task of its own, opened in
its `lifespan` and closed at shutdown, and says how many beats so far on each reload.

```sh
pip install -e '.[test]'
pytest                                  # its tests, with the lifecycle fixture
oversip-hooks plugins                   # lists '$name', found through its entry point
$variable=0.5 oversip-hooks run --log-level debug
```

A bad `$variable` (not a positive number of seconds) stops the startup with one crit
line, before anything starts. An operator who does not want the module for one run says
`oversip-hooks run -p no:$name`.

Start from here: rename `Heartbeat`, put your own settings in `Settings` and
`check_settings()`, and what your module opens in `lifespan`. See the framework's
docs/building-a-module.md and docs/testing.md.
"""

_MODULE = '''\
"""The $name module for oversip-hooks.

The package is the plugin: `oversip-hooks run` loads it through the entry point `$name`,
and its module-level functions marked ``@hookimpl`` are its hooks (left out of
``__all__``, so that ``from $package import *`` in a server file does not make them the
server's too).
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import trio
from oversip_hooks import Logger, fatal, hookimpl

__all__ = ["LOG_ID", "PERIOD_VARIABLE", "Heartbeat", "Settings", "check_settings", "current"]

LOG_ID = "$name"
log_id = LOG_ID  # how the runtime names this plugin in its own log lines
PERIOD_VARIABLE = "$variable"


@dataclass(frozen=True)
class Settings:
    period: float = 1.0  # seconds between beats


def check_settings(environ: Mapping[str, str]) -> Settings:
    """The module's settings, from ``environ``; a bad value is ``fatal``: one crit line,
    and nothing starts (exit status 1)."""
    raw = environ.get(PERIOD_VARIABLE)
    if raw is None:
        return Settings()
    try:
        period = float(raw)
    except ValueError:
        period = math.nan
    if not (math.isfinite(period) and period > 0):
        fatal(f"{PERIOD_VARIABLE}={raw!r} is invalid: expected a positive number of seconds")
    return Settings(period=period)


class Heartbeat(Logger):
    """One runtime's heartbeat: a task that logs a beat every ``settings.period`` s."""

    log_id = LOG_ID

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.beats = 0
        self.running = False

    async def beat(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        try:
            task_status.started()
            while True:
                self.beats += 1
                self.log_system_debug(f"beat {self.beats}")
                await trio.sleep(self.settings.period)
        finally:
            self.running = False


# A process may run several runtimes (tests do), so nothing lives in a global: each
# runtime's Heartbeat is in a context variable of its task, which every later hook, and
# the lifespan's task, inherit.
_current: ContextVar[Heartbeat | None] = ContextVar("${package}_current", default=None)


def current() -> Heartbeat:
    """This runtime's heartbeat, from any hook after this module's ``initialize``."""
    heartbeat = _current.get()
    if heartbeat is None:
        raise RuntimeError("the $name module is not initialized in this runtime")
    return heartbeat


# Hooks log with log_system_<level>(): log_<level>() is the user's, and raises in a hook.


@hookimpl(tryfirst=True)
def initialize() -> None:
    """Check the settings (``fatal`` on a bad one); open nothing yet."""
    _current.set(Heartbeat(check_settings(os.environ)))


@hookimpl
async def lifespan() -> AsyncIterator[None]:
    """Open the heartbeat in this plugin's ``started`` turn, close it in its
    ``terminated`` turn."""
    heartbeat = current()
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.beat)
        heartbeat.log_system_info(f"started: a beat every {heartbeat.settings.period:g} s")
        yield
        nursery.cancel_scope.cancel()
    heartbeat.log_system_info(f"stopped after {heartbeat.beats} beats")


@hookimpl
def reload() -> None:
    """Report; reopen nothing."""
    heartbeat = current()
    heartbeat.log_system_info(f"reloaded: {heartbeat.beats} beats so far")
'''

_TESTS = '''\
"""The $name module's lifecycle, through the real runtime (oversip_hooks.testing)."""

from __future__ import annotations

import signal

import hypothesis
import pytest
import trio
from hypothesis.stateful import invariant
from oversip_hooks import hookimpl
from oversip_hooks.testing import LifecycleHarness, check_lifecycle_invariants
from oversip_hooks.testing.hypothesis import LifecycleMachine

import $package


class Observer:
    """A user's server plugin, registered after the module: keeps its heartbeat."""

    def __init__(self) -> None:
        self.heartbeat: $package.Heartbeat | None = None

    @hookimpl
    def started(self) -> None:
        self.heartbeat = $package.current()


def register(harness: LifecycleHarness) -> Observer:
    observer = Observer()
    harness.register($package, name="$name")
    harness.register(observer, name="server")
    return observer


async def test_it_beats_from_started_to_terminated(lifecycle, autojump_clock, monkeypatch):
    monkeypatch.delenv($package.PERIOD_VARIABLE, raising=False)
    observer = register(lifecycle)
    async with lifecycle.running():
        assert observer.heartbeat is not None
        assert observer.heartbeat.running
        await trio.sleep(2.5)  # no time at all under autojump_clock
    assert not observer.heartbeat.running
    assert observer.heartbeat.beats == 3
    assert lifecycle.exit_status == 0
    assert "INFO: <$name> started: a beat every 1 s" in lifecycle.lines
    assert "INFO: <$name> stopped after 3 beats" in lifecycle.lines
    check_lifecycle_invariants(lifecycle)


async def test_a_reload_reports(lifecycle, monkeypatch):
    monkeypatch.setenv($package.PERIOD_VARIABLE, "30")
    register(lifecycle)
    assert await lifecycle.play("reload", signal.SIGHUP, signal.SIGTERM) == 0
    assert lifecycle.lines.count("INFO: <$name> reloaded: 1 beats so far") == 2


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon", ""])
def test_a_bad_period_is_fatal_and_nothing_starts(lifecycle, monkeypatch, value):
    monkeypatch.setenv($package.PERIOD_VARIABLE, value)
    register(lifecycle)
    assert lifecycle.run() == 1
    reason = "is invalid: expected a positive number of seconds"
    message = f"{$package.PERIOD_VARIABLE}={value!r} {reason}"
    assert lifecycle.fatal_message == message
    assert f"CRIT: <$name> {message}" in lifecycle.lines
    assert lifecycle.calls_to("started") == []


class HeartbeatMachine(LifecycleMachine):
    """Random reloads, stops, signals and failures: the heartbeat never outlives the run."""

    def make_plugins(self):
        self.observer = Observer()
        return {"$name": $package, "server": self.observer}

    @invariant()
    def the_heartbeat_stops_with_the_run(self) -> None:
        if self.harness.stopped and self.observer.heartbeat is not None:
            assert not self.observer.heartbeat.running


TestHeartbeatMachine = HeartbeatMachine.TestCase
TestHeartbeatMachine.settings = hypothesis.settings(max_examples=20, deadline=None)
'''

_FILES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "src/$package/__init__.py": _MODULE,
    "src/$package/py.typed": "",
    "tests/test_$name.py": _TESTS,
}


def check_name(name: str) -> str:
    """``name`` if it can name a module (the entry point, ``oversip_mod_<name>``).

    Raises:
        ConfigError: it is not a lowercase identifier.
    """
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ConfigError(
            f"{name!r} cannot name a module: expected a lowercase identifier "
            "(a-z, 0-9 and _, starting with a letter), such as 'heartbeat'"
        )
    return name


def create(name: str, parent: Path) -> Path:
    """Write the skeleton of the module ``name`` into ``parent/oversip-mod-<name>``;
    return that directory.

    Raises:
        ConfigError: a bad name, or the directory exists (nothing is written then).
    """
    check_name(name)
    substitutions = {
        "name": name,
        "package": f"oversip_mod_{name}",
        "distribution": f"oversip-mod-{name.replace('_', '-')}",
        "variable": f"{name.upper()}_PERIOD",
    }
    target = parent / substitutions["distribution"]
    try:
        target.mkdir()  # exclusive: refuses what is there, even a dangling symlink
    except FileExistsError:
        raise ConfigError(f"{target} already exists; nothing was written") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {target}: {exc.strerror}") from None
    for path, text in _FILES.items():
        file = target / Template(path).substitute(substitutions)
        file.parent.mkdir(parents=True, exist_ok=True)
        with file.open("x", encoding="utf-8") as out:
            out.write(Template(text).substitute(substitutions))
    return target
