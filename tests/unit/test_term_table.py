"""``_term.table`` fits a terminal: the widest columns are shortened with an ellipsis, narrow ones keep their
values, and the width is the terminal's on a TTY and 100 columns elsewhere."""
from __future__ import annotations

import io
import os

import pytest

from fleetmeter._term import (ELLIPSIS, MIN_COLUMN_WIDTH, distinct_width, fit_widths, fmt_elapsed, shorten, table,
                              table_width)

SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
PLATFORM = "intel-xeon-platinum-8375c-cpu-2-90ghz-8c-3f2a9c/onnxruntime-1.20.1/CPUExecutionProvider/t1"
HARDWARE = "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, 8 cores, 31 GiB, NVIDIA A10G, board: none"


def _widths(text: str) -> list[int]:
    return [len(line) for line in text.splitlines()]


def _cells(text: str) -> list[list[str]]:
    """The table's rows split at its columns (the dashed line under the headers marks them)."""
    lines = text.splitlines()
    spans, start = [], 0
    for dashes in lines[1].split("  "):
        spans.append((start, start + len(dashes)))
        start += len(dashes) + 2
    return [[line[a:b].rstrip() for a, b in spans] for i, line in enumerate(lines) if i != 1]


def test_long_columns_are_shortened_to_fit_and_short_ones_are_kept():
    """Fails if a line runs past the width, a short column (a count, a state) is cut, or a long value is cut
    without an ellipsis or loses either end."""
    rows = [(SHA256, PLATFORM, HARDWARE, 3, "idle"), (SHA256[:12], PLATFORM.replace("/t1", "/t2"), "-", 12, "busy")]
    out = table(["SHA256", "PLATFORM", "HARDWARE", "N", "STATE"], rows, max_width=100)
    assert max(_widths(out)) <= 100
    header, first, second = _cells(out)
    assert header == ["SHA256", "PLATFORM", "HARDWARE", "N", "STATE"]
    assert (first[3:], second[3:]) == (["3", "idle"], ["12", "busy"])
    for cell, full in zip(first[:3], (SHA256, PLATFORM, HARDWARE)):
        assert ELLIPSIS in cell and full.startswith(cell.split(ELLIPSIS)[0]) and full.endswith(cell.split(ELLIPSIS)[1])
    assert second[0] == SHA256[:12]  # a cell that fits its shortened column stays whole
    assert first[1] != second[1]


def test_both_ends_of_an_id_survive_shortening():
    """Platform ids differ at their ends (thread counts) as often as at their starts: fails if shortening
    keeps only one end, so two ids could look the same."""
    a, b = shorten(PLATFORM, 30), shorten(PLATFORM.replace("/t1", "/t2"), 30)
    assert len(a) == len(b) == 30 and a != b
    assert a.startswith(PLATFORM[:10]) and a.endswith("/t1") and ELLIPSIS in a
    assert shorten("short", 30) == "short"


def test_ids_that_differ_in_the_middle_stay_apart():
    """Platform ids of two machines differ in their hardware hash, mid-string: fails if the table shortens
    them until both read the same, while other columns could still give."""
    ids = [PLATFORM.replace("3f2a9c", h) for h in ("3f2a9c", "3f2b11")]
    rows = [(pid, HARDWARE, "1/1", "100% / 100% (1)") for pid in ids]
    out = table(["PLATFORM", "HARDWARE", "AGENTS", "NOISE"], rows, max_width=100)
    _, first, second = _cells(out)
    assert max(_widths(out)) <= 100 and first[0] != second[0] and ELLIPSIS in first[0]
    assert distinct_width(ids) <= len(first[0])
    assert len(first[1]) < len(first[0])  # the free-text column gave more


def test_floors_give_way_when_the_table_cannot_fit_otherwise():
    assert fit_widths([80, 80], 60, floors=[70, 0]) == [29, 29]
    assert fit_widths([80, 80], 100, floors=[70, 0]) == [70, 28]


def test_a_table_that_fits_is_unchanged():
    out = table(["A", "LONGER HEADER"], [("x", "y"), ("wide cell", None)], max_width=100)
    assert out.splitlines() == ["A          LONGER HEADER", "---------  -------------", "x          y", "wide cell"]


@pytest.mark.parametrize("widths, max_width", [([10, 10], 100), ([90, 5, 40], 60), ([200, 3, 3, 80], 100),
                                               ([30, 30, 30, 30], 50), ([64, 40, 6, 9, 12, 8], 100)])
def test_fit_widths_levels_the_widest_columns(widths, max_width):
    """Fails if the sum (with 2-space gaps) exceeds the width when it can fit, a column is widened, or a
    narrow column is narrowed while wider ones could give."""
    fitted = fit_widths(widths, max_width)
    assert all(f <= w for f, w in zip(fitted, widths))
    if sum(widths) + 2 * (len(widths) - 1) <= max_width:
        assert fitted == widths
    else:
        assert sum(fitted) + 2 * (len(widths) - 1) <= max_width
        level = max(fitted)
        assert all(f == w for f, w in zip(fitted, widths) if w <= level)  # the narrow ones are untouched
        assert fitted.count(level) == sum(w >= level for w in widths)


def test_fit_widths_never_goes_below_the_minimum():
    fitted = fit_widths([50, 50, 50], 10)
    assert fitted == [MIN_COLUMN_WIDTH] * 3  # too many columns for the width: the table runs over, readable


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_width_is_the_terminals_on_a_tty_and_100_elsewhere(monkeypatch):
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=(100, 24): os.terminal_size((132, 40)))
    assert table_width(_Tty()) == 132
    assert table_width(io.StringIO()) == 100


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (83, "1m23s"), (3599, "59m59s"),
                                           (7500, "2h05m")])
def test_fmt_elapsed(seconds, text):
    assert fmt_elapsed(seconds) == text
