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


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to fit, a dashed line under the headers; every cell shown through :func:`escape_control`
    (so a name cannot carry terminal control sequences or break the table's lines)."""
    cells = [[escape_control(str(h)) for h in headers]] + [
        ["" if c is None else escape_control(str(c)) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
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
