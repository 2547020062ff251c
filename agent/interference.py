"""The interference guard: what else the machine did during a timed window.

:meth:`InterferenceGuard.start` and :meth:`~InterferenceGuard.stop` bracket a
benchmark's timed window and read ``/proc/stat``, cpufreq and
``/proc/loadavg`` below ``proc_root``/``sys_root`` (tests build fake trees),
so a disturbed latency reading can be re-run or flagged (rule: :func:`judge`).
Standard library only. A missing or unreadable file never raises: its figure
is ``None``, and a ``None`` figure never makes a window disturbed. The
default ``own_cpu_s`` is this process's user+system CPU seconds, all threads
included (``getrusage(RUSAGE_SELF)``); child processes count as *other* work.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, List, Optional, Tuple

from fleetmeter.agent import sysfs

__all__ = ["GuardLimits", "Interference", "InterferenceGuard", "judge", "jiffy_slack_cores"]

logger = logging.getLogger(__name__)

_ROUNDING_JIFFIES_PER_CPU = 2  # one jiffy of quantisation at each end of the window


@dataclass(frozen=True)
class GuardLimits:
    """When a window counts as disturbed (see :func:`judge`)."""

    max_other_cpu_cores: float = 0.25  # CPU used by all other processes, in cores
    max_steal_share: float = 0.05      # steal jiffies / all jiffies over the window

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value >= 0):
                raise ValueError(f"GuardLimits.{f.name} must be finite and >= 0, got {value!r}")


@dataclass(frozen=True)
class Interference:
    """What the machine did during one window; ``None`` means "could not read"."""

    window_s: float                     # from the injected clock
    other_cpu_cores: Optional[float]    # (machine busy CPU s - own CPU s) / window_s, >= 0
    steal_share: Optional[float]        # Δsteal / Δ(user..steal) jiffies
    iowait_share: Optional[float]       # Δiowait / Δ(user..steal) jiffies
    load_avg_1m: Optional[float]        # /proc/loadavg at stop()
    cpu_freq_mhz_min: Optional[float]   # over all CPUs, start and stop readings
    cpu_freq_mhz_max: Optional[float]
    disturbed: bool                     # see judge()
    reasons: Tuple[str, ...]            # e.g. ("other_cpu_cores 0.93 > 0.25 (+0.04 jiffy slack)",)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out


def jiffy_slack_cores(window_s: float, n_cpus: int, clk_tck: int) -> float:
    """Cores of apparent "other" CPU that jiffy rounding alone can produce.

    ``/proc/stat`` counts each CPU in whole jiffies (1/``clk_tck`` s), so a
    difference of two readings can be off by about one jiffy per CPU at each
    end: ``(n_cpus * 2 / clk_tck) / window_s`` cores. On 2 CPUs at 100 Hz
    that is 0.2 cores over 0.2 s and 0.004 cores over 10 s.
    """
    if window_s <= 0:
        return math.inf
    return (max(n_cpus, 1) * _ROUNDING_JIFFIES_PER_CPU / clk_tck) / window_s


def judge(limits: GuardLimits, other_cpu_cores: Optional[float], steal_share: Optional[float],
          window_s: float, n_cpus: int, clk_tck: int) -> Tuple[bool, Tuple[str, ...]]:
    """Decide whether a window was disturbed; return ``(disturbed, reasons)``.

    Rule: disturbed when

    * ``other_cpu_cores > limits.max_other_cpu_cores + jiffy_slack_cores(window_s, n_cpus, clk_tck)``, or
    * ``steal_share > limits.max_steal_share``.

    A figure that is ``None`` (unreadable) never makes a window disturbed.
    Each reason names the figure, its value and the bound it broke.
    """
    reasons: List[str] = []
    if other_cpu_cores is not None:
        slack = jiffy_slack_cores(window_s, n_cpus, clk_tck)
        if other_cpu_cores > limits.max_other_cpu_cores + slack:
            reasons.append(f"other_cpu_cores {other_cpu_cores:.2f} > {limits.max_other_cpu_cores:.2f}"
                           f" (+{slack:.2f} jiffy slack)")
    if steal_share is not None and steal_share > limits.max_steal_share:
        reasons.append(f"steal_share {steal_share:.3f} > {limits.max_steal_share:.3f}")
    return bool(reasons), tuple(reasons)


@dataclass(frozen=True)
class _CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat, in jiffies; absent columns are None."""

    busy: int                 # user + nice + system + irq + softirq (guest is inside user)
    total: int                # user .. steal (guest columns excluded)
    iowait: Optional[int]
    steal: Optional[int]
    n_cpus: int


def _read_cpu_times(proc_root: str) -> Optional[_CpuTimes]:
    text = sysfs.try_read_text(os.path.join(proc_root, "stat"))
    if text is None:
        return None
    cols: Optional[List[Optional[int]]] = None
    n_cpus = 0
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                cols = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
            except ValueError:
                logger.debug("/proc/stat cpu line unparsable: %r", line)
                return None
        elif parts and parts[0].startswith("cpu") and parts[0][3:].isdigit():
            n_cpus += 1
    if cols is None or len(cols) < 4:
        return None
    cols += [None] * (8 - len(cols))  # old kernels: fewer columns
    user, nice, system, _idle, iowait, irq, softirq, steal = cols
    busy = user + nice + system + (irq or 0) + (softirq or 0)
    total = sum(c for c in cols if c is not None)
    return _CpuTimes(busy=busy, total=total, iowait=iowait, steal=steal, n_cpus=n_cpus)


def _read_freqs_mhz(sys_root: str) -> List[float]:
    out: List[float] = []
    pattern = os.path.join(sys_root, "devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")
    for path in sorted(glob.glob(pattern)):
        text = sysfs.try_read_text(path)
        try:
            out.append(int(text or "") / 1000.0)  # kHz in sysfs
        except ValueError:
            logger.debug("%s unparsable: %r", path, text)
    return out


def _read_load_avg_1m(proc_root: str) -> Optional[float]:
    text = sysfs.try_read_text(os.path.join(proc_root, "loadavg"))
    try:
        return float(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _default_clk_tck() -> int:
    try:
        return max(int(os.sysconf("SC_CLK_TCK")), 0) or 100
    except (ValueError, OSError, AttributeError):
        return 100  # the value on every mainstream Linux build


def _share(before: Optional[int], after: Optional[int], d_total: int) -> Optional[float]:
    """after - before as a share of d_total jiffies; None when a column is absent."""
    if before is None or after is None or d_total <= 0:
        return None
    return max(0, after - before) / d_total


class InterferenceGuard:
    """Brackets one timed window: ``start()`` before it, ``stop()`` after it.

    Not thread-safe; one window at a time. ``stop()`` without a matching
    ``start()`` is a caller bug and raises :class:`RuntimeError`.
    """

    def __init__(self, limits: GuardLimits = GuardLimits(), *, proc_root: str = "/proc",
                 sys_root: str = "/sys", own_cpu_s: Callable[[], float] = _own_cpu_s,
                 clock: Callable[[], float] = time.monotonic, clk_tck: Optional[int] = None) -> None:
        self.limits = limits
        self._proc_root = os.fspath(proc_root)
        self._sys_root = os.fspath(sys_root)
        self._own_cpu_s = own_cpu_s
        self._clock = clock
        self.clk_tck = _default_clk_tck() if clk_tck is None else int(clk_tck)
        if self.clk_tck <= 0:
            raise ValueError(f"clk_tck must be > 0, got {clk_tck!r}")
        self._start: Optional[Tuple[List[float], Optional[_CpuTimes], float, float]] = None

    def start(self) -> None:
        freqs = _read_freqs_mhz(self._sys_root)  # slowest read first, outside the CPU bracket
        own_s = self._own_cpu_s()
        cpu = _read_cpu_times(self._proc_root)
        self._start = (freqs, cpu, own_s, self._clock())

    def stop(self) -> Interference:
        if self._start is None:
            raise RuntimeError("InterferenceGuard.stop() called without start()")
        freqs0, cpu0, own0_s, t0_s = self._start
        self._start = None
        window_s = self._clock() - t0_s
        cpu1 = _read_cpu_times(self._proc_root)
        own1_s = self._own_cpu_s()
        freqs = freqs0 + _read_freqs_mhz(self._sys_root)
        other = steal = iowait = None
        n_cpus = 0
        if cpu0 is not None and cpu1 is not None:
            n_cpus = max(cpu0.n_cpus, cpu1.n_cpus)
            d_total = cpu1.total - cpu0.total
            if window_s > 0:
                busy_s = (cpu1.busy - cpu0.busy) / self.clk_tck
                other = max(0.0, busy_s - (own1_s - own0_s)) / window_s
            steal = _share(cpu0.steal, cpu1.steal, d_total)
            iowait = _share(cpu0.iowait, cpu1.iowait, d_total)
        disturbed, reasons = judge(self.limits, other, steal, window_s, n_cpus, self.clk_tck)
        return Interference(
            window_s=window_s, other_cpu_cores=other, steal_share=steal, iowait_share=iowait,
            load_avg_1m=_read_load_avg_1m(self._proc_root),
            cpu_freq_mhz_min=min(freqs) if freqs else None,
            cpu_freq_mhz_max=max(freqs) if freqs else None,
            disturbed=disturbed, reasons=reasons)
