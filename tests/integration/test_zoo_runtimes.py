"""The zoo's files in real runtimes: onnxruntime and LiteRT (XNNPACK delegate).

The central claim: the ONNX and TFLite emissions of one description compute
the same function. If the equivalence tests fail, one emitter lays out
weights, padding or flatten order differently from the other.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert.interpreter")

from fleetmeter.modeler.builtin import list_builtin_models  # noqa: E402
from fleetmeter.modeler.zoo import odd_files as special  # noqa: E402
from fleetmeter.modeler.zoo.arch import (Activation, Add, Architecture, AvgPool, Concat, Conv2D, Dense,  # noqa: E402
                                          Flatten, GlobalAvgPool, Input, MaxPool, Reshape, Softmax)
from fleetmeter.modeler.zoo.make_builtin import default_out_dir, main, render_builtin_models  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from fleetmeter.modeler.zoo.tiny import builtin_architectures  # noqa: E402
from _support import litert_interpreter, normal_input, ort_session, run_onnx, run_tflite  # noqa: E402

pytestmark = pytest.mark.integration

RTOL, ATOL = 1e-4, 1e-5


def _assert_same_function(arch: Architecture, seeds=(0, 1)):
    session = ort_session(onnx_bytes(build_onnx(arch)))
    interpreter = litert_interpreter(build_tflite(arch))
    for seed in seeds:
        x = normal_input((1, *arch.input_layers[0].shape), seed)
        y_onnx, y_tflite = run_onnx(session, x), run_tflite(interpreter, x)
        assert y_onnx.shape == y_tflite.shape == (1, *arch.shapes[arch.outputs[0]])
        assert np.all(np.isfinite(y_onnx))
        assert np.std(y_onnx) > 0, "a constant output proves nothing"
        np.testing.assert_allclose(y_tflite, y_onnx, rtol=RTOL, atol=ATOL)


# -- built-in files --------------------------------------------------------------------


def _builtin_pairs():
    by_name = {}
    for model in list_builtin_models():
        by_name.setdefault(model.name, {})[model.format] = model
    return sorted(by_name.items())


@pytest.mark.parametrize("name,pair", _builtin_pairs(), ids=[n for n, _ in _builtin_pairs()])
def test_builtin_files_run_in_both_runtimes_and_agree(name, pair):
    onnx_model, tflite_model = pair["onnx"], pair["tflite"]
    session = ort_session(onnx_model.path)
    interpreter = litert_interpreter(tflite_model.path)
    assert tuple(session.get_inputs()[0].shape) == onnx_model.input_shape
    assert tuple(interpreter.get_input_details()[0]["shape"]) == tflite_model.input_shape
    x = normal_input(tflite_model.input_shape)
    y_onnx, y_tflite = run_onnx(session, x), run_tflite(interpreter, x)
    np.testing.assert_allclose(y_tflite, y_onnx, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(y_onnx.sum(), 1.0, rtol=1e-5)  # every built-in ends in a softmax


@pytest.mark.parametrize("arch", builtin_architectures(), ids=lambda a: a.name)
def test_builtin_logits_agree(arch):
    # Softmax squashes differences; compare the logits, before it.
    assert isinstance(arch.layers[-1], Softmax)
    logits = Architecture(arch.name, arch.family, arch.layers[:-1], arch.hyperparameters)
    _assert_same_function(logits)


LAYOUT_CASES = {
    # flatten / reshape of feature maps where NCHW and NHWC orders differ
    "flatten_dense": (Input(5, 7, 3), Conv2D(4, 3, stride=2), Flatten(), Dense(6)),
    "reshape_spatial": (Input(6, 4, 2), Conv2D(6, 1), Reshape((3, 4, 12)), Conv2D(5, 3, padding="valid")),
    "reshape_vector_to_map": (Input(24), Dense(48), Reshape((4, 2, 6)), Conv2D(3, 3), Flatten()),
    # SAME padding on odd sizes with strides and dilations (asymmetric pads)
    "same_odd_strided": (Input(9, 11, 3), Conv2D(5, 3, stride=2), MaxPool(3, 2, padding="same"),
                         AvgPool(2, 2, padding="same"), Conv2D(4, (1, 3), dilation=(1, 2), padding="same")),
    "depthwise_multiplier": (Input(7, 7, 3), Conv2D(9, 5, stride=2, groups=3, activation="relu6"),
                             Conv2D(6, 1, groups=3, activation="relu", bias=False)),
    "branches": (Input(8, 8, 4), Conv2D(4, 3, name="a"), Conv2D(4, 1, name="b", inputs=("input",)),
                 Add(activation="relu6", name="s", inputs=("a", "b")), Concat(name="c", inputs=("s", "input")),
                 Activation("relu"), Softmax()),
    "vector_concat": (Input(10), Dense(4, name="a"), Dense(3, name="b", inputs=("input",)),
                      Concat(inputs=("a", "b")), Dense(5, bias=False), Softmax()),
    "global_pool_keepdims": (Input(6, 6, 5), GlobalAvgPool(keepdims=True), Conv2D(3, 1), Flatten()),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_layout_sensitive_descriptions_agree(case):
    _assert_same_function(Architecture(case, "test", LAYOUT_CASES[case]))


def test_committed_builtin_files_match_a_fresh_generation():
    fresh = render_builtin_models()
    folder = default_out_dir()
    on_disk = {name: (folder / name).read_bytes() for name in fresh}
    stale = [name for name in fresh if on_disk[name] != fresh[name]]
    assert not stale, f"run python -m fleetmeter.modeler.zoo.make_builtin; stale: {stale}"
    listed = {m.path.name for m in list_builtin_models()} | {"index.json"}
    assert listed == set(fresh)


def test_make_builtin_cli_writes_and_checks(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "tiny_mlp.tflite").write_bytes(b"tampered")
    assert main(["--out", str(tmp_path), "--check"]) == 1
    assert "tiny_mlp.tflite" in capsys.readouterr().err


# -- special fixtures --------------------------------------------------------------------


@pytest.mark.parametrize("size_bytes", [50_000, 8_000_000])
def test_large_onnx_has_the_requested_size_and_runs(tmp_path, size_bytes):
    path = tmp_path / "large.onnx"
    written = special.write_large_onnx(path, size_bytes)
    assert written == os.path.getsize(path)
    assert abs(written - size_bytes) <= 0.05 * size_bytes
    session = ort_session(path)
    y = session.run(None, {"x": np.ones((1, special.LARGE_MODEL_INPUT_FEATURES), np.float32)})[0]
    assert y.shape[0] == 1 and y.shape[1] * special.LARGE_MODEL_INPUT_FEATURES * 4 >= 0.9 * size_bytes
    assert np.all(np.isfinite(y))
    special.write_large_onnx(tmp_path / "again.onnx", size_bytes)
    assert (tmp_path / "again.onnx").read_bytes() == path.read_bytes()


def test_unsupported_op_onnx_fails_to_load_naming_the_op(tmp_path):
    path = tmp_path / "unsupported.onnx"
    special.write_unsupported_op_onnx(path)
    with pytest.raises(Exception, match=special.UNSUPPORTED_OP_TYPE):
        ort_session(path)


def test_unsupported_op_tflite_fails_to_prepare_naming_the_op(tmp_path):
    path = tmp_path / "unsupported.tflite"
    special.write_unsupported_op_tflite(path)
    with pytest.raises(Exception, match=special.UNSUPPORTED_OP_TYPE):
        litert_interpreter(path)


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_corrupt_model_is_rejected_by_both_runtimes(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    special.write_corrupt_model(path)
    with pytest.raises(Exception):
        ort_session(path)
    with pytest.raises(Exception):
        litert_interpreter(path)
