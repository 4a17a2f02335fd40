"""Test a plugin's whole lifecycle in isolation, through the real runtime.

``LifecycleHarness`` runs plugins with a fresh plugin manager and ``SystemCallbacks``
registry, no signal handlers, and records hook calls, log records and the exit status.
The pytest plugin (active once the package is installed) provides it as the
``lifecycle`` fixture; ``oversip_hooks.testing.hypothesis`` fuzzes a plugin with random
lifecycle events and checks the framework's invariants after every step.
"""

from ._harness import (
    CapturedRecord,
    Fault,
    FaultInjector,
    HookCall,
    LifecycleEvent,
    LifecycleHarness,
)
from ._invariants import LifecycleInvariantError, check_lifecycle_invariants

__all__ = [
    "CapturedRecord",
    "Fault",
    "FaultInjector",
    "HookCall",
    "LifecycleEvent",
    "LifecycleHarness",
    "LifecycleInvariantError",
    "check_lifecycle_invariants",
]
