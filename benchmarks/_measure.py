# The one way every figure is measured. The machines are shared and noisy, so a figure is
# never an absolute time alone: each benchmark is a set of variants (the subject and its
# baselines) run in rounds, every variant once per round, in an order that rotates from one
# round to the next, so that drift in the machine's speed hits all variants alike. A ratio
# is taken within each round (subject over baseline, the two samples measured seconds
# apart) and the figure is the median of those per-round ratios, with their quartiles and
# range as its spread.
#
# A variant takes a count and returns per-operation values, so that one helper serves
# in-process loops (where the count is sized once, as timeit's autorange does, until a
# sample lasts long enough to dwarf the clock's jitter) and subprocesses (which last long
# enough at a count of one). Rounds are bounded twice: at most `rounds`, and no new round
# once `budget` seconds have passed, after the first `MIN_ROUNDS`.

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

# A variant runs its operation `count` times and returns per-operation metrics by name.
Variant = Callable[[int], Mapping[str, float]]

MIN_ROUNDS = 3
MAX_COUNT = 1 << 20


@dataclass(frozen=True)
class Spread:
    """The median of some values, with their quartiles and range."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if len(values) < 2:
            q1 = q3 = values[0]
        else:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), q1, q3, min(values), max(values), len(values))


@dataclass
class Samples:
    """What :func:`interleave` measured: ``values[variant][metric]``, one per round."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def spread(self, variant: str, metric: str) -> Spread:
        return Spread.of(self.values[variant][metric])

    def ratio(self, subject: tuple[str, str], baseline: tuple[str, str]) -> Spread:
        """Subject over baseline, each ``(variant, metric)``, paired round by round."""
        subjects = self.values[subject[0]][subject[1]]
        baselines = self.values[baseline[0]][baseline[1]]
        return Spread.of(
            [s / b if b else math.inf for s, b in zip(subjects, baselines, strict=True)]
        )


@dataclass
class Timer:
    """Wall-clock seconds of the ``with timed()`` block that made it, once it has ended."""

    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    """Time a ``with`` block; a plain context manager, so it serves in async code too."""
    timer = Timer()
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - start


def interleave(
    variants: Mapping[str, Variant],
    *,
    rounds: int,
    budget: float,
    min_sample: float = 0.02,
) -> Samples:
    """Run ``variants`` in rotating order for up to ``rounds`` rounds or ``budget`` seconds.

    Each variant's count is sized first, growing from 1 until one call lasts
    ``min_sample`` seconds; those calls are the warm-up, and are not recorded.
    """
    counts = {name: _autorange(variant, min_sample) for name, variant in variants.items()}
    names = list(variants)
    samples = Samples({name: {} for name in names})
    deadline = time.perf_counter() + budget
    for done in range(rounds):
        if done >= MIN_ROUNDS and time.perf_counter() > deadline:
            break
        shift = done % len(names)
        for name in names[shift:] + names[:shift]:
            for metric, value in variants[name](counts[name]).items():
                samples.values[name].setdefault(metric, []).append(value)
    return samples


def _autorange(variant: Variant, min_sample: float) -> int:
    count = 1
    while True:
        with timed() as timer:
            variant(count)
        if timer.seconds >= min_sample or count >= MAX_COUNT:
            return count
        # Aim straight at the target, but never grow more than tenfold on one reading.
        count = min(MAX_COUNT, count * min(10, max(2, int(min_sample / max(timer.seconds, 1e-9)))))


@dataclass(frozen=True)
class Profile:
    """How much to measure: the default run, or a tiny one that only proves it works."""

    rounds: int = 21
    budget: float = 10.0  # seconds per benchmark, after which no new round starts
    min_sample: float = 0.02
    dispatch_sizes: tuple[int, ...] = (1, 10, 100)
    lifecycle_sizes: tuple[int, ...] = (10, 100, 1000, 10000)
    # A fixed number of rounds, whatever they take, for the two figures whose verdict a
    # budget-bound run left to chance: one lifecycle round at N=10000 lasts over ten
    # seconds, so the budget stopped it at MIN_ROUNDS (3), and two runs of three rounds
    # gave 2.9x and 4.2x; one start of the command is 5% of its own spread. Nine
    # lifecycle rounds still gave medians from 1.99x to 2.27x around the 2x target.
    lifecycle_rounds: int = 15
    startup_rounds: int = 41
    count_instructions: bool = True  # where valgrind is installed: 20-30 s more
    signal_rounds: int = 200
    fleet: int = 1000  # plugins, each owning a service, when SIGTERM is sent
    memory_plugins: int = 2000


QUICK = Profile(
    rounds=1,
    budget=0.0,
    lifecycle_rounds=1,
    startup_rounds=1,
    count_instructions=False,
    min_sample=0.001,
    dispatch_sizes=(1, 10),
    lifecycle_sizes=(10, 100),
    signal_rounds=3,
    fleet=10,
    memory_plugins=300,
)
