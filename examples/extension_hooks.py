"""Extension hooks: a module declares a hook, two plugins implement it, a caller awaits it.

Run it: ``python examples/extension_hooks.py``.
"""

import trio

import oversip_hooks
from oversip_hooks import Runtime, hookimpl, hookspec


class StatusHooks:
    """The hooks that the status module declares (in a package: a module of its own)."""

    @hookspec
    def status_report(self, runtime: Runtime) -> str | None:
        """Return None when all is well, else what is wrong."""


class Status:
    """The declaring module; it also calls the hook, once everything has started."""

    extension_hooks = StatusHooks

    @hookimpl(trylast=True)
    async def started(self, runtime: Runtime) -> None:
        outcomes = await runtime.hooks.status_report.call_each(concurrently=True, timeout=1)
        for outcome in outcomes:
            print(f"{outcome.plugin}: {outcome.error or outcome.value or 'fine'}")
        runtime.stop()


class Database:
    @hookimpl
    def status_report(self) -> str | None:
        return None


class Queue:
    @hookimpl
    async def status_report(self) -> str | None:
        await trio.sleep(0.01)  # asks the queue server
        return "3 jobs waiting for more than a minute"


if __name__ == "__main__":
    plugins = {"status": Status(), "db": Database(), "queue": Queue()}
    raise SystemExit(oversip_hooks.run(plugins))
