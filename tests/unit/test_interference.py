"""The interference guard on constructed /proc and sysfs trees, with a fake clock and fake own CPU."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import pytest

from fleetmeter.agent.interference import (
    GuardLimits, Interference, InterferenceGuard, jiffy_slack_cores, judge)

CLK_TCK = 100


class Fake:
    """A number that moves only when a test says so: the clock, or this process's CPU seconds."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


class Machine:
    """A fake /proc + /sys tree whose counters a test advances between start() and stop()."""

    def __init__(self, root: Path, n_cpus: int = 2) -> None:
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.proc.mkdir(parents=True)
        self.sys.mkdir(parents=True)
        self.n_cpus = n_cpus
        self.clock = Fake(1000.0)
        self.own_cpu_s = Fake(5.0)
        # user nice system idle iowait irq softirq steal guest guest_nice
        self.cols = [1000, 10, 500, 90000, 300, 20, 40, 0, 7, 0]

    def write_stat(self, cols: Optional[Sequence[int]] = None) -> None:
        cols = self.cols if cols is None else cols
        lines = ["cpu  " + " ".join(map(str, cols))]
        lines += [f"cpu{i} " + " ".join("0" for _ in cols) for i in range(self.n_cpus)]
        lines += ["intr 12345 0 0", "ctxt 999", "btime 1700000000", "processes 42"]
        (self.proc / "stat").write_text("\n".join(lines) + "\n")

    def add(self, **jiffies: int) -> None:
        names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
        for name, n in jiffies.items():
            self.cols[names.index(name)] += n

    def guard(self, limits: GuardLimits = GuardLimits()) -> InterferenceGuard:
        return InterferenceGuard(limits, proc_root=str(self.proc), sys_root=str(self.sys),
                                 own_cpu_s=self.own_cpu_s, clock=self.clock, clk_tck=CLK_TCK)

    def quiet_idle(self, window_s: float) -> None:
        """Every CPU idle for window_s."""
        self.add(idle=round(window_s * CLK_TCK * self.n_cpus))


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path)
    m.write_stat()
    return m


def window(machine: Machine, window_s: float, own_s: float = 0.0, **jiffies: int) -> Interference:
    guard = machine.guard()
    guard.start()
    machine.clock.value += window_s
    machine.own_cpu_s.value += own_s
    machine.add(**jiffies)
    machine.write_stat()
    return guard.stop()


def test_quiet_window_is_not_disturbed(machine: Machine) -> None:
    result = window(machine, 1.0, idle=200)
    assert result.window_s == pytest.approx(1.0), "window_s must come from the injected clock"
    assert result.other_cpu_cores == 0.0, "no busy jiffies moved, so no other CPU was used"
    assert result.steal_share == 0.0 and result.iowait_share == 0.0
    assert not result.disturbed and result.reasons == (), "an idle machine was flagged"


def test_another_process_using_one_core_is_disturbed(machine: Machine) -> None:
    result = window(machine, 1.0, user=60, system=30, softirq=10, idle=100)
    assert result.other_cpu_cores == pytest.approx(1.0), \
        "100 busy jiffies (user+system+softirq) at 100 Hz over 1 s must read as 1 other core"
    assert result.disturbed, "a whole other core busy during the window went unnoticed"
    assert len(result.reasons) == 1 and result.reasons[0].startswith("other_cpu_cores 1.00 > 0.25"), \
        f"the reason must name the figure, its value and the limit: {result.reasons}"


def test_own_cpu_time_is_subtracted(machine: Machine) -> None:
    result = window(machine, 1.0, own_s=1.0, user=100, idle=100)
    assert result.other_cpu_cores == pytest.approx(0.0), \
        "the benchmark's own CPU second was counted as another process's"
    assert not result.disturbed, "the process was flagged for its own work"


def test_own_cpu_above_machine_busy_clamps_at_zero(machine: Machine) -> None:
    result = window(machine, 1.0, own_s=1.05, user=100, idle=100)
    assert result.other_cpu_cores == 0.0, "rounding made other_cpu_cores negative instead of clamping at 0"


def test_idle_iowait_steal_and_guest_are_not_busy(machine: Machine) -> None:
    """guest is already inside user; idle, iowait and steal are not work of any process here."""
    guard = machine.guard()
    guard.start()
    machine.clock.value += 1.0
    machine.add(idle=100, iowait=50, steal=50)
    cols = machine.cols[:8] + [machine.cols[8] + 500, machine.cols[9] + 500]  # guest, guest_nice
    machine.write_stat(cols)
    result = guard.stop()
    assert result.other_cpu_cores == 0.0, "idle/iowait/steal/guest jiffies were counted as busy CPU"
    assert result.iowait_share == pytest.approx(0.25), "iowait share must be Δiowait / Δ(user..steal)"
    assert result.steal_share == pytest.approx(0.25), "guest columns must not enter the denominator"


def test_steal_above_limit_is_disturbed(machine: Machine) -> None:
    result = window(machine, 1.0, idle=180, steal=20)
    assert result.steal_share == pytest.approx(0.10), "steal share must be Δsteal / Δall"
    assert result.disturbed, "10% steal (limit 5%) was not flagged"
    assert result.reasons == ("steal_share 0.100 > 0.050",)


def test_steal_at_limit_is_not_disturbed(machine: Machine) -> None:
    result = window(machine, 1.0, idle=190, steal=10)
    assert result.steal_share == pytest.approx(0.05)
    assert not result.disturbed, "the rule is 'steal_share > limit'; exactly at the limit must pass"


def test_missing_files_give_none_and_never_disturb(tmp_path: Path) -> None:
    guard = InterferenceGuard(proc_root=str(tmp_path / "no-proc"), sys_root=str(tmp_path / "no-sys"),
                              own_cpu_s=Fake(), clock=Fake(), clk_tck=CLK_TCK)
    guard.start()
    result = guard.stop()
    assert (result.other_cpu_cores, result.steal_share, result.iowait_share, result.load_avg_1m,
            result.cpu_freq_mhz_min, result.cpu_freq_mhz_max) == (None,) * 6, \
        "a figure that cannot be read must be None, not 0 or an exception"
    assert not result.disturbed and result.reasons == (), "unreadable figures flagged a window"


@pytest.mark.parametrize("content", ["", "cpu  a b c d\ncpu0 1 2 3 4\n", "cpu  1 2\n", "intr 1 2\n"])
def test_garbage_proc_stat_gives_none(machine: Machine, content: str) -> None:
    guard = machine.guard()
    guard.start()
    (machine.proc / "stat").write_text(content)
    machine.clock.value += 1.0
    result = guard.stop()
    assert result.other_cpu_cores is None and result.steal_share is None, \
        f"an unparsable /proc/stat must read as None, got {result}"
    assert not result.disturbed


def test_proc_stat_vanishing_mid_window_gives_none(machine: Machine) -> None:
    guard = machine.guard()
    guard.start()
    (machine.proc / "stat").unlink()
    machine.clock.value += 1.0
    result = guard.stop()
    assert result.other_cpu_cores is None, "a /proc/stat read only once cannot give a difference"


def test_slack_forgives_jiffy_rounding_in_a_short_quiet_window(machine: Machine) -> None:
    """0.2 s on 2 CPUs is 40 jiffies; 2 jiffies of rounding on each CPU on top of
    0.1 core of real background reads as 0.3 cores, over the 0.25 limit."""
    result = window(machine, 0.2, own_s=0.1, user=10 + 2 + 4, idle=40 - 16)
    assert result.other_cpu_cores == pytest.approx(0.3), "fixture arithmetic is off"
    assert result.other_cpu_cores > GuardLimits().max_other_cpu_cores, \
        "this test must exceed the bare limit, else it cannot show the slack at work"
    assert not result.disturbed, f"jiffy rounding alone flagged a quiet 0.2 s window: {result.reasons}"


def test_slack_does_not_hide_real_load_in_a_short_window(machine: Machine) -> None:
    result = window(machine, 0.2, user=20, idle=20)
    assert result.other_cpu_cores == pytest.approx(1.0)
    assert result.disturbed, "a whole other core over 0.2 s slipped through the slack"


def test_slack_shrinks_with_window_length() -> None:
    assert jiffy_slack_cores(0.2, 2, 100) == pytest.approx(0.2), "slack must be (n_cpus*2/clk_tck)/window_s"
    assert jiffy_slack_cores(10.0, 2, 100) == pytest.approx(0.004)
    disturbed, reasons = judge(GuardLimits(), 0.3, None, 10.0, 2, 100)
    assert disturbed and reasons[0].startswith("other_cpu_cores 0.30 > 0.25"), \
        "0.3 other cores over 10 s is real load, not rounding, and must be flagged"
    assert judge(GuardLimits(), 0.3, None, 0.2, 2, 100) == (False, ())


def test_judge_ignores_none_figures() -> None:
    assert judge(GuardLimits(), None, None, 1.0, 2, 100) == (False, ()), "None figures flagged a window"
    assert judge(GuardLimits(0.0, 0.0), None, None, 0.0, 0, 100) == (False, ())


def test_judge_reports_both_reasons() -> None:
    disturbed, reasons = judge(GuardLimits(), 2.0, 0.5, 1.0, 2, 100)
    assert disturbed
    assert [r.split()[0] for r in reasons] == ["other_cpu_cores", "steal_share"], \
        "each broken bound must give its own reason, naming the figure"


def test_frequency_khz_becomes_mhz_min_max_over_cpus_and_readings(machine: Machine) -> None:
    def freq(cpu: int, khz: object) -> None:
        path = machine.sys / f"devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{khz}\n")

    freq(0, 1_200_000)
    freq(1, 3_400_000)
    freq(2, "garbage")                              # unreadable CPU: skipped
    (machine.sys / "devices/system/cpu/cpufreq").mkdir(parents=True)  # policy dir, not a CPU
    guard = machine.guard()
    guard.start()
    freq(0, 800_000)
    freq(1, 2_000_000)
    machine.clock.value += 1.0
    result = guard.stop()
    assert (result.cpu_freq_mhz_min, result.cpu_freq_mhz_max) == (800.0, 3400.0), \
        "sysfs kHz must become MHz, min/max over every CPU at both start and stop"


def test_load_average_is_read_at_stop(machine: Machine) -> None:
    (machine.proc / "loadavg").write_text("0.10 0.20 0.30 1/100 42\n")
    guard = machine.guard()
    guard.start()
    (machine.proc / "loadavg").write_text("1.52 0.40 0.30 3/123 4567\n")
    assert guard.stop().load_avg_1m == 1.52, "load_avg_1m must be the first field at stop()"


@pytest.mark.parametrize("n_cols, has_iowait, has_steal", [(4, False, False), (7, True, False), (8, True, True)])
def test_old_kernel_proc_stat_with_fewer_columns(machine: Machine, n_cols: int, has_iowait: bool,
                                                 has_steal: bool) -> None:
    guard = machine.guard()
    machine.write_stat(machine.cols[:n_cols])
    guard.start()
    machine.clock.value += 1.0
    machine.add(user=50, idle=150)
    machine.write_stat(machine.cols[:n_cols])
    result = guard.stop()
    assert result.other_cpu_cores == pytest.approx(0.5), "busy CPU must not need the later columns"
    assert (result.iowait_share is not None, result.steal_share is not None) == (has_iowait, has_steal), \
        "an absent column must read as None, not as 0"


def test_stop_without_start_is_a_caller_bug(machine: Machine) -> None:
    guard = machine.guard()
    with pytest.raises(RuntimeError):
        guard.stop()
    guard.start()
    guard.stop()
    with pytest.raises(RuntimeError, match="without start"):
        guard.stop()  # each start() is good for one stop()


def test_to_dict_is_json_ready(machine: Machine) -> None:
    d = window(machine, 1.0, user=100, idle=100).to_dict()
    assert isinstance(d["reasons"], list) and d["disturbed"] is True
    assert json.loads(json.dumps(d)) == d, "to_dict() must survive a JSON round trip"
    assert set(d) == {"window_s", "other_cpu_cores", "steal_share", "iowait_share", "load_avg_1m",
                      "cpu_freq_mhz_min", "cpu_freq_mhz_max", "disturbed", "reasons"}


def test_guard_limits_defaults() -> None:
    assert GuardLimits() == GuardLimits(max_other_cpu_cores=0.25, max_steal_share=0.05)


@pytest.mark.parametrize("field", ["max_other_cpu_cores", "max_steal_share"])
@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, "lots", None, True])
def test_guard_limits_reject_bad_values(field: str, bad: object) -> None:
    with pytest.raises(ValueError, match=field):
        GuardLimits(**{field: bad})


def test_guard_rejects_bad_clk_tck(machine: Machine) -> None:
    with pytest.raises(ValueError, match="clk_tck"):
        InterferenceGuard(clk_tck=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a real /proc")
def test_real_proc_smoke() -> None:
    """The real /proc and /sys parse: every figure is a finite number or None."""
    guard = InterferenceGuard()
    guard.start()
    sum(i * i for i in range(10_000))
    result = guard.stop()
    assert result.window_s >= 0
    for name in ("other_cpu_cores", "steal_share", "iowait_share", "load_avg_1m",
                 "cpu_freq_mhz_min", "cpu_freq_mhz_max"):
        value = getattr(result, name)
        assert value is None or (isinstance(value, float) and math.isfinite(value)), f"{name}={value!r}"
    assert result.other_cpu_cores is not None, "the real /proc/stat on Linux could not be read"
