"""The dense-prediction layer kinds (Resize, ConvTranspose2D, PReLU, Pad) and the unet / detector families.

What each emitter writes for the new layers, what the feature extractor makes of it (the
normalized op types real third-party models are described with, and the same MACs from both
formats), and int8. That the files compute the right numbers in onnxruntime and LiteRT is
checked in tests/integration/test_zoo_dense_runtimes.py.
"""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

from fleetmeter.modeler.features import extract_features  # noqa: E402
from fleetmeter.modeler.zoo.arch import (Architecture, ArchitectureError, Conv2D, ConvTranspose2D, Dense,  # noqa: E402
                                          Input, Pad, PReLU, Resize, init_weights, param_shapes)
from fleetmeter.modeler.zoo.families import derive_seed, get_family  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes, onnx_shape  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from _support import int8_relative_error, litert_interpreter, tflite_model, tflite_op_name, tflite_ops  # noqa: E402

#: Every new layer once, with options that make the emitted attributes differ from the defaults.
DENSE_LAYERS = (
    Input(9, 10, 4),
    Pad(1, 2, 0, 1, name="pad"),
    Conv2D(6, 3, 2, padding="valid", name="down"),
    PReLU(name="prelu"),
    ConvTranspose2D(5, 3, 2, name="deconv"),
    Resize(2, "nearest", name="nearest"),
    Resize(3, "bilinear", name="bilinear", inputs=("deconv",)),
    ConvTranspose2D(3, (2, 3), (2, 1), padding="valid", bias=False, name="deconv_valid", inputs=("prelu",)),
)
DENSE_OUTPUTS = ("nearest", "bilinear", "deconv_valid")


def _arch() -> Architecture:
    return Architecture("dense", "test", DENSE_LAYERS, outputs=DENSE_OUTPUTS)


def _tensor_value(model, index: int) -> np.ndarray:
    t = model.subgraphs[0].tensors[index]
    dtype = {schema.TensorType.FLOAT32: "<f4", schema.TensorType.INT32: "<i4"}[t.type]
    return np.frombuffer(bytes(model.buffers[t.buffer].data), dtype=dtype).reshape(list(t.shape))


# -- shapes, parameters, MACs ----------------------------------------------------------------------


def test_dense_layer_shapes():
    arch = _arch()
    assert arch.shapes["pad"] == (10, 13, 4)  # 9 + 1 + 0 rows, 10 + 2 + 1 columns
    assert arch.shapes["down"] == arch.shapes["prelu"] == (4, 6, 6)
    assert arch.shapes["deconv"] == (8, 12, 5)  # SAME: times the stride
    assert arch.shapes["nearest"] == (16, 24, 5) and arch.shapes["bilinear"] == (24, 36, 5)
    assert arch.shapes["deconv_valid"] == ((4 - 1) * 2 + 2, (6 - 1) * 1 + 3, 3)  # VALID: (in - 1) * s + k
    tokens = Architecture("t", "test", (Input(7, 12), PReLU(name="p"), Dense(3)))
    assert tokens.shapes["p"] == (7, 12) and param_shapes(tokens)["p"] == {"alpha": (12,)}


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: (Input(8, 12), Resize(2)), "needs an"),
        (lambda: (Input(8, 12), Pad(1, 1, 1, 1)), "needs an"),
        (lambda: (Input(8, 12), ConvTranspose2D(4)), "needs an"),
        (lambda: (Input(4, 4, 3), Resize(0)), "scale"),
        (lambda: (Input(4, 4, 3), Resize(1.5)), "scale"),
        (lambda: (Input(4, 4, 3), Resize(2, "bicubic")), "mode"),
        (lambda: (Input(4, 4, 3), ConvTranspose2D(4, 1, 2)), "kernel >= stride"),
        (lambda: (Input(4, 4, 3), ConvTranspose2D(0)), "out_ch"),
        (lambda: (Input(4, 4, 3), Pad(-1, 0, 0, 0)), "Pad amounts"),
    ],
)
def test_dense_layers_reject_inconsistent_descriptions(make, message):
    with pytest.raises(ArchitectureError, match=message):
        Architecture("t", "test", make())


def test_dense_layer_parameters_weights_and_macs():
    arch = _arch()
    shapes = param_shapes(arch)
    assert shapes["deconv"] == {"kernel": (6, 5, 3, 3), "bias": (5,)}  # IOHW: in_ch first, as ONNX stores it
    assert shapes["deconv_valid"] == {"kernel": (6, 3, 2, 3)}
    assert shapes["prelu"] == {"alpha": (6,)}
    assert not {"pad", "nearest", "bilinear"} & set(shapes)
    weights = init_weights(arch, seed=3)
    alpha = weights["prelu"]["alpha"]
    assert alpha.dtype == np.float32 and np.all((alpha >= 0.05) & (alpha < 0.3))
    # Kaiming bound over the terms each output sums: in_ch * kh * kw / (sh * sw).
    assert np.abs(weights["deconv"]["kernel"]).max() <= math.sqrt(6.0 / (6 * 9 // 4))
    conv = 4 * 6 * 6 * 4 * 3 * 3  # out elements * in_ch * k
    transposed = (4 * 6 * 6) * 9 * 5 + (4 * 6 * 6) * 6 * 3  # in elements * k * out_ch
    assert arch.mac_count() == conv + transposed  # Resize, PReLU and Pad are elementwise / data moves: 0


# -- what each emitter writes ------------------------------------------------------------------------


def test_onnx_ops_attributes_and_shapes():
    arch = _arch()
    model = build_onnx(arch, seed=1)
    nodes = {n.name: n for n in model.graph.node}
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    attrs = {name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for name, n in nodes.items()}
    assert [n.op_type for n in model.graph.node] == ["Pad", "Conv", "PRelu", "ConvTranspose", "Resize", "Resize",
                                                     "ConvTranspose"]
    assert consts["pad/pads"].tolist() == [0, 0, 1, 2, 0, 0, 0, 1]  # [N, C, top, left, N, C, bottom, right]
    assert consts["prelu/alpha"].shape == (6, 1, 1)  # broadcasts over NCHW
    assert attrs["nearest"] == {"mode": b"nearest", "coordinate_transformation_mode": b"asymmetric",
                                "nearest_mode": b"floor"}
    assert attrs["bilinear"] == {"mode": b"linear", "coordinate_transformation_mode": b"half_pixel"}
    assert nodes["bilinear"].input[1] == "" and consts[nodes["bilinear"].input[2]].tolist() == [1, 1, 3, 3]
    # SAME for a 3x3/2 transposed conv: k - s = 1 pixel of padding, after (TensorFlow's rule).
    assert attrs["deconv"]["pads"] == [0, 0, 1, 1] and attrs["deconv"]["strides"] == [2, 2]
    assert attrs["deconv_valid"]["pads"] == [0, 0, 0, 0] and len(nodes["deconv_valid"].input) == 2  # no bias
    assert consts["deconv/kernel"].shape == (6, 5, 3, 3)

    checked = onnx.load_from_string(onnx_bytes(model))
    inferred = onnx.shape_inference.infer_shapes(checked, strict_mode=True)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for layer in arch.layers[1:]:  # ONNX's own shape inference agrees with ours on every new layer
        assert dims[layer.name] == onnx_shape(arch.shapes[layer.name]), layer.name


def test_tflite_ops_options_versions_and_weight_layout():
    arch = _arch()
    weights = init_weights(arch, seed=1)
    model = tflite_model(build_tflite(arch, seed=1))
    ops = tflite_ops(model)
    assert ops == ["PAD", "CONV_2D", "PRELU", "TRANSPOSE_CONV", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR",
                   "TRANSPOSE_CONV"]
    sub = model.subgraphs[0]
    by_op = dict(zip(["pad", "down", "prelu", "deconv", "nearest", "bilinear", "deconv_valid"], sub.operators))
    versions = {tflite_op_name(c.builtinCode): c.version for c in model.operatorCodes}
    assert versions["RESIZE_BILINEAR"] == 3, "half_pixel_centers needs version 3"
    assert versions["TRANSPOSE_CONV"] == 3, "a bias input needs version 3"
    assert versions["RESIZE_NEAREST_NEIGHBOR"] == versions["PAD"] == versions["PRELU"] == 1

    assert _tensor_value(model, by_op["pad"].inputs[1]).tolist() == [[0, 0], [1, 0], [2, 1], [0, 0]]
    alpha = _tensor_value(model, by_op["prelu"].inputs[1])
    assert alpha.shape == (1, 1, 6) and np.array_equal(alpha.ravel(), weights["prelu"]["alpha"])
    nearest, bilinear = by_op["nearest"].builtinOptions, by_op["bilinear"].builtinOptions
    assert (nearest.alignCorners, nearest.halfPixelCenters) == (False, False)
    assert (bilinear.alignCorners, bilinear.halfPixelCenters) == (False, True)
    assert _tensor_value(model, by_op["bilinear"].inputs[1]).tolist() == [24, 36]

    # TRANSPOSE_CONV reads (output shape, OHWI kernel, input, bias).
    shape_t, kernel_t, x_t, bias_t = by_op["deconv"].inputs
    assert _tensor_value(model, shape_t).tolist() == [1, 8, 12, 5]
    assert np.array_equal(_tensor_value(model, kernel_t), weights["deconv"]["kernel"].transpose(1, 2, 3, 0))
    assert sub.tensors[x_t].name.decode() == "prelu"
    assert np.array_equal(_tensor_value(model, bias_t), weights["deconv"]["bias"])
    options = by_op["deconv"].builtinOptions
    assert (options.padding, options.strideH, options.strideW) == (schema.Padding.SAME, 2, 2)
    valid = by_op["deconv_valid"]
    assert valid.builtinOptions.padding == schema.Padding.VALID and (valid.builtinOptions.strideH,
                                                                     valid.builtinOptions.strideW) == (2, 1)
    assert not _tensor_value(model, valid.inputs[3]).any(), "bias=False: zeros, as the converter writes"


# -- features --------------------------------------------------------------------------------------------


def test_features_name_the_new_ops_and_agree_across_formats():
    arch = _arch()
    fo, ft = extract_features(onnx_bytes(build_onnx(arch, seed=2))), extract_features(build_tflite(arch, seed=2))
    for features in (fo, ft):
        types = [n.op_type for n in features.nodes]
        assert not [t for t in types if t.startswith("other:")], types
        assert collections.Counter(types) == {"pad": 1, "conv2d": 1, "activation:prelu": 1, "conv_transpose2d": 2,
                                              "resize": 2}
        by_name = {n.name: n for n in features.nodes}
        deconv = by_name["deconv"]
        assert deconv.macs == 4 * 6 * 6 * 9 * 5 and deconv.params == 6 * 5 * 9 + 5
        assert deconv.padding == (0, 0, 1, 1) and deconv.stride == (2, 2)
        assert by_name["prelu"].params == 6 and by_name["pad"].macs == 0
        assert by_name["bilinear"].macs == 24 * 36 * 5  # one per output element
    macs = lambda f: sorted((n.op_type, n.macs, n.params) for n in f.nodes)  # noqa: E731
    assert macs(fo) == macs(ft)
    assert {k: v for k, v in fo.model.items() if not k.startswith("layout")} == \
        {k: v for k, v in ft.model.items() if not k.startswith("layout")}


# -- the families -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["unet", "detector"])
def test_dense_families_cover_the_op_types_real_models_use(name):
    family = get_family(name)
    kinds = collections.Counter()
    sizes = set()
    for i in range(24):
        arch = family.sample(derive_seed(5, name, i), name=f"{name}-{i}")
        hp = arch.hyperparameters
        kinds.update({type(layer).__name__ + (f":{layer.mode}" if isinstance(layer, Resize) else "")
                      for layer in arch.layers})
        sizes.add(hp["input_size"])
        (out,) = arch.outputs
        if name == "unet":  # a per-pixel map at the input's resolution
            assert arch.shapes[out] == (hp["input_size"], hp["input_size"], hp["num_classes"])
            assert min(arch.shapes[layer.name][2] for layer in arch.layers if isinstance(layer, Conv2D)) <= 32
        else:  # anchors x (classes + box + landmarks) per position of each head scale, flattened
            (n,) = arch.shapes[out]
            assert n % (hp["anchors"] * (hp["num_classes"] + 4 + 2 * hp["landmarks"])) == 0
    for kind in ("Resize:nearest", "Resize:bilinear", "ConvTranspose2D", "PReLU", "Pad", "Concat"):
        assert kinds[kind] >= 2, (kind, kinds)  # each in several samples, not by luck in one
    assert min(sizes) >= 64 and max(sizes) <= 256 and len(sizes) >= 4


def test_dense_family_descriptions_round_trip_through_json():
    arch = get_family("unet").sample(derive_seed(0, "unet", 3), name="u")
    again = Architecture.from_dict(json.loads(json.dumps(arch.to_dict())))
    assert again == arch and onnx_bytes(build_onnx(again)) == onnx_bytes(build_onnx(arch))


# -- int8 ---------------------------------------------------------------------------------------------------


INT8_CASES = {
    "pad-prelu-deconv": (Input(9, 10, 4), Pad(1, 2, 0, 1), Conv2D(6, 3, 2, padding="valid"), PReLU(),
                         ConvTranspose2D(5, 3, 2)),
    "resizes": (Input(9, 10, 4), Conv2D(6, 3), Resize(2, "nearest"), Conv2D(8, 3, 2), Resize(3, "bilinear")),
}


@pytest.mark.parametrize("case", sorted(INT8_CASES))
def test_new_layers_quantize_to_int8_accurately(case):
    """Held to 5% like every layer kind in test_zoo_int8 (shallow networks, random weights)."""
    pytest.importorskip("ai_edge_litert.interpreter")
    from fleetmeter.modeler.zoo.tflite_quant import build_tflite_int8

    arch = Architecture(case, "test", INT8_CASES[case])
    data = build_tflite_int8(arch, seed=0)
    model = tflite_model(data)
    ops = tflite_ops(model)
    interpreter = litert_interpreter(data)
    sub = model.subgraphs[0]
    float_islands = [sub.tensors[i].name.decode() for op in sub.operators[1:-1] for i in op.outputs
                     if sub.tensors[i].type != schema.TensorType.INT8]
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE" and not float_islands, float_islands
    if "TRANSPOSE_CONV" in ops:
        details = {d["name"]: d for d in interpreter.get_tensor_details()}
        deconv = next(op for op, name in zip(sub.operators, ops) if name == "TRANSPOSE_CONV")
        w, x, b = (details[sub.tensors[deconv.inputs[i]].name.decode()] for i in (1, 2, 3))
        w_scales = w["quantization_parameters"]["scales"]
        assert w["dtype"] == np.int8 and len(w_scales) == 5, "per output channel"
        assert b["dtype"] == np.int32  # bias scale from the activation input (index 2), not the output shape
        np.testing.assert_allclose(b["quantization_parameters"]["scales"],
                                   x["quantization_parameters"]["scales"][0] * w_scales, rtol=1e-6)

    error, _, _ = int8_relative_error(arch, seed=0)
    assert error < 0.05, error
