# Plugins come from three places, loaded and registered in this order: the entry points of
# the group `oversip_hooks` (sorted by name, so that the order does not depend on sys.path
# or on the order of a directory listing), the `--plugin` modules in the order given, and
# the server file last, so that its `started` runs after every module's. An entry point
# is registered under its own name, a `--plugin` module under its dotted path and the
# server file as "server", which is how `oversip_hooks.M` finds them.
#
# Loading never stops at the first problem: every source is tried, and each hook
# implementation is checked on its own, in a scratch manager that sees only that one hook,
# so that `check` lists every problem with the file and line of the function at fault, and
# a bad plugin never reaches the real manager. Checking whole plugins was rejected: pluggy
# stops at a plugin's first bad hook and names no line.
#
# In the server file, a function named after a hook counts as its implementation even
# without @hookimpl, because OverSIP's users write server.rb with plain methods and a file
# of four functions should not need a decorator on each. Modules must mark theirs, as
# pluggy requires, so that a module's helper that happens to be named `reload` never
# becomes a hook. The rule lives in the plugin manager (`parse_hookimpl_opts`, pluggy's
# documented override point, as pytest uses it for its unmarked `pytest_*` functions)
# rather than marking the user's functions as they load.

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import inspect
import sys
import traceback
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from ._manager import LIFECYCLE_HOOKS, plain_impl_opts, validate

ENTRY_POINT_GROUP = "oversip_hooks"
SERVER_NAME = "server"
SERVER_MODULE = "__oversip_server__"

ENTRY_POINT = "entry point"
OPTION = "--plugin"
SERVER_FILE = "server file"

# Frames of the import machinery and of this package, skipped when an error is located.
_MACHINERY = (str(Path(importlib.__file__).parent), str(Path(__file__).parent))


@dataclass(frozen=True)
class Source:
    """Where a registered plugin came from.

    Attributes:
        name: the name it is registered under.
        origin: ``"entry point"``, ``"--plugin"`` or ``"server file"``.
        target: the entry point's value, the module's dotted path, or the file given.
        path: the file it was loaded from, when known.
        distribution: the installed distribution that provides it, when known.
        version: that distribution's version.
    """

    name: str
    origin: str
    target: str
    path: str | None = None
    distribution: str | None = None
    version: str | None = None

    @property
    def label(self) -> str:
        """How messages name it: ``entry point 'sqlite' from oversip-mod-sqlite 1.0``."""
        if self.origin == ENTRY_POINT:
            found_in = f" from {self.distribution} {self.version}" if self.distribution else ""
            return f"entry point {self.name!r}{found_in}"
        if self.origin == OPTION:
            return f"--plugin {self.target!r}"
        return "the server file"


@dataclass(frozen=True)
class Problem:
    """One reason not to start: a one-line message, and the exception behind it."""

    message: str
    error: BaseException | None = None


@dataclass
class Plugins:
    """What :func:`load` found: the manager with every plugin that loaded cleanly, where
    each came from, in registration order, and the problems with the others."""

    pm: pluggy.PluginManager
    sources: list[Source] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class _PluginManager(pluggy.PluginManager):
    """``get_plugin_manager()``'s manager that also takes the server file's unmarked hook
    functions, and, given ``only``, sees no hook but that one."""

    def __init__(self, only: str | None = None) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self._only = only

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if self._only is not None and name != self._only:
            return None
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and _is_plain_server_hook(plugin, name):
            return plain_impl_opts()
        return opts


def _is_plain_server_hook(plugin: object, name: str) -> bool:
    if not isinstance(plugin, types.ModuleType) or plugin.__name__ != SERVER_MODULE:
        return False
    function = vars(plugin).get(name)
    # Defined in the file itself: a function imported under a hook's name does not count.
    # A name close to a hook's (`startd`, `initialise`) counts too, so that validation
    # refuses it with a "did you mean"; unmarked, a typo would otherwise pass unseen.
    return (
        _looks_like_a_hook(name)
        and inspect.isfunction(function)
        and function.__module__ == SERVER_MODULE
    )


def _looks_like_a_hook(name: str) -> bool:
    return name in LIFECYCLE_HOOKS or (
        not name.startswith("_")
        and bool(difflib.get_close_matches(name, LIFECYCLE_HOOKS, n=1, cutoff=0.85))
    )


def load(
    server: Path | None = None,
    modules: Sequence[str] = (),
    *,
    entry_points: bool = True,
    blocked: Collection[str] = (),
) -> Plugins:
    """Load, check and register every plugin, collecting every problem on the way.

    Args:
        server: the server file, registered last as ``"server"``.
        modules: dotted paths of modules to load, in order, after the entry points.
        entry_points: load the entry points of the group ``oversip_hooks``.
        blocked: names of entry points not to load.

    Example::

        plugins = load(Path("server.py"), ["my_module"], blocked={"legacy"})
        for problem in plugins.problems:
            print(problem.message)
    """
    loader = _Loader()
    if entry_points:
        found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for entry_point in sorted(found, key=lambda entry_point: entry_point.name):
            if entry_point.name not in blocked:
                loader.entry_point(entry_point)
    for module in modules:
        loader.module(module)
    if server is not None:
        loader.server_file(server)
    return loader.plugins


class _Loader:
    def __init__(self) -> None:
        self.plugins = Plugins(_PluginManager())
        self._labels: dict[str, str] = {}
        self._top_level: Mapping[str, list[str]] | None = None

    def _distributions(self) -> Mapping[str, list[str]]:
        # Read once per load: packages_distributions() parses the metadata of every
        # installed distribution, tens of milliseconds, which once per --plugin module
        # made a thousand of them take seconds.
        if self._top_level is None:
            self._top_level = importlib.metadata.packages_distributions()
        return self._top_level

    def entry_point(self, entry_point: importlib.metadata.EntryPoint) -> None:
        dist = entry_point.dist
        source = Source(
            entry_point.name,
            ENTRY_POINT,
            entry_point.value,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        self._add(source, entry_point.load)

    def module(self, name: str) -> None:
        self._add(Source(name, OPTION, name), lambda: importlib.import_module(name))

    def server_file(self, path: Path) -> None:
        try:
            code = path.read_bytes()
        except OSError as exc:
            self._problem(f"{path}: cannot read the server file: {exc.strerror}", exc)
            return
        source = Source(SERVER_NAME, SERVER_FILE, str(path), str(path))
        self._add(source, lambda: _exec_server(path, code))

    def _add(self, source: Source, load: Callable[[], object]) -> None:
        try:
            plugin = load()
        except (Exception, SystemExit) as exc:
            self._problem(f"{_failure(exc)} (while loading {source.label})", exc)
            return
        problems = _check_hooks(plugin, source.name)
        pm = self.plugins.pm
        if problems:
            self.plugins.problems.extend(problems)
        elif (other := pm.get_name(plugin)) is not None:
            self._problem(f"{source.label}: already loaded as {other!r}")
        elif pm.has_plugin(source.name):
            taken_by = self._labels[source.name]
            self._problem(
                f"{source.label}: the name {source.name!r} is already taken by {taken_by}"
            )
        else:
            pm.register(plugin, name=source.name)
            self._labels[source.name] = source.label
            self.plugins.sources.append(_completed(source, plugin, self._distributions))

    def _problem(self, message: str, error: BaseException | None = None) -> None:
        self.plugins.problems.append(Problem(message, error))


def _exec_server(path: Path, code: bytes) -> types.ModuleType:
    module = types.ModuleType(SERVER_MODULE)
    module.__file__ = str(path)
    # As for a script run with `python server.py`: its directory is importable, and the
    # module is in sys.modules (which dataclasses and pickle need) under a name of its own.
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[SERVER_MODULE] = module
    exec(compile(code, str(path), "exec"), module.__dict__)
    return module


def _check_hooks(plugin: object, name: str) -> list[Problem]:
    """A problem for each hook implementation of ``plugin`` that cannot be registered or
    fails validation, in the order of their definitions."""
    finder = _PluginManager()
    hooks = [attr for attr in dir(plugin) if finder.parse_hookimpl_opts(plugin, attr) is not None]
    problems = []
    for attribute in sorted(hooks, key=lambda attr: _definition(getattr(plugin, attr))):
        alone = _PluginManager(only=attribute)
        try:
            alone.register(plugin, name=name)
            validate(alone)
        except pluggy.PluginValidationError as exc:
            file, line = _definition(getattr(plugin, attribute))
            where = f"{file}:{line}: " if file else ""
            problems.append(Problem(f"{where}{_one_line(str(exc))}", exc))
    return problems


def _completed(
    source: Source, plugin: object, distributions: Callable[[], Mapping[str, list[str]]]
) -> Source:
    """``source`` with the file and, for a ``--plugin`` module, the distribution filled in."""
    path = source.path or getattr(inspect.getmodule(plugin), "__file__", None)
    source = dataclasses.replace(source, path=path)
    if source.origin != OPTION:
        return source
    dists = distributions().get(source.target.partition(".")[0])
    if not dists:
        return source
    return dataclasses.replace(
        source, distribution=dists[0], version=importlib.metadata.version(dists[0])
    )


def _failure(exc: BaseException) -> str:
    """``file:line: Type: message``, where ``file:line`` is the line of the code being
    loaded that raised ``exc``, or the line of a syntax error; without it when unknown."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}: " if exc.filename else ""
        return f"{where}{type(exc).__name__}: {exc.msg}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(("<", *_MACHINERY))
    ]
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(exc).__name__}: {_one_line(str(exc))}"


def _definition(function: Any) -> tuple[str, int]:
    """The file and line where ``function`` is defined, or ``("", 0)``."""
    code = getattr(inspect.unwrap(getattr(function, "__func__", function)), "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else ("", 0)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
