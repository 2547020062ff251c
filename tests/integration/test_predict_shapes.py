"""Predict at the size the model runs, and the sha-first predict path, over real gRPC.

A controller runs in this process (``LocalEngine``: no Ray, no agents; real gRPC on 127.0.0.1:0) with
a registry that holds one real LightGBM predictor whose synthetic latency grows with MACs, trained on
the features of a small zoo network at several input sizes. In-process, so a test can also look at
what the server cached; the model files are built here.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import threading

import grpc
import pytest

pytest.importorskip("lightgbm")
onnx = pytest.importorskip("onnx")

from fleetmeter import Client  # noqa: E402
from fleetmeter.controller.engine import LocalEngine  # noqa: E402
from fleetmeter.controller.fleet import FleetConfig  # noqa: E402
from fleetmeter.controller.server import Controller, ControllerConfig  # noqa: E402
from fleetmeter.errors import InvalidArgument, ModelNotFound, NotFound  # noqa: E402
from fleetmeter.modeler.dataset import Sample  # noqa: E402
from fleetmeter.modeler.features import extract_features, input_shapes_key  # noqa: E402
from fleetmeter.modeler.registry import Registry  # noqa: E402
from fleetmeter.modeler.methods import train_predictor  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from fleetmeter.modeler.zoo.tiny import resnet  # noqa: E402
from fleetmeter.v1 import predictor_pb2_grpc  # noqa: E402

pytestmark = pytest.mark.integration

PLATFORM = "lab-x86/onnxruntime/t1"
TOKEN = "api-token"
SIZES = (16, 24, 32, 48, 64, 80, 96, 112, 128)


def _dynamic(data: bytes) -> bytes:
    """The model with its input's H and W made symbolic (as exporters write a dynamic-size detector)."""
    model = onnx.load_from_string(data)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    return model.SerializeToString()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("shape-models")
    arch = resnet("shapes-resnet", input_size=32)
    static = onnx_bytes(build_onnx(arch, seed=1))
    paths = {"static": root / "static.onnx", "dynamic": root / "dynamic.onnx", "tflite": root / "static.tflite"}
    paths["static"].write_bytes(static)
    paths["dynamic"].write_bytes(_dynamic(static))
    paths["tflite"].write_bytes(build_tflite(arch, seed=1))
    paths["input"] = onnx.load_from_string(static).graph.input[0].name
    return paths


@pytest.fixture(scope="module")
def controller(tmp_path_factory, models):
    """(address, the in-process Controller): a predictor whose latency is 0.05 ms + MACs / 10 M."""
    data_dir = tmp_path_factory.mktemp("controller")
    samples = []
    for i, size in enumerate(SIZES):
        for arch_seed in range(3):
            features = extract_features(models["static"], input_shapes={models["input"]: (1, 3, size, size)})
            samples.append(Sample(model_sha256=f"{i * 3 + arch_seed:064x}", family=f"f{arch_seed}",
                                  platform_id=PLATFORM, values={"latency_ms": 0.05 + features.model["macs"] / 1e7},
                                  features=dict(features.model)))
    Registry(data_dir / "predictors").save(train_predictor(samples, "latency_ms", calibrate=False, rounds=50),
                                           platform_id=PLATFORM, training_fingerprint="test")
    ready = threading.Event()
    box: dict = {}

    async def serve() -> None:
        ctl = Controller(ControllerConfig(listen="127.0.0.1:0", data_dir=data_dir, api_token=TOKEN,
                                          agent_token="agent", nice=0, fleet=FleetConfig(reference_interval_s=0)),
                         engine=LocalEngine())
        box["address"] = await ctl.start()
        box["controller"], box["stop"] = ctl, asyncio.Event()
        box["loop"] = asyncio.get_running_loop()
        ready.set()
        await box["stop"].wait()
        await ctl.stop()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(60), "controller did not start"
    yield box["address"], box["controller"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)


class _RequestLog(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Which ``model`` field each PredictRequest the client sends carries."""

    def __init__(self) -> None:
        self.kinds: list = []

    def intercept_unary_unary(self, continuation, details, request):
        if "Predict" in details.method:
            self.kinds.append(request.WhichOneof("model"))
        return continuation(details, request)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        def logged():
            for request in request_iterator:
                self.kinds.append(request.WhichOneof("model"))
                yield request
        return continuation(details, logged())


def _logged_client(address: str) -> tuple:
    client = Client(address, TOKEN)
    log = _RequestLog()
    client._predictor = predictor_pb2_grpc.PredictorServiceStub(grpc.intercept_channel(client._channel, log))
    return client, log


def _cli(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", "predict", *args, "--controller", address,
                           "--api-token", TOKEN, "--json"], capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------ shapes


def test_a_larger_input_is_predicted_slower(controller, models, monkeypatch):
    """Fails if the shapes do not reach the features (the dynamic model would be predicted at 1x1, and the
    same value at every size) or do not reach them through every caller-side door."""
    import fleetmeter

    address, _ = controller
    name = models["input"]
    monkeypatch.setenv("FLEETMETER_CONTROLLER", address)
    monkeypatch.setenv("FLEETMETER_API_TOKEN", TOKEN)
    small = fleetmeter.predict(models["dynamic"], shapes={name: (1, 3, 32, 32)})[0]
    large = fleetmeter.predict(models["dynamic"], shapes={name: (1, 3, 96, 96)})[0]
    assert large.value > 2 * small.value, (small, large)
    assert small.warnings == () and large.warnings == ()
    from fleetmeter.client import _shared_client

    assert _shared_client() is _shared_client()  # one channel per (controller, token) for the process
    # At the size the static file declares, the dynamic file is predicted as the static one.
    with Client(address, TOKEN) as c:
        (static,) = c.predict(models["static"])
        assert c.predict_batch([models["dynamic"]], shapes={name: (1, 3, 32, 32)}).__next__()[0].value == \
            pytest.approx(static.value)
    cli_small, cli_large = (_cli(address, str(models["dynamic"]), "--shape", f"{name}=1x3x{s}x{s}") for s in (32, 96))
    assert cli_small.returncode == 0 and cli_large.returncode == 0, cli_small.stderr + cli_large.stderr
    assert json.loads(cli_large.stdout)[0]["value"] > 2 * json.loads(cli_small.stdout)[0]["value"]
    assert json.loads(cli_large.stdout)[0]["value"] == pytest.approx(large.value)


def test_a_dynamic_input_without_a_shape_is_a_warning(controller, models):
    address, _ = controller
    with Client(address, TOKEN) as c:
        (p,) = c.predict(models["dynamic"])
    (warning,) = p.warnings
    assert f"input '{models['input']}' has a dynamic dimension (set to 1)" in warning
    assert f"--shape {models['input']}=" in warning


def test_a_bad_shape_is_invalid_argument_naming_the_inputs(controller, models):
    address, _ = controller
    name = models["input"]
    with Client(address, TOKEN) as c:
        with pytest.raises(InvalidArgument, match=f"no input named 'images'.*inputs are: {name} \\(1x3xHxW\\)"):
            c.predict(models["dynamic"], shapes={"images": (1, 3, 640, 640)})
        with pytest.raises(InvalidArgument, match="has rank 4"):
            c.predict(models["dynamic"], shapes={name: (1, 3, 64)})
        with pytest.raises(InvalidArgument, match="positive"):
            c.predict(models["dynamic"], shapes={name: (1, 3, 0, 64)})
    bad = _cli(address, str(models["dynamic"]), "--shape", "images=1x3x640x640")
    assert bad.returncode == 1 and "no input named 'images'" in bad.stderr, bad.stderr
    malformed = _cli(address, str(models["dynamic"]), "--shape", "images=1x3xbig")
    assert malformed.returncode == 2 and "bad dimensions" in malformed.stderr


def test_tflite_is_predicted_at_its_resized_shape(controller, models):
    address, _ = controller
    with Client(address, TOKEN) as c:
        small = c.predict(models["tflite"])[0].value
        large = c.predict(models["tflite"], shapes={"input": (1, 96, 96, 3)})[0].value
    assert large > 2 * small


# ------------------------------------------------------------------ sha first


def test_a_new_model_goes_by_sha_then_graph_and_after_that_by_sha_alone(controller, models, tmp_path):
    """Fails if the client sends the model when the server has its features, if it cannot tell the model's
    NOT_FOUND from another one, or if the light graph is featurized differently from the file."""
    address, ctl = controller
    arch = resnet("sha-first", input_size=32, stem_width=8, stages=((8, 1), (24, 2)))
    data = _dynamic(onnx_bytes(build_onnx(arch, seed=7)))
    path = tmp_path / "new.onnx"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    shapes = {models["input"]: (1, 3, 64, 64)}
    client, log = _logged_client(address)
    with client:
        with pytest.raises(ModelNotFound):  # never uploaded, never sent: the sha256 alone is not enough
            client.predict_sha256(sha, shapes=shapes)
        log.kinds.clear()
        first = client.predict(path, shapes=shapes)
        assert log.kinds == ["model_sha256", "model_graph"]
        log.kinds.clear()
        again = client.predict(path, shapes=shapes)
        assert log.kinds == ["model_sha256"]  # no bytes the second time
        assert again == first
        # Another size is another set of features: the graph goes again, once.
        log.kinds.clear()
        client.predict(path, shapes={models["input"]: (1, 3, 32, 32)})
        client.predict(path, shapes={models["input"]: (1, 3, 32, 32)})
        assert log.kinds == ["model_sha256", "model_graph", "model_sha256"]
        # An unknown platform is a NOT_FOUND too, but final: no model is sent for it.
        log.kinds.clear()
        with pytest.raises(NotFound, match="unknown platform") as info:
            client.predict(path, platforms=["no-such-phone"], shapes=shapes)
        assert not isinstance(info.value, ModelNotFound) and log.kinds == ["model_sha256"]
    api = ctl.predictor_api
    assert (sha, input_shapes_key(shapes)) not in api._features  # a declared graph is not verified ...
    cached = api._features[(api._declared[sha], input_shapes_key(shapes))]  # ... it is cached by its own hash
    assert cached.model == extract_features(data, input_shapes=shapes).model  # light graph == whole file


def test_a_declared_graph_never_poisons_another_models_features(controller, models, tmp_path):
    """Fails if a caller can make the server serve the features of graph B for model A's sha256 (by sending
    B's graph declared as A), or if a graph request is answered with another graph's cached features."""
    from fleetmeter._onnx_wire import light_model_bytes
    from fleetmeter.v1 import predictor_pb2

    address, ctl = controller
    small = onnx_bytes(build_onnx(resnet("poison-a", input_size=32, stem_width=8, stages=((8, 1),)), seed=3))
    big = onnx_bytes(build_onnx(resnet("poison-b", input_size=32, stem_width=32, stages=((64, 2), (128, 2))),
                                seed=4))
    sha_small = hashlib.sha256(small).hexdigest()
    with Client(address, TOKEN) as client:
        honest = client.predict(small)  # sent as bytes: verified features of A
        stub = client._predictor

        def by_graph(declared_sha: str, data: bytes):
            request = predictor_pb2.PredictRequest(model_graph=predictor_pb2.ModelGraph(
                sha256=declared_sha, onnx=light_model_bytes(data)), targets=["latency_ms"])
            return stub.Predict(request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=60)

        poisoned = by_graph(sha_small, big)  # B's graph declared as A
        assert poisoned.predictions[0].value == pytest.approx(honest[0].value)
        assert client.predict_sha256(sha_small)[0].value == pytest.approx(honest[0].value)
        # A never-uploaded sha256 declared twice with different graphs: each request gets its own graph.
        ghost = "ab" * 32
        first, second = by_graph(ghost, small), by_graph(ghost, big)
        assert second.predictions[0].value > first.predictions[0].value
        assert first.predictions[0].value == pytest.approx(honest[0].value)


def test_tflite_and_unparseable_models_fall_back_to_bytes(controller, models, tmp_path):
    address, _ = controller
    tflite = tmp_path / "fresh.tflite"
    tflite.write_bytes(build_tflite(resnet("fresh", input_size=40), seed=3))
    garbage = tmp_path / "broken.onnx"
    garbage.write_bytes(b"\x08\x01garbage that is not a model")
    client, log = _logged_client(address)
    with client:
        assert client.predict(tflite)[0].value > 0
        with pytest.raises(InvalidArgument, match="broken.onnx"):
            client.predict(garbage)
    assert log.kinds == ["model_sha256", "model_bytes", "model_sha256", "model_bytes"]


def test_predict_batch_resends_only_the_unknown_models_in_order(controller, models, tmp_path):
    address, _ = controller
    fresh = []
    for i in range(3):
        path = tmp_path / f"batch-{i}.onnx"
        path.write_bytes(onnx_bytes(build_onnx(resnet(f"batch-{i}", input_size=24 + 8 * i, stem_width=8),
                                               seed=100 + i)))
        fresh.append(path)
    bad = b"not a model at all"
    client, log = _logged_client(address)
    with client:
        client.predict(fresh[1])  # known to the server from now on
        log.kinds.clear()
        out = list(client.predict_batch([fresh[0], fresh[1], bad, fresh[2]]))
        assert len(out) == 4 and isinstance(out[2], InvalidArgument)
        values = [o[0].value for i, o in enumerate(out) if i != 2]
        assert values == [client.predict(p)[0].value for p in (fresh[0], fresh[1], fresh[2])]
    sent = log.kinds[:7]
    assert sent[:4] == ["model_sha256"] * 4
    assert sorted(sent[4:]) == ["model_bytes", "model_graph", "model_graph"]  # fresh[1] is not sent again
