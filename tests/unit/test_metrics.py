"""Predictor metrics (fleetmeter.modeler.metrics) against values worked out by hand.

Each test says what a report would get wrong if it failed.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from fleetmeter.modeler.metrics import acc_within, evaluate, mape, noise_ceiling, rmspe, spearman

TRUE = [10.0, 20.0, 40.0, 80.0]
# relative errors: +4 %, -10 %, +25 %, 0 %
PRED = [10.4, 18.0, 50.0, 80.0]


def test_accuracy_counts_models_within_tolerance_of_the_measurement():
    """Fails if ±5 %/±10 % accuracy is not the share of models with |pred - true| / true <= tol."""
    assert acc_within(PRED, TRUE, 0.05) == pytest.approx(2 / 4)  # +4 % and 0 %
    assert acc_within(PRED, TRUE, 0.10) == pytest.approx(3 / 4)  # -10 % sits on the boundary: inside
    assert acc_within(PRED, TRUE, 0.30) == 1.0
    assert acc_within(PRED, TRUE, 0.0) == pytest.approx(1 / 4)


def test_accuracy_is_relative_to_the_measurement_not_the_prediction():
    """Fails if the error is divided by the prediction: 12 vs 10 is 20 % off, 10 vs 12 is 16.7 % off."""
    assert acc_within([12.0], [10.0], 0.18) == 0.0
    assert acc_within([10.0], [12.0], 0.18) == 1.0


def test_mape_and_rmspe_match_hand_computed_fractions():
    """Fails if MAPE/RMSPE are in percent, unsigned wrongly, or averaged over the wrong thing."""
    errors = [0.04, -0.10, 0.25, 0.0]
    assert mape(PRED, TRUE) == pytest.approx(sum(abs(e) for e in errors) / 4)  # 0.0975
    assert rmspe(PRED, TRUE) == pytest.approx(math.sqrt(sum(e * e for e in errors) / 4))  # 0.13561
    assert mape(PRED, TRUE) == pytest.approx(0.0975)


def test_spearman_on_ranks_with_ties():
    """Fails if ties do not share their mean rank or if the correlation is Pearson's on raw values."""
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # Monotone but not linear: Pearson would be < 1, Spearman is exactly 1.
    assert spearman([1, 2, 3, 4], [1, 10, 1000, 1e6]) == pytest.approx(1.0)
    # pred ranks with a tie: [1, 2.5, 2.5, 4]; true ranks [1, 2, 3, 4]
    # centred: [-1.5, 0, 0, 1.5] . [-1.5, -0.5, 0.5, 1.5] = 4.5; norms sqrt(4.5) * sqrt(5)
    assert spearman([1, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_spearman_is_pearson_of_mean_ranks_on_tied_random_data():
    """Fails if the rank correlation stops giving tied values their mean rank (e.g. ordinal or min ranks)."""
    def mean_ranks(x: np.ndarray) -> np.ndarray:  # rank_i = #(x < x_i) + (#(x == x_i) + 1) / 2
        return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])

    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.integers(0, 6, size=40).astype(float)  # plenty of ties
        b = rng.integers(0, 4, size=40) + a
        expected = np.corrcoef(mean_ranks(a), mean_ranks(b))[0, 1]
        assert spearman(a, b) == pytest.approx(expected, abs=1e-12)


def test_spearman_undefined_cases_are_nan_without_warnings():
    """Fails if a constant prediction or a single model reports a made-up correlation, or if the undefined
    case reaches scipy (which warns on every constant input, once per evaluated platform)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(spearman([3, 3, 3], [1, 2, 3]))
        assert math.isnan(spearman([1, 2, 3], [7, 7, 7]))
        assert math.isnan(spearman([1], [1]))


def test_evaluate_gathers_everything_json_ready():
    """Fails if a key is missing, a value is not plain JSON, or an undefined metric is NaN instead of None."""
    out = evaluate(PRED, TRUE)
    assert out == {"acc_5": 0.5, "acc_10": 0.75, "mape": pytest.approx(0.0975),
                   "rmspe": pytest.approx(math.sqrt((0.04 ** 2 + 0.1 ** 2 + 0.25 ** 2) / 4)),
                   "spearman": pytest.approx(1.0), "n": 4}
    json.dumps(out, allow_nan=False)
    flat = evaluate([5.0, 5.0], [4.0, 6.0])
    assert flat["spearman"] is None and flat["n"] == 2
    empty = evaluate([], [])
    assert empty["n"] == 0 and empty["acc_10"] is None and empty["mape"] is None
    json.dumps(empty, allow_nan=False)


def test_bad_inputs_are_refused():
    """Fails if a zero/negative measurement, NaN or a length mismatch gives a silent number."""
    with pytest.raises(ValueError, match="positive"):
        mape([1.0], [0.0])
    with pytest.raises(ValueError, match="length"):
        evaluate([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        rmspe([float("nan")], [1.0])
    with pytest.raises(ValueError):
        acc_within([1.0], [1.0], -0.1)


def test_noise_ceiling_uses_pairwise_difference_relative_to_the_pair_mean():
    """Fails if repeats are compared to one run as truth, pairs are missed, or models are weighted by repeats."""
    groups = {
        # pairs: (100, 104): 4/102 = 3.9 %  (100, 108): 8/104 = 7.7 %  (104, 108): 4/106 = 3.8 %
        "a": [100.0, 104.0, 108.0],
        # one pair: 20 / 110 = 18.2 %
        "b": [100.0, 120.0],
        # a single run says nothing about noise: skipped
        "c": [50.0],
    }
    out = noise_ceiling(groups)
    assert out["n_models"] == 2 and out["n_pairs"] == 4
    # per model: a -> 2/3 within 5 %, 3/3 within 10 %; b -> 0, 0; mean over models
    assert out["share_within_5"] == pytest.approx((2 / 3 + 0) / 2)
    assert out["share_within_10"] == pytest.approx((1 + 0) / 2)


def test_noise_ceiling_is_symmetric_and_undefined_without_repeats():
    """Fails if the order of the runs changes the ceiling, or a platform without repeats claims one."""
    assert noise_ceiling({"m": [95.0, 100.0]}) == noise_ceiling({"m": [100.0, 95.0]})
    # |95 - 100| / 97.5 = 5.13 %: outside 5 % though 95 is within 5 % *of* 100
    assert noise_ceiling({"m": [95.0, 100.0]})["share_within_5"] == 0.0
    none = noise_ceiling({"m": [1.0], "n": []})
    assert none == {"share_within_5": None, "share_within_10": None, "n_models": 0, "n_pairs": 0}
