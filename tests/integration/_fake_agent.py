"""A hand-written agent client for the trust tests: it speaks AgentService over real gRPC with whatever
identity, token and results a test (an attacker) chooses. Not an agent: it measures nothing."""
from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from typing import Callable, Optional

import grpc

from fleetmeter.v1 import agent_pb2, agent_pb2_grpc, common_pb2

HARDWARE = {"arch": "x86_64", "cpu_model": "Fake CPU", "cores": 2}


def measurement(job_id: str, agent_id: str, median_ms: float = 0.001, **fields) -> common_pb2.Measurement:
    return common_pb2.Measurement(
        measurement_id=fields.pop("measurement_id", uuid.uuid4().hex), job_id=job_id, agent_id=agent_id,
        samples_ms=[median_ms] * 3,
        latency_ms=common_pb2.LatencySummary(median=median_ms, mean=median_ms, p90=median_ms, p99=median_ms,
                                             min=median_ms, max=median_ms, n=3),
        finished_at_unix=time.time(), **fields)


class FakeAgent:
    def __init__(self, address: str, token: Optional[str], agent_id: str, *, secret: str = "",
                 host_id: str = "", labels: Optional[dict] = None, runtime: str = "onnxruntime",
                 name: str = "") -> None:
        self.address, self.token, self.agent_id = address, token, agent_id
        self.secret = secret or "secret-" + agent_id
        self.host_id = host_id or "host-" + agent_id
        self.labels, self.runtime, self.name = dict(labels or {}), runtime, name or agent_id
        self.received: list = []
        self._cond = threading.Condition()
        self._out: queue.Queue = queue.Queue()
        self.error: Optional[grpc.RpcError] = None
        self.job_id = ""           # what the heartbeats report
        self._channel = grpc.insecure_channel(address)
        self._stop = threading.Event()

    def hello(self) -> agent_pb2.AgentMessage:
        device = common_pb2.DeviceInfo(hostname=self.name, host_id=self.host_id, arch="x86_64",
                                       cpu_model="Fake CPU", cpu_cores=2, hardware_json=json.dumps(HARDWARE))
        return agent_pb2.AgentMessage(hello=agent_pb2.Hello(
            agent_id=self.agent_id, name=self.name, device=device, labels=self.labels, agent_secret=self.secret,
            offers=[agent_pb2.PlatformOffer(runtime=self.runtime, runtime_version="fake", provider="default",
                                            threads=1)]))

    def connect(self, timeout_s: float = 30.0) -> agent_pb2.Welcome:
        """Say hello; the welcome, or raise the stream's error (e.g. PERMISSION_DENIED)."""
        self._out.put(self.hello())

        def requests():
            while True:
                msg = self._out.get()
                if msg is None:
                    return
                yield msg

        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        self._responses = agent_pb2_grpc.AgentServiceStub(self._channel).Connect(requests(), metadata=metadata)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._beat, daemon=True).start()
        welcome = self.wait_for(lambda m: m.WhichOneof("kind") == "welcome", timeout_s)
        return welcome.welcome

    def _read(self) -> None:
        try:
            for msg in self._responses:
                with self._cond:
                    self.received.append(msg)
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            with self._cond:
                self.error = exc
                self._cond.notify_all()

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            self._out.put(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(current_job_id=self.job_id,
                                                                               sent_unix=time.time())))

    def wait_for(self, match: Callable, timeout_s: float = 30.0):
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for msg in self.received:
                    if match(msg):
                        return msg
                if self.error is not None:
                    raise self.error
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.agent_id}: no matching message within {timeout_s} s")
                self._cond.wait(left)

    def send_result(self, m: common_pb2.Measurement, timeout_s: float = 30.0) -> agent_pb2.Ack:
        self._out.put(agent_pb2.AgentMessage(result=agent_pb2.JobResult(measurement=m)))
        msg = self.wait_for(lambda x: x.WhichOneof("kind") == "ack" and x.ack.measurement_id == m.measurement_id,
                            timeout_s)
        return msg.ack

    def jobs(self) -> list:
        with self._cond:
            return [m.job for m in self.received if m.WhichOneof("kind") == "job"]

    def close(self) -> None:
        self._stop.set()
        self._out.put(None)
        self._channel.close()
