"""The zoo's families and newer layers in real runtimes: onnxruntime and LiteRT (XNNPACK).

Two claims: every family's files load and run in both runtimes and compute
the same function; and each newer layer computes what it says (checked
against numpy, so the two emitters cannot agree on a shared mistake).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert.interpreter")

from fleetmeter.modeler.zoo.arch import (Activation, Add, Architecture, Attention, BatchNorm,  # noqa: E402
                                          ChannelShuffle, Concat, Conv2D, Dense, GlobalAvgPool, Input, LayerNorm, Mul,
                                          Slice, Softmax, init_weights)
from fleetmeter.modeler.zoo.build import build_zoo  # noqa: E402
from fleetmeter.modeler.zoo.families import FAMILIES, derive_seed, family_names  # noqa: E402
from _support import (litert_interpreter, normal_input, ort_session, run_tflite, small_zoo_sample,  # noqa: E402
                      zoo_input, zoo_outputs)

pytestmark = pytest.mark.integration

NAMES = family_names()


def _assert_close(actual, expected, rel=1e-4):
    """Equal up to ``rel`` of the output's scale: deep random nets reach large magnitudes, and
    float32 kernels that sum in different orders differ in the last bits of each layer."""
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual)) and np.all(np.isfinite(expected))
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)


# -- every family ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_small_sample_of_every_family_runs_in_both_runtimes_and_agrees(name):
    arch = small_zoo_sample(name)
    x = zoo_input(arch)
    y_onnx, y_tflite = zoo_outputs(arch, x)
    assert y_onnx.shape == (1, *arch.shapes[arch.outputs[0]])
    assert np.std(y_onnx) > 0, "a constant output proves nothing"
    _assert_close(y_tflite, y_onnx)


@pytest.mark.parametrize("family", FAMILIES, ids=NAMES)
def test_a_full_size_sample_of_every_family_runs_in_both_runtimes(family):
    arch = family.sample(derive_seed(0, family.name, 0), name=f"{family.name}-0000")
    y_onnx, y_tflite = zoo_outputs(arch, zoo_input(arch))
    _assert_close(y_tflite, y_onnx, rel=1e-3)


# -- newer layers against numpy ------------------------------------------------------------------------


def _np_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


NP_ACTIVATIONS = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "hardsigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "hardswish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "swish": lambda x: x / (1 + np.exp(-x)),
    "gelu": _np_gelu,
}


@pytest.mark.parametrize("kind", sorted(NP_ACTIVATIONS))
def test_activations_match_numpy(kind):
    arch = Architecture(kind, "test", (Input(64), Activation(kind)))
    x = (np.linspace(-6, 6, 64, dtype=np.float32))[None, :]
    expected = NP_ACTIVATIONS[kind](x.astype(np.float64))
    for y in zoo_outputs(arch, x):
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_batchnorm_folded_and_standalone_match_numpy():
    arch = Architecture("bn", "test", (
        Input(5, 4, 3),
        Conv2D(6, 1, bias=False, name="conv"), BatchNorm(activation="relu", name="folded"),
        BatchNorm(epsilon=1e-2, name="standalone", inputs=("input",)),
        Concat(name="both", inputs=("folded", "standalone")),
    ))
    w = {k: {p: v.astype(np.float64) for p, v in lw.items()} for k, lw in init_weights(arch).items()}
    x = zoo_input(arch)

    def bn(t, p, eps):
        return (t - p["mean"]) / np.sqrt(p["variance"] + eps) * p["gamma"] + p["beta"]

    conv = x.astype(np.float64) @ w["conv"]["kernel"][:, :, 0, 0].T
    expected = np.concatenate([np.maximum(bn(conv, w["folded"], 1e-3), 0), bn(x, w["standalone"], 1e-2)], axis=-1)
    for y in zoo_outputs(arch, x):
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_squeeze_excite_mul_slice_and_channel_shuffle_match_numpy():
    arch = Architecture("se", "test", (
        Input(4, 5, 12),
        GlobalAvgPool(keepdims=True, name="pool"), Activation("sigmoid", name="gate"),
        Mul(name="scaled", inputs=("input", "gate")),
        Slice(3, 6, name="part"),
        ChannelShuffle(3, name="shuffled"),
    ))
    x = zoo_input(arch).astype(np.float64)
    gate = 1 / (1 + np.exp(-x.mean(axis=(1, 2), keepdims=True)))
    part = (x * gate)[..., 3:9]
    expected = part.reshape(1, 4, 5, 3, 2).transpose(0, 1, 2, 4, 3).reshape(1, 4, 5, 6)  # torch's shuffle, NHWC
    for y in zoo_outputs(arch, zoo_input(arch)):
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_transformer_block_matches_numpy():
    seq, dim, heads = 6, 32, 4
    arch = Architecture("block", "test", (
        Input(seq, dim),
        LayerNorm(name="ln"),
        Dense(3 * dim, name="qkv"),
        Slice(0, dim, name="q"), Slice(dim, dim, name="k", inputs=("qkv",)),
        Slice(2 * dim, dim, name="v", inputs=("qkv",)),
        Attention(heads, name="attention", inputs=("q", "k", "v")),
        Dense(dim, name="proj"),
        Add(name="residual", inputs=("input", "proj")),
        Dense(2 * dim, activation="gelu", name="fc1"),
        GlobalAvgPool(name="pool"),
    ))
    w = {k: {p: v.astype(np.float64) for p, v in lw.items()} for k, lw in init_weights(arch).items()}
    x = zoo_input(arch)
    t = x[0].astype(np.float64)
    ln = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-5) * w["ln"]["gamma"] + w["ln"]["beta"]
    qkv = ln @ w["qkv"]["kernel"].T + w["qkv"]["bias"]
    q, k, v = (qkv[:, i * dim:(i + 1) * dim].reshape(seq, heads, dim // heads).transpose(1, 0, 2) for i in range(3))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(dim // heads)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(1, 0, 2).reshape(seq, dim)
    h = t + context @ w["proj"]["kernel"].T + w["proj"]["bias"]
    expected = _np_gelu(h @ w["fc1"]["kernel"].T + w["fc1"]["bias"]).mean(axis=0)[None, :]
    for y in zoo_outputs(arch, x):
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_separate_projections_softmax_and_token_concat_agree():
    arch = Architecture("tokens", "test", (
        Input(9, 24), Dense(24, name="q", bias=False), Dense(24, name="k", inputs=("input",)),
        Dense(24, name="v", inputs=("input",), activation="relu"), Attention(3, name="a", inputs=("q", "k", "v")),
        Concat(name="cat", inputs=("a", "input")), LayerNorm(), Softmax(),
    ))
    y_onnx, y_tflite = zoo_outputs(arch, zoo_input(arch))
    _assert_close(y_tflite, y_onnx, rel=1e-5)


# -- zoo build: files, determinism across processes, metadata the store reads -------------------------


def test_zoo_build_is_byte_identical_across_processes_and_its_metadata_reaches_the_store(tmp_path):
    from fleetmeter.controller.inspect_model import inspect_model_bytes

    entries = build_zoo(["transformer", "mobilenetv3"], 1, 5, "onnx,tflite", tmp_path / "here")
    code = ("import sys; from fleetmeter.modeler.zoo.build import build_zoo; "
            "build_zoo(['mobilenetv3', 'transformer'], 1, 5, 'onnx,tflite', sys.argv[1])")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # set/dict orders must not leak into the bytes
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "there")], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    for name in ["index.json"] + [e["file"] for e in entries]:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes(), name

    for e in entries:
        path = tmp_path / "here" / e["file"]
        row = inspect_model_bytes((path.read_bytes(), e["file"]))
        info = row["info"]
        assert row["sha256"] == e["sha256"] and row["format"] == e["format"] and info["family"] == e["family"]
        assert json.loads(info["metadata"]["fleetmeter.hyperparameters"]) == e["hyperparameters"]
        x = normal_input(e["input_shape"])
        if e["format"] == "onnx":
            session = ort_session(path)
            y = session.run(None, {e["input_name"]: x})[0]
        else:
            y = run_tflite(litert_interpreter(path), x)
        assert list(y.shape) == e["output_shape"] and np.all(np.isfinite(y))
