# `python -m benchmarks`: run every benchmark, print one table, write RESULTS.md. The
# sections run one after another in this process (child processes for the ones that need
# real processes), never side by side: on a two-core machine a second benchmark would be
# the noise the first one measures.

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

from loguru import logger

from . import dispatch, http, lifecycle, log_lines, memory, signals, startup
from ._measure import QUICK, Profile
from ._report import Section, machine, markdown, table


def _sqlite(profile: Profile) -> Section:
    from . import sqlite  # its baseline: pip install -e 'contrib/oversip-mod-sqlite[bench]'

    return sqlite.run(profile)


def _mysql(profile: Profile) -> Section:
    from . import mysql  # MariaDB and its baselines: see contrib/oversip-mod-mysql

    return mysql.run(profile)


SECTIONS: dict[str, Callable[[Profile], Section]] = {
    "dispatch": dispatch.run,
    "lifecycle": lifecycle.run,
    "startup": startup.run,
    "http": http.run,
    "signals": signals.run,
    "logging": log_lines.run,
    "memory": memory.run,
    "sqlite": _sqlite,
    "mysql": _mysql,
}
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
COMMAND = "python -m benchmarks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Benchmark oversip-hooks against its baselines."
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"where to write the results ({RESULTS})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one round: proves it runs, no more"
    )
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run this section only; repeatable"
    )
    options = parser.parse_args(argv)
    profile = QUICK if options.quick else Profile()
    info = machine()
    # In-process benchmarks log through loguru with no sink, so that a log line costs what
    # a disabled one costs; the logging benchmark adds the sink it measures.
    logger.remove()
    with TemporaryDirectory() as cache:
        # Child processes load every module from cached bytecode, ours as well as our
        # dependencies', as after `pip install`: PYTHONDONTWRITEBYTECODE (set in some
        # environments) would otherwise recompile our modules, an editable install without
        # .pyc files, in every child, while the dependencies' .pyc files are used.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = cache
        # Child processes import oversip_hooks from this checkout, as this process does,
        # not from wherever the environment's editable install points (the working tree,
        # when RESULTS.md is made from a clean checkout of a commit).
        root = str(Path(__file__).resolve().parent.parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [root, os.environ.get("PYTHONPATH")])
        )
        started = time.monotonic()
        sections = []
        for name in options.only or SECTIONS:
            print(f"running {name}...", file=sys.stderr, flush=True)
            sections.append(SECTIONS[name](profile))
        info["duration"] = f"{time.monotonic() - started:.0f} s"
        info["load average at end"] = " ".join(f"{load:.2f}" for load in os.getloadavg())
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    print(table(sections))
    options.output.write_text(markdown(sections, info, command))
    print(f"\nwritten to {options.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
