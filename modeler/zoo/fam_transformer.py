"""Transformer-encoder family: attention + MLP blocks over a token sequence.

The input is a ``(seq, dim)`` token sequence (as after an embedding or a
patchify layer). Each block is multi-head self-attention and an MLP, each
with a residual and a LayerNorm, pre-norm (ViT) or post-norm (BERT); Q, K, V
come from one fused projection (then sliced) or three. The head mean-pools the
tokens and applies a linear classifier.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from .arch import Add, Architecture, Attention, Dense, GlobalAvgPool, LayerNorm, Slice
from .blocks import Net
from .sampling import Choice, Family, IntRange, Sampler, make_divisible

__all__ = ["TRANSFORMER", "MIN_HEAD_DIM"]

#: Heads are lowered until each has at least this many channels.
MIN_HEAD_DIM = 16

_RANGES = {
    "seq_len": Choice((16, 32, 64, 128, 196, 256), weights=(2, 2, 3, 3, 2, 2), help="tokens"),
    "dim": Choice((64, 96, 128, 192, 256, 320, 384), help="model width"),
    "heads": Choice((1, 2, 3, 4, 6, 8, 12),
                    help=f"attention heads; lowered to the largest choice that divides dim with head "
                         f"dim >= {MIN_HEAD_DIM}"),
    "depth": IntRange(1, 6, help="encoder blocks"),
    "mlp_ratio": Choice((2, 3, 4), help="MLP hidden width / dim"),
    "activation": Choice(("gelu", "relu"), weights=(3, 1), help="MLP activation (gelu: tanh approximation)"),
    "norm": Choice(("pre", "post"), help="LayerNorm before each sub-block (ViT) or after the residual (BERT)"),
    "qkv": Choice(("fused", "separate"), help="one dim->3*dim projection sliced in three, or three projections"),
    "num_classes": Choice((2, 10, 100, 1000), help="logits"),
}


def _valid_heads(dim: int, wanted: int) -> int:
    choices = [h for h in _RANGES["heads"].values if h <= wanted and dim % h == 0 and dim // h >= MIN_HEAD_DIM]
    return max(choices) if choices else 1


def _sample(s: Sampler) -> Dict[str, Any]:
    hp = {key: s.draw(key) for key in _RANGES}
    hp["heads"] = _valid_heads(hp["dim"], hp["heads"])
    hp["mlp_dim"] = make_divisible(hp["dim"] * hp["mlp_ratio"], 8)
    return hp


def _block(net: Net, x: str, hp: Mapping[str, Any], p: str) -> str:
    dim, pre = hp["dim"], hp["norm"] == "pre"
    h = net.add(LayerNorm(name=f"{p}.ln1", inputs=(x,))) if pre else x
    if hp["qkv"] == "fused":
        qkv = net.add(Dense(3 * dim, name=f"{p}.qkv", inputs=(h,)))
        q, k, v = (net.add(Slice(i * dim, dim, name=f"{p}.{r}", inputs=(qkv,))) for i, r in enumerate("qkv"))
    else:
        q, k, v = (net.add(Dense(dim, name=f"{p}.{r}", inputs=(h,))) for r in "qkv")
    net.add(Attention(hp["heads"], name=f"{p}.attention", inputs=(q, k, v)))
    net.add(Dense(dim, name=f"{p}.proj"))
    x = net.add(Add(name=f"{p}.add1", inputs=(x, f"{p}.proj")))
    if not pre:
        x = net.add(LayerNorm(name=f"{p}.ln1", inputs=(x,)))
    h = net.add(LayerNorm(name=f"{p}.ln2", inputs=(x,))) if pre else x
    net.add(Dense(hp["mlp_dim"], activation=hp["activation"], name=f"{p}.fc1", inputs=(h,)))
    net.add(Dense(dim, name=f"{p}.fc2"))
    x = net.add(Add(name=f"{p}.add2", inputs=(x, f"{p}.fc2")))
    if not pre:
        x = net.add(LayerNorm(name=f"{p}.ln2", inputs=(x,)))
    return x


def _build(name: str, hp: Mapping[str, Any]) -> Architecture:
    net = Net(hp["seq_len"], hp["dim"])
    x = net.x
    for i in range(hp["depth"]):
        x = _block(net, x, hp, f"block{i + 1}")
    if hp["norm"] == "pre":
        x = net.add(LayerNorm(name="final_norm", inputs=(x,)))
    net.add(GlobalAvgPool(name="pool", inputs=(x,)))
    net.add(Dense(hp["num_classes"], name="logits"))
    return net.finish(name, "transformer", hp)


TRANSFORMER = Family("transformer", "Transformer encoder (ViT/BERT-style): multi-head self-attention + MLP blocks "
                                    "over a (seq, dim) token input, mean-pooled classifier",
                     _RANGES, _sample, _build)
