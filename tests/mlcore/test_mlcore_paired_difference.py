import numpy as np
import pytest

from mlcore.evaluate import classification_report, paired_bootstrap_difference


def test_paired_difference_is_zero_for_identical_models():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    result = paired_bootstrap_difference(y, p, 0.5, p, 0.5, n_boot=200)
    assert result["difference"] == 0 and result["low"] == 0 and result["high"] == 0
    assert result["p_not_better"] == 1.0


def test_a_clearly_better_model_gets_an_interval_above_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    good = np.clip(y + rng.normal(0, 0.3, 300), 0, 1)
    chance = rng.random(300)
    result = paired_bootstrap_difference(y, good, 0.5, chance, 0.5, n_boot=500)
    expected = (
        classification_report(y, good, 0.5)["topological_f1"] - classification_report(y, chance, 0.5)["topological_f1"]
    )
    assert result["difference"] == pytest.approx(expected)
    assert 0 < result["low"] < result["difference"] < result["high"]
    assert result["p_not_better"] == 0.0


def test_it_rejects_an_unknown_metric():
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_bootstrap_difference([0, 1], [0.1, 0.9], 0.5, [0.1, 0.9], 0.5, metric="log_loss")


def test_roc_auc_difference_is_paired_and_ignores_thresholds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    better = np.clip(y * 0.5 + rng.random(200) * 0.5, 0, 1)  # separates the classes well
    worse = rng.random(200)  # chance
    result = paired_bootstrap_difference(y, better, 0.1, worse, 0.9, metric="roc_auc", n_boot=200)
    assert result["difference"] > 0.3 and result["low"] > 0  # a clear gain, clear of 0
    same = paired_bootstrap_difference(y, better, 0.1, better, 0.9, metric="roc_auc", n_boot=200)
    assert same["difference"] == 0 and same["low"] == same["high"] == 0  # thresholds play no part
