# Time to ready, time to check and import time, each a real process from spawn to the
# moment that counts, against the floor that the issue names: a process that imports our
# three dependencies and runs trio once. Subject and floor are timed to the same end point:
# the floor sends READY=1 itself, as one datagram on its NOTIFY_SOCKET after its
# `trio.run`, and the same floor process is timed to its exit for `check`, which ends by
# exiting. Timing the floor to its exit against the command's READY=1 was rejected (it
# was the first version of this benchmark): the floor then paid for the interpreter's
# teardown and the command did not, which flattered the command by some 15%. The command
# is run as `python -m oversip_hooks`, the same `main()` that the `oversip-hooks` script
# calls, so that both sides use this very interpreter.

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

from ._measure import Profile, Variant, interleave
from ._process import Child, run_command, until_ready
from ._report import Section, compare, millions

# Every instruction a process runs from its start to its exit, as callgrind counts them:
# the same from one run to the next to 0.1%, where the time of a start on a shared machine
# moved the check figure from 1.19x to 1.30x between two runs of one commit. Shown beside
# the time, which the targets are about, where valgrind is installed.
COUNTER = "valgrind"

READY_LIMIT = 1.2
CHECK_LIMIT = 1.2
IMPORT_LIMIT = 1.1

FLOOR = """\
import os, socket
import trio, pluggy, loguru

trio.run(trio.sleep, 0)
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
"""
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
untimed. **check** is `python -m oversip_hooks check server.py`, the same entry points
blocked, until it has exited (status 0). **floor** is `python floor.py`, which imports
trio, pluggy and loguru, runs `trio.run(trio.sleep, 0)`, then sends `READY=1` in one
datagram to its `NOTIFY_SOCKET`: its **ready** is when that datagram arrives (against the
command's ready) and its **exit** when the same process has ended (against check).
**import** is `python -c "import oversip_hooks"` and **deps**
`python -c "import trio, pluggy, loguru"`, each until exited. Every child loads its
modules, ours and the dependencies', from a bytecode cache of the run's own
(`PYTHONPYCACHEPREFIX`, filled by an untimed first run of each), as after `pip install`.
**instructions**, where valgrind is installed: one more `check` and one more floor, each
under `valgrind --tool=callgrind`, which counts every instruction a process runs from its
start to its exit; the count does not vary between runs (to 0.1%), where the times above
do, and has no target of its own (the targets are about time).
Targets: ready and check within {READY_LIMIT}x of the floor, import within
{IMPORT_LIMIT}x of the dependencies.
"""


def _until_exit(argv: Sequence[str], workdir: Path) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        total = 0.0
        for _ in range(count):
            with Child(argv, workdir) as child:
                status, ended = child.exit()
                if status != 0:
                    child.fail(f"exited with status {status}")
                total += ended - child.spawned_at
        return {"exit": total / count}

    return measure


def _instructions(argv: Sequence[str], workdir: Path) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        total = 0
        for _ in range(count):
            # Read from callgrind's own file, not its messages, which VALGRIND_OPTS or a
            # ~/.valgrindrc may silence (-q) or send elsewhere (--log-file).
            counts = workdir / "callgrind.out"
            counts.unlink(missing_ok=True)  # never the count of the run before
            wrapper = [COUNTER, "--tool=callgrind", f"--callgrind-out-file={counts}"]
            with Child(argv, workdir, wrapper=wrapper) as child:
                status, _ = child.exit()
                if status != 0:
                    child.fail(f"exited with status {status}")
                total += _instructions_in(counts, child)
        return {"instructions": total / count}

    return measure


def _instructions_in(counts: Path, child: Child) -> int:
    """The ``Ir`` column of the ``summary:`` line of a callgrind output file: instructions
    read, whatever other events (cache misses, branches) were counted beside them."""
    lines = counts.read_text().splitlines() if counts.exists() else []
    events = next((line.split()[1:] for line in lines if line.startswith("events:")), [])
    summary = next((line.split()[1:] for line in lines if line.startswith("summary:")), [])
    if "Ir" not in events or len(summary) != len(events):
        child.fail(f"callgrind wrote no count of instructions to {counts}")
    return int(summary[events.index("Ir")])


def run(profile: Profile) -> Section:
    check = run_command("server.py", subcommand="check")
    floor = ["floor.py"]
    with TemporaryDirectory() as directory:
        workdir = Path(directory)
        (workdir / "server.py").write_text(SERVER)
        (workdir / "floor.py").write_text(FLOOR)
        variants = {
            "run": until_ready(run_command("server.py"), workdir, stop=True),
            "check": _until_exit(check, workdir),
            "floor": until_ready(floor, workdir, stop=False),
            "import": _until_exit(["-c", "import oversip_hooks"], workdir),
            "deps": _until_exit(["-c", "import trio, pluggy, loguru"], workdir),
        }
        samples = interleave(
            variants, rounds=profile.startup_rounds, budget=math.inf, min_sample=0.0
        )
        counted = profile.count_instructions and shutil.which(COUNTER) is not None
        if counted:  # once each, the bytecode cache filled by now: a count does not vary
            for name, argv in (("check", check), ("floor", floor)):
                instructions = _instructions(argv, workdir)(1)["instructions"]
                samples.values[name]["instructions"] = [instructions]
    section = Section("Time to ready and import", notes=NOTES)
    section.rows += [
        compare(
            samples,
            "run until READY=1 / floor",
            "1 process",
            ("run", "ready"),
            ("floor", "ready"),
            limit=READY_LIMIT,
        ),
        compare(
            samples,
            "check until exit / floor",
            "1 process",
            ("check", "exit"),
            ("floor", "exit"),
            limit=CHECK_LIMIT,
        ),
    ]
    if counted:
        section.rows.append(
            compare(
                samples,
                "check until exit / floor, instructions",
                "1 process",
                ("check", "instructions"),
                ("floor", "instructions"),
                unit=millions,
            )
        )
    section.rows.append(
        compare(
            samples,
            "import oversip_hooks / deps",
            "1 process",
            ("import", "exit"),
            ("deps", "exit"),
            limit=IMPORT_LIMIT,
        )
    )
    return section
