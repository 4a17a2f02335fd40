# Services are the tasks that plugins start (`runtime.start_soon`, `runtime.start`) and
# the lifespans' tasks. They run in the runtime's one nursery, each in a cancel scope
# recorded under the plugin that started it (the `current_plugin` of `_callers.py`, set
# while its hook runs and inherited by what it starts), so that the shutdown can close one
# plugin's services right after its `terminated`, in its turn. A service catches its own
# error and hands it to the runtime as a failure, so the nursery never tears the
# lifecycle down underneath `terminated`. Rejected: a nursery per plugin, which would
# have to be opened by a task that outlives the plugin's hooks, and so by the runtime
# anyway, with a cancel scope each, which is what this is.

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import trio

from ._callers import current_plugin, is_cancellation, leave_if_forked_child
from ._fatal import printable
from ._logging import begin_service_code


class Service:  # not a dataclass: it and `dataclasses` cost every start 1-2 ms to import
    """One service: its name in log lines, its cancel scope, and when it has ended."""

    __slots__ = ("done", "name", "scope")

    def __init__(self, name: str) -> None:
        self.name = name
        self.scope = trio.CancelScope()
        self.done = trio.Event()


class _TaskStatus:
    """Forwards ``started()`` and remembers that it was called."""

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self.reported = False

    def started(self, value: object = None) -> None:
        self.reported = True
        self._inner.started(value)


class Services:
    """The services of one runtime, by owner (``None``: started outside any plugin).

    Args:
        running: where each service records its frame, for the watchdog.
        on_failure: told ``(error, owner, service name)`` when a service raises after
            it started (or reported ready).
        fork_generation: the process's, to end a forked child that comes back here.
    """

    def __init__(
        self,
        running: dict[FrameType, tuple[str | None, str]],
        on_failure: Callable[[BaseException, str | None, str], None],
        fork_generation: int,
    ) -> None:
        self.nursery: trio.Nursery | None = None
        self._running = running
        self._on_failure = on_failure
        self._fork_generation = fork_generation
        self._by_owner: dict[str | None, set[Service]] = {}
        self._closed_owners: set[str | None] = set()

    def counts(self) -> dict[str | None, int]:
        """How many services each owner has running now."""
        return {owner: len(services) for owner, services in self._by_owner.items() if services}

    def owners(self) -> list[str | None]:
        """The owners that have services, in the order they first started one."""
        return list(self._by_owner)

    def start_soon(
        self, async_fn: Callable[..., Awaitable[object]], args: tuple[object, ...]
    ) -> None:
        """Start ``async_fn(*args)`` as a service of the current plugin."""
        owner = current_plugin.get()
        service = self.new(owner, f"service {name_of(async_fn)}")
        self._nursery().start_soon(
            self.host, owner, service, async_fn, args, False, name=service.name
        )

    async def start(
        self, async_fn: Callable[..., Awaitable[object]], args: tuple[object, ...]
    ) -> Any:
        """Start ``async_fn(*args, task_status=...)`` as a service of the current plugin,
        and return what it reports ready with; raise what it raised before that."""
        owner = current_plugin.get()
        service = self.new(owner, f"service {name_of(async_fn)}")
        return await self.start_as(owner, service, async_fn, args)

    async def start_as(
        self,
        owner: str | None,
        service: Service,
        async_fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
    ) -> Any:
        """:meth:`start` for a service made with :meth:`new` (a lifespan's)."""
        return await self._nursery().start(
            self.host, owner, service, async_fn, args, True, name=f"{owner}: {service.name}"
        )

    def new(self, owner: str | None, name: str) -> Service:
        """A service recorded under ``owner`` before its task first runs, so that closing
        the owner's services right after ``start_soon`` still waits for it; cancelled
        from the start if they are closed already."""
        service = Service(name)
        if owner in self._closed_owners:
            service.scope.cancel()
        self._by_owner.setdefault(owner, set()).add(service)
        return service

    def forget(self, owner: str | None, service: Service) -> None:
        """Stop waiting for ``service`` (cancelled, and left to end on its own)."""
        self._by_owner.get(owner, set()).discard(service)

    async def host(
        self,
        owner: str | None,
        service: Service,
        async_fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        reports_ready: bool,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one service's task: in its owner's context, but not as lifecycle code."""
        current_plugin.set(owner)
        begin_service_code()  # a copy of its starter's context, but not lifecycle code
        status = _TaskStatus(task_status)
        frame = sys._getframe()
        self._running[frame] = (owner, service.name)
        try:
            with service.scope:
                if reports_ready:
                    await async_fn(*args, task_status=status)
                else:
                    await async_fn(*args)
        except BaseException as exc:
            if is_cancellation(exc) or (reports_ready and not status.reported):
                raise  # a start() that failed before it was ready raises in its caller
            self._on_failure(exc, owner, service.name)
        finally:
            del self._running[frame]
            leave_if_forked_child(self._fork_generation)
            self.forget(owner, service)
            service.done.set()

    async def close(self, owner: str | None, deadline: float) -> bool:
        """Cancel ``owner``'s services, and any it starts from now on; wait for them
        until ``deadline``. Return whether they all ended by then."""
        self._closed_owners.add(owner)
        services = self._by_owner.pop(owner, set())
        for service in services:
            service.scope.cancel()
        with trio.CancelScope(deadline=deadline) as scope:
            for service in services:
                await service.done.wait()
        return not scope.cancelled_caught

    def _nursery(self) -> trio.Nursery:
        if self.nursery is None:
            raise RuntimeError("services can only be started while the runtime is running")
        return self.nursery


def name_of(function: object) -> str:
    """``Pool.serve``: a function's qualified name without the functions it is local to."""
    name = getattr(function, "__qualname__", None)
    return name.rpartition("<locals>.")[2] if isinstance(name, str) else printable(function)
