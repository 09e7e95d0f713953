"""The *as deployed* figures: per-locale thresholds calibrated on validation, measured on test.

Hand-computed cases: two locales whose scores are on different scales (locale ``a`` scores
around 0.6-0.9, locale ``b`` around 0.1-0.3, like two per-locale networks of a non-unified
model). One pooled threshold cannot serve both, so the pooled R@P80 is low; each locale at its
own threshold retrieves everything. Plus the report's two global columns, rendered from a
hand-made ``results.json`` (no training).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from q2pt.errors import ConfigError, DataError
from q2pt.metrics import evaluate, evaluate_as_deployed, recall_as_deployed

# one label; rows 0-3 locale a, rows 4-7 locale b
Y = np.array([[1], [1], [0], [0], [1], [1], [0], [0]])
S = np.array([[0.9], [0.9], [0.6], [0.6], [0.3], [0.3], [0.1], [0.1]])
LOC = ["a"] * 4 + ["b"] * 4


def test_pooled_penalises_scales_deployed_does_not():
    # pooled: t=0.9 -> P 2/2, R 2/4; t=0.6 -> P 2/4; t=0.3 -> P 4/6 < 0.8: R@P80 = 0.5
    pooled = evaluate(Y, S, LOC)
    assert pooled["global"]["r_at_p"] == pytest.approx(0.5)
    assert pooled["locales"]["a"]["r_at_p"] == pooled["locales"]["b"]["r_at_p"] == 1.0
    d = recall_as_deployed(Y, S, LOC, {"global": 0.9, "a": 0.9, "b": 0.3})
    g = d["global"]
    assert (g["recall"], g["precision"], g["n_predicted"], g["n_true_positives"], g["n_positives"]) == (1.0, 1.0, 4, 4, 4)
    assert g["reached"] and g["note"] is None
    assert d["locales"]["a"]["threshold"] == 0.9 and d["locales"]["b"]["threshold"] == 0.3
    assert d["locales"]["b"]["recall"] == 1.0 and d["config"]["precision"] == 0.8


def test_deployed_counts_missing_positives_and_precision_shortfall():
    # row 4 (locale b) has one more true type outside the label space: recall 4 / 5
    missing = np.array([0, 0, 0, 0, 1, 0, 0, 0])
    d = recall_as_deployed(Y, S, LOC, {"global": 0.9, "a": 0.9, "b": 0.3}, n_missing=missing)
    assert d["global"]["recall"] == pytest.approx(4 / 5) and d["global"]["n_missing"] == 1
    assert d["locales"]["b"]["recall"] == pytest.approx(2 / 3) and d["locales"]["a"]["recall"] == 1.0
    assert d["global"]["precision"] == 1.0  # missing positives are never predicted: precision unchanged
    # a negative of b scores at b's threshold: b's precision 2/3 misses 0.8, global 4/5 reaches it
    s2 = S.copy()
    s2[6, 0] = 0.3
    d = recall_as_deployed(Y, s2, LOC, {"global": 0.9, "a": 0.9, "b": 0.3})
    assert d["locales"]["b"]["precision"] == pytest.approx(2 / 3) and not d["locales"]["b"]["reached"]
    assert "below the target" in d["locales"]["b"]["note"]
    assert d["global"]["precision"] == pytest.approx(0.8) and d["global"]["reached"]
    assert d["global"]["f1"] == pytest.approx(2 * 0.8 * 1.0 / 1.8)


def test_unknown_locale_uses_global_and_threshold_locales():
    # locale b has no threshold of its own: the global 0.9 predicts nothing there
    d = recall_as_deployed(Y, S, LOC, {"global": 0.9, "a": 0.9})
    assert d["global"]["recall"] == pytest.approx(0.5) and d["global"]["precision"] == 1.0
    b = d["locales"]["b"]
    assert b["recall"] == 0.0 and b["precision"] is None and b["n_predicted"] == 0 and "nothing predicted" in b["note"]
    # rows of b given the id of a third locale "c" (cold start: nearest store's id)
    d = recall_as_deployed(Y, S, LOC, {"global": 0.9, "a": 0.9, "c": 0.05},
                           threshold_locales=["a"] * 4 + ["c"] * 4)
    assert d["locales"]["b"]["threshold"] == 0.05 and d["locales"]["b"]["recall"] == 1.0
    assert d["locales"]["b"]["precision"] == pytest.approx(0.5)


def test_deployed_multi_label_pairs():
    # two labels: recall and precision are over (query, label) pairs
    y = np.array([[1, 1], [0, 1], [1, 0]])
    s = np.array([[0.7, 0.2], [0.8, 0.9], [0.1, 0.1]])
    d = recall_as_deployed(y, s, ["x", "x", "y"], {"global": 0.5, "y": 0.05})
    # x (t 0.5): predicted (0,0) TP, (1,0) FP, (1,1) TP; missed (0,1). y (t 0.05): (2,0) TP, (2,1) FP
    assert d["locales"]["x"]["recall"] == pytest.approx(2 / 3) and d["locales"]["x"]["precision"] == pytest.approx(2 / 3)
    assert d["locales"]["y"]["recall"] == 1.0 and d["locales"]["y"]["precision"] == 0.5
    assert d["global"]["recall"] == pytest.approx(3 / 4) and d["global"]["precision"] == pytest.approx(3 / 5)


def test_deployed_bootstrap_cis():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 3)) < 0.3).astype(int)
    s = y * 0.3 + rng.random((200, 3)) * 0.6
    loc = ["a"] * 100 + ["b"] * 100
    d = recall_as_deployed(y, s, loc, {"global": 0.5, "b": 0.6}, bootstrap=200, seed=3)
    for e in (d["global"], *d["locales"].values()):
        lo, hi = e["recall_ci"]
        assert 0 <= lo <= e["recall"] <= hi <= 1 and hi - lo > 0
        lo, hi = e["precision_ci"]
        assert lo <= e["precision"] <= hi
    again = recall_as_deployed(y, s, loc, {"global": 0.5, "b": 0.6}, bootstrap=200, seed=3)
    assert again == d  # seeded
    assert "recall_ci" not in recall_as_deployed(y, s, loc, {"global": 0.5})["global"]


def test_evaluate_as_deployed_calibrates_on_validation():
    # validation: a's positive at 0.85 over a negative at 0.6, b's at 0.25 over 0.1
    vy = np.array([[1], [0], [1], [0]])
    vs = np.array([[0.85], [0.6], [0.25], [0.1]])
    vloc = ["a", "a", "b", "b"]
    d = evaluate_as_deployed(vy, vs, vloc, Y, S, LOC, min_positives=1)
    assert d["thresholds"] == {"global": 0.85, "a": 0.85, "b": 0.25}
    assert d["global"]["recall"] == 1.0 and d["global"]["precision"] == 1.0
    # too little validation data per locale (< min_positives): every locale falls back to global
    d = evaluate_as_deployed(vy, vs, vloc, Y, S, LOC, min_positives=20)
    assert d["thresholds"] == {"global": 0.85, "a": 0.85, "b": 0.85}
    assert "global threshold" in d["threshold_details"]["b"]
    assert d["global"]["recall"] == pytest.approx(0.5) and d["locales"]["b"]["recall"] == 0.0
    # nothing to calibrate on: 0.5 everywhere, said in the details
    d = evaluate_as_deployed(np.zeros((2, 1)), np.ones((2, 1)), ["a", "b"], Y, S, LOC)
    assert d["thresholds"] == {"global": 0.5} and d["threshold_details"]["global"].startswith("default 0.5")


def test_deployed_input_errors():
    with pytest.raises(ConfigError, match="global"):
        recall_as_deployed(Y, S, LOC, {"a": 0.5})
    with pytest.raises(DataError, match="locales"):
        recall_as_deployed(Y, S, LOC[:3], {"global": 0.5})
    with pytest.raises(DataError, match="threshold locales"):
        recall_as_deployed(Y, S, LOC, {"global": 0.5}, threshold_locales=["a"])
    with pytest.raises(ConfigError, match="finite"):
        recall_as_deployed(Y, S, LOC, {"global": math.nan})
    empty = recall_as_deployed(np.zeros((0, 2)), np.zeros((0, 2)), [], {"global": 0.5}, bootstrap=5)
    assert empty["global"]["recall"] is None and empty["locales"] == {}


def test_evaluation_helpers_use_frames_and_classes():
    from q2pt.experiments.evaluation import calibrate_on_valid, evaluate_deployed

    frame = pd.DataFrame({"query": list("abcd"), "locale": ["us", "us", "de", "de"],
                          "product_types": [["x"], ["y"], ["x", "z"], ["y"]]})
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.1], [0.1, 0.35]])  # classes x, y; z is missing
    d = evaluate_deployed(frame, scores, ["x", "y"], {"global": 0.5, "de": 0.3})
    assert d["locales"]["de"]["n_missing"] == 1 and d["locales"]["de"]["recall"] == pytest.approx(2 / 3)
    assert d["global"]["recall"] == pytest.approx(4 / 5) and d["global"]["precision"] == 1.0
    thr, details = calibrate_on_valid(frame, scores, ["x", "y"], min_positives=1)
    assert set(thr) == {"global", "us", "de"} and thr["de"] == pytest.approx(0.35)
    assert calibrate_on_valid(frame.iloc[:0], scores[:0], ["x", "y"])[0] == {"global": 0.5}


# --------------------------------------------------------------------------- report


def _record(name, label, kind, pooled, deployed, prec):
    loc = {"r_at_p": pooled, "r_at_p_ci": [pooled - 0.1, pooled + 0.05], "n_queries": 4}
    dep = {"recall": deployed, "recall_ci": [deployed - 0.02, deployed], "precision": prec,
           "reached": prec >= 0.8, "n_predicted": 4}
    return {
        "key": f"main/{name}", "name": name, "label": label, "kind": kind,
        "evals": {"test": {"global": {"r_at_p": pooled, "r_at_p_ci": [pooled - 0.1, pooled + 0.05]},
                           "locales": {"a": loc, "b": loc},
                           "deployed": {"global": dep, "locales": {"a": dep, "b": {**dep, "precision": 0.61,
                                                                                  "reached": False}}},
                           "pr_curves": {k: {"recall": [0.0, 1.0], "precision": [1.0, 0.5]}
                                         for k in ("global", "a", "b")}}},
        "infra": {"networks": 2 if name == "non-unified" else 1, "train_seconds": 1.0},
    }


def _results(with_depth=True):
    recs = [_record("non-unified", "non-unified", "variant", 0.4, 0.9, 0.85),
            _record("tfidf-unified", "TF-IDF + LR (unified)", "baseline", 0.7, 0.72, 0.81)]
    return {
        "q2pt_version": "0.test",
        "data": {"source": "hand", "simulated": False, "fingerprint": "fp", "rows": {"train": 8, "valid": 4, "test": 8},
                 "n_labels": 1, "locales": ["a", "b"], "label_depth": 2 if with_depth else None},
        "runs": {r["key"]: r for r in recs},
        "sections": {"main": {"runs": [r["key"] for r in recs], "settings": {"precision": 0.8, "bootstrap": 10},
                              "train_sizes": {"a": 5, "b": 3}, "small_stores": [], "encoder": "ngram",
                              "gains": [], "training_config": {}}},
    }


def test_report_shows_both_global_columns(tmp_path):
    from q2pt.experiments.report import global_rows, headline_table, render_report

    res = _results()
    header, rows = global_rows(res)
    assert header[2] == "global R@P80 (pooled)" and header[3] == "global recall as deployed (precision reached)"
    assert rows[0][:4] == ["non-unified", 2, "0.400 [0.300, 0.450]", "0.900 [0.880, 0.900] (P=0.850)"]
    assert rows[0][4] == "1 of 2 (b)"
    paths = render_report(tmp_path, res)
    for page in (paths["markdown"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")):
        assert "global R@P80 (pooled)" in page and "global recall as deployed (precision reached)" in page
        assert "0.900 [0.880, 0.900] (P=0.850)" in page and "0.400 [0.300, 0.450]" in page
        assert "As deployed" in page and "Pooled" in page and "validation split" in page
        assert "label depth 2" in page
        assert "global (as deployed)" in page and "Recall as deployed per locale" in page
        assert "(P=0.610)" in page  # b's precision as deployed, per locale
    text = headline_table(res)
    assert "global (pooled)" in text and "global (as deployed)" in text and "label depth 2" in text


def test_report_of_records_without_deployed_figures(tmp_path):
    from q2pt.experiments.report import render_report

    res = _results(with_depth=False)
    for r in res["runs"].values():
        del r["evals"]["test"]["deployed"]
    md = render_report(tmp_path, res)["markdown"].read_text(encoding="utf-8")
    assert "global R@P80 (pooled)" in md and "written before the as-deployed figures existed" in md
    assert "label depth" not in md and "global (as deployed)" not in md


def test_cached_record_without_deployed_is_not_a_hit(tmp_path):
    from q2pt.experiments.runner import ResultsStore, has_deployed

    rec = _record("non-unified", "non-unified", "variant", 0.4, 0.9, 0.85)
    assert has_deployed(rec)
    old = {**rec, "evals": {"test": {k: v for k, v in rec["evals"]["test"].items() if k != "deployed"}}}
    assert not has_deployed(old) and not has_deployed({"evals": {}})

    class _DS:
        source, simulated, fingerprint, taxonomy = "x", False, "fp", None
        splits = {"train": pd.DataFrame({"locale": ["a"], "product_types": [["t"]]})}
        labels, locales = ["t"], ["a"]
        train = splits["train"]

    store = ResultsStore(tmp_path / "o", _DS())
    store.data["runs"]["k"] = {**old, "data_fingerprint": "fp", "config_hash": "h"}
    assert store.cached("k", "fp", "h") is None
    store.data["runs"]["k"] = {**rec, "data_fingerprint": "fp", "config_hash": "h"}
    assert store.cached("k", "fp", "h") is not None


def test_deployed_matches_the_models_calibrated_operating_point():
    """Q2PTModel.evaluate's ``calibrated`` figures (scores shifted by each row's threshold, one
    rule at 0.5) are the same precision and recall as recall_as_deployed."""
    from q2pt.metrics import precision_recall_at

    rng = np.random.default_rng(7)
    y = (rng.random((120, 4)) < 0.25).astype(int)
    s = y * 0.25 + rng.random((120, 4)) * 0.7
    loc = np.asarray(["a", "b", "c"] * 40, dtype=object)
    missing = rng.integers(0, 2, 120)
    thr = {"global": 0.55, "a": 0.6, "b": 0.4}
    d = recall_as_deployed(y, s, loc.tolist(), thr, n_missing=missing)
    cuts = np.asarray([thr.get(x, thr["global"]) for x in loc])
    shifted = s - cuts[:, None] + 0.5
    p, r, f = precision_recall_at(y, shifted, 0.5, n_missing=int(missing.sum()))
    assert d["global"]["precision"] == pytest.approx(p) and d["global"]["recall"] == pytest.approx(r)
    assert d["global"]["f1"] == pytest.approx(f)
    rows = loc == "c"
    p, r, _ = precision_recall_at(y[rows], shifted[rows], 0.5, n_missing=int(missing[rows].sum()))
    assert d["locales"]["c"]["precision"] == pytest.approx(p) and d["locales"]["c"]["recall"] == pytest.approx(r)
