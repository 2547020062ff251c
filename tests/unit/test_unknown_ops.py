"""Never collapse on the unknown: quantized ops, control flow, recurrent ops and unresolved shapes are
costed by the parsers, named in the aggregates, and a prediction for what the predictor never saw leans
on the work-based fallback (fleetmeter.modeler.features_onnx / features_tflite / serving / train).

Models are built here with onnx.helper and LiteRT's flatbuffer schema; predictors are real LightGBM
predictors in a real registry, trained on synthetic latencies of real (tiny) ONNX models.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("lightgbm")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fleetmeter.modeler.dataset import Sample  # noqa: E402
from fleetmeter.modeler.features import COVERAGE_KEYS, ModelFeatures, extract_features  # noqa: E402
from fleetmeter.modeler.registry import LoadedPredictor, Registry  # noqa: E402
from fleetmeter.modeler.serving import PredictorPool, lean_on_work  # noqa: E402
from fleetmeter.modeler.methods import train_predictor  # noqa: E402
from fleetmeter.modeler.work_fallback import WorkFallback, work_fallback_report  # noqa: E402

PLATFORM = "lab-x86/onnxruntime/t1"


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits, opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "t", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = 8
    return model.SerializeToString()


def _conv_net(c_in=3, c=8, size=16, extra=()):
    """x -> Conv(c, 3x3) -> Relu -> [extra nodes reading "r", writing "y"]."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r" if extra else "y"], name="relu"), *extra]
    return _model(nodes, [_vi("x", [1, c_in, size, size])], [_vi("y", None)],
                  [_init("w", rng.standard_normal((c, c_in, 3, 3)).astype(np.float32))])


# -- quantized ops ------------------------------------------------------------------


def test_integer_convolutions_and_matmuls_get_the_macs_of_their_float_twins():
    # If the integer ops stayed other:*, their MACs would be output elements: a 100-1000x undercount.
    rng = np.random.default_rng(1)
    w8 = rng.integers(-100, 100, (8, 4, 3, 3), dtype=np.int8)
    fc8 = rng.integers(-100, 100, (8 * 8 * 8, 10), dtype=np.int8)
    scale, zero = _init("s", np.array(0.1, np.float32)), _init("z", np.array(0, np.uint8))
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dq"),
        helper.make_node("ConvInteger", ["xq", "w8", "xz"], ["ci"], name="convint", pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["ci"], ["cf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("QuantizeLinear", ["cf", "s", "z"], ["q"], name="q"),
        helper.make_node("QLinearConv", ["q", "s", "z", "w8b", "s", "zw", "s", "z"], ["qc"], name="qlinear",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["qc"], ["flat"], name="flat"),
        helper.make_node("MatMulInteger", ["flat", "fc8", "z"], ["y"], name="mmint"),
    ]
    data = _model(nodes, [_vi("x", [1, 4, 8, 8])], [_vi("y", None, TensorProto.INT32)],
                  [_init("w8", w8), _init("w8b", rng.integers(-100, 100, (8, 8, 3, 3), dtype=np.int8)),
                   _init("fc8", fc8.astype(np.uint8)), scale, zero, _init("zw", np.array(0, np.int8))])
    f = extract_features(data, fuse=False)
    by = {n.name: n for n in f.nodes}
    assert (by["convint"].op_type, by["convint"].macs, by["convint"].params) == ("conv2d", 8 * 8 * 8 * 9 * 4, w8.size)
    assert (by["qlinear"].op_type, by["qlinear"].macs) == ("conv2d", 8 * 8 * 8 * 9 * 8)
    assert (by["mmint"].op_type, by["mmint"].macs, by["mmint"].param_bytes) == ("dense", 512 * 10, 512 * 10)
    assert by["dq"].op_type == "quantize"
    assert all(by[n].quantized for n in ("dq", "convint", "q", "qlinear", "mmint")) and not by["cast"].quantized
    assert f.model["quantized_node_count"] == 5 and f.model["unknown_node_count"] == 0


def test_a_dynamically_quantized_lstm_is_an_lstm_with_its_macs():
    seq, batch, inp, hidden = 7, 1, 16, 32
    rng = np.random.default_rng(2)
    w = rng.standard_normal((1, 4 * hidden, inp)).astype(np.float32)
    r = rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32)
    lstm = _model([helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm", hidden_size=hidden)],
                  [_vi("x", [seq, batch, inp])], [_vi("y", None)], [_init("w", w), _init("r", r)])
    (node,) = extract_features(lstm).nodes
    assert node.op_type == "lstm" and node.params == w.size + r.size
    assert node.macs == seq * batch * (w.size + r.size) + seq * batch * hidden
    dq = _model([helper.make_node("DynamicQuantizeLSTM", ["x", "w", "r", "", "", "", "", "", "s", "z", "s", "z"],
                                  ["y"], name="dqlstm", domain="com.microsoft", hidden_size=hidden)],
                [_vi("x", [seq, batch, inp])], [_vi("y", None)],
                [_init("w", rng.integers(-9, 9, (1, inp, 4 * hidden), dtype=np.int8)),
                 _init("r", rng.integers(-9, 9, (1, hidden, 4 * hidden), dtype=np.int8)),
                 _init("s", np.ones(1, np.float32)), _init("z", np.zeros(1, np.int8))],
                extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    (qnode,) = extract_features(dq).nodes
    assert (qnode.op_type, qnode.quantized, qnode.raw_op) == ("lstm", True, "com.microsoft:DynamicQuantizeLSTM")
    assert qnode.macs >= seq * batch * (w.size + r.size)


# -- control flow -------------------------------------------------------------------


def _branch(name, nodes, inits=(), out="out"):
    return helper.make_graph(nodes, name, [], [_vi(out, None)], list(inits))


def test_if_costs_its_larger_branch_and_names_the_records_by_their_path():
    rng = np.random.default_rng(3)
    big = _branch("then", [helper.make_node("Conv", ["r", "w2"], ["tc"], name="conv2", pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["tc"], ["then_out"], name="relu2")],
                  [_init("w2", rng.standard_normal((8, 8, 3, 3)).astype(np.float32))], out="then_out")
    small = _branch("else", [helper.make_node("Identity", ["r"], ["else_out"], name="id")], out="else_out")
    extra = [helper.make_node("ReduceMax", ["r"], ["m"], name="max", keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["cond"], name="cond"),
             helper.make_node("If", ["cond"], ["branch"], name="if", then_branch=big, else_branch=small),
             helper.make_node("Sigmoid", ["branch"], ["y"], name="after")]
    data = _conv_net(extra=extra)
    model = onnx.ModelProto.FromString(data)
    model.graph.initializer.append(_init("zero", np.array(0.0, np.float32)))
    f = extract_features(model.SerializeToString(), fuse=False)
    by = {n.name: n for n in f.nodes}
    inner = by["if/then_branch/conv2"]
    assert inner.op_type == "conv2d" and inner.subgraph == "if/then_branch"
    assert inner.macs == 16 * 16 * 8 * 9 * 8  # counted: the larger branch
    assert "if/else_branch/id" not in by
    assert (by["if"].op_type, by["if"].macs, by["if"].outputs) == ("other:If", 0, ())
    assert by["if/then_branch/relu2"].outputs == ("branch",)  # linked to what reads the If's output
    assert f.model["subgraph_node_count"] == 1 and f.model["loop_count"] == 0  # kernels: conv2+relu2 fuse
    assert f.model["count:other:If"] == 1
    fused = extract_features(model.SerializeToString())
    assert fused.model["macs"] == sum(n.macs for n in f.nodes)


def test_loop_bodies_are_counted_once_with_the_trip_count_unknown():
    rng = np.random.default_rng(4)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
         helper.make_node("MatMul", ["h_in", "wl"], ["mm"], name="mm"),
         helper.make_node("Tanh", ["mm"], ["h_out"], name="tanh")],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("h_in", [1, 64])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("h_out", [1, 64])],
        [_init("wl", rng.standard_normal((64, 64)).astype(np.float32))])
    nodes = [helper.make_node("Loop", ["trips", "", "h"], ["y"], name="loop", body=body)]
    data = _model(nodes, [_vi("h", [1, 64]), _vi("trips", [], TensorProto.INT64)], [_vi("y", None)], [])
    f = extract_features(data, fuse=False)
    by = {n.name: n for n in f.nodes}
    assert by["loop/body/mm"].op_type == "dense" and by["loop/body/mm"].macs == 64 * 64
    assert by["loop/body/mm"].inputs == ("h",)  # the body's input is the loop's carried value
    assert f.model["loop_count"] == 1 and f.model["subgraph_node_count"] == 1  # mm+tanh; Identity is layout


def test_the_tflite_parser_descends_into_if_and_while_subgraphs():
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    import flatbuffers

    from fleetmeter.modeler import features_tflite
    from fleetmeter.modeler.zoo.tflite_emit import TfliteGraph

    g = TfliteGraph()
    cond, x, y = g.tensor("cond", [1], dtype="int32"), g.tensor("x", [1, 16]), g.tensor("y", [1, 32])
    g.op(schema.BuiltinOperator.IF, [cond, x], [y], schema.BuiltinOptions.IfOptions,
         schema.IfOptionsT(thenSubgraphIndex=1, elseSubgraphIndex=2))
    model = schema.ModelT.InitFromPackedBuf(g.to_bytes([cond, x], [y], description="if"), 0)
    fc_code = len(model.operatorCodes)
    model.operatorCodes.append(schema.OperatorCodeT(deprecatedBuiltinCode=9, builtinCode=9, version=1))
    weights = np.ones((32, 16), np.float32)
    model.buffers.append(schema.BufferT(data=list(weights.tobytes())))

    def branch(units):
        tensors = [schema.TensorT(shape=[1, 16], type=0, buffer=0, name="bx"),
                   schema.TensorT(shape=[units, 16], type=0, buffer=len(model.buffers) - 1 if units == 32 else 0,
                                  name="bw"),
                   schema.TensorT(shape=[1, units], type=0, buffer=0, name="by")]
        op = schema.OperatorT(opcodeIndex=fc_code, inputs=[0, 1, -1], outputs=[2],
                              builtinOptionsType=schema.BuiltinOptions.FullyConnectedOptions,
                              builtinOptions=schema.FullyConnectedOptionsT())
        return schema.SubGraphT(tensors=tensors, inputs=[0], outputs=[2], operators=[op], name=f"b{units}")

    model.subgraphs += [branch(32), branch(8)]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    f = extract_features(bytes(builder.Output()), fuse=False)
    names = [n.name for n in f.nodes]
    assert names == ["y", "y/then/by"] and f.nodes[0].op_type == "other:if"
    inner = f.nodes[1]
    assert (inner.op_type, inner.macs, inner.subgraph, inner.inputs, inner.outputs) == (
        "dense", 32 * 16, "y/then", ("x",), ("y",))
    assert f.model["subgraph_node_count"] == 1
    # the option tables read for IF and WHILE match the generated schema's accessors
    for table in ("IfOptions", "WhileOptions"):
        cls = getattr(schema, table)
        for accessor in features_tflite._OPTIONS[table]:
            assert hasattr(cls, accessor), (table, accessor)


# -- unresolved shapes --------------------------------------------------------------


def test_work_behind_a_shape_inference_cannot_resolve_is_estimated_not_dropped():
    # Reshape to a shape computed at run time: inference gives up downstream, and the dense layer's
    # MACs used to be 0 (output elements unknown). They are estimated from the elements flowing in.
    rng = np.random.default_rng(5)
    extra = [helper.make_node("Shape", ["r"], ["shp"], name="shape"),
             helper.make_node("Gather", ["shp", "idx"], ["n"], name="first", axis=0),
             helper.make_node("Concat", ["n", "minus1"], ["target"], name="target", axis=0),
             helper.make_node("Reshape", ["r", "target"], ["flat"], name="reshape"),
             helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["sl"], name="slice"),
             helper.make_node("MatMul", ["sl", "fc"], ["y"], name="fc")]
    model = onnx.ModelProto.FromString(_conv_net(extra=extra))
    model.graph.initializer.extend([
        _init("idx", np.array([0], np.int64)), _init("minus1", np.array([-1], np.int64)),
        _init("starts", np.array([0], np.int64)), _init("ends", np.array([2048], np.int64)),
        _init("axes", np.array([1], np.int64)),
        _init("fc", rng.standard_normal((8 * 16 * 16, 10)).astype(np.float32))])
    f = extract_features(model.SerializeToString(), fuse=False)
    fc = next(n for n in f.nodes if n.name == "fc")
    assert fc.shape_unresolved and fc.op_type == "dense"
    assert fc.macs == 8 * 16 * 16 * 10  # rows x K x N with the elements of the conv output flowing in
    assert f.model["unresolved_shape_count"] >= 2 and f.model["unknown_macs"] >= fc.macs


def test_coverage_keys_are_zero_for_a_plain_network():
    model = extract_features(_conv_net()).model
    assert [model[k] for k in COVERAGE_KEYS] == [0.0] * len(COVERAGE_KEYS)


# -- serving ------------------------------------------------------------------------


def _training_samples(n=36):
    """Real tiny conv nets of growing width and size; latency 0.02 ms + 1 ms per 10 MMACs."""
    out = []
    for i in range(n):
        c, size = 4 + 4 * (i % 6), 8 + 4 * (i // 6)
        f = extract_features(_conv_net(c=c, size=size))
        out.append(Sample(model_sha256=f"{i:064x}", family=f"f{i % 3}", platform_id=PLATFORM,
                          values={"latency_ms": 0.02 + f.model["macs"] / 1e7}, features=f.model))
    return out


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    samples = _training_samples()
    reg = Registry(tmp_path_factory.mktemp("reg") / "predictors")
    predictor = train_predictor(samples, "latency_ms", calibrate=True, rounds=40)
    reg.save(predictor, platform_id=PLATFORM, training_fingerprint="t",
             metrics={"work_fallback": work_fallback_report(samples[:30], samples[30:], samples, "latency_ms")})
    return reg


def test_the_fallback_is_fitted_measured_and_stored_with_the_predictor(registry):
    loaded = registry.load(PLATFORM, "latency_ms")
    fallback = loaded.work_fallback
    assert fallback is not None and fallback.macs_coef == pytest.approx(1e-7, rel=0.05)
    assert 0 <= fallback.log_half_width < 0.2  # exact synthetic data: a narrow measured factor
    assert fallback.training_max["unknown_node_count"] == 0
    assert loaded.manifest["metrics"]["work_fallback"]["random_split"]["acc_10"] == 1.0


def test_a_model_with_an_op_never_seen_is_predicted_from_its_work_never_near_zero(registry):
    # A network 10x larger than any training model whose extra cost sits in an op no training model had.
    mystery = [helper.make_node("Mystery", ["r"], ["y"], name="mystery", domain="com.example")]
    data = _conv_net(c=64, size=64, extra=mystery)
    model = onnx.ModelProto.FromString(data)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    features = extract_features(model.SerializeToString())
    (record,) = PredictorPool(registry).predict(features, [PLATFORM])
    fallback = registry.load(PLATFORM, "latency_ms").work_fallback
    estimate = float(fallback.predict([features])[0])
    factor = math.exp(fallback.log_half_width)
    assert estimate / factor <= record["value"]
    assert record["value"] > 0.5 * (0.02 + features.model["macs"] / 1e7)
    assert record["lower"] <= estimate / factor and record["upper"] >= estimate * factor
    (warning,) = record["warnings"]
    assert "never seen in training" in warning and "Mystery" in warning and PLATFORM in warning


class _Collapsing:
    """A predictor that answers a tiny constant: what a tree ensemble does far from its training data."""

    columns = ("macs", "count:conv2d")
    interval_level = 0.9

    def predict_interval(self, items):
        one = np.full(len(items), 0.016)
        return one, one / 2, one * 2


def test_a_collapsed_prediction_is_replaced_by_the_work_estimate_and_the_warning_says_so():
    fallback = WorkFallback(target="latency_ms", macs_coef=1e-7, bytes_coef=0.0, intercept=0.01, floor=0.001,
                            log_half_width=math.log(1.5), training_max={k: 0.0 for k in COVERAGE_KEYS})
    loaded = LoadedPredictor(predictor=_Collapsing(), manifest={"version": 1, "work_fallback": fallback.to_dict()})
    features = extract_features(_conv_net(c=64, size=64, extra=[
        helper.make_node("Loop", ["", "keep", "r"], ["y"], name="loop", body=helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Sigmoid", ["v"], ["v_out"])],
            "b", [_vi("i", [], TensorProto.INT64), _vi("c_in", [], TensorProto.BOOL), _vi("v", None)],
            [_vi("c_out", [], TensorProto.BOOL), _vi("v_out", None)]))]))
    assert isinstance(features, ModelFeatures)
    value, lower, upper, (warning,) = lean_on_work(loaded, features, PLATFORM, 0.016, 0.008, 0.032)
    estimate = 0.01 + 1e-7 * features.model["macs"]
    assert value == pytest.approx(estimate) and (lower, upper) == pytest.approx((estimate / 1.5, estimate * 1.5))
    assert "Loop" in warning and "trip count is unknown" in warning and "work-based estimate" in warning


def test_mediapipes_custom_transposed_convolution_is_costed_as_one():
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from fleetmeter.modeler.zoo.tflite_emit import TfliteGraph

    g = TfliteGraph()
    x, y = g.tensor("x", [1, 8, 8, 16]), g.tensor("y", [1, 16, 16, 4])
    w = g.const("w", np.ones((4, 2, 2, 16), np.float32))
    b = g.const("b", np.ones(4, np.float32))
    g.op(schema.BuiltinOperator.CUSTOM, [x, w, b], [y], custom="Convolution2DTransposeBias", custom_options=b"")
    (node,) = extract_features(g.to_bytes([x], [y], description="t")).nodes
    assert (node.op_type, node.stride, node.kernel) == ("conv_transpose2d", (2, 2), (2, 2))
    assert node.macs == 8 * 8 * 16 * 2 * 2 * 4 and node.params == 4 * 2 * 2 * 16 + 4
