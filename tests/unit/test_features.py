"""Graph features (fleetmeter.modeler.features): conventions, cross-format agreement, errors.

Models come from the zoo (built-in files and in-memory generations) or are
written here with onnx.helper; nothing is run. Speed lives in
benchmarks/features_speed.py, not here.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fleetmeter.modeler.features as features  # noqa: E402
from fleetmeter.modeler import features_onnx, features_tflite  # noqa: E402
from fleetmeter.modeler.builtin import list_builtin_models  # noqa: E402
from fleetmeter.modeler.features import (  # noqa: E402
    COVERAGE_KEYS,
    FEATURE_SCHEMA_VERSION,
    KERNEL_FEATURE_KEYS,
    MODEL_CORE_KEYS,
    ModelFeatures,
    NodeFeatures,
    extract_features,
    feature_columns,
    feature_vector,
    fuse_activations,
)
from fleetmeter.modeler.zoo import odd_files as special  # noqa: E402
from fleetmeter.modeler.zoo.arch import (  # noqa: E402
    Activation,
    Add,
    Architecture,
    AvgPool,
    Conv2D,
    Dense,
    GlobalAvgPool,
    MaxPool,
    Softmax,
)
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from fleetmeter.modeler.zoo.tiny import (  # noqa: E402
    builtin_architectures,
    convnet,
    dilated_convnet,
    mlp,
    mobilenet_v1,
    resnet,
    squeezenet,
)

BUILTIN = {a.name: a for a in builtin_architectures()}
GENERATED = [
    convnet("g_convnet", input_size=20, widths=(4, 8), dense_units=12, num_classes=3),
    mobilenet_v1("g_mobilenet", input_size=17, stem_width=8, blocks=((8, 2), (16, 1), (24, 2)), num_classes=5),
    resnet("g_resnet", input_size=15, stem_width=8, stages=((8, 2), (12, 1)), blocks_per_stage=1, num_classes=4),
    squeezenet("g_squeeze", input_size=23, stem_width=8, fires=((4, 8, True), (6, 12, False)), num_classes=6),
    mlp("g_mlp", in_features=33, hidden=(17,), num_classes=2),
    dilated_convnet("g_dilated", input_size=19, width=8, dilation=3, groups=2, num_classes=7),
]


def _both(arch):
    return (extract_features(onnx_bytes(build_onnx(arch))), extract_features(build_tflite(arch)))


def _onnx_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name=name)


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _expected_macs(arch: Architecture) -> int:
    """The module docstring's conventions, applied to the description (not to either file)."""
    total = 0
    for layer in arch.layers:
        out = arch.shapes[layer.name]
        ins = arch.in_shapes(layer)
        out_elems = math.prod(out)
        if isinstance(layer, Conv2D):
            total += out_elems * layer.kernel[0] * layer.kernel[1] * (ins[0][2] // layer.groups)
        elif isinstance(layer, (MaxPool, AvgPool)):
            total += out_elems * layer.kernel[0] * layer.kernel[1]
        elif isinstance(layer, GlobalAvgPool):
            total += math.prod(ins[0])
        elif isinstance(layer, Dense):
            total += ins[0][0] * layer.units
        elif isinstance(layer, (Add, Softmax, Activation)):
            total += out_elems
        if getattr(layer, "activation", None):
            total += out_elems
    return total


# -- public API ---------------------------------------------------------------


def test_public_api_is_pinned():
    # A change here is an API change for the predictors: update deliberately (and think about the schema version).
    assert sorted(features.__all__) == sorted([
        "FEATURE_SCHEMA_VERSION", "FORMATS", "LAYOUT_OPS", "FUSABLE_ACTIVATIONS", "MODEL_CORE_KEYS",
        "COVERAGE_KEYS", "KERNEL_FEATURE_KEYS", "NodeFeatures", "ModelFeatures", "ParsedGraph", "extract_features",
        "fuse_activations", "model_aggregates", "feature_vector", "feature_columns", "detect_format",
        "normalize_input_shapes", "input_shapes_key", "check_input_shapes", "dynamic_input_warning",
    ])
    for name in features.__all__:
        assert hasattr(features, name), name
    assert isinstance(FEATURE_SCHEMA_VERSION, int)


def test_results_carry_the_schema_version_and_serialize_to_json():
    model = list_builtin_models("onnx")[0]
    f = extract_features(model.path)
    assert f.schema_version == FEATURE_SCHEMA_VERSION
    assert f.format == "onnx" and f.source == str(model.path)
    from_bytes = extract_features(model.path.read_bytes())  # bytes in memory vs the memory-mapped file
    assert from_bytes.source == "<bytes>" and from_bytes.model == f.model
    assert [n.to_dict() for n in from_bytes.nodes] == [n.to_dict() for n in f.nodes]
    data = json.loads(json.dumps(f.to_dict()))
    assert data["schema_version"] == FEATURE_SCHEMA_VERSION
    assert len(data["nodes"]) == len(f.nodes)
    # model dict: flat, numeric, core keys first in their fixed order
    assert tuple(f.model)[: len(MODEL_CORE_KEYS)] == MODEL_CORE_KEYS
    assert all(isinstance(v, float) for v in f.model.values())
    # then the per-op-type keys, sorted by op type, then what the parser did not understand
    extra = list(f.model)[len(MODEL_CORE_KEYS):-len(COVERAGE_KEYS)]
    assert extra == sorted(extra, key=lambda k: (k.split(":", 1)[1], k)) and extra
    assert tuple(f.model)[-len(COVERAGE_KEYS):] == COVERAGE_KEYS


def test_node_records_are_dict_like():
    f = extract_features(list_builtin_models("tflite")[0].path)
    node = f.nodes[0]
    assert node["op_type"] == node.op_type == "conv2d"
    assert node["kernel_type"] == "conv2d+relu"
    assert "arithmetic_intensity" in node.keys()
    with pytest.raises(KeyError):
        node["no_such_field"]
    assert json.loads(json.dumps(node.to_dict()))["kernel"] == [3, 3]
    numeric = node.numeric()
    assert tuple(numeric) == KERNEL_FEATURE_KEYS
    assert numeric["in_h"] == 48 and numeric["in_channels"] == 3 and numeric["out_channels"] == 16


# -- conventions ----------------------------------------------------------------


@pytest.mark.parametrize("arch", list(BUILTIN.values()) + GENERATED, ids=lambda a: a.name)
def test_total_macs_and_params_follow_the_documented_conventions(arch):
    expected_macs = _expected_macs(arch)
    for f in _both(arch):
        assert f.model["macs"] == expected_macs, f.format
        # TFLite's zero bias (conv without bias) is not a parameter: both formats count the description's.
        assert f.model["params"] == arch.param_count(), f.format
        assert f.model["param_bytes"] == 4 * arch.param_count(), f.format


def test_conv_record_geometry_and_nchw_shapes():
    arch = BUILTIN["tiny_dilated"]
    for f in _both(arch):
        by_name = {n.name: n for n in f.nodes}
        dilated = by_name["dilated"]
        assert dilated.kernel == (3, 3) and dilated.dilation == (2, 2) and dilated.stride == (1, 1)
        assert dilated.padding == (2, 2, 2, 2)  # SAME with an effective 5x5 kernel
        assert dilated.input_shapes == ((1, 16, 32, 32),)  # NCHW in both formats
        dw = by_name["dw_x2"]
        assert (dw.op_type, dw.groups, dw.in_channels, dw.out_channels) == ("depthwise_conv2d", 16, 16, 32)
        assert dw.fused_activation == "relu6"  # the standalone ReLU6 is fused in both formats
        grouped = by_name["group_pw"]
        assert (grouped.op_type, grouped.groups) == ("conv2d", 4)
        assert grouped.macs == 16 * 16 * 32 * (32 // 4) + 16 * 16 * 32  # conv + fused relu
        smooth = by_name["smooth"]
        assert smooth.op_type == "pool_avg" and smooth.padding == (1, 1, 1, 1)
        assert smooth.arithmetic_intensity == pytest.approx(
            smooth.macs / (smooth.act_read_bytes + smooth.act_write_bytes))


def test_depth_is_the_longest_kernel_path():
    for f in _both(BUILTIN["tiny_resnet"]):
        # stem + 4 blocks x (conv1, conv2, add) + gap + dense + softmax; the projection is a parallel branch
        assert f.model["depth"] == 16
    for f in _both(BUILTIN["tiny_squeeze"]):
        # stem, pool, 3 fires x (squeeze, expand, concat), pool, classifier, gap, softmax
        assert f.model["depth"] == 15


# -- ONNX and TFLite agree ---------------------------------------------------------


def _agreement(onnx_f: ModelFeatures, tflite_f: ModelFeatures) -> None:
    assert onnx_f.kernel_types() == tflite_f.kernel_types()
    assert [n.name for n in onnx_f.kernels] == [n.name for n in tflite_f.kernels]
    for a, b in zip(onnx_f.kernels, tflite_f.kernels):
        assert a.numeric() == b.numeric(), a.name
        assert a.input_shapes == b.input_shapes, a.name
    layout_keys = {"layout_node_count", "layout_bytes"}
    assert {k: v for k, v in onnx_f.model.items() if k not in layout_keys} == {
        k: v for k, v in tflite_f.model.items() if k not in layout_keys}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_files_agree_across_formats(name):
    files = {m.format: m.path for m in list_builtin_models() if m.name == name}
    _agreement(extract_features(files["onnx"]), extract_features(files["tflite"]))


@pytest.mark.parametrize("arch", GENERATED, ids=lambda a: a.name)
def test_generated_models_agree_across_formats(arch):
    _agreement(*_both(arch))


def test_unfused_onnx_has_separate_activations_and_fusion_merges_them():
    f = extract_features(onnx_bytes(build_onnx(BUILTIN["tiny_convnet"])), fuse=False)
    raw_types = [n.op_type for n in f.nodes]
    assert raw_types[:3] == ["conv2d", "activation:relu", "pool_max"]
    assert "transpose" in raw_types and "reshape" in raw_types  # NCHW flatten needs both
    assert f.raw_nodes == f.nodes
    fused = extract_features(onnx_bytes(build_onnx(BUILTIN["tiny_convnet"])))
    assert fused.nodes[0].kernel_type == "conv2d+relu"
    assert fused.nodes[0].outputs == ("conv1",)  # the activation's output
    assert not any(n.op_type.startswith("activation:") for n in fused.nodes)
    assert fused.model["macs"] == f.model["macs"]  # fusion sums, never loses, MACs


# -- fusion rules (pure records) --------------------------------------------------------


def _node(name, op, inputs, outputs, macs=10, params=0, fused=None):
    return NodeFeatures(name=name, op_type=op, raw_op=op, inputs=tuple(inputs), outputs=tuple(outputs), macs=macs,
                        params=params, param_bytes=4 * params, act_read_bytes=40, act_write_bytes=40,
                        fused_activation=fused)


def test_fusion_needs_a_single_reader_and_a_free_host():
    nodes = [
        _node("c1", "conv2d", ["x"], ["a"]),
        _node("r1", "activation:relu", ["a"], ["b"]),           # fuses into c1
        _node("c2", "conv2d", ["b"], ["c"]),
        _node("r2", "activation:relu", ["c"], ["d"]),           # c has two readers: no fusion
        _node("add", "add", ["c", "d"], ["e"], fused="relu"),
        _node("r3", "activation:relu6", ["e"], ["f"]),          # host already has an activation
        _node("sm", "softmax", ["f"], ["g"]),
        _node("r4", "activation:relu", ["g"], ["h"]),           # softmax is not a host
        _node("c3", "conv2d", ["h"], ["i"]),
        _node("r5", "activation:relu", ["i"], ["j"]),           # i is a graph output: no fusion
    ]
    before = [n.to_dict() for n in nodes]
    fused = fuse_activations(nodes, graph_outputs=["i", "j"])
    assert [n.name for n in fused] == ["c1", "c2", "r2", "add", "r3", "sm", "r4", "c3", "r5"]
    assert fused[0].kernel_type == "conv2d+relu" and fused[0].outputs == ("b",) and fused[0].macs == 20
    assert fused[0].act_write_bytes == 40 and fused[0].inputs == ("x",)
    assert [n.to_dict() for n in nodes] == before  # the input is untouched


def test_batchnorm_folds_into_conv_before_the_activation():
    nodes = [
        _node("c", "conv2d", ["x"], ["a"], params=100),
        _node("bn", "batchnorm", ["a"], ["b"], params=8),
        _node("r", "activation:relu", ["b"], ["y"]),
        _node("bn2", "batchnorm", ["y"], ["z"], params=8),  # after a fused activation: stays
    ]
    fused = fuse_activations(nodes)
    assert [n.kernel_type for n in fused] == ["conv2d+bn+relu", "batchnorm"]
    assert fused[0].params == 108 and fused[0].macs == 30


# -- ONNX specifics --------------------------------------------------------------------


def test_onnx_op_coverage_with_dynamic_batch():
    rng = np.random.default_rng(0)
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2],
                         kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], name="bn"),
        helper.make_node("HardSwish", ["bn"], ["hs"], name="hs"),
        helper.make_node("GlobalAveragePool", ["hs"], ["gap"], name="gap"),
        helper.make_node("Sigmoid", ["gap"], ["sig"], name="sig"),
        helper.make_node("Mul", ["hs", "sig"], ["se"], name="se"),
        helper.make_node("ReduceMean", ["se"], ["rm"], name="rm", axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["rm", "fc_w"], ["fc"], name="fc"),
        helper.make_node("Add", ["fc", "fc_b"], ["fcb"], name="fc_bias"),
        helper.make_node("Clip", ["fcb", "lo", "hi"], ["r6"], name="relu6"),
        helper.make_node("Reshape", ["r6", "shape"], ["seq"], name="to_seq"),
        helper.make_node("LayerNormalization", ["seq", "ln_s", "ln_b"], ["ln"], name="ln", axis=-1),
        helper.make_node("Transpose", ["ln"], ["lnt"], name="t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["ln", "lnt"], ["att"], name="att"),
        helper.make_node("Softmax", ["att"], ["p"], name="softmax", axis=-1),
        helper.make_node("Mystery", ["p"], ["y"], name="mystery", domain="com.example"),
    ]
    inits = [
        _init("w", rng.random((c, 3, 3, 3), dtype=np.float32)),
        _init("s", np.ones(c, np.float32)), _init("b", np.zeros(c, np.float32)),
        _init("m", np.zeros(c, np.float32)), _init("v", np.ones(c, np.float32)),
        _init("fc_w", rng.random((c, 16), dtype=np.float32)), _init("fc_b", rng.random(16, dtype=np.float32)),
        _init("lo", np.array(0.0, np.float32)), _init("hi", np.array(6.0, np.float32)),
        _init("shape", np.array([1, 4, 4], np.int64)),
        _init("ln_s", np.ones(4, np.float32)), _init("ln_b", np.ones(4, np.float32)),
    ]
    graph = helper.make_graph(nodes, "cover", [_vi("x", ["N", 3, 16, 16])], [_vi("y", None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    f = extract_features(model.SerializeToString(), fuse=False)
    by = {n.name: n for n in f.nodes}
    assert [n.op_type for n in f.nodes] == [
        "conv2d", "batchnorm", "activation:hardswish", "global_pool", "activation:sigmoid", "mul", "global_pool",
        "dense", "add", "activation:relu6", "reshape", "layernorm", "transpose", "matmul", "softmax",
        "other:Mystery"]
    conv = by["conv"]
    assert conv.input_shapes == ((1, 3, 16, 16),)  # dynamic batch -> 1
    assert conv.output_shapes == ((1, c, 8, 8),) and conv.padding == (0, 0, 1, 1)  # SAME_UPPER: extra after
    assert conv.macs == 8 * 8 * c * 9 * 3 and conv.params == c * 27
    assert by["bn"].params == 4 * c  # scale, B, mean, var: statistics count even when zero
    assert by["fc"].macs == c * 16 and (by["fc"].in_channels, by["fc"].out_channels) == (c, 16)
    assert by["fc_bias"].params == 16  # a constant operand of an elementwise op is a weight
    assert by["relu6"].params == 0  # clip bounds are not
    assert by["ln"].params == 8
    assert by["att"].macs == 4 * 4 * 4 and by["att"].inputs == ("ln", "lnt")
    assert by["mystery"].raw_op == "com.example:Mystery"
    assert by["mystery"].macs == 16  # unknown op: output elements (shape taken from its input)
    assert f.model["input_elements"] == 3 * 16 * 16
    fused = extract_features(model.SerializeToString())
    assert [n.kernel_type for n in fused.kernels][:3] == ["conv2d+bn+hardswish", "global_pool", "activation:sigmoid"]
    assert "add+relu6" in fused.kernel_types()


def test_large_initializers_are_skipped_but_their_zero_check_still_works():
    # 4096 outputs: weights and bias are far above the keep threshold, so both are stripped.
    units = 4096
    nodes = [helper.make_node("Gemm", ["x", "w", "zero"], ["a"], name="fc0", transB=1),
             helper.make_node("Gemm", ["a", "w2", "bias"], ["y"], name="fc1", transB=1)]
    inits = [_init("w", np.ones((units, 8), np.float32)), _init("zero", np.zeros(units, np.float32)),
             _init("w2", np.ones((4, units), np.float32)), _init("bias", np.full(4, 0.5, np.float32))]
    data = _onnx_model(nodes, [_vi("x", [1, 8])], [_vi("y", [1, 4])], inits)
    spans = {}
    light = onnx.ModelProto.FromString(features_onnx._light_model_bytes(data, spans))
    assert len(light.SerializeToString()) < len(data) // 10
    assert {"w", "zero", "w2"} <= set(spans) and "bias" not in spans  # small ones stay whole
    assert [list(i.dims) for i in light.graph.initializer] == [[units, 8], [units], [4, units], [4]]
    assert [n.name for n in light.graph.node] == ["fc0", "fc1"]
    f = extract_features(data)
    assert [n.params for n in f.nodes] == [units * 8, units * 4 + 4]  # zero bias not counted, real one is


def test_onnx_constant_nodes_feed_clip_and_produce_no_record():
    nodes = [
        helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Constant", [], ["hi"], value_float=6.0),
        helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip"),
    ]
    f = extract_features(_onnx_model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])]))
    assert [n.op_type for n in f.nodes] == ["activation:relu6"]


def test_onnx_dequantized_weights_are_parameters_of_their_reader():
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "scale", "zp"], ["w"], name="dq"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inits = [_init("w_q", np.ones((4, 2, 3, 3), np.int8)), _init("scale", np.array(0.1, np.float32)),
             _init("zp", np.array(0, np.int8))]
    f = extract_features(_onnx_model(nodes, [_vi("x", [1, 2, 5, 5])], [_vi("y", [1, 4, 5, 5])], inits), fuse=False)
    dq, conv = f.nodes
    assert dq.op_type == "dequantize" and dq.inputs == ()
    assert conv.inputs == ("x",) and conv.params == 4 * 2 * 9 and conv.param_bytes == 4 * conv.params
    assert conv.act_read_bytes == 2 * 5 * 5 * 4  # the weights are not activation traffic


# -- TFLite specifics -----------------------------------------------------------------


def test_tflite_dequantized_weights_are_parameters_of_their_reader():
    from fleetmeter.modeler.zoo.tflite_emit import TfliteGraph

    g = TfliteGraph()
    s = g.schema
    x = g.tensor("x", [1, 5, 5, 2])
    w_stored = g.tensor("w_fp16", [4, 3, 3, 2], np.ones((4, 3, 3, 2), np.float32))
    w = g.tensor("w", [4, 3, 3, 2])
    b = g.tensor("b", [4], np.zeros(4, np.float32))
    y = g.tensor("y", [1, 5, 5, 4])
    g.op(s.BuiltinOperator.DEQUANTIZE, [w_stored], [w])
    options = s.Conv2DOptionsT()
    options.strideH = options.strideW = 1
    g.op(s.BuiltinOperator.CONV_2D, [x, w, b], [y], s.BuiltinOptions.Conv2DOptions, options)
    f = extract_features(g.to_bytes([x], [y], description="dq"), fuse=False)
    dq, conv = f.nodes
    assert (dq.op_type, dq.inputs) == ("dequantize", ())
    assert conv.inputs == ("x",) and conv.params == 4 * 9 * 2  # zero bias not counted
    assert conv.padding == (1, 1, 1, 1) and conv.input_shapes == ((1, 2, 5, 5),)
    assert conv.macs == 5 * 5 * 4 * 9 * 2



def test_tflite_reader_slots_match_the_installed_schema():
    # The hand-written reader must address the same vtable slots as the generated code.
    tables = dict(features_tflite._SLOTS)
    for options, fields in features_tflite._OPTIONS.items():
        tables.update({(options, name): spec for name, spec in fields.items()})
    for (cls, accessor), (slot, _, default) in tables.items():
        source = inspect.getsource(getattr(getattr(schema, cls), accessor))
        assert f"Offset({4 + 2 * slot})" in source, (cls, accessor)
        if default is not None:
            assert re.findall(r"return (\S+)", source)[-1] == repr(default), (cls, accessor)


def test_tflite_options_match_the_generated_reader():
    names = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}
    for model in list_builtin_models("tflite"):
        data = model.path.read_bytes()
        graph = features_tflite._Graph(data, str(model.path))
        ops = graph.r.tables(graph.g, features_tflite._SG_OPERATORS)
        sub = schema.Model.GetRootAs(data, 0).Subgraphs(0)
        for i, op_pos in enumerate(ops):
            op = sub.Operators(i)
            kind = names.get(op.BuiltinOptionsType())
            if kind not in features_tflite._OPTIONS:
                continue
            ours = graph.options(op_pos, kind)
            table = op.BuiltinOptions()
            theirs = getattr(schema, kind)()
            theirs.Init(table.Bytes, table.Pos)
            assert ours == {k: getattr(theirs, k)() for k in ours}, (model.name, i, kind)


def test_unsupported_ops_are_kept_as_other(tmp_path):
    special.write_unsupported_op_onnx(tmp_path / "u.onnx")
    special.write_unsupported_op_tflite(tmp_path / "u.tflite")
    for path, raw in ((tmp_path / "u.onnx", "com.example:NoSuchOp"), (tmp_path / "u.tflite", "CUSTOM:NoSuchOp")):
        f = extract_features(path)
        assert [(n.op_type, n.raw_op, n.macs) for n in f.nodes] == [("other:NoSuchOp", raw, 4)]
        assert f.model["count:other:NoSuchOp"] == 1.0


# -- errors -----------------------------------------------------------------------


def test_corrupt_files_raise_value_error_naming_the_path(tmp_path):
    special.write_corrupt_model(tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match=r"bad\.onnx: not a valid ONNX model"):
        extract_features(tmp_path / "bad.onnx")
    good = next(m for m in list_builtin_models("tflite") if m.name == "tiny_convnet").path.read_bytes()
    (tmp_path / "cut.tflite").write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match=r"cut\.tflite: corrupt TFLite model"):
        extract_features(tmp_path / "cut.tflite")
    (tmp_path / "noise.tflite").write_bytes(b"\x10\x00\x00\x00TFL3" + b"\xff" * 64)
    with pytest.raises(ValueError, match=r"noise\.tflite: .*TFLite model"):
        extract_features(tmp_path / "noise.tflite")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.onnx: empty file"):
        extract_features(tmp_path / "empty.onnx")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        extract_features(good, format="onnx")  # a TFLite file read as ONNX
    with pytest.raises(ValueError, match="format must be one of"):
        extract_features(good, format="pb")
    with pytest.raises(FileNotFoundError):
        extract_features(tmp_path / "missing.onnx")


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_damaged_files_give_features_or_value_error_never_a_crash(fmt):
    # Byte flips and truncations of a real file: any other exception type is a parser bug.
    import random

    rng = random.Random(7)
    data = next(m for m in list_builtin_models(fmt) if m.name == "tiny_resnet").path.read_bytes()
    outcomes = set()
    for _ in range(60):
        damaged = bytearray(data)
        if rng.random() < 0.3:
            damaged = damaged[: rng.randrange(8, len(damaged))]
        else:
            for _ in range(rng.randint(1, 6)):
                pos = rng.randrange(len(damaged)) if rng.random() < 0.5 else len(damaged) - 1 - rng.randrange(2048)
                damaged[pos] = rng.randrange(256)
        try:
            extract_features(bytes(damaged), fmt)
            outcomes.add("ok")
        except ValueError:
            outcomes.add("error")
    assert outcomes == {"ok", "error"}  # both paths were exercised


def test_schema_violations_inside_a_parsable_file_are_value_errors():
    from fleetmeter.modeler.zoo.tflite_emit import TfliteGraph

    pool = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=2.0)  # FLOAT, not INTS
    data = _onnx_model([pool], [_vi("x", [1, 1, 4, 4])], [_vi("y", None)])
    with pytest.raises(ValueError, match=r"<bytes>: malformed onnx model \(TypeError"):
        extract_features(data)
    g = TfliteGraph()
    x, y = g.tensor("x", [2**30] * 40), g.tensor("y", [2**30] * 40)  # 2**1200 elements
    g.op(g.schema.BuiltinOperator.RELU, [x], [y])
    with pytest.raises(ValueError, match="implausible tensor shapes"):
        extract_features(g.to_bytes([x], [y], description="absurd"))


def test_parse_errors_are_invalid_argument_for_the_grpc_boundary():
    from fleetmeter.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        extract_features(b"\x00" * 4 + b"TFL3" + b"\x00" * 8)
    with pytest.raises(InvalidArgument):
        extract_features(b"\x08\xff\xff\xff")


def test_importing_features_loads_no_backend():
    # Importing must stay cheap: onnx, LiteRT and grpc (fleetmeter.errors) load on use.
    code = ("import sys, fleetmeter.modeler.features as f; "
            "print(sorted(m for m in ('onnx', 'ai_edge_litert', 'grpc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- vectors ----------------------------------------------------------------------


def test_feature_columns_and_vectors():
    files = list_builtin_models("onnx")
    fs = [extract_features(m.path) for m in files]
    columns = feature_columns(fs)
    assert columns == sorted(set().union(*(f.model for f in fs)))
    assert "count:depthwise_conv2d" in columns and "macs:dense" in columns
    mlp_f = next(f for f, m in zip(fs, files) if m.name == "tiny_mlp")
    vector = feature_vector(mlp_f, columns)
    assert len(vector) == len(columns)
    assert vector[columns.index("count:depthwise_conv2d")] == 0.0  # missing -> 0
    assert vector[columns.index("macs")] == mlp_f.model["macs"]
    assert feature_vector(mlp_f.model, ["count:dense", "nope"]) == [4.0, 0.0]
    old = ModelFeatures(nodes=[], model={"macs": 1.0}, format="onnx", source="x", schema_version=0)
    with pytest.raises(ValueError, match="schema versions"):
        feature_columns([fs[0], old])
