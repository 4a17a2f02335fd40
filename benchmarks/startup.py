# Time to ready and import time, each a real process from spawn to the moment that counts,
# against the floor that the issue names: a process that imports our three dependencies
# and runs trio once. The command is run as `python -m oversip_hooks`, the same `main()`
# that the `oversip-hooks` script calls, so that both sides use this very interpreter.

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

from ._measure import Profile, Variant, interleave
from ._process import READY, Child, run_command
from ._report import Section, compare

READY_LIMIT = 1.2
IMPORT_LIMIT = 1.1

FLOOR = "import trio, pluggy, loguru; trio.run(trio.sleep, 0)"
SERVER = '''\
"""A server with nothing to do: what `oversip-hooks run` costs by itself."""


def started():
    pass
'''

NOTES = f"""\
Real processes of this interpreter, timed from just before `Popen` in the benchmark.
**ready** is `python -m oversip_hooks run server.py` (a server file whose `started` does
nothing; the entry points of the group `oversip_hooks` are looked up, and any installed,
listed with the machine, are blocked with `-p no:NAME`) until `READY=1` arrives on the
unix datagram socket in its `NOTIFY_SOCKET`; the process is then stopped with SIGTERM,
untimed. **floor** is `python -c "{FLOOR}"` until it has exited. **import** is
`python -c "import oversip_hooks"` and **deps** `python -c "import trio, pluggy, loguru"`,
each until exited. Every child loads its modules, ours and the dependencies', from a
bytecode cache of the run's own (`PYTHONPYCACHEPREFIX`, filled by an untimed first run of
each), as after `pip install`. Targets: ready within {READY_LIMIT}x of the floor, import
within {IMPORT_LIMIT}x of the dependencies.
"""


def _until_ready(workdir: Path) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        total = 0.0
        for _ in range(count):
            with Child(run_command("server.py"), workdir) as child:
                _, ready = child.receive(READY)
                total += ready - child.spawned_at
                child.signal(signal.SIGTERM)
                if child.exit()[0] != 0:
                    child.fail("did not exit cleanly on SIGTERM")
        return {"time": total / count}

    return measure


def _until_exit(argv: Sequence[str], workdir: Path) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        total = 0.0
        for _ in range(count):
            with Child(argv, workdir) as child:
                status, ended = child.exit()
                if status != 0:
                    child.fail(f"exited with status {status}")
                total += ended - child.spawned_at
        return {"time": total / count}

    return measure


def run(profile: Profile) -> Section:
    with TemporaryDirectory() as directory:
        workdir = Path(directory)
        (workdir / "server.py").write_text(SERVER)
        variants = {
            "ready": _until_ready(workdir),
            "floor": _until_exit(["-c", FLOOR], workdir),
            "import": _until_exit(["-c", "import oversip_hooks"], workdir),
            "deps": _until_exit(["-c", "import trio, pluggy, loguru"], workdir),
        }
        samples = interleave(variants, rounds=profile.rounds, budget=profile.budget, min_sample=0.0)
    section = Section("Time to ready and import", notes=NOTES)
    section.rows += [
        compare(
            samples,
            "run until READY=1 / floor",
            "1 process",
            ("ready", "time"),
            ("floor", "time"),
            limit=READY_LIMIT,
        ),
        compare(
            samples,
            "import oversip_hooks / deps",
            "1 process",
            ("import", "time"),
            ("deps", "time"),
            limit=IMPORT_LIMIT,
        ),
    ]
    return section
