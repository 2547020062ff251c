"""Deterministic sampling of architecture hyper-parameters.

A :class:`Family` is a documented space of networks: ``ranges`` names every
hyper-parameter and the range it is drawn from; ``sample_hyperparameters``
draws one complete, JSON-ready set through a :class:`Sampler`; ``build``
turns such a set into an :class:`~.arch.Architecture`. ``build`` is a pure
function of the recorded hyper-parameters, so the metadata in every emitted
file is enough to rebuild its architecture.

Reproducibility: draws use only ``random.Random(seed).random()``, whose
sequence Python guarantees across versions (unlike ``randrange``/``choice``
or numpy's non-uniform samplers); every range maps one uniform number to a
value itself. Seeds for model *i* of family *f* come from
:func:`derive_seed` ``(seed, f, i)`` alone, so a model does not depend on
which other models or families are built with it, nor in which order.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from .arch import Architecture, ArchitectureError

__all__ = [
    "Choice",
    "IntRange",
    "Uniform",
    "Spec",
    "Sampler",
    "Family",
    "SamplingError",
    "derive_seed",
    "DEFAULT_MAX_MACS",
    "DEFAULT_MAX_PARAMS",
    "INPUT_SIZE",
    "NUM_CLASSES",
    "SMALL_INPUT",
    "make_divisible",
    "scale_channels",
    "stem_kind",
]

#: Budget a sampled network must fit (else it is redrawn): about 30 ms for
#: dense convolutions on one laptop core in onnxruntime.
DEFAULT_MAX_MACS = 700_000_000
#: 4.5 M float32 parameters: 18 MB of weights, so files stay under 20 MB.
DEFAULT_MAX_PARAMS = 4_500_000
_MAX_ATTEMPTS = 200


class SamplingError(ArchitectureError):
    """No architecture within the family's budget was found (or a bad fixed value)."""


def derive_seed(seed: int, family: str, index: int) -> int:
    """The seed of model ``index`` of ``family`` in a zoo built with ``seed`` (63 bits)."""
    digest = hashlib.sha256(f"fleetmeter.zoo/{int(seed)}/{family}/{int(index)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Choice:
    """One of ``values``; ``weights`` (relative, default equal) bias the draw."""

    values: Tuple[Any, ...]
    weights: Optional[Tuple[float, ...]] = None
    help: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise ValueError("Choice needs at least one value")
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
            if len(self.weights) != len(self.values) or min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError("Choice weights must be non-negative, one per value")

    def pick(self, u: float) -> Any:
        weights = self.weights or (1.0,) * len(self.values)
        cumulative = []
        total = 0.0
        for w in weights:
            total += w
            cumulative.append(total)
        return self.values[min(bisect.bisect_right(cumulative, u * total), len(self.values) - 1)]

    def describe(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"choice": list(self.values)}
        if self.weights is not None:
            out["weights"] = list(self.weights)
        return out


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]``, inclusive, uniformly."""

    low: int
    high: int
    help: str = ""

    def __post_init__(self) -> None:
        if self.high < self.low:
            raise ValueError(f"empty range [{self.low}, {self.high}]")

    def pick(self, u: float) -> int:
        return min(self.low + int(u * (self.high - self.low + 1)), self.high)

    def describe(self) -> Dict[str, Any]:
        return {"int": [self.low, self.high]}


@dataclass(frozen=True)
class Uniform:
    """A float in ``[low, high]`` on a grid of ``step`` (so values stay readable)."""

    low: float
    high: float
    step: float
    help: str = ""

    def __post_init__(self) -> None:
        if self.high < self.low or self.step <= 0:
            raise ValueError(f"bad Uniform({self.low}, {self.high}, step={self.step})")

    def pick(self, u: float) -> float:
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        k = min(int(u * n), n - 1)
        return round(self.low + k * self.step, 6)

    def describe(self) -> Dict[str, Any]:
        return {"uniform": [self.low, self.high], "step": self.step}


Spec = Union[Choice, IntRange, Uniform]


class Sampler:
    """Draws named hyper-parameters from a family's ranges, one uniform number per draw.

    ``fixed`` pins hyper-parameters to given values (used as given, not
    checked against the range): the draw still consumes its random number,
    so every other hyper-parameter keeps the value it would have had.
    """

    def __init__(self, seed: int, ranges: Mapping[str, Spec], fixed: Optional[Mapping[str, Any]] = None) -> None:
        self._rng = random.Random(int(seed))
        self._ranges = ranges
        self._fixed = dict(fixed or {})
        unknown = sorted(set(self._fixed) - set(ranges))
        if unknown:
            raise SamplingError(f"no hyper-parameter(s) {unknown}; known: {sorted(ranges)}")

    def uniform(self) -> float:
        """A raw number in [0, 1)."""
        return self._rng.random()

    def draw(self, name: str) -> Any:
        u = self._rng.random()
        if name in self._fixed:
            return self._fixed[name]
        return self._ranges[name].pick(u)

    def draws(self, name: str, n: int) -> list:
        """``n`` independent draws of ``name`` (per-stage / per-block values)."""
        return [self.draw(name) for _ in range(n)]


@dataclass(frozen=True)
class Family:
    """A documented space of architectures; see the module docstring.

    ``sample_hyperparameters(sampler) -> dict`` and ``build(name, hp) ->
    Architecture`` must both be deterministic. A sample whose architecture
    exceeds ``max_macs`` multiply-accumulates or ``max_params`` parameters is
    redrawn from the same sampler.
    """

    name: str
    summary: str
    ranges: Mapping[str, Spec]
    sample_hyperparameters: Callable[[Sampler], Dict[str, Any]] = field(repr=False)
    build: Callable[[str, Mapping[str, Any]], Architecture] = field(repr=False)
    max_macs: int = DEFAULT_MAX_MACS
    max_params: int = DEFAULT_MAX_PARAMS

    def sample(self, seed: int, *, name: Optional[str] = None, **fixed: Any) -> Architecture:
        """One architecture drawn with ``seed``; ``fixed`` pins hyper-parameters by name."""
        sampler = Sampler(seed, self.ranges, fixed)
        largest: Tuple[int, int] = (0, 0)
        for _ in range(_MAX_ATTEMPTS):
            hp = self.sample_hyperparameters(sampler)
            arch = self.build(name or self.name, hp)
            macs, params = arch.mac_count(), arch.param_count()
            if macs <= self.max_macs and params <= self.max_params:
                return arch
            largest = max(largest, (macs, params))
        raise SamplingError(f"{self.name}: no sample within {self.max_macs} MACs / {self.max_params} params in "
                            f"{_MAX_ATTEMPTS} draws (fixed={fixed}, last {largest[0]} MACs, {largest[1]} params)")

    def describe(self) -> Dict[str, Any]:
        """JSON-ready: summary, budget, and each hyper-parameter's range and meaning."""
        return {
            "summary": self.summary,
            "max_macs": self.max_macs,
            "max_params": self.max_params,
            "ranges": {key: {**spec.describe(), "help": spec.help} for key, spec in self.ranges.items()},
        }


def make_divisible(value: float, divisor: int = 8, minimum: Optional[int] = None) -> int:
    """Round channels to a multiple of ``divisor`` (MobileNet's rule: never below 90% of ``value``)."""
    minimum = divisor if minimum is None else minimum
    rounded = max(minimum, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def scale_channels(base: Sequence[int], multiplier: float, divisor: int = 8) -> list:
    return [make_divisible(c * multiplier, divisor) for c in base]


#: Image input side shared by the CNN families: 32-224 px, biased to <= 160.
INPUT_SIZE = Choice((32, 48, 64, 96, 128, 160, 192, 224), weights=(2, 2, 3, 3, 3, 3, 1, 1),
                    help="square input side in pixels")
#: Classifier width shared by the families.
NUM_CLASSES = Choice((10, 100, 1000), weights=(2, 1, 1), help="logits")
#: Below this input side a family uses a CIFAR-style stride-1 stem (no early downsampling).
SMALL_INPUT = 96


def stem_kind(input_size: int) -> str:
    """"imagenet" (strided stem + pooling) from :data:`SMALL_INPUT` px up, else "cifar"."""
    return "imagenet" if input_size >= SMALL_INPUT else "cifar"
