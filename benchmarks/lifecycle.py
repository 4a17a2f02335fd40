# The whole lifecycle of N trivial plugins, timed in two phases because they belong to two
# libraries: building the manager and registering the plugins is pluggy's work, and
# `Runtime.run` (initialize, started, stop, terminated) is ours. The figure that the target
# is about is the per-plugin cost of the whole, at each N against N=10, the smallest size,
# measured in the same rounds; the two phases are shown the same way so that a growth can
# be put on the library it comes from.

from __future__ import annotations

import math
from collections.abc import Mapping

import trio

from oversip_hooks import Runtime

from ._measure import Profile, Variant, interleave, timed
from ._plugins import Trivial, manager_of, stop_once_running
from ._report import Section, compare

LIMIT = 2.0

NOTES = f"""\
N plugins, each an instance of one class with empty synchronous `initialize`, `started`,
`reload` and `terminated` hooks. **whole** is the time from `get_plugin_manager()` to
`trio.run(runtime.run)` returning, divided by N: **register** (building the manager and
`pm.register` of each plugin: pluggy) plus **run** (`Runtime(pm, handle_signals=False)`
and `trio.run(runtime.run)`, with a state listener that calls `runtime.stop()` once
RUNNING: `initialize`, `started`, stop, `terminated`, loguru with no sink). Each ratio is the
per-plugin cost at N over the per-plugin cost at the smallest N, in the same round; at the
smallest N the fixed cost of a run (`trio.run` itself) weighs most, hence ratios below 1.
Target: the whole stays within {LIMIT:g}x of the smallest N's per-plugin cost up to N=10000.
"""


def _lifecycle(n: int) -> Variant:
    plugins: list[object] = [Trivial() for _ in range(n)]

    def measure(count: int) -> Mapping[str, float]:
        register = run = 0.0
        for _ in range(count):
            with timed() as building:
                pm = manager_of(plugins)
            with timed() as running:
                status = trio.run(stop_once_running(Runtime(pm, handle_signals=False)).run)
            if status != 0:
                raise RuntimeError(f"the lifecycle of {n} trivial plugins exited with {status}")
            register += building.seconds
            run += running.seconds
        per_plugin = count * n
        return {
            "whole": (register + run) / per_plugin,
            "register": register / per_plugin,
            "run": run / per_plugin,
        }

    return measure


def run(profile: Profile) -> Section:
    sizes = profile.lifecycle_sizes
    variants = {f"N={n}": _lifecycle(n) for n in sizes}
    samples = interleave(
        variants,
        rounds=profile.lifecycle_rounds,
        budget=math.inf,
        min_sample=profile.min_sample,
    )
    smallest = f"N={sizes[0]}"
    section = Section("Whole lifecycle, per plugin, against the smallest N", notes=NOTES)
    for phase in ("whole", "register", "run"):
        for size in variants:
            if size != smallest:
                section.rows.append(
                    compare(
                        samples,
                        f"{phase}: per plugin / {smallest}",
                        size,
                        (size, phase),
                        (smallest, phase),
                        limit=LIMIT if phase == "whole" else None,
                    )
                )
    return section
