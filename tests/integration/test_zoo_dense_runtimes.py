"""The dense-prediction layers and families in real runtimes: onnxruntime and LiteRT (XNNPACK).

Each new layer is checked against numpy (so the two emitters cannot agree on a shared mistake,
e.g. a resize convention or a transposed kernel), and sampled unet / detector models compute the
same outputs in both runtimes and have the same per-kernel MACs in both formats' features.
(Every family's small and full-size samples also run in test_zoo_families_runtimes.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert.interpreter")

from fleetmeter.modeler.features import LAYOUT_OPS, extract_features  # noqa: E402
from fleetmeter.modeler.zoo.arch import (Architecture, ConvTranspose2D, Input, Pad, PReLU, Resize,  # noqa: E402
                                          init_weights, same_padding)
from fleetmeter.modeler.zoo.families import derive_seed, get_family  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from _support import normal_input, zoo_input, zoo_outputs  # noqa: E402

pytestmark = pytest.mark.integration


# -- numpy references ----------------------------------------------------------------------------------


def _np_nearest(x: np.ndarray, s: int) -> np.ndarray:
    return x.repeat(s, axis=1).repeat(s, axis=2)  # pixel floor(y / s): asymmetric, floor


def _np_bilinear(x: np.ndarray, s: int) -> np.ndarray:
    """Half-pixel centers, source coordinate clamped to the map (TF half_pixel_centers / PyTorch)."""
    def along(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        src = np.clip((np.arange(n * s) + 0.5) / s - 0.5, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        frac = (src - lo).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
        return np.take(a, lo, axis=axis) * (1 - frac) + np.take(a, hi, axis=axis) * frac
    return along(along(x.astype(np.float64), 1), 2)


def _np_conv_transpose(x: np.ndarray, kernel: np.ndarray, bias, stride, padding: str, out_hw) -> np.ndarray:
    """Scatter each input pixel times the IOHW kernel, then crop SAME's padding (the extra after)."""
    _, h, w, _ = x.shape
    _, out_ch, kh, kw = kernel.shape
    sh, sw = stride
    full = np.zeros((1, (h - 1) * sh + kh, (w - 1) * sw + kw, out_ch))
    for i in range(h):
        for j in range(w):
            full[0, i * sh:i * sh + kh, j * sw:j * sw + kw] += np.einsum("c,cokl->klo", x[0, i, j], kernel)
    top = left = 0
    if padding == "same":
        top, left = same_padding(out_hw[0], kh, sh)[0], same_padding(out_hw[1], kw, sw)[0]
    out = full[:, top:top + out_hw[0], left:left + out_hw[1]]
    return out + (0 if bias is None else bias)


@pytest.mark.parametrize("scale,mode", [(2, "nearest"), (3, "nearest"), (2, "bilinear"), (4, "bilinear")])
def test_resize_matches_numpy(scale, mode):
    arch = Architecture("r", "test", (Input(5, 7, 3), Resize(scale, mode)))
    x = normal_input((1, 5, 7, 3))
    expected = _np_nearest(x, scale) if mode == "nearest" else _np_bilinear(x, scale)
    for y in zoo_outputs(arch, x):
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, "same"), (3, 2, "same"), (4, 2, "same"),
                                                   (3, 2, "valid"), ((3, 1), (2, 1), "same"), (3, 1, "same")])
def test_conv_transpose_matches_numpy(kernel, stride, padding):
    arch = Architecture("t", "test", (Input(5, 6, 4), ConvTranspose2D(3, kernel, stride, padding, name="deconv")))
    w = {k: v.astype(np.float64) for k, v in init_weights(arch)["deconv"].items()}
    x = normal_input((1, 5, 6, 4))
    out_hw = arch.shapes["deconv"][:2]
    expected = _np_conv_transpose(x.astype(np.float64), w["kernel"], w["bias"], arch.layers[1].stride, padding,
                                  out_hw)
    for y in zoo_outputs(arch, x):
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_prelu_and_pad_match_numpy():
    arch = Architecture("p", "test", (Input(4, 5, 6), PReLU(name="prelu"), Pad(2, 0, 1, 3, name="pad")))
    alpha = init_weights(arch)["prelu"]["alpha"].astype(np.float64)
    x = normal_input((1, 4, 5, 6)).astype(np.float64)
    expected = np.pad(np.where(x > 0, x, alpha * x), ((0, 0), (2, 1), (0, 3), (0, 0)))
    for y in zoo_outputs(arch, x.astype(np.float32)):
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


# -- sampled models: both runtimes, both formats' features --------------------------------------------------


@pytest.mark.parametrize("name,index", [("unet", i) for i in range(4)] + [("detector", i) for i in range(4)])
def test_sampled_dense_models_agree_across_runtimes_and_formats(name, index):
    arch = get_family(name).sample(derive_seed(0, name, index), name=f"{name}-{index:04d}")
    x = zoo_input(arch)
    y_onnx, y_tflite = zoo_outputs(arch, x, seed=index)
    assert y_onnx.shape == (1, *arch.shapes[arch.outputs[0]]) and np.std(y_onnx) > 0
    scale = float(np.max(np.abs(y_onnx)))
    np.testing.assert_allclose(y_tflite, y_onnx, rtol=1e-3, atol=1e-3 * scale)

    fo = extract_features(onnx_bytes(build_onnx(arch, seed=index)))
    ft = extract_features(build_tflite(arch, seed=index))
    for features in (fo, ft):
        assert not [n.op_type for n in features.nodes if n.op_type.startswith("other:")]
    kernels = lambda f: [(n.kernel_type, n.macs, n.params) for n in f.nodes  # noqa: E731
                         if n.op_type not in LAYOUT_OPS]
    assert kernels(fo) == kernels(ft), "the same kernels, MACs and parameters from either format"
    assert {k: v for k, v in fo.model.items() if not k.startswith("layout")} == \
        {k: v for k, v in ft.model.items() if not k.startswith("layout")}
    # The convolutions' MACs are the architecture's (a fused activation adds one per output element).
    conv_macs = sum(n.macs - (math.prod(n.output_shapes[0]) if n.fused_activation else 0) for n in fo.nodes
                    if n.op_type in ("conv2d", "depthwise_conv2d", "conv_transpose2d"))
    assert conv_macs == arch.mac_count()
