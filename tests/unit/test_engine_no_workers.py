"""When RayEngine.map gives up on a cluster with no node that can run its tasks (no_worker_verdict).

The verdict is a pure function of ``ray.nodes()``-shaped entries and a monotonic clock; no Ray here. The real
cluster case (every worker killed during a training run) is tests/integration/test_multinode.py.
"""
from __future__ import annotations

import pytest

from fleetmeter.controller.engine import RayEngine, no_worker_verdict

HEAD = {"NodeID": "head", "Alive": True, "Resources": {"head": 1.0, "memory": 1e9}}  # no CPU
WORKER = {"NodeID": "w1", "Alive": True, "Resources": {"CPU": 1.0, "w1": 1.0}}
DEAD_WORKER = {**WORKER, "NodeID": "w2", "Alive": False}


def test_an_alive_node_with_cpus_resets_the_clock_and_never_gives_up():
    # If this failed, a run would be cancelled while a worker could still take its tasks.
    assert no_worker_verdict([HEAD, WORKER], now_s=1000.0, last_seen_s=0.0, timeout_s=5.0) == (1000.0, False)


def test_gives_up_only_once_the_timeout_has_passed_since_a_worker_was_last_seen():
    nodes = [HEAD, DEAD_WORKER]
    # 4.9 s without a worker: keep waiting (an autoscaler may be adding one); the last sighting is kept.
    assert no_worker_verdict(nodes, now_s=104.9, last_seen_s=100.0, timeout_s=5.0) == (100.0, False)
    assert no_worker_verdict(nodes, now_s=105.0, last_seen_s=100.0, timeout_s=5.0) == (100.0, True)


def test_dead_nodes_nodes_without_cpus_and_an_empty_listing_count_as_no_worker():
    for nodes in ([DEAD_WORKER], [HEAD], [], [{"Alive": True}], [{**WORKER, "Resources": {"CPU": 0.5}}]):
        assert no_worker_verdict(nodes, now_s=10.0, last_seen_s=0.0, timeout_s=5.0) == (0.0, True), nodes


def test_a_worker_coming_back_before_the_timeout_restarts_the_wait():
    last_seen_s, give_up = no_worker_verdict([HEAD], now_s=4.0, last_seen_s=0.0, timeout_s=5.0)
    assert (last_seen_s, give_up) == (0.0, False)
    last_seen_s, give_up = no_worker_verdict([HEAD, WORKER], now_s=4.5, last_seen_s=last_seen_s, timeout_s=5.0)
    assert (last_seen_s, give_up) == (4.5, False)
    assert no_worker_verdict([HEAD], now_s=9.0, last_seen_s=last_seen_s, timeout_s=5.0) == (4.5, False)
    assert no_worker_verdict([HEAD], now_s=9.5, last_seen_s=last_seen_s, timeout_s=5.0) == (4.5, True)


def test_a_negative_timeout_is_refused_and_zero_wait_forever_is_accepted():
    from fleetmeter.controller.server import ControllerConfig

    with pytest.raises(ValueError, match="no_worker_timeout_s"):
        RayEngine(no_worker_timeout_s=-1)
    with pytest.raises(ValueError, match="--no-worker-timeout-s"):
        ControllerConfig(no_worker_timeout_s=-1)
    assert RayEngine(no_worker_timeout_s=0).no_worker_timeout_s == 0.0
    assert ControllerConfig(no_worker_timeout_s=0).no_worker_timeout_s == 0.0
