"""The zoo's architecture families: a registry of :class:`~.sampling.Family`.

    >>> from fleetmeter.modeler.zoo.families import get_family
    >>> arch = get_family("mobilenetv2").sample(seed=7)
    >>> arch.family, arch.hyperparameters["input_size"]      # doctest: +SKIP
    ('mobilenetv2', 128)

Every family documents its hyper-parameter ranges (:func:`describe_families`,
``fleetmeter zoo families``), records every drawn and derived value in
``Architecture.hyperparameters`` (and so in the emitted files' metadata), and
rebuilds the same architecture from those values: ``family.build(name,
arch.hyperparameters) == arch``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

from .fam_classic import DENSENET, GOOGLENET, RESNET, SQUEEZENET, VGG
from .fam_dense import DETECTOR, UNET
from .fam_mobile import EFFICIENTNET, MNASNET, MOBILENETV1, MOBILENETV2, MOBILENETV3, SHUFFLENETV2
from .fam_nasbench201 import NASBENCH201
from .fam_transformer import TRANSFORMER
from .formats import FORMATS
from .sampling import Family, SamplingError, derive_seed

__all__ = ["Family", "SamplingError", "FAMILIES", "family_names", "get_family", "resolve_families",
           "describe_families", "derive_seed", "SMALL_FIXED"]

#: Registry, in display order.
FAMILIES: Tuple[Family, ...] = (
    RESNET, VGG, MOBILENETV1, MOBILENETV2, MOBILENETV3, SHUFFLENETV2, SQUEEZENET, MNASNET, DENSENET, GOOGLENET,
    EFFICIENTNET, TRANSFORMER, NASBENCH201, UNET, DETECTOR,
)
_BY_NAME = {f.name: f for f in FAMILIES}

#: Hyper-parameters that make a quick, small sample of each family (tests, smoke runs).
SMALL_FIXED: Dict[str, Dict[str, Any]] = {
    "resnet": {"input_size": 32, "width_mult": 0.25, "depth": 1},
    "vgg": {"input_size": 32, "width_mult": 0.125},
    "mobilenetv1": {"input_size": 32, "width_mult": 0.25},
    "mobilenetv2": {"input_size": 32, "width_mult": 0.25},
    "mobilenetv3": {"input_size": 32, "width_mult": 0.25},
    "shufflenetv2": {"input_size": 32, "width": 0.5, "depth": 2},
    "squeezenet": {"input_size": 32},
    "mnasnet": {"input_size": 32, "width_mult": 0.25, "depth": 1},
    "densenet": {"input_size": 32, "growth_rate": 8, "depth": 2},
    "googlenet": {"input_size": 32, "width_mult": 0.25, "stage4_modules": 2},
    "efficientnet": {"base_resolution": 32, "phi": 0.0, "base_width": 0.25},
    "transformer": {"seq_len": 16, "dim": 64},
    "nasbench201": {},
    "unet": {"input_size": 64, "stem_width": 8, "levels": 3, "base_width": 32},
    "detector": {"input_size": 64, "stem_width": 8, "stages": 3, "base_width": 16},
}


def family_names() -> List[str]:
    return [f.name for f in FAMILIES]


def get_family(name: str) -> Family:
    """The family called ``name``; KeyError listing the known names otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(family_names())}") from None


def resolve_families(names: Iterable[str]) -> List[Family]:
    """Families by name, ``"all"`` meaning every family; duplicates dropped, order kept."""
    out: Dict[str, Family] = {}
    for name in names:
        for family in (FAMILIES if name == "all" else (get_family(name),)):
            out.setdefault(family.name, family)
    return list(out.values())


def describe_families() -> Dict[str, Any]:
    """``{name: {summary, max_macs, max_params, ranges, formats}}`` for every family (JSON-ready).

    ``formats`` lists what ``zoo build --formats`` can emit for the family;
    every family supports all of them, ``tflite-int8`` (full-integer
    quantized TFLite, :mod:`.tflite_quant`) included.
    """
    return {f.name: {**f.describe(), "formats": list(FORMATS)} for f in FAMILIES}
