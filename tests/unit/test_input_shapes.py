"""Features at the size a model runs (``input_shapes``), the weightless graph a caller sends, and the
training side: a sweep's input overrides reach the features of the models it measured."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("ai_edge_litert")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fleetmeter._onnx_wire import STRIPPED, STRIPPED_ZERO, light_model_bytes  # noqa: E402
from fleetmeter.blobs import BlobStore  # noqa: E402
from fleetmeter.controller.store import Store  # noqa: E402
from fleetmeter._rpc import from_rpc_error  # noqa: E402
from fleetmeter.errors import InvalidArgument, ModelNotFound, NotFound  # noqa: E402
from fleetmeter.modeler import dataset  # noqa: E402
from fleetmeter.modeler.features import extract_features, input_shapes_key  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from fleetmeter.modeler.zoo.tiny import convnet, resnet  # noqa: E402


def _dynamic_conv(out_ch: int = 8, bias: np.ndarray = None) -> bytes:
    """A 3x3 Conv (pad 1) + Relu over a [1, 3, 'H', 'W'] input, as an exporter writes a dynamic-size model."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.random.default_rng(0).random((out_ch, 3, 3, 3), np.float32), "w")]
    inputs = ["images", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        inputs.append("b")
    nodes = [helper.make_node("Conv", inputs, ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "dynamic", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# ------------------------------------------------------------------ ONNX


def test_onnx_dynamic_input_macs_follow_the_override():
    """Fails if the override does not reach shape inference: MACs would stay those of a 1x1 image."""
    data = _dynamic_conv()
    per_pixel = 8 * 3 * 3 * 3 + 8  # the conv's MACs per output pixel + the fused ReLU's
    at_1 = extract_features(data)
    assert at_1.model["macs"] == per_pixel
    for size in (64, 128, 640):
        f = extract_features(data, input_shapes={"images": (1, 3, size, size)})
        assert f.model["macs"] == per_pixel * size * size
        assert f.nodes[0].output_shapes == ((1, 8, size, size),)
        assert f.warnings == [] and f.input_shapes == {"images": (1, 3, size, size)}
    (warning,) = at_1.warnings
    assert warning.startswith("input 'images' has a dynamic dimension (set to 1); pass --shape images=")


def test_onnx_static_input_resized_matches_the_model_built_at_that_size():
    """Fails if declared intermediate/output shapes of the old size survive the override."""
    small = onnx_bytes(build_onnx(resnet("r", input_size=32)))
    name = onnx.load_from_string(small).graph.input[0].name
    native = extract_features(onnx_bytes(build_onnx(resnet("r", input_size=64)))).model
    assert extract_features(small, input_shapes={name: (1, 3, 64, 64)}).model == native
    assert extract_features(small, input_shapes={name: (1, 3, 32, 32)}).model == extract_features(small).model
    assert extract_features(small).warnings == []


@pytest.mark.parametrize("shapes, message", [
    ({"image": (1, 3, 64, 64)}, r"no input named 'image'; the model's inputs are: images \(1x3xHxW\)"),
    ({"images": (1, 3, 64)}, r"input 'images' has rank 4, the shape given \(1x3x64\) has rank 3"),
    ({"images": (1, 3, 0, 64)}, r"positive dimensions"),
])
def test_onnx_bad_override_names_the_inputs(shapes, message):
    with pytest.raises(InvalidArgument, match=message):
        extract_features(_dynamic_conv(), input_shapes=shapes)


# ------------------------------------------------------------------ TFLite


def test_tflite_override_is_litert_resize():
    """Fails if a TFLite override is ignored or shapes are not recomputed everywhere: the resized 32-pixel
    network must featurize exactly as the same network built for 64 pixels."""
    small = build_tflite(resnet("r", input_size=32))
    native = extract_features(build_tflite(resnet("r", input_size=64)))
    resized = extract_features(small, input_shapes={"input": (1, 64, 64, 3)})
    assert resized.model == native.model
    assert resized.model["macs"] > 3.9 * extract_features(small).model["macs"]
    assert extract_features(small, input_shapes={"input": (1, 32, 32, 3)}).model == extract_features(small).model


def test_tflite_bad_override_is_invalid_argument():
    data = build_tflite(convnet("c", input_size=32))
    with pytest.raises(InvalidArgument, match=r"no input named 'images'; the model's inputs are: input \(1x32x32x3\)"):
        extract_features(data, input_shapes={"images": (1, 64, 64, 3)})
    with pytest.raises(InvalidArgument, match="has rank 4"):
        extract_features(data, input_shapes={"input": (1, 64, 64)})
    # A flatten into a dense layer fixes the size: LiteRT cannot resize it, and the error says so.
    with pytest.raises(InvalidArgument, match="LiteRT cannot resize this model"):
        extract_features(data, input_shapes={"input": (1, 64, 64, 3)})


# ------------------------------------------------------------------ the graph a caller sends


def test_light_graph_featurizes_as_the_whole_file_zero_bias_included():
    """Fails if stripping on the caller side changes a feature: a stripped all-zero bias counts as no bias,
    a stripped non-zero one as parameters, as when the server strips the file itself."""
    for bias in (np.zeros(2048), np.linspace(0.1, 1.0, 2048)):
        data = _dynamic_conv(out_ch=2048, bias=bias)
        light = light_model_bytes(data, mark=True)
        assert len(light) < len(data) // 10
        docs = {t.name: t.doc_string for t in onnx.load_from_string(light).graph.initializer}
        assert docs == {"w": STRIPPED, "b": STRIPPED_ZERO if not bias.any() else STRIPPED}
        shapes = {"images": (1, 3, 32, 32)}
        whole, sent = extract_features(data, input_shapes=shapes), extract_features(light, input_shapes=shapes)
        assert sent.model == whole.model
        assert whole.model["params"] == 2048 * 27 + (2048 if bias.any() else 0)


# ------------------------------------------------------------------ training data


def test_a_sweeps_input_overrides_reach_the_training_features(tmp_path):
    """Fails if measurements made at 1x3x64x64 train on features of the 1x1 the file declares, or if two
    sweeps at different sizes merge into one sample."""
    data = _dynamic_conv()
    sha = hashlib.sha256(data).hexdigest()
    staged = tmp_path / "staged"
    staged.write_bytes(data)
    BlobStore(tmp_path / "blobs").adopt(staged, sha)
    store = Store(tmp_path / "fleetmeter.sqlite")
    try:
        store.add_model({"sha256": sha, "name": "dyn", "format": "onnx", "size_bytes": len(data), "info": {}})
        specs = {"sw-plain": [], "sw-64": [{"name": "images", "shape": [1, 3, 64, 64]}],
                 "sw-fill": [{"name": "images", "fill": 1.0}]}
        for sweep_id, inputs in specs.items():
            store.create_sweep({"sweep_id": sweep_id, "name": sweep_id, "spec": {"inputs": inputs},
                                "platform_ids": ["p"], "priority": 0}, [])
        for i, (sweep_id, ms) in enumerate((("sw-plain", 1.0), ("sw-64", 9.0), ("sw-64", 11.0), ("sw-fill", 3.0))):
            store.record_measurement({"measurement_id": f"m{i}", "job_id": "", "sweep_id": sweep_id,
                                      "agent_id": "a", "platform_id": "p", "model_sha256": sha,
                                      "latency_ms": {"median": ms}, "failure_kind": "", "samples_ms": []})
        assert store.sweep_inputs() == {k: v for k, v in specs.items() if v}
        samples = dataset.load_from_store(store, tmp_path / "blobs", cache=dataset.FeatureCache())
    finally:
        store.close()
    by_shapes = {s.input_shapes: s for s in samples}
    at_64 = input_shapes_key({"images": (1, 3, 64, 64)})
    assert set(by_shapes) == {(), at_64}  # a fill alone changes no size
    assert by_shapes[at_64].values == {"latency_ms": 10.0}
    assert by_shapes[()].repeats["latency_ms"] == (1.0, 3.0)
    assert by_shapes[at_64].features["macs"] == 64 * 64 * by_shapes[()].features["macs"]
    assert dataset.fingerprint([by_shapes[at_64]]) != dataset.fingerprint(
        [replace(by_shapes[at_64], input_shapes=())])


def test_feature_cache_keys_on_sha_and_shapes(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_dynamic_conv())
    cache = dataset.FeatureCache()
    plain = cache.get("s" * 64, path)
    big = cache.get("s" * 64, path, {"images": [1, 3, 16, 16]})
    assert big["macs"] == 256 * plain["macs"] and len(cache) == 2
    assert cache.get("s" * 64, path, {"images": (1, 3, 16, 16)}) is big


# ------------------------------------------------------------------ the model's NOT_FOUND


class _Status:
    def __init__(self, code, details, trailing=()):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


def test_model_not_found_is_told_apart_by_its_trailing_metadata():
    import grpc

    model = from_rpc_error(_Status(grpc.StatusCode.NOT_FOUND, "no model", (("fleetmeter-not-found", "model"),)))
    platform = from_rpc_error(_Status(grpc.StatusCode.NOT_FOUND, "unknown platform 'x'"))
    assert isinstance(model, ModelNotFound) and str(model) == "no model"
    assert isinstance(platform, NotFound) and not isinstance(platform, ModelNotFound)
