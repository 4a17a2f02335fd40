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
#
# Nothing is ignored in silence. In the server file every module-level name equal to a
# hook's must be a function that runs as that hook: a function defined in the file (plain,
# async or a lambda) or one marked @hookimpl; anything else bound to such a name (an
# imported function, a number, a functools.partial, a class) is refused, as is a function
# whose name is close to a hook's or is OverSIP's (`on_started`). `-p no:NAME` must name an
# installed entry point. A plugin that has no hook at all (no @hookimpl, no callback
# registered through SystemCallbacks as it loaded) is loaded, with a warning naming it: a
# module may have been installed only for its API.
#
# The server file must be a regular file of at most MAX_SERVER_FILE bytes, opened without
# blocking, so that a FIFO, /dev/zero or a huge file is refused rather than waited for or
# read until memory runs out. Any exception its code raises, BaseExceptions included, is
# bad input; a KeyboardInterrupt also ends the loading, since it may be the operator's
# Ctrl-C.
#
# The entry points are read with importlib.metadata, although importing it (email,
# zipfile, csv) is about 6% of the command's time to READY=1: a reader of our own would
# have to follow its rules (sys.path order, the first distribution of a normalized name
# winning, eggs, zips, other finders) and keep following them; a cache would be stale the
# moment a module is installed.

from __future__ import annotations

import ast
import errno
import importlib
import importlib.metadata
import inspect
import os
import stat
import sys
import traceback
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pluggy

from ._callbacks import CALLBACKS_PLUGIN_NAME, CallbackRegistry, snapshot
from ._manager import (
    EXTENSION_HOOKS_ATTRIBUTE,
    LIFECYCLE_HOOKS,
    PROBE_HOOKS,
    PluginManager,
    add_declared_hooks,
    close_match,
    looks_like,
    oversip_name,
    plain_impl_opts,
    validate,
)
from ._order import DeclarationError, declaration_problems
from ._signals import StoppedBySignal

ENTRY_POINT_GROUP = "oversip_hooks"
SERVER_NAME = "server"
SERVER_MODULE = "__oversip_server__"

ENTRY_POINT = "entry point"
OPTION = "--plugin"
SERVER_FILE = "server file"
CALLBACKS = "callbacks"

# The largest server file read: far more than any server file needs, little enough memory.
MAX_SERVER_FILE = 10 * 1024 * 1024

# Frames of the import machinery and of this package, skipped when an error is located.
_MACHINERY = (str(Path(importlib.__file__).parent), str(Path(__file__).parent))


# The records below are NamedTuples, not dataclasses: a dataclass writes and compiles its
# methods' source as the module is imported, about half a millisecond each, paid by every
# start of the command before `initialize`.


class Source(NamedTuple):
    """Where a registered plugin came from.

    Attributes:
        name: the name it is registered under.
        origin: ``"entry point"``, ``"--plugin"``, ``"server file"``, or ``"callbacks"``
            for the callbacks registered through ``SystemCallbacks``.
        target: the entry point's value, the module's dotted path, the file given, or
            the callbacks' qualified names.
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
        if self.origin == CALLBACKS:
            return "the SystemCallbacks registry"
        return "the server file"


class Problem(NamedTuple):
    """One reason not to start: a one-line message, and the exception behind it."""

    message: str
    error: BaseException | None = None


class Plugins:
    """What :func:`load` found: the manager with every plugin that loaded cleanly, where
    each came from, in registration order, the problems with the others, and warnings
    (a plugin with no hook), each one line, that do not stop a start."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.sources: list[Source] = []
        self.problems: list[Problem] = []
        self.warnings: list[str] = []


class _PluginManager(PluginManager):
    """``get_plugin_manager()``'s manager that also takes the server file's unmarked hook
    functions, and, given ``only``, sees no hook but that one."""

    def __init__(self, only: str | None = None) -> None:
        super().__init__()
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
    # Defined in the file itself: anything else bound to a hook's name is refused by
    # _check_server_names. A name close to a hook's (`startd`, `relaod`) or OverSIP's
    # (`on_started`) counts too, so that validation refuses it with a "did you mean";
    # unmarked, it would otherwise pass unseen.
    return _looks_like_a_hook(name) and _defined_in_server_file(vars(plugin).get(name))


def _defined_in_server_file(value: object) -> bool:
    return inspect.isfunction(value) and value.__module__ == SERVER_MODULE


def _looks_like_a_hook(name: str) -> bool:
    hooks = (*LIFECYCLE_HOOKS, *PROBE_HOOKS)  # the hooks a server file defines unmarked
    return name in hooks or (
        not name.startswith("_")
        and (looks_like(name, hooks) is not None or oversip_name(name) is not None)
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

    A name in ``blocked`` that is not an installed entry point is a problem (with a
    "did you mean"), as is a KeyboardInterrupt, which also ends the loading.

    Example::

        plugins = load(Path("server.py"), ["my_module"], blocked={"legacy"})
        for problem in plugins.problems:
            print(problem.message)
    """
    loader = _Loader()
    found = sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
        key=lambda entry_point: entry_point.name,
    )
    names = sorted({entry_point.name for entry_point in found})
    for name in sorted(set(blocked)):
        if name not in names:
            loader.plugins.problems.append(Problem(_not_installed(name, names)))
    try:
        if entry_points:
            for entry_point in found:
                if entry_point.name not in blocked:
                    loader.entry_point(entry_point)
        for module in modules:
            loader.module(module)
        if server is not None:
            loader.server_file(server)
    except _Interrupted:
        pass
    loader.register_loaded()
    for error in declaration_problems(loader.plugins.pm):  # requires/after, cycles
        loader.plugins.problems.append(Problem(_one_line(str(error)), error))
    return loader.plugins


def _not_installed(name: str, installed: Sequence[str]) -> str:
    close = close_match(name, installed)
    if close is not None:
        hint = f"; did you mean -p no:{close}?"
    else:
        hint = f" (installed: {', '.join(installed)})" if installed else " (none is installed)"
    return f"-p no:{name}: no entry point named {name!r} is installed{hint}"


class _Interrupted(Exception):
    """A KeyboardInterrupt while loading: the loading stops there."""


class _Loaded(NamedTuple):
    """A plugin loaded, not checked yet: checked once every plugin is loaded, so that an
    implementation of an extension hook that a later plugin declares is known; or the
    problem of one that failed to load (not ``loaded``), kept in its place."""

    source: Source
    plugin: object
    problems: list[Problem]
    added_callbacks: bool
    loaded: bool = True


class _Loader:
    def __init__(self) -> None:
        self.plugins = Plugins(_PluginManager())
        self._labels: dict[str, str] = {}
        self._top_level: Mapping[str, list[str]] | None = None
        self._loaded: list[_Loaded] = []

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
            code = _read_server_file(path)
        except OSError as exc:
            self._problem(f"{path}: cannot read the server file: {exc.strerror}", exc)
            return
        source = Source(SERVER_NAME, SERVER_FILE, str(path), str(path))
        self._add(
            source,
            lambda: _exec_server(path, code),
            lambda module: _check_server_names(module, path, code),
        )

    def _add(
        self,
        source: Source,
        load: Callable[[], object],
        check: Callable[[Any], list[Problem]] = lambda plugin: [],
    ) -> None:
        callbacks = _callback_count(snapshot())
        try:
            plugin = load()
        except StoppedBySignal:
            raise
        except BaseException as exc:
            problem = Problem(f"{_failure(exc)} (while loading {source.label})", exc)
            self._loaded.append(_Loaded(source, None, [problem], False, loaded=False))
            if isinstance(exc, KeyboardInterrupt):
                raise _Interrupted from exc
            return
        added = _callback_count(snapshot()) != callbacks
        self._loaded.append(_Loaded(source, plugin, check(plugin), added))

    def register_loaded(self) -> None:
        """Check each loaded plugin's hooks, knowing every extension hook that the loaded
        plugins declare, and register those without a problem, in loading order."""
        declared = [
            namespace
            for each in self._loaded
            if each.loaded
            and (namespace := getattr(each.plugin, EXTENSION_HOOKS_ATTRIBUTE, None)) is not None
        ]
        pm = self.plugins.pm
        for source, plugin, problems, added_callbacks, loaded in self._loaded:
            if not loaded:
                self.plugins.problems.extend(problems)
                continue
            problems = problems + _check_hooks(plugin, source.name, declared)
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
                if not pm.get_hookcallers(plugin) and not added_callbacks:
                    self.plugins.warnings.append(_no_hooks(source, plugin))

    def _problem(self, message: str, error: BaseException | None = None) -> None:
        self.plugins.problems.append(Problem(message, error))


def _read_server_file(path: Path) -> bytes:
    """The bytes of ``path``, a regular file of at most MAX_SERVER_FILE bytes.

    Raises:
        OSError: it cannot be opened or read, or is not such a file (with a strerror that
            says so).
    """
    # O_NONBLOCK: opening a FIFO does not wait for a writer; it is then refused.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file (a {_file_type(mode)})")
        code = file.read(MAX_SERVER_FILE + 1)
    if len(code) > MAX_SERVER_FILE:
        raise OSError(
            errno.EFBIG, f"larger than {MAX_SERVER_FILE // (1024 * 1024)} MiB, the most read"
        )
    return code


def _file_type(mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ]
    return next((kind for test, kind in kinds if test(mode)), "special file")


def _exec_server(path: Path, code: bytes) -> types.ModuleType:
    module = types.ModuleType(SERVER_MODULE)
    module.__file__ = str(path)
    # As for a script run with `python server.py`: its directory is importable, and the
    # module is in sys.modules (which dataclasses and pickle need) under a name of its own.
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[SERVER_MODULE] = module
    exec(compile(code, str(path), "exec"), module.__dict__)
    return module


def _check_server_names(module: types.ModuleType, path: Path, code: bytes) -> list[Problem]:
    """A problem for each module-level name of the server file equal to a hook's that is
    bound to something that would not run as that hook."""
    finder = None  # made for a name bound to something defined elsewhere, which is rare
    problems = []
    for hook in (*LIFECYCLE_HOOKS, *PROBE_HOOKS):
        if hook not in vars(module):
            continue
        value = vars(module)[hook]
        if _defined_in_server_file(value):
            continue
        finder = finder or _PluginManager()
        if finder.parse_hookimpl_opts(module, hook):
            continue
        line = _binding_line(code, hook)
        where = f"{path}:{line}: " if line else f"{path}: "
        problems.append(
            Problem(
                f"{where}{hook!r} is bound to {_describe(value)}, which would not run as the "
                f"hook {hook!r}: in the server file a hook's name is for a function defined "
                f"there (def {hook}(...): ...); rename the other"
            )
        )
    return problems


def _describe(value: object) -> str:
    """``value`` in a few words: ``an int (5)``, ``started() imported from mylib``."""
    if value is None:
        return "None"
    if inspect.isclass(value):
        return f"the class {value.__qualname__}"
    if inspect.ismodule(value):
        return f"the module {value.__name__}"
    if inspect.isroutine(value):
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", "?")
        return f"{name}() imported from {module}" if module else f"the function {name}()"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    kind = kind.removeprefix("builtins.")
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{article} {kind} ({_one_line(text)})"


def _binding_line(code: bytes, name: str) -> int | None:
    """The line of the last module-level binding of ``name`` in ``code``: an assignment,
    an import, a ``def`` or a ``class``; ``None`` when there is none to be seen."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    lines = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                lines.append(node.lineno)
            pending.extend(node.decorator_list)  # not the body: another scope
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = [(alias.asname or alias.name).partition(".")[0] for alias in node.names]
            if name in bound:
                lines.append(node.lineno)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == name:
            lines.append(node.lineno)
        pending.extend(ast.iter_child_nodes(node))
    return max(lines, default=None)


def _check_hooks(plugin: object, name: str, declared: Sequence[object]) -> list[Problem]:
    """A problem for each hook implementation of ``plugin`` that cannot be registered or
    fails validation, knowing the extension hooks ``declared`` by the loaded plugins, in
    the order of their definitions; then, if each is valid alone, a problem if the plugin
    as a whole is not (one hook implemented twice, an extension hook it cannot declare)."""
    # The plugin as a whole first: valid, each of its implementations is valid alone too,
    # and a start makes one manager per plugin rather than one per hook.
    whole = _registration_error(plugin, name, declared)
    if whole is None:
        return []
    finder = _PluginManager()
    hooks = [attr for attr in dir(plugin) if finder.parse_hookimpl_opts(plugin, attr) is not None]
    problems = []
    for attribute in sorted(hooks, key=lambda attr: _definition(getattr(plugin, attr))):
        error = _registration_error(plugin, name, declared, only=attribute)
        if error is not None:
            file, line = _definition(getattr(plugin, attribute))
            where = f"{file}:{line}: " if file else ""
            problems.append(Problem(f"{where}{_one_line(str(error))}", error))
    return problems or [Problem(_one_line(str(whole)), whole)]


def _registration_error(
    plugin: object, name: str, declared: Sequence[object], only: str | None = None
) -> pluggy.PluginValidationError | None:
    """What registering ``plugin``, or only its hook ``only``, and validating it raise, on
    a manager of its own that knows the extension hooks ``declared``."""
    pm = _PluginManager(only=only)
    add_declared_hooks(pm, declared)
    try:
        pm.register(plugin, name=name)
        validate(pm)
    except DeclarationError:
        pass  # requires/after: checked once every plugin is loaded, by load()
    except pluggy.PluginValidationError as exc:
        return exc
    return None


def _callback_count(registry: CallbackRegistry) -> int:
    return sum(len(registry.impls(hook)) for hook in LIFECYCLE_HOOKS)


def _no_hooks(source: Source, plugin: object) -> str:
    """The warning for a plugin without a hook: what it is, and why, when it can tell."""
    module = getattr(plugin, "__name__", None)
    unmarked = [
        name
        for hook in LIFECYCLE_HOOKS
        for name in (hook, f"on_{hook}")
        if getattr(getattr(plugin, name, None), "__module__", False) == module
    ]
    if unmarked:
        functions = ", ".join(f"{name}()" for name in unmarked)
        why = f": {functions} {'is' if len(unmarked) == 1 else 'are'} not marked @hookimpl"
        oversip = [name for name in unmarked if oversip_name(name)]
        if oversip:
            why += f" (OverSIP's {oversip[0]} is {oversip_name(oversip[0])!r} here)"
    elif source.origin == SERVER_FILE:
        why = f": no function named {', '.join(LIFECYCLE_HOOKS[:-1])} or {LIFECYCLE_HOOKS[-1]}"
    else:
        why = ": no function marked @hookimpl, no SystemCallbacks"
    return f"{source.label} has no hook{why}; it is loaded, and never called"


def callbacks_source() -> Source:
    """The ``SystemCallbacks`` registry as a plugin source, naming its callbacks."""
    registry = snapshot()
    names = dict.fromkeys(
        f"{getattr(impl.function, '__module__', '?')}."
        f"{getattr(impl.function, '__qualname__', None) or repr(impl.function)}"
        for hook in LIFECYCLE_HOOKS
        for impl in registry.impls(hook)
    )
    return Source(CALLBACKS_PLUGIN_NAME, CALLBACKS, ", ".join(names))


def _completed(
    source: Source, plugin: object, distributions: Callable[[], Mapping[str, list[str]]]
) -> Source:
    """``source`` with the file and, for a ``--plugin`` module, the distribution filled in."""
    path = source.path or getattr(inspect.getmodule(plugin), "__file__", None)
    source = source._replace(path=path)
    if source.origin != OPTION:
        return source
    dists = distributions().get(source.target.partition(".")[0])
    if not dists:
        return source
    return source._replace(distribution=dists[0], version=importlib.metadata.version(dists[0]))


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
    try:
        text = _one_line(str(exc))
    except Exception:  # an exception whose __str__ raises
        text = ""
    return f"{where}{type(exc).__name__}: {text}" if text else f"{where}{type(exc).__name__}"


def _definition(function: Any) -> tuple[str, int]:
    """The file and line where ``function`` is defined, or ``("", 0)``."""
    code = getattr(inspect.unwrap(getattr(function, "__func__", function)), "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else ("", 0)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
