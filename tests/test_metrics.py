"""Tests for q2pt.metrics: hand-computed cases, degenerate locales, bootstrap, calibration."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from q2pt import metrics
from q2pt.errors import ConfigError, DataError
from q2pt.metrics import (
    RAtP,
    bootstrap_ci,
    calibrate_thresholds,
    evaluate,
    format_table,
    pr_auc,
    precision_recall_at,
    recall_at_precision,
)

# Case A: 2 queries x 3 labels. Pairs sorted by score:
#   0.9(+) 0.8(-) 0.7(-) 0.6(+) 0.3(+) 0.1(-)      3 positives
# threshold: 0.9 -> TP1 FP0 (P 1.0, R 1/3); 0.8 -> 1,1 (.5); 0.7 -> 1,2 (1/3);
#            0.6 -> 2,2 (P .5, R 2/3); 0.3 -> 3,2 (P .6, R 1); 0.1 -> 3,3 (P .5, R 1)
A_TRUE = np.array([[1, 0, 0], [0, 1, 1]])
A_SCORE = np.array([[0.9, 0.8, 0.1], [0.7, 0.6, 0.3]])


def simulated_scores(n: int, n_labels: int, seed: int, quality: float = 2.0):
    """Simulated multi-label data: 1-3 positives per query, positives score higher."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, n_labels), dtype=np.int8)
    for i in range(n):
        y[i, rng.choice(n_labels, rng.integers(1, 4), replace=False)] = 1
    pos = rng.beta(quality, 1.5, (n, n_labels))
    neg = rng.beta(0.7, 6.0, (n, n_labels))
    return y, np.where(y == 1, pos, neg)


# ----------------------------------------------------------------- recall at precision


def test_r_at_p_hand_computed():
    r = recall_at_precision(A_TRUE, A_SCORE, 0.8)
    assert r == RAtP(recall=pytest.approx(1 / 3), threshold=0.9, precision=1.0, reached=True,
                     note=None, best_precision=1.0)
    r = recall_at_precision(A_TRUE, A_SCORE, 0.6)  # 3/5 == 0.6 counts as reached
    assert (r.recall, r.threshold, r.precision, r.reached) == (1.0, 0.3, pytest.approx(0.6), True)
    # flat input gives the same pairs
    assert recall_at_precision(A_TRUE.ravel(), A_SCORE.ravel(), 0.6) == r


def test_r_at_p_same_recall_takes_highest_threshold():
    # p=0.5: thresholds 0.3 (P .6) and 0.1 (P .5) both give recall 1 -> 0.3, the better precision
    r = recall_at_precision(A_TRUE, A_SCORE, 0.5)
    assert (r.recall, r.threshold, r.precision) == (1.0, 0.3, pytest.approx(0.6))


def test_r_at_p_ties_are_never_split():
    # sorted: 0.9(+) | 0.5(+) 0.5(-) 0.5(-) | 0.2(-) | 0.1(+)   3 positives
    # 0.9 -> P 1, R 1/3; 0.5 -> TP2 FP2 P .5; 0.2 -> P .4; 0.1 -> P .5, R 1.
    # Splitting the 0.5 tie with the positive first would wrongly give P 1, R 2/3.
    y = np.array([[1, 1, 0], [0, 0, 1]])
    s = np.array([[0.9, 0.5, 0.5], [0.5, 0.2, 0.1]])
    r = recall_at_precision(y, s, 0.8)
    assert (r.recall, r.threshold) == (pytest.approx(1 / 3), 0.9)
    r = recall_at_precision(y, s, 0.5)
    assert (r.recall, r.threshold, r.precision) == (1.0, 0.1, 0.5)
    # all scores equal: one threshold, precision 2/4
    assert recall_at_precision([[1, 0], [1, 0]], np.full((2, 2), 0.3), 0.8).reached is False
    assert recall_at_precision([[1, 0], [1, 0]], np.full((2, 2), 0.3), 0.5).recall == 1.0


def test_r_at_p_never_reached_is_zero_and_said_so():
    r = recall_at_precision([[0, 1]], [[0.9, 0.8]], 0.8)  # P 0 at 0.9, P 0.5 at 0.8
    assert r.recall == 0.0 and r.threshold is None and r.precision is None
    assert r.reached is False and r.best_precision == 0.5
    assert "never reached" in r.note and "recall 0" in r.note


def test_r_at_p_no_positives_is_nan():
    r = recall_at_precision(np.zeros((2, 3)), A_SCORE, 0.8)
    assert math.isnan(r.recall) and r.reached is False and r.threshold is None
    assert r.note == "no positives"
    # only unscoreable positives: recall 0, not nan
    r = recall_at_precision(np.zeros((2, 3)), A_SCORE, 0.8, n_missing=2)
    assert r.recall == 0.0 and r.reached is False and "outside the label space" in r.note


def test_r_at_p_n_missing_in_denominator():
    # 1 extra positive the model cannot score: denominator 4, precision unchanged
    r = recall_at_precision(A_TRUE, A_SCORE, 0.6, n_missing=1)
    assert (r.recall, r.threshold, r.precision) == (pytest.approx(3 / 4), 0.3, pytest.approx(0.6))
    assert recall_at_precision(A_TRUE, A_SCORE, 0.8, n_missing=1).recall == pytest.approx(1 / 4)


def test_r_at_p_matches_brute_force_on_random_data():
    rng = np.random.default_rng(3)
    for trial in range(20):
        y = (rng.random((15, 4)) < 0.3).astype(int)
        s = np.round(rng.random((15, 4)), 1)  # many ties
        if y.sum() == 0:
            continue
        for p in (0.5, 0.8):
            best = 0.0
            for t in np.unique(s):
                pred = s >= t
                tp, fp = (pred & (y == 1)).sum(), (pred & (y == 0)).sum()
                if tp / (tp + fp) >= p - 1e-12:
                    best = max(best, tp / y.sum())
            assert recall_at_precision(y, s, p).recall == pytest.approx(best), (trial, p)


def test_input_errors():
    with pytest.raises(DataError, match="shapes"):
        recall_at_precision(A_TRUE, A_SCORE[:, :2])
    with pytest.raises(DataError, match="0/1"):
        recall_at_precision(A_TRUE * 2, A_SCORE)
    with pytest.raises(DataError, match="NaN"):
        recall_at_precision(A_TRUE, np.full((2, 3), np.nan))
    with pytest.raises(ConfigError):
        recall_at_precision(A_TRUE, A_SCORE, precision=1.5)
    with pytest.raises(DataError, match="locales"):
        evaluate(A_TRUE, A_SCORE, ["a"])


# ----------------------------------------------------------------- P/R at threshold, PR-AUC


def test_precision_recall_at_hand_computed():
    p, r, f = precision_recall_at(A_TRUE, A_SCORE, 0.6)  # TP 2, FP 2, FN 1
    assert (p, r, f) == (pytest.approx(0.5), pytest.approx(2 / 3), pytest.approx(4 / 7))
    p, r, f = precision_recall_at(A_TRUE, A_SCORE, 0.6, n_missing=1)  # FN 2
    assert (p, r, f) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    p, r, f = precision_recall_at(A_TRUE, A_SCORE, 0.95)  # nothing predicted
    assert math.isnan(p) and r == 0.0 and f == 0.0


def test_pr_auc_hand_computed():
    # AP = sum over positives of (delta recall) * precision = (1 + 0.5 + 0.6) / 3
    assert pr_auc(A_TRUE, A_SCORE) == pytest.approx(0.7)
    assert pr_auc(A_TRUE, A_SCORE, n_missing=1) == pytest.approx(0.7 * 3 / 4)
    assert math.isnan(pr_auc(np.zeros((2, 3)), A_SCORE))


# ----------------------------------------------------------------- evaluate


def _three_locales():
    # "aa": 0.9(+) 0.1(-) 0.05(+)   -> R@P80 0.5 at 0.9 (0.05 gives P 2/3)
    # "bb": 0.4(+) 0.35(-) 0.3(+)   -> R@P80 0.5 at 0.4 (0.3 gives P 2/3)
    # "cc": no positives
    # "dd": 0.02(-) 0.015(+) 0.01(-) -> best-scored pair is negative: never reached
    # pooled, 5 positives: 0.9+ 0.4+ 0.35- 0.3+ 0.2- 0.1- 0.05+ 0.02- 0.015+ 0.01- ...
    #   -> R@P80 2/5 at 0.4 (0.3 gives P 3/4; every lower threshold is below 0.8 too)
    y = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0]])
    s = np.array([[0.9, 0.1, 0.05], [0.4, 0.35, 0.3], [0.2, 0.01, 0.01], [0.02, 0.015, 0.01]])
    return y, s, ["aa", "bb", "cc", "dd"]


def test_evaluate_pooled_and_per_locale():
    y, s, locs = _three_locales()
    res = evaluate(y, s, locs)
    g, L = res["global"], res["locales"]
    assert g["r_at_p"] == pytest.approx(2 / 5) and g["threshold"] == 0.4 and g["reached"] is True
    assert g["n_queries"] == 4 and g["n_positives"] == 5
    assert L["aa"]["r_at_p"] == 0.5 and L["aa"]["threshold"] == 0.9
    assert L["bb"]["r_at_p"] == 0.5 and L["bb"]["threshold"] == 0.4
    assert L["bb"]["precision_at_threshold"] == 1.0
    # the pooled figure is not the mean of the locales' figures
    assert g["r_at_p"] != pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert g["r_at_p"] != pytest.approx((0.5 + 0.5) / 2)
    assert L["cc"]["r_at_p"] is None and L["cc"]["pr_auc"] is None
    assert L["cc"]["note"] == "no positives" and L["cc"]["n_positives"] == 0
    assert L["dd"]["r_at_p"] == 0.0 and L["dd"]["reached"] is False and L["dd"]["threshold"] is None
    assert L["dd"]["note"].startswith("precision 0.8 never reached") and "recall 0" in L["dd"]["note"]
    assert "r_at_p_ci" not in g


def test_evaluate_is_json_serializable_without_nan():
    y, s, locs = _three_locales()
    res = evaluate(y.astype(bool), s.astype(np.float32), np.array(locs), bootstrap=20,
                   n_missing=np.array([0, 1, 0, 0]))
    text = json.dumps(res, allow_nan=False)  # raises on NaN / numpy types
    back = json.loads(text)
    assert back == res
    for entry in [res["global"], *res["locales"].values()]:
        for v in entry.values():
            assert v is None or type(v) in (bool, int, float, str, list)
    assert len(res["global"]["r_at_p_ci"]) == 2


def test_evaluate_n_missing_per_row():
    y, s, locs = _three_locales()
    res = evaluate(y, s, locs, n_missing=[0, 2, 0, 0])
    assert res["locales"]["bb"]["r_at_p"] == pytest.approx(1 / 4)  # 1 of 2 + 2 missing
    assert res["locales"]["bb"]["n_positives"] == 4 and res["locales"]["bb"]["n_missing"] == 2
    assert res["locales"]["aa"]["r_at_p"] == 0.5
    assert res["global"]["r_at_p"] == pytest.approx(2 / 7)


def test_format_table():
    y, s, locs = _three_locales()
    text = format_table(evaluate(y, s, locs, bootstrap=10))
    lines = text.splitlines()
    assert "R@P80" in lines[0] and "PR-AUC" in lines[0] and "95% CI" in lines[0]
    assert [ln.split()[0] for ln in lines[1:5]] == ["aa", "bb", "cc", "dd"]
    assert lines[-1].split()[:5] == ["global", "4", "5", "0.4000", "0.4000"]
    assert "never reached" in lines[4] and "no positives" in lines[3]
    assert "95% CI" not in format_table(evaluate(y, s, locs)).splitlines()[0]  # no resamples: no column of "-"


# ----------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_narrows():
    f = functools.partial(recall_at_precision, precision=0.8)
    y, s = simulated_scores(100, 20, seed=1)
    y_big, s_big = simulated_scores(1600, 20, seed=2)
    point = recall_at_precision(y, s).recall
    lo, hi = bootstrap_ci(f, y, s, n_boot=300, seed=0)
    assert lo <= point <= hi and lo < hi
    lo2, hi2 = bootstrap_ci(f, y_big, s_big, n_boot=300, seed=0)
    assert lo2 <= recall_at_precision(y_big, s_big).recall <= hi2
    assert (hi2 - lo2) < 0.5 * (hi - lo)  # 16x the queries: ~4x narrower


def test_bootstrap_is_deterministic_with_seed():
    y, s = simulated_scores(80, 10, seed=4)
    a = bootstrap_ci(recall_at_precision, y, s, n_boot=100, seed=7)
    assert bootstrap_ci(recall_at_precision, y, s, n_boot=100, seed=7) == a
    assert bootstrap_ci(recall_at_precision, y, s, n_boot=100, seed=8) != a
    y, s, locs = _three_locales()
    assert evaluate(y, s, locs, bootstrap=30, seed=3) == evaluate(y, s, locs, bootstrap=30, seed=3)


def test_bootstrap_fast_path_equals_materialised_resamples(monkeypatch):
    """The vectorised R@P path gives the same interval as recomputing on each resample,
    through both its head-only branch and its full recomputation branch."""
    calls = {"head": 0, "full": 0}
    original = metrics._RAtPResampler._recall

    def spy(self, w, n_groups, length, denom):
        if self.head < self.ends.size:  # a real head/tail split
            calls["full" if n_groups == self.ends.size else "head"] += 1
        return original(self, w, n_groups, length, denom)

    monkeypatch.setattr(metrics._RAtPResampler, "_recall", spy)
    cases = [(0, 30, 6, 2.0, 0.8), (1, 12, 6, 0.8, 0.5), (3, 40, 6, 1.0, 0.7),
             (4, 6, 30, 1.0, 0.8), (5, 5, 30, 2.0, 0.9)]  # the last two need the full branch
    for seed, n, n_labels, quality, p in cases:
        y, s = simulated_scores(n, n_labels, seed=seed, quality=quality)
        s = np.round(s, 2)  # ties
        missing = np.random.default_rng(seed).integers(0, 2, n)
        for nm in (None, missing):
            fast = bootstrap_ci(functools.partial(recall_at_precision, precision=p), y, s,
                                n_boot=60, seed=seed, n_missing=nm)
            slow = bootstrap_ci(lambda a, b, p=p, **kw: recall_at_precision(a, b, p, **kw).recall, y, s,
                                n_boot=60, seed=seed, n_missing=nm)
            assert fast == pytest.approx(slow, abs=1e-12), (seed, p, nm is None)
    assert calls["head"] > 0 and calls["full"] > 0


def test_bootstrap_generic_fn_and_degenerate():
    lo, hi = bootstrap_ci(pr_auc, A_TRUE, A_SCORE, n_boot=50, seed=0)
    assert 0.0 <= lo <= hi <= 1.0
    assert all(math.isnan(v) for v in bootstrap_ci(recall_at_precision, np.zeros((3, 2)), np.ones((3, 2)), n_boot=5))


# ----------------------------------------------------------------- thresholds


def test_calibrate_thresholds_reach_target_on_fit_data():
    y, s = simulated_scores(400, 12, seed=5)
    locs = np.array(["de_DE", "fr_FR", "ja_JP", "xx_XX"])[np.arange(400) % 4]
    s[locs == "ja_JP"] = np.where(y[locs == "ja_JP"] == 1, 0.1, 0.9)  # hopeless locale
    locs[:3] = "tiny"  # 3 queries: too few positives
    th = calibrate_thresholds(y, s, locs, precision=0.8, min_positives=20)
    assert set(th) == {"global", "de_DE", "fr_FR", "ja_JP", "xx_XX", "tiny"}
    assert not th.global_fallback
    p, _, _ = precision_recall_at(y, s, th["global"])
    assert p >= 0.8
    for loc in ("de_DE", "fr_FR", "xx_XX"):
        p, r, _ = precision_recall_at(y[locs == loc], s[locs == loc], th[loc])
        assert p >= 0.8 and r > 0, loc
    assert th["ja_JP"] == th["global"] and "never reached" in th.details["ja_JP"]
    assert th["tiny"] == th["global"] and "positives < 20" in th.details["tiny"]
    json.dumps(th)  # plain JSON dict


def test_calibrate_thresholds_global_fallback_best_f1():
    # precision 0.8 never reached anywhere. F1 by threshold: 0.9 -> P0; 0.8 -> P.5 R.5 F1 .5;
    # 0.2 -> P 2/3 R 1 F1 .8; 0.1 -> P .5 R 1 F1 2/3  -> best F1 at 0.2
    y = np.array([[0, 1], [0, 1], [0, 0]])
    s = np.array([[0.9, 0.8], [0.1, 0.2], [0.1, 0.05]])
    th = calibrate_thresholds(y, s, ["a", "b", "c"], precision=0.8, min_positives=1)
    assert th.global_fallback and th["global"] == 0.2 and "best-F1" in th.details["global"]
    assert th["b"] == 0.2  # b alone reaches precision 1 at 0.2
    assert th["a"] == 0.2 and th["c"] == 0.2
    with pytest.raises(DataError, match="no positive"):
        calibrate_thresholds(np.zeros((2, 2)), np.ones((2, 2)), ["a", "b"])
