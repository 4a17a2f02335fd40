"""A module in 20 lines: run it with `python examples/hello.py`, stop it with Ctrl-C."""

import trio

import oversip_hooks
from oversip_hooks import Logger, hookimpl


class Heartbeat(Logger):
    log_id = "heartbeat"

    @hookimpl
    def initialize(self) -> None:
        self.period = 1.0  # a real module takes this from the user's configuration

    @hookimpl
    async def started(self, runtime: oversip_hooks.Runtime) -> None:
        runtime.start_soon(self.beat)  # owned by this plugin: cancelled after terminated

    async def beat(self) -> None:
        while True:
            self.log_system_info("beat")
            await trio.sleep(self.period)

    @hookimpl
    def reload(self) -> None:
        self.log_system_notice("reloaded (send SIGHUP to see this again)")

    @hookimpl
    def terminated(self, error: bool) -> None:
        self.log_system_notice(f"stopped (error={error})")


if __name__ == "__main__":
    raise SystemExit(oversip_hooks.run(Heartbeat()))
