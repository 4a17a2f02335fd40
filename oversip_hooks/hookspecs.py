"""The lifecycle hooks a plugin may implement, and the extension hooks the runtime declares.

Each hook may be implemented as a plain function or an ``async def``, and may take any
subset of its arguments, by name (pluggy's rules). The runtime, not pluggy, calls them:
one implementation at a time, in registration order, awaiting the ones that are async.
See ``oversip_hooks._runtime`` for the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from ._runtime import Runtime

PROJECT_NAME = "oversip_hooks"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def initialize(runtime: Runtime) -> None:
    """Configure modules; runs once, before ``started``, and not again on reload.

    OverSIP's ``SystemEvents.on_initialize``: the user calls each module's configuration
    API here (``M.sqlite.add_pool(...)``). An exception or ``fatal()`` here is fatal.
    """


@hookspec
def started(runtime: Runtime) -> None:
    """Open network and database connections; runs once the trio runtime is running.

    An exception or ``fatal()`` here is fatal; the implementations after it do not run.
    """


@hookspec
async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Set up and tear down in one async generator that yields once, as aiohttp's
    ``cleanup_ctx`` and Starlette's lifespan do.

    The code before ``yield`` runs in the plugin's ``started`` turn, before its
    ``started`` (under the startup timeout); the code after it in the plugin's
    ``terminated`` turn, after its ``terminated`` (under the shutdown deadline), on a clean
    stop and on an error alike (``runtime.error`` tells which). It is torn down if and only
    if its setup completed. A nursery or cancel scope opened before ``yield`` may stay open
    across it; a task in that nursery that raises brings the runtime down with
    ``error=True``, as a service does.
    """
    yield


@hookspec
def reload(runtime: Runtime) -> None:
    """Re-read what can be re-read; runs on SIGHUP or ``runtime.reload()``.

    An exception here is logged and the next implementation still runs; ``fatal()`` is
    fatal.
    """


@hookspec
def terminated(runtime: Runtime, error: bool) -> None:
    """Release what ``started`` opened; runs once at shutdown, in reverse start order.

    ``error`` is true when the runtime goes down because of ``fatal()``, an unhandled
    exception in a hook or a service, or a failed start; false on a requested stop.
    """


class ProbeHooks:
    """Extension hooks that the runtime itself declares, for ``oversip-hooks run --http``
    (its ``/readyz`` and ``/metrics``): any plugin, a server file included, may implement
    them; without ``--http`` nothing calls them."""

    @hookspec
    def health_check(self, runtime: Runtime) -> str | None:
        """Say whether this plugin can do its work: ``None`` when it can, else a short
        reason (``"pool 'main': database is locked"``). Sync or async.

        Called for each ``GET /readyz`` while the runtime runs, all plugins' checks at
        once, under one timeout (1 s): a check that raises or has not answered by then
        marks its plugin unhealthy and the instance not ready. A sync check runs in the
        event loop and must be quick; do blocking work with ``trio.to_thread``.
        """

    @hookspec
    def metrics_collectors(self, runtime: Runtime) -> Iterable[Any] | None:
        """Return the Prometheus collectors of this plugin (objects with a ``collect()``
        method yielding metric families), read at every scrape of ``/metrics``.

        Asked once, at the first scrape after ``initialize`` completed. Name metrics
        after the plugin (``oversip_sqlite_...``); a name that another collector has
        already is refused with an error line.
        """
