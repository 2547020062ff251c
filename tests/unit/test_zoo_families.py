"""The zoo's families, its sampling, the newer layer kinds and the ``zoo`` CLI, without running a model.

Runtime checks (ONNX and TFLite computing the same numbers, files loading)
live in tests/integration/test_zoo_families_runtimes.py.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

from fleetmeter import zoo_cli  # noqa: E402
from fleetmeter.modeler.zoo.arch import (META_FAMILY, META_HYPERPARAMETERS, Activation, Architecture,  # noqa: E402
                                          ArchitectureError, Attention, BatchNorm, ChannelShuffle, Conv2D, Dense,
                                          GlobalAvgPool, Input, LayerNorm, Mul, Slice, init_weights, param_shapes)
from fleetmeter.modeler.zoo.build import INDEX_FILE, build_zoo, parse_formats  # noqa: E402
from fleetmeter.modeler.zoo.families import (FAMILIES, SamplingError, derive_seed, describe_families,  # noqa: E402
                                             family_names, get_family, resolve_families)
from fleetmeter.modeler.zoo.fold import batchnorm_scale_shift, fold_batchnorm  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes, onnx_shape  # noqa: E402
from fleetmeter.modeler.zoo.sampling import Choice, Family, IntRange, Sampler, Uniform  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from _support import run_zoo_cli, small_zoo_sample, tflite_metadata, tflite_model, tflite_ops  # noqa: E402

REQUIRED_FAMILIES = {"resnet", "vgg", "mobilenetv1", "mobilenetv2", "mobilenetv3", "shufflenetv2", "squeezenet",
                     "mnasnet", "densenet", "googlenet", "efficientnet", "transformer", "unet", "detector"}
#: Families whose output is not a (num_classes,) vector of logits (see test_zoo_dense.py).
DENSE_FAMILIES = {"unet", "detector"}
NAMES = family_names()
SEEDS_PER_FAMILY = 20


# -- sampling primitives ---------------------------------------------------------------------------


def test_ranges_map_the_unit_interval_onto_their_documented_values():
    assert [IntRange(1, 3).pick(u) for u in (0.0, 0.34, 0.67, 0.999999)] == [1, 2, 3, 3]
    grid = Uniform(0.25, 1.0, 0.125)
    assert grid.pick(0.0) == 0.25 and grid.pick(0.999999) == 1.0
    assert {grid.pick(u / 100) for u in range(100)} == {0.25 + 0.125 * k for k in range(7)}
    assert {Choice((3, 5, 7)).pick(u / 30) for u in range(30)} == {3, 5, 7}
    assert {Choice(("a", "b"), weights=(0, 1)).pick(u / 10) for u in range(10)} == {"b"}  # weights are obeyed
    biased = [Choice((1, 2), weights=(3, 1)).pick(u / 1000) for u in range(1000)]
    assert biased.count(1) == 750


def test_fixing_a_hyperparameter_leaves_every_other_draw_unchanged():
    ranges = {"a": IntRange(0, 1000), "b": IntRange(0, 1000), "c": IntRange(0, 1000)}
    free, pinned = Sampler(5, ranges), Sampler(5, ranges, {"b": -1})
    assert [free.draw(k) for k in "abc"][0::2] == [pinned.draw(k) for k in "abc"][0::2]
    assert Sampler(5, ranges, {"b": -1}).draws("b", 3) == [-1, -1, -1]
    with pytest.raises(SamplingError, match="nope"):
        Sampler(5, ranges, {"nope": 1})


def test_model_seeds_are_pinned_and_depend_on_seed_family_and_index():
    # Changing the derivation would silently change every zoo built so far.
    assert derive_seed(1, "mobilenetv2", 7) == 6390895186308457928
    seeds = {derive_seed(s, f, i) for s in (0, 1) for f in ("resnet", "vgg") for i in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2 ** 63 for s in seeds)


def test_sampled_descriptions_are_pinned():
    # Same seed, same zoo: a change in ranges, sampling order or block layout changes this digest.
    # If the change is intended, bump arch.GENERATOR_VERSION and update the digest. (Adding a family
    # appends to the digest: check that the digest over the other families is the old value first.)
    digest = hashlib.sha256()
    for family in FAMILIES:
        for i in range(3):
            arch = family.sample(derive_seed(1, family.name, i))
            digest.update(json.dumps(arch.to_dict(), sort_keys=True).encode())
    assert digest.hexdigest() == "411c98577be4413828c1ab7883f53b9ea101e9d0d661461ba4935814446af4a9"


def test_a_family_that_cannot_meet_its_budget_fails_loudly():
    vgg = get_family("vgg")
    tiny_budget = Family("t", "t", vgg.ranges, vgg.sample_hyperparameters, vgg.build, max_macs=1)
    with pytest.raises(SamplingError, match="no sample within"):
        tiny_budget.sample(0)


# -- registry --------------------------------------------------------------------------------------


def test_registry_has_every_required_family_once():
    assert REQUIRED_FAMILIES <= set(NAMES) and len(NAMES) == len(set(NAMES))
    assert [f.name for f in resolve_families(["all"])] == NAMES
    assert [f.name for f in resolve_families(["vgg", "all", "vgg"])][:2] == ["vgg", "resnet"]
    with pytest.raises(KeyError, match="mobilenetv2"):  # the message lists the known names
        get_family("mobilenet")


def test_every_family_documents_its_ranges_as_json():
    described = json.loads(json.dumps(describe_families()))
    assert list(described) == NAMES
    for name, info in described.items():
        assert info["summary"] and info["max_macs"] > 0 and info["max_params"] > 0, name
        for key, spec in info["ranges"].items():
            assert spec["help"], (name, key)
            assert {"choice", "int", "uniform"} & set(spec), (name, key)


# -- every family ----------------------------------------------------------------------------------


def _in_range(spec, value) -> bool:
    if isinstance(value, list):  # drawn once per stage / block
        return all(_in_range(spec, v) for v in value)
    if isinstance(spec, Choice):
        return value in spec.values
    return spec.low <= value <= spec.high


@pytest.mark.parametrize("name", NAMES)
def test_samples_are_valid_in_range_within_budget_and_rebuildable(name):
    family = get_family(name)
    seen = set()
    for i in range(SEEDS_PER_FAMILY):
        arch = family.sample(derive_seed(3, name, i), name=f"{name}-{i}")  # Architecture() checks every shape
        hp = arch.hyperparameters
        assert arch.family == name
        assert arch.mac_count() <= family.max_macs and arch.param_count() <= family.max_params
        # What the files record is enough to rebuild the network exactly.
        assert family.build(arch.name, json.loads(json.dumps(hp))) == arch
        for key, spec in family.ranges.items():
            if key in hp:
                assert _in_range(spec, hp[key]), (key, hp[key])
        (inp,) = arch.input_layers
        if name == "transformer":
            assert 16 <= inp.shape[0] <= 256 and 64 <= inp.shape[1] <= 384 and 1 <= hp["depth"] <= 6
            assert hp["dim"] % hp["heads"] == 0 and 2 <= hp["mlp_ratio"] <= 4
        elif name in DENSE_FAMILIES:
            assert inp.shape == (hp["input_size"], hp["input_size"], 3) and 64 <= hp["input_size"] <= 256
        else:
            assert inp.shape[2] == 3 and inp.shape[0] == inp.shape[1] == hp["input_size"]
            assert 32 <= hp["input_size"] <= 224
        if name == "unet":
            assert arch.shapes[arch.outputs[0]] == (hp["input_size"], hp["input_size"], hp["num_classes"])
        elif name != "detector":  # the detector's anchor outputs: test_zoo_dense.py
            assert arch.shapes[arch.outputs[0]] == (hp["num_classes"],)
        seen.add(json.dumps(hp, sort_keys=True))
    assert len(seen) >= SEEDS_PER_FAMILY // 2, "a family that barely varies teaches a predictor nothing"


@pytest.mark.parametrize("name", NAMES)
def test_small_samples_emit_valid_deterministic_files_with_metadata(name):
    arch = small_zoo_sample(name)
    onnx_data, tflite_data = onnx_bytes(build_onnx(arch, seed=4)), build_tflite(arch, seed=4)
    assert onnx_data == onnx_bytes(build_onnx(small_zoo_sample(name), seed=4))
    assert tflite_data == build_tflite(small_zoo_sample(name), seed=4)
    assert onnx_data != onnx_bytes(build_onnx(arch, seed=5)) and tflite_data != build_tflite(arch, seed=5)

    model = onnx.load_from_string(onnx_data)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    folded, _ = fold_batchnorm(arch, init_weights(arch))
    for layer in folded.layers[1:]:  # ONNX's shape inference agrees with ours on every layer
        assert dims[layer.name] == onnx_shape(folded.shapes[layer.name]), layer.name

    tfl = tflite_model(tflite_data)
    assert all(code.customCode is None for code in tfl.operatorCodes), "builtin ops only"
    for meta in ({p.key: p.value for p in model.metadata_props}, tflite_metadata(tflite_data)):
        assert meta[META_FAMILY] == name
        assert json.loads(meta[META_HYPERPARAMETERS]) == arch.hyperparameters


# -- newer layer kinds -----------------------------------------------------------------------------


def test_new_layer_shapes():
    arch = Architecture("t", "test", (
        Input(6, 6, 8),
        GlobalAvgPool(keepdims=True, name="gap"),
        Mul(name="gated", inputs=("input", "gap")),
        Slice(2, 4, name="part"),
        ChannelShuffle(2, name="shuffled"),
        BatchNorm(activation="hardswish", name="bn"),
    ))
    assert arch.shapes["gated"] == (6, 6, 8) and arch.shapes["part"] == (6, 6, 4)
    assert arch.shapes["shuffled"] == arch.shapes["bn"] == (6, 6, 4)
    tokens = Architecture("t", "test", (
        Input(10, 32), LayerNorm(name="ln"), Dense(32, name="q"), Dense(32, name="k", inputs=("ln",)),
        Dense(32, name="v", inputs=("ln",)), Attention(4, name="att", inputs=("q", "k", "v")),
        Dense(64, activation="gelu", name="fc"), GlobalAvgPool(name="pool")))
    assert tokens.shapes["att"] == (10, 32) and tokens.shapes["fc"] == (10, 64) and tokens.shapes["pool"] == (64,)
    # MACs: 3 projections + attention's two products (2 * seq^2 * dim) + the MLP layer.
    assert tokens.mac_count() == 3 * 10 * 32 * 32 + 2 * 10 * 10 * 32 + 10 * 32 * 64


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: (Input(4, 4, 6), GlobalAvgPool(keepdims=True, name="g"), Conv2D(3, 1, name="c"),
                  Mul(inputs=("input", "c"))), "Mul"),
        (lambda: (Input(4, 4, 6), Slice(4, 3)), "outside"),
        (lambda: (Input(4, 4, 6), ChannelShuffle(4)), "divisible"),
        (lambda: (Input(4, 4, 6), LayerNorm()), "LayerNorm"),
        (lambda: (Input(8, 12), BatchNorm()), "BatchNorm"),
        (lambda: (Input(8, 12), Dense(12, name="a"), Attention(5, inputs=("input", "a", "a"))), "heads"),
        (lambda: (Input(8, 12), Dense(6, name="a"), Attention(2, inputs=("input", "a", "a"))), "one"),
        (lambda: (Input(8, 12), GlobalAvgPool(keepdims=True)), "needs an"),
        (lambda: (Input(8, 12), Activation("mish")), "activation"),  # rejected by the layer itself
        (lambda: (Input(2, 3, 4, 5),), "Input"),
    ],
)
def test_new_layers_reject_inconsistent_descriptions(make, message):
    with pytest.raises(ArchitectureError, match=message):
        Architecture("t", "test", make())


def test_norm_layers_get_documented_parameters():
    arch = Architecture("t", "test", (Input(4, 4, 3), BatchNorm(name="bn"), Conv2D(5, 1), GlobalAvgPool(),
                                      Dense(6, name="fc")))
    tokens = Architecture("t", "test", (Input(7, 12), LayerNorm(name="ln"), Dense(5, name="fc")))
    assert param_shapes(arch)["bn"] == {"gamma": (3,), "beta": (3,), "mean": (3,), "variance": (3,)}
    assert param_shapes(tokens) == {"ln": {"gamma": (12,), "beta": (12,)},
                                    "fc": {"kernel": (5, 12), "bias": (5,)}}
    bn = init_weights(arch, seed=2)["bn"]
    assert np.all(bn["variance"] >= 0.5) and np.all((bn["gamma"] >= 0.5) & (bn["gamma"] < 1.5))
    assert np.all(np.abs(bn["mean"]) <= 0.1) and all(v.dtype == np.float32 for v in bn.values())


def test_folding_batchnorm_into_a_conv_computes_the_same_function():
    arch = Architecture("t", "test", (Input(3, 3, 4), Conv2D(5, 1, bias=False, name="conv"),
                                      BatchNorm(epsilon=1e-3, activation="relu6", name="bn"), Conv2D(2, 1)))
    weights = init_weights(arch, seed=1)
    folded, fw = fold_batchnorm(arch, weights)
    assert [type(layer).__name__ for layer in folded.layers] == ["Input", "Conv2D", "Conv2D"]
    merged = folded.layer("bn")  # the BatchNorm's name survives; its readers are unchanged
    assert merged.activation == "relu6" and merged.bias and "conv" not in fw
    x = np.random.default_rng(0).standard_normal((9, 4)).astype(np.float64)
    conv = x @ weights["conv"]["kernel"][:, :, 0, 0].T.astype(np.float64)
    w = {k: v.astype(np.float64) for k, v in weights["bn"].items()}
    expected = (conv - w["mean"]) / np.sqrt(w["variance"] + 1e-3) * w["gamma"] + w["beta"]
    got = x @ fw["bn"]["kernel"][:, :, 0, 0].T.astype(np.float64) + fw["bn"]["bias"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    scale, shift = batchnorm_scale_shift(weights["bn"], 1e-3)
    np.testing.assert_allclose(expected, conv * scale + shift, rtol=1e-12)


def test_batchnorm_stays_separate_when_folding_would_change_the_graph():
    cases = {
        "conv has a second reader": (Input(4, 4, 3), Conv2D(4, 3, name="c"), BatchNorm(name="bn"),
                                     Mul(name="m", inputs=("c", "bn"))),
        "conv has an activation": (Input(4, 4, 3), Conv2D(4, 3, activation="relu"), BatchNorm()),
        "no conv before it": (Input(4, 4, 3), BatchNorm()),
    }
    for why, layers in cases.items():
        arch = Architecture("t", "test", layers)
        folded, _ = fold_batchnorm(arch, init_weights(arch))
        assert folded is arch, why
        assert "BatchNormalization" in [n.op_type for n in build_onnx(arch).graph.node], why
        ops = ",".join(tflite_ops(build_tflite(arch)))
        assert "MUL,ADD" in ops and "CONV_2D,ADD" not in ops, why  # scale, then shift


def test_tflite_op_mapping_for_the_newer_layers():
    acts = Architecture("t", "test", (Input(6, 6, 4), Conv2D(4, 3, activation="relu", name="relu"),
                                      Conv2D(8, 3, activation="hardswish", name="hs"),
                                      Activation("hardsigmoid", name="hsig"), Activation("swish", name="sw"),
                                      Activation("sigmoid", name="sig"), ChannelShuffle(2), Slice(0, 4)))
    data = build_tflite(acts)
    assert tflite_ops(data) == ["CONV_2D", "CONV_2D", "HARD_SWISH", "ADD", "MUL", "LOGISTIC", "MUL", "LOGISTIC",
                                 "RESHAPE", "TRANSPOSE", "RESHAPE", "SLICE"]
    tensors = {t.name.decode() for t in tflite_model(data).subgraphs[0].tensors}
    assert "hs/pre_act" in tensors and "relu/pre_act" not in tensors  # relu stays fused into its conv

    tokens = Architecture("t", "test", (
        Input(8, 32), LayerNorm(name="ln"), Dense(32, name="q"), Dense(32, name="k", inputs=("ln",)),
        Dense(32, name="v", inputs=("ln",)), Attention(2, inputs=("q", "k", "v")), Dense(32, activation="gelu"),
        GlobalAvgPool(), Dense(3)))
    data = build_tflite(tokens)
    ops = tflite_ops(data)
    assert ops[:9] == ["MEAN", "SUB", "MUL", "MEAN", "ADD", "RSQRT", "MUL", "MUL", "ADD"]  # LayerNorm, decomposed
    assert ops.count("BATCH_MATMUL") == 2 and ops.count("TRANSPOSE") == 4 and "SOFTMAX" in ops
    assert ops[-4:] == ["FULLY_CONNECTED", "GELU", "MEAN", "FULLY_CONNECTED"]
    model = tflite_model(data)
    fc = [c for c in model.operatorCodes if c.builtinCode == schema.BuiltinOperator.FULLY_CONNECTED]
    assert [c.version for c in fc] == [5], "keep_num_dims needs FULLY_CONNECTED version 5"
    assert model.subgraphs[0].operators[-1].builtinOptions.keepNumDims is False

    onnx_ops = [n.op_type for n in build_onnx(tokens).graph.node]
    assert onnx_ops.count("LayerNormalization") == 1 and onnx_ops.count("MatMul") == 3 + 2 + 1
    assert "Gelu" not in onnx_ops and "Tanh" in onnx_ops  # Gelu is opset 20; we emit opset 17


# -- build_zoo -------------------------------------------------------------------------------------


def test_parse_formats():
    assert parse_formats("tflite, onnx,tflite") == ("tflite", "onnx")
    for bad in ("", "onnx,pt"):
        with pytest.raises(ValueError, match="formats"):
            parse_formats(bad)


def test_build_zoo_writes_named_files_an_index_and_fans_out_in_chunks(tmp_path):
    calls, progress = [], []

    def map_fn(fn, items):
        calls.append([(t.family, t.index) for t in items])
        return [fn(item) for item in items]

    entries = build_zoo(["squeezenet", "vgg"], 3, 11, "onnx,tflite", tmp_path, map_fn=map_fn,
                        progress=lambda done, total: progress.append((done, total)), chunk_size=2)
    assert calls == [[("squeezenet", 0), ("squeezenet", 1)], [("squeezenet", 2), ("vgg", 0)],
                     [("vgg", 1), ("vgg", 2)]]
    assert progress == [(0, 6), (2, 6), (4, 6), (6, 6)]
    assert [e["file"] for e in entries[:4]] == ["squeezenet-0000.onnx", "squeezenet-0000.tflite",
                                                "squeezenet-0001.onnx", "squeezenet-0001.tflite"]
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["models"] == sorted(entries, key=lambda e: e["file"])
    for e in entries:
        data = (tmp_path / e["file"]).read_bytes()
        assert e["size_bytes"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()
        expected = get_family(e["family"]).sample(derive_seed(11, e["family"], e["index"]), name=e["name"])
        assert e["hyperparameters"] == expected.hyperparameters and e["seed"] == derive_seed(11, e["family"],
                                                                                                e["index"])


def test_a_model_depends_only_on_seed_family_and_index(tmp_path):
    alone = build_zoo("squeezenet", 2, 3, "tflite", tmp_path / "a")
    mixed = build_zoo(["mobilenetv3", "squeezenet"], 3, 3, ["tflite"], tmp_path / "b")
    other_seed = build_zoo("squeezenet", 2, 4, "tflite", tmp_path / "c")
    sha = {(e["name"], d): e["sha256"] for d, es in (("a", alone), ("b", mixed), ("c", other_seed)) for e in es}
    assert sha[("squeezenet-0001", "a")] == sha[("squeezenet-0001", "b")]
    assert (tmp_path / "a" / "squeezenet-0001.tflite").read_bytes() == \
        (tmp_path / "b" / "squeezenet-0001.tflite").read_bytes()
    assert sha[("squeezenet-0001", "a")] != sha[("squeezenet-0001", "c")]


def test_building_families_one_at_a_time_merges_the_index(tmp_path):
    build_zoo("squeezenet", 1, 0, "onnx", tmp_path)
    build_zoo("vgg", 1, 0, "onnx", tmp_path)
    files = [m["file"] for m in json.loads((tmp_path / INDEX_FILE).read_text())["models"]]
    assert files == ["squeezenet-0000.onnx", "vgg-0000.onnx"]


# -- CLI ---------------------------------------------------------------------------------------------


def test_zoo_families_json_lists_every_family_and_its_ranges(capsys):
    assert run_zoo_cli(["zoo", "families", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert set(described) == set(NAMES)
    assert described["transformer"]["ranges"]["depth"]["int"] == [1, 6]
    assert run_zoo_cli(["zoo", "families"]) == 0
    human = capsys.readouterr().out
    assert all(f"{name}:" in human for name in NAMES)


def test_zoo_build_no_ray_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(zoo_cli, "_ray_map", lambda: pytest.fail("--no-ray must not start Ray"))
    rc = run_zoo_cli(["zoo", "build", "--family", "mobilenetv3", "--count", "1", "--seed", "1", "--formats",
                   "onnx,tflite", "--out", str(tmp_path), "--no-ray", "--json"])
    assert rc == 0
    entries = json.loads(capsys.readouterr().out)
    assert sorted(e["file"] for e in entries) == ["mobilenetv3-0000.onnx", "mobilenetv3-0000.tflite"]
    assert {p.name for p in tmp_path.iterdir()} == {"mobilenetv3-0000.onnx", "mobilenetv3-0000.tflite", INDEX_FILE}


def test_zoo_build_fans_out_through_the_engine_and_stops_it(tmp_path, capsys, monkeypatch):
    class FakeEngine:
        stopped = False

        def shutdown(self):
            FakeEngine.stopped = True

    mapped = []

    def fake_ray_map(address):
        assert address is None  # no --ray-address: a local Ray
        return FakeEngine(), lambda fn, items: mapped.append(len(items)) or [fn(i) for i in items]

    monkeypatch.setattr(zoo_cli, "_ray_map", fake_ray_map)
    assert run_zoo_cli(["zoo", "build", "--family", "squeezenet", "--count", "2", "--formats", "onnx",
                     "--out", str(tmp_path)]) == 0
    assert mapped == [2] and FakeEngine.stopped
    out = capsys.readouterr()
    assert "squeezenet" in out.out and "2/2" in out.err  # a summary table and the progress bar


@pytest.mark.parametrize("argv,message", [
    (["--family", "mobilenet"], "unknown family"),
    (["--family", "vgg", "--formats", "onnx,pt"], "formats"),
    (["--family", "vgg", "--count", "0"], "count"),
])
def test_zoo_build_rejects_bad_arguments_as_value_errors(tmp_path, argv, message):
    # fleetmeter's main() turns ValueError into exit status 2 with the message.
    base = ["zoo", "build", "--count", "1", "--out", str(tmp_path), "--no-ray"]
    with pytest.raises(ValueError, match=message):
        run_zoo_cli(base + argv)
    assert not list(tmp_path.iterdir())
