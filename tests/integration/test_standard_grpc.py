"""Generic gRPC tools work against the controller: the standard health service and server reflection."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

pytestmark = pytest.mark.integration


def test_health_reports_serving_without_a_token(fleet):
    with grpc.insecure_channel(fleet.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fleetmeter.v1.AgentService", "fleetmeter.v1.FleetService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(fleet):
    with grpc.insecure_channel(fleet.address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"fleetmeter.v1.AgentService", "fleetmeter.v1.FleetService", "grpc.health.v1.Health"} <= services
        desc = db.FindFileContainingSymbol("fleetmeter.v1.FleetService")
        assert desc.package == "fleetmeter.v1"
        methods = {m.name for s in desc.service for m in s.method}
        assert {"ListDevices", "SubmitSweep", "WatchSweep", "UploadModel", "ListMeasurements"} <= methods
