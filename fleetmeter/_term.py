"""Terminal output helpers for the CLIs: tables and a progress bar (no dependencies)."""
from __future__ import annotations

import re
import sys
import time
from typing import Iterable, Optional, Sequence, TextIO

# C0 and C1 controls and DEL; the bidi embeddings, overrides and isolates, which reorder what follows them on
# screen; the Unicode line and paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: "re.Match[str]") -> str:
    ch = match.group()
    return _SHORT_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def escape_control(text: str) -> str:
    """``text`` as it may go to a terminal: control characters (and the few that reorder or break lines) are
    shown as Python-style escapes, ``\\x1b`` for ESC, ``\\n`` for a newline; everything else unchanged.

    For names that agents and callers choose (devices, models, platforms, labels): printed raw, an escape
    sequence in one could rewrite the operator's screen. ``--json`` output stays exact instead.
    """
    return _UNPRINTABLE.sub(_escape_one, text)


#: The width tables fit when stdout is not a terminal (a pipe, a file, a log).
DEFAULT_TABLE_WIDTH = 100
#: The narrowest a column is shortened to (fewer characters say nothing).
MIN_COLUMN_WIDTH = 6
COLUMN_GAP = "  "
#: Above this many distinct values a column is not searched for the width that keeps them apart (cost).
MAX_DISTINCT_VALUES = 2000
ELLIPSIS = "\u2026"


def table_width(stream: Optional[TextIO] = None) -> int:
    """The width tables fit: the terminal's when ``stream`` (default stdout) is one, else
    :data:`DEFAULT_TABLE_WIDTH`."""
    import shutil

    stream = stream or sys.stdout
    if hasattr(stream, "isatty") and stream.isatty():
        return shutil.get_terminal_size((DEFAULT_TABLE_WIDTH, 24)).columns
    return DEFAULT_TABLE_WIDTH


def fit_widths(widths: Sequence[int], max_width: int, gap: int = len(COLUMN_GAP),
               floors: Optional[Sequence[int]] = None) -> list[int]:
    """Column widths whose sum (plus the gaps between columns) is at most ``max_width``: the widest columns
    are narrowed first, all to one level, so narrow columns (numbers, states) keep their full values; none is
    widened. A column is narrowed below its ``floors`` entry (the width that keeps its values apart) only when
    the table cannot fit otherwise, and never below :data:`MIN_COLUMN_WIDTH`; when even that cannot fit, the
    narrowest widths (the table then runs over)."""
    budget = max_width - gap * max(len(widths) - 1, 0)
    if sum(widths) <= budget:
        return list(widths)
    for bottom in ([max(f, MIN_COLUMN_WIDTH) for f in floors] if floors else None, None):
        fitted = _level(widths, bottom or [MIN_COLUMN_WIDTH] * len(widths), budget)
        if fitted is not None:
            return fitted
    return [min(w, MIN_COLUMN_WIDTH) for w in widths]


def _level(widths: Sequence[int], bottom: Sequence[int], budget: int) -> Optional[list[int]]:
    """``min(width, max(level, bottom))`` per column at the highest level whose sum fits ``budget``; ``None``
    when not even the lowest level (every column at its bottom) fits."""
    def at(level: int) -> list[int]:
        return [min(w, max(level, b)) for w, b in zip(widths, bottom)]

    low, high = 0, max(widths)
    if sum(at(low)) > budget:
        return None
    while low < high:
        level = (low + high + 1) // 2
        if sum(at(level)) <= budget:
            low = level
        else:
            high = level - 1
    return at(low)


def distinct_width(values: Iterable[str]) -> int:
    """The narrowest width at which :func:`shorten` still tells ``values`` apart (0 for fewer than two
    distinct values, or more than :data:`MAX_DISTINCT_VALUES`): what a column of ids should keep, so that two
    platforms never look the same."""
    distinct = set(values)
    if not 2 <= len(distinct) <= MAX_DISTINCT_VALUES:  # many distinct values: free text, not ids
        return 0
    for width in range(MIN_COLUMN_WIDTH, max(map(len, distinct))):
        if len({shorten(v, width) for v in distinct}) == len(distinct):
            return width
    return max(map(len, distinct))


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: its start and end with an ellipsis between (ids such as
    platform ids differ at their ends as often as at their starts)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head = (width - 1) * 3 // 5
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], max_width: Optional[int] = None) -> str:
    """Columns padded to fit, a dashed line under the headers; every cell shown through :func:`escape_control`
    (so a name cannot carry terminal control sequences or break the table's lines).

    The table fits ``max_width`` columns (default: :func:`table_width`, the terminal's or 100): the widest
    columns are shortened (:func:`fit_widths`), their long cells with an ellipsis (:func:`shorten`), keeping
    a column's values apart where the width allows (:func:`distinct_width`). ``--json`` output carries the
    full values."""
    cells = [[escape_control(str(h)) for h in headers]] + [
        ["" if c is None else escape_control(str(c)) for c in r] for r in rows]
    limit = table_width() if max_width is None else max_width
    columns = list(zip(*cells))
    widths = [max(map(len, column)) for column in columns]
    fair = limit // max(len(widths), 1)  # only columns wider than a fair share can be narrowed: their floors
    widths = fit_widths(widths, limit, floors=[distinct_width(column[1:]) if w > fair else 0
                                               for w, column in zip(widths, columns)])
    cells = [[shorten(c, w) for c, w in zip(row, widths)] for row in cells]
    lines = [COLUMN_GAP.join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, COLUMN_GAP.join("-" * w for w in widths))
    return "\n".join(lines)


def fmt_ms(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def fmt_elapsed(seconds: float) -> str:
    """A wall time for a sentence: ``42s``, ``1m23s``, ``2h05m``."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class ProgressBar:
    """``[#####.....] 12/30  done 11  running 1  failed 0  ETA 0:12`` on a TTY (redrawn in place);
    elsewhere a plain line at most every ``min_interval_s`` and at the end."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, width: int = 30,
                 min_interval_s: float = 5.0, clock=time.monotonic) -> None:
        self.total = max(total, 0)
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.started = clock()
        self._last_print = -1e9
        self._tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, finished: int, running: int = 0, failed: int = 0, final: bool = False) -> None:
        now = self.clock()
        if not self._tty and not final and now - self._last_print < self.min_interval_s:
            return
        self._last_print = now
        frac = finished / self.total if self.total else 1.0
        filled = int(self.width * frac)
        elapsed = now - self.started
        eta = elapsed / finished * (self.total - finished) if finished else None
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {finished}/{self.total}  "
                f"running {running}  failed {failed}  elapsed {fmt_duration(elapsed)}  ETA {fmt_duration(eta)}")
        if self._tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def key_value_arg(text: str) -> tuple[str, str]:
    """argparse type for ``KEY=VALUE`` flags such as ``--label site=lab``."""
    import argparse

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


class SweepWatch:
    """Live per-platform progress of a sweep: done, running, failed, remaining and ETA.

    On a TTY the block is redrawn in place; elsewhere it is printed at most every
    ``min_interval_s`` and once at the end (so logs stay readable).
    """

    def __init__(self, stream: Optional[TextIO] = None, min_interval_s: float = 10.0,
                 clock=time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last_print = -1e9
        self._drawn_lines = 0
        self._tty = hasattr(stream, "isatty") and stream.isatty()

    def render(self, progress) -> str:
        def eta(s: float) -> str:
            return "?" if s < 0 else fmt_duration(s)

        rows = [(p.platform_id, p.done, p.leased, p.failed, p.pending, p.agents_connected, eta(p.eta_s))
                for p in progress.platforms]
        rows.append(("all platforms", progress.done, progress.leased, progress.failed, progress.pending, "",
                     eta(progress.eta_s)))
        head = f"sweep {progress.sweep_id}: {progress.state}"
        if progress.cancelled:
            head += f" ({progress.cancelled} cancelled)"
        return escape_control(head) + "\n" + table(
            ["PLATFORM", "DONE", "RUNNING", "FAILED", "REMAINING", "AGENTS", "ETA"], rows)

    def update(self, progress, final: bool = False) -> None:
        now = self.clock()
        if not self._tty and not final and now - self._last_print < self.min_interval_s:
            return
        self._last_print = now
        text = self.render(progress)
        if self._tty and self._drawn_lines:
            self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")  # back to the block's start, clear below
        self.stream.write(text + "\n")
        self._drawn_lines = text.count("\n") + 1
        self.stream.flush()
