"""Latency summaries: fixed conventions (sample std, numpy-linear percentiles)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fleetmeter.agent.stats import LatencySummary, summarize


def test_hand_computed_percentiles_use_linear_interpolation():
    # n=4: p50 at rank 1.5 -> 2.5; p90 at rank 2.7 -> 3.7; p99 at rank 2.97 -> 3.97.
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s.median == pytest.approx(2.5)
    assert s.p90 == pytest.approx(3.7)
    assert s.p99 == pytest.approx(3.97)
    assert (s.min, s.max, s.n) == (1.0, 4.0, 4)
    assert s.mean == pytest.approx(2.5)
    # sample std (ddof=1): sqrt(5/3), not the population sqrt(5/4)
    assert s.std == pytest.approx(math.sqrt(5.0 / 3.0))
    assert s.cv == pytest.approx(math.sqrt(5.0 / 3.0) / 2.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_on_random_samples(seed):
    rng = np.random.default_rng(seed)
    samples = rng.lognormal(mean=0.0, sigma=0.5, size=257) * 3.0
    s = summarize(samples.tolist())
    assert s.median == pytest.approx(np.median(samples))
    assert s.p90 == pytest.approx(np.percentile(samples, 90))
    assert s.p99 == pytest.approx(np.percentile(samples, 99))
    assert s.mean == pytest.approx(samples.mean())
    assert s.std == pytest.approx(samples.std(ddof=1))
    assert s.min == samples.min() and s.max == samples.max()
    assert s.n == samples.size
    assert s.cv == pytest.approx(samples.std(ddof=1) / samples.mean())


def test_single_sample_has_zero_spread():
    s = summarize([7.5])
    assert (s.median, s.mean, s.p90, s.p99, s.min, s.max) == (7.5,) * 6
    assert s.std == 0.0 and s.cv == 0.0 and s.n == 1


def test_constant_samples_stay_within_min_max():
    s = summarize([0.1] * 1001)
    assert s.min <= s.median <= s.max
    assert s.min <= s.p99 <= s.max
    assert s.std == pytest.approx(0.0, abs=1e-15)


def test_accepts_numpy_arrays_and_tuples():
    assert summarize(np.array([1.0, 3.0])).median == 2.0
    assert summarize((1.0, 3.0)).median == 2.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, float("inf")], [1.0, -0.5]])
def test_rejects_empty_and_invalid_samples(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_to_dict_has_exactly_the_contract_keys():
    d = summarize([1.0, 2.0, 3.0]).to_dict()
    assert set(d) == {"median", "mean", "p90", "p99", "std", "min", "max", "n", "cv"}
    assert d["n"] == 3 and isinstance(d["n"], int)
    assert all(isinstance(v, float) for k, v in d.items() if k != "n")


def test_summary_is_frozen():
    s = summarize([1.0])
    with pytest.raises(Exception):
        s.median = 2.0  # type: ignore[misc]


def test_summary_rejects_zero_count():
    with pytest.raises(ValueError):
        LatencySummary(median=1, mean=1, p90=1, p99=1, std=0, min=1, max=1, n=0, cv=0)
