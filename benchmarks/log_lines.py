# The cost of one `log_system_info` line against the same line written through loguru
# directly. Both go to the same file sink, with the same format (OverSIP's console line),
# and carry the same `extra`, so the bytes written are identical and the ratio is the
# price of our API over loguru's alone. The direct call uses a logger bound once, as a
# loguru user would write it at module level.

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from tempfile import TemporaryDirectory

from loguru import logger

from oversip_hooks import Logger
from oversip_hooks._logging import format_console

from ._measure import Profile, Variant, interleave, timed
from ._report import Section, compare

LIMIT = 1.2
MESSAGE = "benchmark line"

NOTES = f"""\
Time per line written to a loguru file sink (`logger.add(path, format=...)` with OverSIP's
console format, the only sink installed): **oversip** is `self.log_system_info(msg)` on a
`Logger` subclass with a class attribute `log_id`; **loguru** is `bound.info(msg)` on
`bound = logger.bind(log_id=..., user=False)`, made once. Both lines are checked to be
the same text, time aside. Target: within {LIMIT}x of raw loguru.
"""


class _Module(Logger):
    log_id = "bench"


def _lines(write: Callable[[str], None]) -> Variant:
    def measure(count: int) -> Mapping[str, float]:
        with timed() as timer:
            for _ in range(count):
                write(MESSAGE)
        return {"time": timer.seconds / count}

    return measure


def run(profile: Profile) -> Section:
    module = _Module()
    bound = logger.bind(log_id=_Module.log_id, user=False)
    # Each writer looks its method up on every line, as `self.log_system_info(...)` in a
    # module does: our methods are descriptors, and the lookup is part of their cost.
    writers: dict[str, Callable[[str], None]] = {
        "oversip": lambda message: module.log_system_info(message),
        "loguru": lambda message: bound.info(message),
    }
    with TemporaryDirectory() as workdir:
        path = Path(workdir) / "bench.log"
        sink = logger.add(
            path, format=format_console, level="INFO", colorize=False, backtrace=False
        )
        try:
            _check_same_line(path, writers)
            samples = interleave(
                {name: _lines(write) for name, write in writers.items()},
                rounds=profile.rounds,
                budget=profile.budget,
                min_sample=profile.min_sample,
            )
        finally:
            logger.remove(sink)
    section = Section("Logging: one line to a file sink", notes=NOTES)
    section.rows.append(
        compare(
            samples,
            "log_system_info / loguru",
            "1 line",
            ("oversip", "time"),
            ("loguru", "time"),
            limit=LIMIT,
        )
    )
    return section


def _check_same_line(path: Path, writers: Mapping[str, Callable[[str], None]]) -> None:
    for write in writers.values():
        write(MESSAGE)
    lines = [line.split(" ", 2)[2] for line in path.read_text().splitlines()[-len(writers) :]]
    if len(set(lines)) != 1:
        raise RuntimeError(f"the lines differ beyond their time: {lines}")
