"""Per-(locale, product type) thresholds (train.type_thresholds): calibration where the
validation support suffices, back-off to the locale threshold, and every prediction path
honouring them."""

from __future__ import annotations

import numpy as np
import pytest

from q2pt.inference import UNIFIED, InferenceCore
from q2pt.metrics import calibrate_type_thresholds
from support import need


def test_calibration_needs_support_and_the_target_precision():
    rng = np.random.default_rng(0)
    n = 200
    locales = ["a"] * 150 + ["b"] * 50
    y = np.zeros((n, 2), dtype=np.int8)
    y[:60, 0] = 1  # type 0: 60 positives in a, none in b
    y[150:160, 1] = 1  # type 1: 10 positives in b
    scores = rng.random((n, 2)) * 0.3
    scores[:60, 0] += 0.6  # separable: a threshold in (0.3, 0.6] gets precision 1
    scores[150:160, 1] += 0.6
    out = calibrate_type_thresholds(y, scores, locales, ["t0", "t1"], 0.8, min_positives=20)
    assert set(out) == {"a"} and set(out["a"]) == {"t0"}  # b's t1 has only 10 positives: backs off
    assert 0.3 <= out["a"]["t0"] <= 0.9
    assert calibrate_type_thresholds(y, scores, locales, ["t0", "t1"], 0.8, min_positives=10)["b"].keys() == {"t1"}


def _core(type_thresholds):
    return InferenceCore(variant="unified-aware", classes=["x", "y"], locales=["de", "fr"],
                         thresholds={"global": 0.5, "de": 0.4}, tokenizers={UNIFIED: lambda q, loc: q},
                         forward=lambda key, batch: np.asarray([[0.45, 0.45]] * len(batch)),
                         type_thresholds=type_thresholds)


def test_the_core_uses_a_types_own_threshold_and_backs_off_to_the_locale():
    core = _core({"de": {"y": 0.5}, "fr": {"x": 0.3}})
    res = core.resolve_all(["de", "fr", "xx"])
    cuts = core.cuts(res)
    assert cuts.tolist() == [[0.4, 0.5], [0.3, 0.5], [0.5, 0.5]]  # fr: no locale threshold: the global one
    picked = core.select(core.scores(["q"] * 3, res), res)
    assert [[t for t, _ in row] for row in picked] == [["x"], ["x"], []]
    # a caller's threshold overrides every calibrated one
    assert core.cuts(res, 0.2).tolist() == [[0.2, 0.2]] * 3


def test_a_trained_model_with_type_thresholds_round_trips_and_serves_them(tmp_path):
    need("torch")
    need("fastapi")
    from fastapi.testclient import TestClient

    from q2pt.config import resolve_config
    from q2pt.models import Q2PTModel, load_model
    from q2pt.serving.app import create_app
    from q2pt.serving.runtime import load_runtime
    from support import handmade_dataset

    cfg = resolve_config(encoder="ngram", flags={
        "train.max_epochs": 4, "train.batch_size": 32, "train.lr": 0.05, "train.threads": 1,
        "model.encoder_options": {"dim": 16, "buckets": 4096}, "train.type_thresholds": True,
        "train.type_threshold_min_positives": 5})
    data = handmade_dataset()
    model = Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "m", progress=False)
    tt = model.type_thresholds_
    assert tt and all(0.0 <= v <= 1.0 for types in tt.values() for v in types.values())
    again = load_model(tmp_path / "m")
    assert again.type_thresholds_ == tt
    loc, types = next(iter(tt.items()))
    label = next(iter(types))
    with TestClient(create_app(load_runtime(tmp_path / "m"))) as client:
        body = client.post("/v1/predict", json={"query": data.test["query"].iloc[0], "locale": loc,
                                                "top_k": 10}).json()
        for item in body["product_types"]:
            want = types.get(item["product_type"], again.threshold_for(loc))
            assert item["threshold"] == pytest.approx(want) and item["predicted"] == (item["score"] >= want)
    assert label in again.classes_
