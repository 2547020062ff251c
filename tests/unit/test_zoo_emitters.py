"""The zoo's architecture description and its two emitters, without running a model.

Runtime equivalence (ONNX vs TFLite numbers) lives in
tests/integration/test_zoo_runtimes.py.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

import fleetmeter.modeler.zoo as zoo  # noqa: E402
from fleetmeter.modeler.builtin import get_builtin_model, list_builtin_models  # noqa: E402
from fleetmeter.modeler.zoo.arch import (GENERATOR_VERSION, META_FAMILY, META_GENERATOR_VERSION,  # noqa: E402
                                          META_HYPERPARAMETERS, META_SEED, Add, Architecture, ArchitectureError,
                                          AvgPool, Concat, Conv2D, Dense, Flatten, GlobalAvgPool, Input, MaxPool,
                                          Reshape, Softmax, init_weights, same_padding)
from fleetmeter.modeler.zoo.onnx_emit import IR_VERSION, OPSET, build_onnx, onnx_bytes, onnx_shape  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from fleetmeter.modeler.zoo.tiny import builtin_architectures, convnet, resnet  # noqa: E402
from _support import tflite_metadata, tflite_model, tflite_ops  # noqa: E402

ARCHS = builtin_architectures()
ARCH_IDS = [a.name for a in ARCHS]


# -- public API -------------------------------------------------------------


def test_zoo_public_api_is_pinned():
    # A change here is an API change for every zoo user: update deliberately.
    assert sorted(zoo.__all__) == sorted([
        "ACTIVATIONS", "GENERATOR_VERSION", "META_FAMILY", "META_GENERATOR_VERSION", "META_HYPERPARAMETERS",
        "META_NAME", "META_SEED", "Activation", "Add", "Architecture", "ArchitectureError", "AvgPool", "Concat",
        "Conv2D", "Dense", "Flatten", "GlobalAvgPool", "Input", "MaxPool", "Reshape", "Softmax",
        "UnsupportedLayerError", "init_weights", "param_shapes",
        # the zoo's newer layers and its families
        "Attention", "BatchNorm", "ChannelShuffle", "LayerNorm", "Mul", "Scale", "Slice",
        "ConvTranspose2D", "Pad", "PReLU", "Resize",
        "FAMILIES", "Family", "build_zoo", "family_names", "get_family",
    ])
    for name in zoo.__all__:
        assert hasattr(zoo, name), name


# -- shape inference ----------------------------------------------------------


def test_sequential_shapes_and_auto_names():
    arch = Architecture("t", "test", (Input(32, 32, 3), Conv2D(8, 3), MaxPool(2), Conv2D(4, 3, padding="valid"),
                                      Flatten(), Dense(10), Softmax()))
    assert [layer.name for layer in arch.layers] == [
        "input", "conv2d_0", "maxpool_0", "conv2d_1", "flatten_0", "dense_0", "softmax_0"]
    assert arch.layer("conv2d_1").inputs == ("maxpool_0",)
    assert arch.shapes == {
        "input": (32, 32, 3), "conv2d_0": (32, 32, 8), "maxpool_0": (16, 16, 8), "conv2d_1": (14, 14, 4),
        "flatten_0": (784,), "dense_0": (10,), "softmax_0": (10,)}
    assert arch.outputs == ("softmax_0",)


@pytest.mark.parametrize(
    "size,kernel,stride,dilation,padding,expected",
    [
        (7, 3, 2, 1, "same", 4),  # ceil(7/2)
        (8, 3, 2, 1, "same", 4),
        (7, 3, 2, 1, "valid", 3),
        (9, 3, 1, 2, "valid", 5),  # effective kernel 5
        (9, 3, 1, 2, "same", 9),
        (5, (1, 3), 1, 1, "valid", None),  # asymmetric kernel, checked below
    ],
)
def test_conv_output_sizes(size, kernel, stride, dilation, padding, expected):
    arch = Architecture("t", "test", (Input(size, size, 2), Conv2D(4, kernel, stride, padding, dilation=dilation)))
    h, w, c = arch.shapes["conv2d_0"]
    if expected is None:
        assert (h, w, c) == (5, 3, 4)
    else:
        assert (h, w, c) == (expected, expected, 4)


def test_same_padding_puts_the_odd_pixel_after():
    # TensorFlow SAME: total padding split with the extra on the bottom/right.
    assert same_padding(8, 3, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(7, 3, 1, dilation=2) == (2, 2)
    assert same_padding(6, 1, 2) == (0, 0)


def test_branches_concat_add_and_reshape_shapes():
    arch = Architecture("t", "test", (
        Input(8, 8, 4),
        Conv2D(6, 1, name="a"),
        Conv2D(2, 3, name="b", inputs=("input",)),
        Concat(name="cat", inputs=("a", "b")),
        Conv2D(8, 3, groups=8, name="dw"),  # depthwise
        Add(name="sum", inputs=("cat", "dw")),
        AvgPool(3, 2, padding="same", name="pool"),
        GlobalAvgPool(keepdims=True, name="gap"),
        Reshape((2, 2, 2), name="r"),
        Flatten(name="f"),
    ))
    assert arch.shapes["cat"] == (8, 8, 8)
    assert arch.shapes["sum"] == (8, 8, 8)
    assert arch.shapes["pool"] == (4, 4, 8)
    assert arch.shapes["gap"] == (1, 1, 8)
    assert arch.shapes["r"] == (2, 2, 2)
    assert arch.shapes["f"] == (8,)


@pytest.mark.parametrize(
    "layers,message",
    [
        ((Input(8, 8, 3), Dense(4)), "vector input"),
        ((Input(8, 8, 3), Conv2D(4, 3, name="a"), Add(inputs=("a", "input"))), "one shape"),
        ((Input(8, 8, 3), Conv2D(4, 3, inputs=("nope",))), "not an earlier layer"),
        ((Input(8, 8, 3), Conv2D(4, 3, name="x"), Conv2D(4, 3, name="x")), "duplicate"),
        ((Input(8, 8, 3), Conv2D(4, 3, name="dead"), Conv2D(4, 3, inputs=("input",))), "nothing reads"),
        ((Input(8, 8, 3), Conv2D(4, 3, groups=2)), "divisible"),
        ((Input(4, 4, 3), Conv2D(4, 5, padding="valid")), "larger than input"),
        ((Input(4, 4, 3), Reshape((5, 5, 5))), "view"),
        ((Input(4),), None),  # fine: an input that is also the output
    ],
)
def test_inconsistent_descriptions_are_rejected(layers, message):
    if message is None:
        Architecture("t", "test", layers)
        return
    with pytest.raises(ArchitectureError, match=message):
        Architecture("t", "test", layers)


def test_hyperparameters_must_be_json():
    with pytest.raises(ArchitectureError, match="JSON"):
        Architecture("t", "test", (Input(4),), hyperparameters={"x": object()})


def test_to_dict_round_trip_gives_identical_files():
    arch = resnet("rt")
    again = Architecture.from_dict(json.loads(json.dumps(arch.to_dict())))
    assert again == arch
    assert onnx_bytes(build_onnx(again)) == onnx_bytes(build_onnx(arch))
    assert build_tflite(again) == build_tflite(arch)


# -- weights --------------------------------------------------------------------


def test_weights_are_deterministic_small_and_per_layer():
    arch = convnet("w")
    a, b = init_weights(arch, seed=3), init_weights(arch, seed=3)
    for name in a:
        for key in a[name]:
            assert a[name][key].dtype == np.float32
            assert np.array_equal(a[name][key], b[name][key])
            assert np.all(np.abs(a[name][key]) <= 1.0)
    assert a["conv1"]["kernel"].shape == (16, 3, 3, 3)  # OIHW
    assert a["fc1"]["kernel"].shape == (64, 512)  # (units, in_features)
    assert not np.array_equal(a["conv1"]["kernel"], init_weights(arch, seed=4)["conv1"]["kernel"])
    # Changing one layer must not reshuffle the others' weights.
    wider = convnet("w", dense_units=32)
    assert np.array_equal(init_weights(wider, seed=3)["conv1"]["kernel"], a["conv1"]["kernel"])


def test_explicit_weights_are_shape_checked():
    arch = convnet("w")
    weights = init_weights(arch)
    weights["fc1"]["kernel"] = weights["fc1"]["kernel"][:, :10]
    with pytest.raises(ArchitectureError, match="fc1"):
        build_onnx(arch, weights=weights)
    with pytest.raises(ArchitectureError, match="fc1"):
        build_tflite(arch, weights=weights)


# -- emitters: determinism, validity, metadata ---------------------------------------


@pytest.mark.parametrize("arch", ARCHS, ids=ARCH_IDS)
def test_same_seed_gives_byte_identical_files(arch):
    assert onnx_bytes(build_onnx(arch, seed=7)) == onnx_bytes(build_onnx(arch, seed=7))
    assert build_tflite(arch, seed=7) == build_tflite(arch, seed=7)
    assert onnx_bytes(build_onnx(arch, seed=7)) != onnx_bytes(build_onnx(arch, seed=8))
    assert build_tflite(arch, seed=7) != build_tflite(arch, seed=8)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCH_IDS)
def test_onnx_is_valid_and_its_shapes_match_ours(arch):
    model = build_onnx(arch)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    # ONNX's own shape inference must agree with ours on every layer output:
    # a mismatch means wrong pads/strides/transposes in the emitter.
    for layer in arch.layers[1:]:
        assert dims[layer.name] == onnx_shape(arch.shapes[layer.name]), layer.name


@pytest.mark.parametrize("arch", ARCHS, ids=ARCH_IDS)
def test_metadata_is_recorded_in_both_formats(arch):
    model = build_onnx(arch, seed=5)
    props = {p.key: p.value for p in model.metadata_props}
    tfl = tflite_metadata(build_tflite(arch, seed=5))
    for meta in (props, tfl):
        assert meta[META_FAMILY] == arch.family
        assert json.loads(meta[META_HYPERPARAMETERS]) == arch.hyperparameters
        assert meta[META_GENERATOR_VERSION] == GENERATOR_VERSION
        assert meta[META_SEED] == "5"
    assert model.producer_name == "fleetmeter.zoo"


def test_metadata_has_no_seed_when_weights_are_given():
    arch = convnet("w")
    props = {p.key for p in build_onnx(arch, weights=init_weights(arch)).metadata_props}
    assert META_FAMILY in props and META_SEED not in props


@pytest.mark.parametrize("arch", ARCHS, ids=ARCH_IDS)
def test_tflite_structure(arch):
    data = build_tflite(arch)
    assert data[4:8] == b"TFL3"
    model = tflite_model(data)
    assert model.version == 3
    sub = model.subgraphs[0]
    tensors = sub.tensors
    assert [tensors[i].name.decode() for i in sub.inputs] == [i.name for i in arch.input_layers]
    assert [list(tensors[i].shape) for i in sub.outputs] == [[1, *arch.shapes[o]] for o in arch.outputs]
    assert model.signatureDefs[0].signatureKey.decode() == "serving_default"
    root = schema.Model.GetRootAs(data, 0)
    for t in tensors:
        if t.buffer:
            table = root.Buffers(t.buffer)._tab
            start = table.Vector(table.Offset(4))  # absolute position of the data vector's first byte
            assert start % 16 == 0, t.name  # weights start on 16-byte boundaries
            assert data[start : start + len(model.buffers[t.buffer].data)] == bytes(model.buffers[t.buffer].data)


def test_tflite_op_mapping_and_weight_layout():
    arch = Architecture("t", "test", (
        Input(8, 8, 4), Conv2D(8, 3, groups=4, activation="relu6", name="dw"), Conv2D(6, (1, 3), name="pw"),
        MaxPool(2), GlobalAvgPool(), Dense(3, activation="relu", name="fc"), Softmax()))
    data = build_tflite(arch)
    assert tflite_ops(data) == ["DEPTHWISE_CONV_2D", "CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    model = tflite_model(data)
    sub = model.subgraphs[0]
    ops = sub.operators
    assert ops[0].builtinOptions.depthMultiplier == 2
    assert ops[0].builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU6
    assert ops[4].builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU
    weights = init_weights(arch)
    by_name = {t.name.decode(): t for t in sub.tensors}

    def tensor_data(name):
        t = by_name[name]
        return np.frombuffer(bytes(model.buffers[t.buffer].data), dtype=np.float32).reshape(list(t.shape))

    # OIHW (8, 1, 3, 3) -> depthwise [1, kh, kw, out]; OIHW (6, 8, 1, 3) -> OHWI.
    np.testing.assert_array_equal(tensor_data("dw/kernel"), weights["dw"]["kernel"].transpose(1, 2, 3, 0))
    np.testing.assert_array_equal(tensor_data("pw/kernel"), weights["pw"]["kernel"].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(tensor_data("fc/kernel"), weights["fc"]["kernel"])


def test_onnx_flatten_transposes_only_when_layouts_differ():
    spatial = build_onnx(Architecture("t", "test", (Input(4, 4, 3), Flatten())))
    assert [n.op_type for n in spatial.graph.node] == ["Transpose", "Flatten"]
    pooled = build_onnx(Architecture("t", "test", (Input(4, 4, 3), GlobalAvgPool(keepdims=True), Flatten())))
    assert [n.op_type for n in pooled.graph.node] == ["GlobalAveragePool", "Flatten"]


def test_every_layer_kind_has_a_shape_rule_and_a_rule_in_both_emitters():
    # A kind missing here would only fail when a sampled model first used it.
    from fleetmeter.modeler.zoo import arch as arch_module, onnx_emit, tflite_emit
    from fleetmeter.modeler.zoo.layers import _LAYER_TYPES, UnsupportedLayerError

    kinds = set(_LAYER_TYPES.values())
    assert set(arch_module._SHAPE_RULES) == kinds
    assert set(onnx_emit._emit_layer.registry) - {object} == kinds - {Input}
    assert set(tflite_emit._emit_op.registry) - {object} == kinds - {Input}
    with pytest.raises(UnsupportedLayerError, match="ONNX emitter has no rule for Input"):
        onnx_emit._emit_layer(Input(4), None, None, {})
    with pytest.raises(UnsupportedLayerError, match="TFLite emitter has no rule for Input"):
        tflite_emit._emit_op(Input(4), None, None, {}, [], 0)


# -- built-in index ----------------------------------------------------------------


def test_builtin_index_lists_every_model_in_both_formats():
    models = list_builtin_models()
    names = [a.name for a in ARCHS]
    assert sorted((m.name, m.format) for m in models) == sorted((n, f) for n in names for f in ("onnx", "tflite"))
    for m in models:
        data = m.path.read_bytes()
        assert len(data) == m.size_bytes < 1_000_000
        assert hashlib.sha256(data).hexdigest() == m.sha256, m.path
    assert [m.format for m in list_builtin_models("tflite")] == ["tflite"] * len(names)
    onnx_model = get_builtin_model("tiny_convnet", "onnx")
    assert onnx_model.family == "convnet" and onnx_model.input_shape == (1, 3, 48, 48)
    assert get_builtin_model("tiny_convnet", "tflite").input_shape == (1, 48, 48, 3)
    with pytest.raises(KeyError):
        get_builtin_model("nope", "onnx")
    with pytest.raises(ValueError):
        list_builtin_models("pt")
