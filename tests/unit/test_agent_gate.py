"""The agent's cool-down and thermal gate before a job (the waits are recorded in the measurement)."""
from __future__ import annotations

import threading

from fleetmeter.agent.connection import Agent
from fleetmeter.v1 import agent_pb2


def _agent(temps: list[dict]) -> Agent:
    """An Agent without its device probe: only what the gate uses."""
    agent = Agent.__new__(Agent)
    agent.stopping = threading.Event()
    agent._last_job_end = None
    readings = iter(temps)
    last = {}

    def read():
        nonlocal last
        last = next(readings, last)
        return last

    agent.read_temps = read
    return agent


def test_no_gate_no_wait():
    agent = _agent([{"cpu": 90.0}])
    assert agent._wait_until_ready(agent_pb2.JobAssignment()) == (0.0, 0.0, False)


def test_thermal_gate_waits_until_cool():
    """Fails if a job starts while the device is above the gate, or the gate waits once it is cool."""
    agent = _agent([{"cpu": 70.0}, {"cpu": 65.0}, {"cpu": 59.0}])
    job = agent_pb2.JobAssignment(max_start_temp_c=60.0, max_thermal_wait_s=30.0)
    pauses = []
    agent.stopping.wait = pauses.append  # the device cools between reads; no real waiting in the test
    cooldown, waited, timed_out = agent._wait_until_ready(job)
    assert (cooldown, timed_out) == (0.0, False) and waited >= 0.0
    assert len(pauses) == 2, "it must wait through the two hot readings and start at the cool one"


def test_thermal_gate_is_bounded_and_says_so():
    agent = _agent([{"cpu": 95.0}])
    job = agent_pb2.JobAssignment(max_start_temp_c=60.0, max_thermal_wait_s=0.05)
    cooldown, waited, timed_out = agent._wait_until_ready(job)
    assert timed_out and waited >= 0.05


def test_no_sensor_lets_the_job_start():
    agent = _agent([{}])
    job = agent_pb2.JobAssignment(max_start_temp_c=60.0, max_thermal_wait_s=30.0)
    cooldown, waited, timed_out = agent._wait_until_ready(job)
    assert (cooldown, timed_out) == (0.0, False) and waited < 1.0


def test_cooldown_counts_from_the_previous_job():
    import time

    agent = _agent([{}])
    agent._last_job_end = time.monotonic()
    slept = []
    agent.stopping.wait = lambda s: slept.append(s)
    cooldown, _, _ = agent._wait_until_ready(agent_pb2.JobAssignment(cooldown_s=5.0))
    assert 4.5 < cooldown <= 5.0 and slept and 4.5 < slept[0] <= 5.0


def test_pin_cpus_parsing():
    import pytest

    from fleetmeter.agent.runconfig import _cpu_list

    assert _cpu_list("1") == (1,) and _cpu_list("2,3") == (2, 3) and _cpu_list("0-2") == (0, 1, 2)
    assert _cpu_list("") == ()
    with pytest.raises(ValueError, match="--pin-cpus"):
        _cpu_list("one")
