"""Turn the samples of a run into one table per workload, as text and as markdown.

Every number in a table is a median over the rounds that ran; every ratio
compares two medians of the same run (absolute times on a noisy 2-core
machine mean little, ratios within one run mean a lot).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from contenders import Contender
from workloads import Workload

PROJECT = "parallelize"
SEQUENTIAL = "sequential"
BARE_TASKS = "bare_tasks"
RSS_TARGET_MB = 10.0
RSS_FLAT_MB = 2.0  # growth from the small to the large size still called "flat"


@dataclass
class Sample:
    """What one measuring subprocess reported."""

    elapsed: float | None = None
    count: int | None = None
    checksum: int | None = None
    peak_inflight: int = 0
    not_ok: int = 0
    maxrss_kb: int | None = None
    error: str | None = None


@dataclass
class Cell:
    """All samples of one (workload, contender, size or baseline) across rounds."""

    samples: list[Sample] = field(default_factory=list)
    skipped: str = ""

    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    def median_elapsed(self) -> float | None:
        times = [s.elapsed for s in self.good() if s.elapsed is not None]
        return statistics.median(times) if times else None

    def median_rss_mb(self) -> float | None:
        rss = [s.maxrss_kb for s in self.good() if s.maxrss_kb is not None]
        return statistics.median(rss) / 1024 if rss else None

    def spread(self) -> str:
        """(max - min) / median of the elapsed times: how noisy this cell was."""
        times = [s.elapsed for s in self.good() if s.elapsed is not None]
        if len(times) < 2:
            return "-"
        return f"{(max(times) - min(times)) / statistics.median(times):.0%}"

    def peak_inflight(self) -> int:
        return max((s.peak_inflight for s in self.good()), default=0)


CellKey = tuple[str, str, str]  # (workload key, contender name, size or "baseline")


def size_key(n: int | None) -> str:
    return "baseline" if n is None else str(n)


@dataclass
class Results:
    cells: dict[CellKey, Cell] = field(default_factory=dict)

    def cell(self, workload: str, contender: str, n: int | None) -> Cell:
        return self.cells.setdefault((workload, contender, size_key(n)), Cell())

    def get(self, workload: str, contender: str, n: int | None) -> Cell | None:
        return self.cells.get((workload, contender, size_key(n)))


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    footnotes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# Formatting helpers
# --------------------------------------------------------------------------- #


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def check(cell: Cell, workload: Workload, n: int) -> str:
    """'ok' when every round returned n results with the right sum (and, for http, all 200)."""
    if not cell.samples:
        return "-"
    problems = []
    for s in cell.samples:
        if s.error is not None:
            problems.append(f"error: {s.error}")
        elif s.count != n:
            problems.append(f"LOST: {s.count:,} of {n:,} results")
        elif s.checksum != workload.expected_checksum(n):
            problems.append("WRONG results (sum differs)")
        elif s.not_ok:
            problems.append(f"{s.not_ok:,} non-200 replies")
    return problems[0] if problems else "ok"


def notes(contender: Contender, workload: Workload) -> str:
    parts = []
    if contender.python == "py312":
        same = "" if contender.name.startswith(PROJECT) else " (compare with parallelize_py312)"
        parts.append("Python 3.12" + same)
    if contender.floor:
        parts.append("floor")
    if contender.holds_all:
        parts.append(contender.holds_all)
    if contender.order == "input" and not contender.floor:
        parts.append("input order")
    if workload.metric in ("efficiency", "http") and contender.name == BARE_TASKS:
        parts.append("reference")
    return "; ".join(parts)


# --------------------------------------------------------------------------- #
# One builder per metric
# --------------------------------------------------------------------------- #


def throughput_table(w: Workload, contenders: Sequence[Contender], res: Results) -> Table:
    def rate(name: str) -> float | None:
        cell = res.get(w.key, name, w.n)
        t = cell.median_elapsed() if cell else None
        return w.n / t if t else None

    project, floor = rate(PROJECT), rate(SEQUENTIAL)
    floor_us = 1e6 / floor if floor else None
    rows = []
    for c in contenders:
        cell = res.get(w.key, c.name, w.n)
        if cell is None or cell.skipped:
            rows.append(skipped_row(c, cell, 8))
            continue
        r = rate(c.name)
        us = 1e6 / r if r else None
        extra = us - floor_us if us is not None and floor_us is not None else None
        rows.append(
            [
                c.name,
                number(r, ",.0f"),
                number(us, ".2f"),
                ratio(r, project),
                ratio(r, floor),
                number(extra, "+.2f"),
                cell.spread(),
                check(cell, w, w.n),
                notes(c, w),
            ]
        )
    return Table(
        heading(w),
        [
            "contender",
            "items/s",
            "us/item",
            "vs parallelize",
            "vs sequential",
            "us/item over floor",
            "spread",
            "check",
            "notes",
        ],
        rows,
    )


def efficiency_table(w: Workload, contenders: Sequence[Contender], res: Results) -> Table:
    ideal = w.ideal_seconds()

    def eff(name: str) -> float | None:
        cell = res.get(w.key, name, w.n)
        t = cell.median_elapsed() if cell else None
        return ideal / t if t else None

    project, floor = eff(PROJECT), eff(BARE_TASKS)
    rows = []
    for c in contenders:
        cell = res.get(w.key, c.name, w.n)
        if cell is None or cell.skipped:
            rows.append(skipped_row(c, cell, 8))
            continue
        peak = cell.peak_inflight()
        rows.append(
            [
                c.name,
                number(cell.median_elapsed(), ".3f"),
                number(eff(c.name), ".3f"),
                ratio(eff(c.name), floor),
                ratio(eff(c.name), project),
                f"{peak}" + (" OVER LIMIT" if peak > w.workers else ""),
                cell.spread(),
                check(cell, w, w.n),
                notes(c, w),
            ]
        )
    return Table(
        heading(w) + f"; ideal {ideal:.2f} s",
        [
            "contender",
            "elapsed s",
            "efficiency",
            "vs bare_tasks",
            "vs parallelize",
            "peak in flight",
            "spread",
            "check",
            "notes",
        ],
        rows,
    )


def http_table(w: Workload, contenders: Sequence[Contender], res: Results) -> Table:
    def rate(name: str) -> float | None:
        cell = res.get(w.key, name, w.n)
        t = cell.median_elapsed() if cell else None
        return w.n / t if t else None

    project, floor = rate(PROJECT), rate(BARE_TASKS)
    rows = []
    for c in contenders:
        cell = res.get(w.key, c.name, w.n)
        if cell is None or cell.skipped:
            rows.append(skipped_row(c, cell, 7))
            continue
        rows.append(
            [
                c.name,
                number(rate(c.name), ",.0f"),
                ratio(rate(c.name), project),
                ratio(rate(c.name), floor),
                str(cell.peak_inflight()),
                cell.spread(),
                check(cell, w, w.n),
                notes(c, w),
            ]
        )
    return Table(
        heading(w),
        [
            "contender",
            "requests/s",
            "vs parallelize",
            "vs bare_tasks",
            "peak in flight",
            "spread",
            "check (all 200)",
            "notes",
        ],
        rows,
    )


def rss_table(w: Workload, contenders: Sequence[Contender], res: Results) -> Table:
    small, large = w.sizes[0], w.sizes[-1]
    rows = []
    verdict: list[str] = []
    for c in contenders:
        base_cell = res.get(w.key, c.name, None)
        small_cell = res.get(w.key, c.name, small)
        large_cell = res.get(w.key, c.name, large)
        if small_cell is None or small_cell.skipped:
            rows.append(skipped_row(c, small_cell, 7))
            continue
        base = base_cell.median_rss_mb() if base_cell else None
        grow_small = growth(small_cell, base)
        grow_large = growth(large_cell, base)
        delta = (
            grow_large - grow_small if grow_large is not None and grow_small is not None else None
        )
        t = small_cell.median_elapsed()
        large_text = number(grow_large, ".1f")
        row_notes = notes(c, w)
        if large_cell is not None and large_cell.skipped:
            large_text, _, why = large_cell.skipped.partition(":")
            if large_text != "capped":  # a capped row's notes already say what it holds
                row_notes = "; ".join(x for x in (row_notes, f"{size_label(large)}:{why}") if x)
        checks = [check(small_cell, w, small)]
        if large_cell is not None and not large_cell.skipped:
            checks.append(check(large_cell, w, large))
        rows.append(
            [
                c.name,
                number(base, ".1f"),
                number(grow_small, ".1f"),
                large_text,
                number(delta, "+.1f"),
                number(small / t if t else None, ",.0f"),
                next((x for x in checks if x != "ok"), "ok"),
                row_notes,
            ]
        )
        if c.name == PROJECT:
            verdict.append(rss_verdict(grow_small, grow_large, small, large))
    return Table(
        heading(w),
        [
            "contender",
            "baseline MB",
            f"growth MB @{size_label(small)}",
            f"growth MB @{size_label(large)}",
            "large - small MB",
            f"items/s @{size_label(small)}",
            "check",
            "notes",
        ],
        rows,
        verdict,
    )


def growth(cell: Cell | None, base: float | None) -> float | None:
    if cell is None or base is None:
        return None
    rss = cell.median_rss_mb()
    return None if rss is None else rss - base


def rss_verdict(small_mb: float | None, large_mb: float | None, small: int, large: int) -> str:
    if small_mb is None or large_mb is None:
        return "parallelize memory target: not measured"
    ok = large_mb < RSS_TARGET_MB and abs(large_mb - small_mb) < RSS_FLAT_MB
    return (
        f"parallelize memory target (< {RSS_TARGET_MB:.0f} MB, flat from {size_label(small)} to "
        f"{size_label(large)} within {RSS_FLAT_MB:.0f} MB): {'MET' if ok else 'NOT MET'} "
        f"({small_mb:.1f} MB -> {large_mb:.1f} MB)"
    )


def skipped_row(c: Contender, cell: Cell | None, width: int) -> list[str]:
    """A row of dashes whose check column says why the contender was not measured."""
    reason = cell.skipped if cell is not None and cell.skipped else "not run"
    return [c.name] + ["-"] * (width - 2) + [reason, notes_only(c)]


def notes_only(c: Contender) -> str:
    return "Python 3.12" if c.python == "py312" else ""


def size_label(n: int) -> str:
    """10^6 for round powers of ten, 250,000 otherwise."""
    exponent = len(str(n)) - 1
    return f"10^{exponent}" if n == 10**exponent and exponent >= 3 else f"{n:,}"


def heading(w: Workload) -> str:
    sizes = " and ".join(f"{n:,}" for n in w.sizes)
    return f"{w.key}: {w.title} (n={sizes}, numworkers={w.workers}, loop={w.loop})"


BUILDERS: dict[str, Callable[[Workload, Sequence[Contender], Results], Table]] = {
    "throughput": throughput_table,
    "efficiency": efficiency_table,
    "http": http_table,
    "rss": rss_table,
}


def build_table(w: Workload, contenders: Sequence[Contender], res: Results) -> Table:
    return BUILDERS[w.metric](w, contenders, res)


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #


TEXT_COLUMNS = ("contender", "check", "notes")  # left aligned; numbers are right aligned


def render_text(table: Table) -> str:
    widths = [
        max(len(row[i]) for row in [table.headers, *table.rows]) for i in range(len(table.headers))
    ]
    left = [header.startswith(TEXT_COLUMNS) for header in table.headers]

    def line(cells: list[str]) -> str:
        parts = [
            cell.ljust(width) if is_text else cell.rjust(width)
            for cell, width, is_text in zip(cells, widths, left, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [table.title, line(table.headers), line(["-" * w for w in widths])]
    out += [line(row) for row in table.rows]
    out += table.footnotes
    return "\n".join(out)


def render_markdown(table: Table) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"

    align = ["---" if h.startswith(TEXT_COLUMNS) else "---:" for h in table.headers]
    out = [f"### {table.title}", "", line(table.headers), line(align)]
    out += [line(row) for row in table.rows]
    if table.footnotes:
        out += ["", *table.footnotes]
    return "\n".join(out)
