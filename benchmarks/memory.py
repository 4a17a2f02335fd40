# Peak RSS per 1000 plugins. A process's peak RSS is only known to the process itself and
# never goes down, so each reading is a fresh child (`python -m benchmarks.memory MODE N`,
# this module) that runs N plugins and prints its peak RSS; the cost of N plugins is the
# difference from the same child with none, which removes the interpreter and the imports.
# The baseline runs the same plugins without our runtime: raw pluggy calls the hooks and a
# plain trio nursery holds the services.

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import trio
import trio.testing

from oversip_hooks import Runtime

from ._measure import Profile, Variant, interleave
from ._plugins import Serving, manager_of, stop_once_running
from ._report import Section, compare, mebibytes

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 120.0

NOTES = """\
Each plugin starts one service that sleeps until cancelled (`runtime.start_soon(
trio.sleep_forever)` in a sync `started`) and has an empty `terminated`. A child process
registers N of them and runs them: **runtime** through `Runtime.run`, stopped once RUNNING;
**pluggy + nursery** by `pm.hook.initialize/started/terminated`, with the services in a plain
trio nursery, cancelled once all are blocked. The figure is (peak RSS with N plugins - peak
RSS of the same child with none) / (N / 1000), its `VmHWM` read at the end.
"""


def _child(mode: str, n: int) -> None:
    pm = manager_of([Serving() for _ in range(n)])
    if mode == "runtime":
        trio.run(stop_once_running(Runtime(pm, handle_signals=False)).run)
    else:

        async def plain() -> None:
            async with trio.open_nursery() as nursery:
                runtime = SimpleNamespace(start_soon=nursery.start_soon)
                pm.hook.initialize(runtime=runtime)
                pm.hook.started(runtime=runtime)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
                pm.hook.terminated(runtime=runtime, error=False)

        trio.run(plain)
    # VmHWM, the high-water mark of this process's own memory, not `ru_maxrss`: Linux
    # carries ru_maxrss over from the parent across fork and exec, so a child of a large
    # benchmark process would report the parent's size.
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))  # KiB


def _peak_kib(mode: str, n: int) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", mode, str(n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=True,
    )
    return int(done.stdout.split()[-1])


def _per_thousand(mode: str, n: int) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        extra = sum(_peak_kib(mode, n) - _peak_kib(mode, 0) for _ in range(count))
        return {"MiB": extra / count / 1024 / (n / 1000)}

    return measure


def run(profile: Profile) -> Section:
    n = profile.memory_plugins
    samples = interleave(
        {"runtime": _per_thousand("runtime", n), "pluggy": _per_thousand("pluggy", n)},
        rounds=min(profile.rounds, 5),  # the readings barely vary; each costs two processes
        budget=profile.budget,
        min_sample=0.0,
    )
    section = Section("Memory: peak RSS per 1000 plugins", notes=NOTES)
    section.rows.append(
        compare(
            samples,
            "runtime / pluggy + nursery",
            f"N={n}",
            ("runtime", "MiB"),
            ("pluggy", "MiB"),
            unit=mebibytes,
        )
    )
    return section


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
