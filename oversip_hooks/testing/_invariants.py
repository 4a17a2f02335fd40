# The framework's promises, checked from what the harness observed rather than from a model
# of the runtime: a model would share the runtime's blind spots. Each check is stated so
# that it holds after any prefix of a run, which lets a state machine call it after every
# step, and at the end.

from __future__ import annotations

from .._callers import leaf_exceptions
from .._events import RuntimeState
from .._fatal import FatalError
from ._harness import HookCall, LifecycleHarness


class LifecycleInvariantError(AssertionError):
    """A promise of the framework was broken; the message says which, and shows the trace."""


def check_lifecycle_invariants(harness: LifecycleHarness) -> None:
    """Check what the framework promises about the run the harness observed so far.

    - hook calls never overlap (no ``terminated`` during a ``reload``, no two reloads);
    - per plugin, hooks come in the order initialize, started, reload..., terminated;
    - ``terminated`` runs at most once per plugin, never for a plugin whose ``started``
      failed or was cancelled, last of all its calls, and after it no hook of any plugin
      but other ``terminated`` ones runs;
    - ``terminated`` runs in the reverse of the order in which ``started`` completed;
    - ``error`` is true exactly when something failed before the shutdown;
    - once the run is over: every plugin that implements ``terminated`` and whose
      ``started`` completed was terminated (unless the shutdown was abandoned), and the
      exit status is 1 exactly when the run failed or its shutdown did (a ``terminated``
      that raised or timed out, a service that failed during it, an abandoned one).

    Raises:
        LifecycleInvariantError: naming the broken promise, with the trace.
    """
    problems = _problems(harness)
    if problems:
        trace = "\n  ".join(harness.trace)
        raise LifecycleInvariantError("; ".join(problems) + f"\ntrace:\n  {trace}")


_ORDER = {"initialize": 0, "started": 1, "reload": 2, "terminated": 3}


def _problems(harness: LifecycleHarness) -> list[str]:
    problems = [f"{a} overlapped {b}" for a, b in harness.overlapping_calls]
    calls = [call for call in harness.calls if call.lifecycle]
    terminated = [c for c in calls if c.hook == "terminated"]
    first_terminated = next((i for i, c in enumerate(calls) if c.hook == "terminated"), None)
    if first_terminated is not None:
        problems += [
            f"{c} ran after terminated had begun"
            for c in calls[first_terminated:]
            if c.hook != "terminated"
        ]
    for plugin in {c.plugin for c in calls} - {"SystemCallbacks"}:
        own = [c.hook for c in calls if c.plugin == plugin]
        if own != sorted(own, key=_ORDER.__getitem__):
            problems.append(f"{plugin}'s hooks ran out of order: {own}")
        for hook in ("initialize", "started", "terminated"):
            if own.count(hook) > 1:
                problems.append(f"{plugin}.{hook} ran {own.count(hook)} times")

    started = [c.plugin for c in calls if c.hook == "started" and _completed(c)]
    not_started = {c.plugin for c in calls if c.hook == "started" and not _completed(c)}
    terminated_started = [c.plugin for c in terminated if c.plugin in set(started)]
    problems += [
        f"{c.plugin} was terminated although its started did not complete"
        for c in terminated
        if c.plugin in not_started
    ]
    expected_order = [p for p in reversed(_unique(started)) if p in set(terminated_started)]
    if _unique(terminated_started) != expected_order:
        problems.append(f"terminated order {terminated_started} is not the reverse of started")

    failed = _failed_before_shutdown(harness)
    problems += [
        f"{c} but the run {'failed' if failed else 'did not fail'} before the shutdown"
        for c in terminated
        if c.error is not failed
    ]
    if harness.stopped:
        abandoned = any(overrun.abandoned for overrun in harness.shutdown_overruns)
        if not abandoned:
            implementers = {i.plugin_name for i in harness.pm.hook.terminated.get_hookimpls()}
            problems += [
                f"{p} started but was never terminated"
                for p in _unique(started)
                if p in implementers and p not in {c.plugin for c in terminated}
            ]
        shutdown_failed = (
            abandoned
            or any(c.raised is not None or c.cancelled for c in terminated)
            or bool(harness.shutdown_overruns)
            # a service that fails during the shutdown, say once its connection is closed
            or len(harness.errors) > len(harness.errors_before_shutdown)
        )
        expected_status = 1 if failed or shutdown_failed else 0
        if harness.exit_status != expected_status:
            problems.append(f"exit status {harness.exit_status}, expected {expected_status}")
    return problems


def _completed(call: HookCall) -> bool:
    return call.raised is None and not call.cancelled


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _failed_before_shutdown(harness: LifecycleHarness) -> bool:
    """Whether anything but a non-fatal reload error happened before the shutdown."""
    in_shutdown = RuntimeState.STOPPING in harness.states
    errors = harness.errors_before_shutdown if in_shutdown else harness.errors
    forgiven = {
        id(c.raised)
        for c in harness.calls_to("reload")
        if c.raised is not None
        and not any(isinstance(e, FatalError) for e in leaf_exceptions(c.raised))
    }
    return any(id(error) not in forgiven for error in errors)
