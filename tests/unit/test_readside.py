"""The read side (controller/readside.py): listings from a read-only connection to the store and the fleet's
published live snapshot, the same answers as the fleet actor gives, cached while nothing changed.

The fleet writes through its own ``Store`` (as the actor does); the read side opens the same file read-only.
"""
from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from fleetmeter.controller.engine import LocalActorRef
from fleetmeter.controller.fleet import Fleet, FleetConfig
from fleetmeter.controller.readside import FleetReader, ReadOnlyStore, ReadSide, live_snapshot
from fleetmeter.controller.store import Store
from fleetmeter.errors import InvalidArgument, NotFound
from fleetmeter.v1 import fleet_pb2

from test_fleet import NO_SAMPLE, ONNX, hello, result

CONFIG = FleetConfig(reference_interval_s=0)


class _LiveFleet(Fleet):
    """The fleet as the actor serves it (server.FleetActor adds the same method)."""

    def live_agents(self) -> list[dict]:
        return live_snapshot(self)


@pytest.fixture
def fleet(tmp_path):
    store = Store(tmp_path / "fleetmeter.sqlite")
    f = _LiveFleet(store, CONFIG)
    yield f
    store.close()


def _busy_fleet(fleet: Fleet) -> tuple[str, dict]:
    """Two agents on two hosts, a sweep of 3 jobs: one job done, one leased, one pending; a third agent gone."""
    for agent_id, host in (("a1", "h1"), ("a2", "h2"), ("gone", "h3")):
        fleet.register_agent(hello(agent_id, host))
    fleet.agent_disconnected("gone")
    fleet.store.add_model(ONNX)
    [pid] = fleet.agents["a1"].platform_ids
    sweep = fleet.submit_sweep({"models": [ONNX["sha256"]], "platforms": {"platform_ids": [pid]}, "repeats": 3,
                                **NO_SAMPLE})
    first, second = fleet.assign(["a1", "a2"])
    fleet.record_results([result(first, first["agent_id"])])
    return sweep["sweep_id"], second


def test_read_only_store_refuses_writes_and_sees_commits(fleet, tmp_path):
    reader = ReadOnlyStore(tmp_path / "fleetmeter.sqlite")
    try:
        version = reader.data_version()
        fleet.register_agent(hello("a1"))
        assert [d["agent_id"] for d in reader.list_devices()] == ["a1"]
        assert reader.data_version() != version  # the writer's commit is seen
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            reader.touch_device("a1")
    finally:
        reader.close()


def test_reader_answers_like_the_fleet(fleet, tmp_path):
    """Every listing the servicer reads from the read side equals the fleet actor's own answer."""
    sweep_id, leased = _busy_fleet(fleet)
    reader = FleetReader(ReadOnlyStore(tmp_path / "fleetmeter.sqlite"), CONFIG, clock=fleet.clock)
    reader.apply(fleet.live_agents())
    try:
        devices = {d["agent_id"]: d for d in reader.list_devices()}
        assert devices == {d["agent_id"]: d for d in fleet.list_devices()}
        assert devices[leased["agent_id"]]["state"] == "busy"
        assert devices[leased["agent_id"]]["current_job_id"] == leased["job_id"]
        assert devices["gone"]["state"] == "offline"
        assert reader.list_platforms() == fleet.list_platforms()
        assert reader.list_models() == fleet.list_models()
        for a, b in ((reader.sweep_progress(sweep_id), fleet.sweep_progress(sweep_id)),
                     (reader.list_sweeps(["running"])[0]["progress"], fleet.list_sweeps(["running"])[0]["progress"])):
            assert {**a, "updated_unix": 0} == {**b, "updated_unix": 0}
            assert (a["done"], a["leased"], a["pending"]) == (1, 1, 1)
        assert reader.list_measurements(sweep_id=sweep_id) == fleet.list_measurements(sweep_id=sweep_id)
        with pytest.raises(NotFound):
            reader.get_sweep("sw-nope")
        with pytest.raises(InvalidArgument, match="unknown sweep state"):
            reader.list_sweeps(["sleeping"])
    finally:
        reader.store.close()


def test_cached_while_unchanged_recomputed_after_a_commit_or_snapshot(fleet, tmp_path):
    fleet.register_agent(hello("a1"))

    async def main() -> None:
        reads = ReadSide(tmp_path / "fleetmeter.sqlite", LocalActorRef(fleet), CONFIG)
        try:
            await reads.refresh()
            first = await reads.list_devices()
            [device] = fleet_pb2.ListDevicesResponse.FromString(first).devices
            assert (device.agent_id, device.connected, device.state) == ("a1", True, "idle")
            assert await reads.list_devices() is first           # nothing changed: the same answer
            fleet.agent_disconnected("a1")                       # a commit (last seen) ...
            second = await reads.list_devices()
            assert second is not first
            [device] = fleet_pb2.ListDevicesResponse.FromString(second).devices
            assert device.connected                              # ... but the snapshot is not refreshed yet
            await reads.refresh()
            [device] = fleet_pb2.ListDevicesResponse.FromString(await reads.list_devices()).devices
            assert (device.connected, device.state) == (False, "offline")
            many = await asyncio.gather(*(reads.list_devices() for _ in range(20)))
            assert all(m is many[0] for m in many)               # concurrent callers share one answer
        finally:
            reads.close()

    asyncio.run(main())


def test_a_callers_write_is_never_answered_by_an_older_computation(fleet, tmp_path):
    """A read that joins a computation begun before the caller's write finished would miss that write."""
    fleet.register_agent(hello("a1"))
    fleet.register_agent(hello("a2", "h2"))

    async def main() -> None:
        reads = ReadSide(tmp_path / "fleetmeter.sqlite", LocalActorRef(fleet), CONFIG)
        computed, release = threading.Event(), threading.Event()
        answer = reads._answer

        def held_answer(*args):  # the first computation reads, then stays in flight until released
            out = answer(*args)
            if not computed.is_set():
                computed.set()
                release.wait(10)
            return out

        reads._answer = held_answer
        try:
            await reads.refresh()
            fleet.agent_disconnected("a2")
            older = asyncio.ensure_future(reads.list_devices())
            assert await asyncio.get_running_loop().run_in_executor(None, computed.wait, 10)  # read a2, in flight
            fleet.forget_device("a2")
            reads.wrote()
            newer = asyncio.ensure_future(reads.list_devices())
            await asyncio.sleep(0)
            release.set()
            assert [d.agent_id for d in fleet_pb2.ListDevicesResponse.FromString(await older).devices] == ["a1", "a2"]
            assert [d.agent_id for d in fleet_pb2.ListDevicesResponse.FromString(await newer).devices] == ["a1"]
        finally:
            reads.close()

    asyncio.run(main())


def test_the_snapshot_carries_fields_the_fleet_has():
    """LiveAgent names AgentState's fields: a renamed field would leave the read side reading nothing."""
    from dataclasses import fields

    from fleetmeter.controller.fleet import AgentState
    from fleetmeter.controller.readside import LiveAgent

    assert set(LiveAgent._fields) <= {f.name for f in fields(AgentState)}


class _OnlyLiveAgents:
    """A fleet actor handle that answers the live snapshot and fails every other call: what is read through
    ``ReadSide.call`` must not go to the actor."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    async def call(self, method: str, *args, **kwargs):
        if method != "live_agents":
            raise AssertionError(f"{method} went to the fleet actor")
        return self._fleet.live_agents()


def test_the_predictor_services_reads_are_answered_without_the_actor(fleet, tmp_path):
    """Predict, Train and Adapt read platforms, models, measurements and sweep inputs through ReadSide.call:
    the fleet's own answers, never a call queued at the actor; a write is refused by name."""
    sweep_id, _ = _busy_fleet(fleet)

    async def main() -> None:
        reads = ReadSide(tmp_path / "fleetmeter.sqlite", _OnlyLiveAgents(fleet), CONFIG)
        try:
            await reads.refresh()
            assert await reads.call("list_platforms") == fleet.list_platforms()
            assert await reads.call("list_models") == fleet.list_models()
            assert await reads.call("sweep_inputs") == fleet.sweep_inputs()
            got = await reads.call("list_measurements", include_samples=False)
            assert got == fleet.list_measurements(include_samples=False) and len(got) == 1
            with pytest.raises(ValueError, match="'submit_sweep' is not a read"):
                await reads.call("submit_sweep", {})
        finally:
            reads.close()

    asyncio.run(main())
