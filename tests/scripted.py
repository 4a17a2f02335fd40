"""A plugin whose every hook does what the test says: return, raise or call fatal,
synchronously or not. Used by the lifecycle tests and the property-based tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import trio

from oversip_hooks import Runtime, fatal, hookimpl

Outcome = Literal["ok", "raise", "fatal"]
HOOKS = ("initialize", "started", "reload", "terminated")


class ScriptError(Exception):
    """What a scripted hook raises when told to."""


@dataclass
class Script:
    outcome: Outcome = "ok"
    is_async: bool = False


@dataclass
class ScriptedPlugin:
    """Implements all four hooks; ``scripts[hook]`` says what each call does."""

    name: str
    scripts: dict[str, Script] = field(default_factory=dict)

    async def _act_async(self, hook: str) -> None:
        await trio.lowlevel.checkpoint()
        self._act(hook)

    def _act(self, hook: str) -> None:
        outcome = self.scripts.get(hook, Script()).outcome
        if outcome == "raise":
            raise ScriptError(f"{self.name}.{hook} failed")
        if outcome == "fatal":
            fatal(f"{self.name}.{hook} called fatal")

    def _run(self, hook: str) -> object:
        if self.scripts.get(hook, Script()).is_async:
            return self._act_async(hook)
        self._act(hook)
        return None

    @hookimpl
    def initialize(self, runtime: Runtime) -> object:
        return self._run("initialize")

    @hookimpl
    def started(self, runtime: Runtime) -> object:
        return self._run("started")

    @hookimpl
    def reload(self, runtime: Runtime) -> object:
        return self._run("reload")

    @hookimpl
    def terminated(self, runtime: Runtime, error: bool) -> object:
        return self._run("terminated")
