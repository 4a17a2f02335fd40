# Rows, the machine they were measured on, and the two renderings of them: a plain table on
# standard output and RESULTS.md. Both come from the same rows, so what is printed and
# what is written can never disagree.

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._measure import Samples, Spread

PACKAGES = ("trio", "pluggy", "loguru", "oversip-hooks")


@dataclass(frozen=True)
class Row:
    """One figure: a subject against its baseline, with absolute medians for context."""

    figure: str
    size: str
    subject: str
    baseline: str
    ratio: Spread
    target: str = ""
    met: bool | None = None
    # False when the target lies inside the ratio's interquartile range: the verdict is
    # then the median's, but a rerun may well give the other one.
    settled: bool = True


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: str = ""  # markdown: exactly what each figure includes


def seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def mebibytes(value: float) -> str:
    return f"{value:.3g} MiB"


def millions(value: float) -> str:
    return f"{value / 1e6:.1f} M"


def compare(
    samples: Samples,
    figure: str,
    size: str,
    subject: tuple[str, str],
    baseline: tuple[str, str],
    *,
    unit: Callable[[float], str] = seconds,
    limit: float | None = None,
) -> Row:
    """The row for ``subject`` over ``baseline``; met when the median ratio is at most
    ``limit``, when there is one, and settled unless ``limit`` is within its quartiles."""
    ratio = samples.ratio(subject, baseline)
    return Row(
        figure,
        size,
        unit(samples.spread(*subject).median),
        unit(samples.spread(*baseline).median),
        ratio,
        f"≤ {limit:g}x" if limit is not None else "",
        ratio.median <= limit if limit is not None else None,
        limit is None or not ratio.q1 <= limit <= ratio.q3,
    )


def machine() -> dict[str, str]:
    """What the figures were measured on, and when."""
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0))
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": f"{usable} usable of {cores}",
        "cpu": _cpu_model(),
        "load average at start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    for package in PACKAGES:
        info[package] = importlib.metadata.version(package)
    # Installed modules that `oversip-hooks run` would load: the children block them.
    found = importlib.metadata.entry_points(group="oversip_hooks")
    info["installed entry points (blocked)"] = ", ".join(sorted(e.name for e in found)) or "none"
    info["commit"] = _commit()
    return info


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    models = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else "unknown"


def _commit() -> str:
    """The checked-out commit, with ``+changes`` when the tree differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")


HEADER = ("figure", "size", "subject", "baseline", "ratio", "IQR", "min-max", "n", "target")


def _cells(row: Row) -> tuple[str, ...]:
    r = row.ratio
    verdict = {True: "met", False: "MISSED", None: ""}[row.met] + _unsettled(row)
    return (
        row.figure,
        row.size,
        row.subject,
        row.baseline,
        f"{r.median:.2f}x",
        f"{r.q1:.2f}-{r.q3:.2f}",
        f"{r.low:.2f}-{r.high:.2f}",
        str(r.n),
        f"{row.target} {verdict}".strip(),
    )


def _unsettled(row: Row) -> str:
    return "" if row.settled else " (target within the IQR: a rerun may differ)"


def table(sections: Sequence[Section]) -> str:
    """The rows of every section as one aligned plain-text table."""
    rows = [HEADER, *(_cells(row) for section in sections for row in section.rows)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(map(str.ljust, cells, widths)).rstrip()

    lines = [line(HEADER)]
    for section in sections:
        lines.append(f"[{section.title}]")
        lines.extend(line(_cells(row)) for row in section.rows)
    return "\n".join(lines)


def markdown(sections: Sequence[Section], info: dict[str, str], command: str) -> str:
    """RESULTS.md: the machine, every section's table and what its figures include."""
    out = [
        "# Benchmark results",
        "",
        f"Written by `{command}`; do not edit by hand. Every ratio is subject over "
        "baseline, measured in the same run, the two interleaved round by round; the "
        "figure is the median of the per-round ratios, with their interquartile range "
        "and range, over n rounds. Subject and baseline columns are medians, for context.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in info.items()),
    ]
    targets = [row for section in sections for row in section.rows if row.met is not None]
    if targets:
        out += ["", "## Targets", ""]
        out.extend(
            f"- {'met' if row.met else '**missed**'}: {row.figure}, {row.size}: "
            f"{row.ratio.median:.2f}x, subject {row.subject} (target {row.target})"
            f"{_unsettled(row)}"
            for row in targets
        )
    for section in sections:
        out += ["", f"## {section.title}", ""]
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|" + "---|" * len(HEADER))
        out.extend("| " + " | ".join(_cells(row)) + " |" for row in section.rows)
        if section.notes:
            out += ["", section.notes.strip()]
    return "\n".join(out) + "\n"
