"""The controller's gRPC front doors over real gRPC with ``LocalEngine`` (the fleet in-process, no Ray):
the seam that lets the servicers be exercised in about a second."""
from __future__ import annotations

import asyncio

import pytest

from fleetmeter.client import FleetClient
from fleetmeter.controller.engine import LocalEngine
from fleetmeter.controller.fleet import FleetConfig
from fleetmeter.controller.server import Controller, ControllerConfig
from fleetmeter.errors import InvalidArgument, NotFound, Unauthenticated
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.v1 import fleet_pb2

pytestmark = pytest.mark.integration


def test_servicers_with_the_in_process_engine(tmp_path):
    model = get_builtin_model("tiny_mlp", "onnx").path

    def calls(address: str) -> dict:
        with FleetClient(address, token="api") as c:
            first = c.upload_model(model)
            again = c.upload_model(model)
            with pytest.raises(InvalidArgument, match="no platform matches"):
                c.submit_sweep(fleet_pb2.SweepSpec(models=[first.model.sha256]))
            with pytest.raises(NotFound, match="unknown sweep"):
                list(c.watch_sweep("sw-nope", timeout_s=10))
            models = c.list_models()
        with FleetClient(address, token="wrong") as bad, pytest.raises(Unauthenticated):
            bad.list_devices()
        return {"new": first.already_present, "again": again.already_present, "models": len(models)}

    async def main() -> dict:
        controller = Controller(ControllerConfig(listen="127.0.0.1:0", data_dir=tmp_path, api_token="api",
                                                 agent_token="agent", fleet=FleetConfig(reference_interval_s=0)),
                                engine=LocalEngine())
        address = await controller.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, calls, address)
        finally:
            await controller.stop()

    assert asyncio.run(main()) == {"new": False, "again": True, "models": 1}
    assert (tmp_path / "blobs").is_dir() and (tmp_path / "fleetmeter.sqlite").is_file()
