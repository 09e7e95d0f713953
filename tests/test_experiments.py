"""Tests of ``q2pt experiment``: baselines, the runner (resumable), every study, the report.

One module-scoped experiment runs the main comparison and every study on the tiny simulated
preset with a small n-gram encoder and two epochs; the tests then check its report's
structure and numbers. Small unit tests cover the pieces (baselines, label corruption,
conflict detection, gains, settings).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from q2pt.calibration import locale_min_positives
from q2pt.errors import ConfigError
from q2pt.experiments.baselines import BASELINES
from support import need

pytestmark = pytest.mark.integration

need("torch")

FAST = [
    "--train.max_epochs", "1", "--train.batch_size", "64", "--train.threads", "1",
    "--model.encoder_options.dim", "16", "--model.encoder_options.buckets", "4096",
    "--experiment.bootstrap", "60", "--experiment.study_bootstrap", "30",
    "--experiment.fasttext", '{"epoch": 5, "dim": 16, "bucket": 4096, "thread": 1}',
    "--experiment.tfidf", '{"max_features": 4000}',
    "--experiment.data_size_fractions", "[0.5, 2]",
    "--experiment.noise_rates", "[0, 0.4]",
    "--experiment.noise_variants", '["unified-agnostic"]',
    "--experiment.head_options", "[[], [8]]",
    "--experiment.pretraining_encoders", '["ngram"]',
    # every baseline but USE + e5 + LR (e5 embeds ~145 queries/s: tests/test_frozen_baselines.py covers it)
    "--experiment.baselines", '["fasttext-per-locale", "fasttext-unified", "tfidf-per-locale", "tfidf-unified", '
    '"use-lr-per-locale", "use-lr-unified"]',
]


def _frames(n_per: int = 30) -> dict[str, pd.DataFrame]:
    """A small two-store dataset where each type has its own words."""
    rows = []
    words = {"shoe": ["shoes", "sneakers", "boots"], "tv": ["tv", "television", "oled"],
             "sock": ["socks", "wool socks", "ankle socks"]}
    rng = np.random.default_rng(0)
    for loc in ("us", "de"):
        for i in range(n_per):
            for lab, ws in words.items():
                q = f"{ws[i % 3]} {['red', 'blue', 'big', 'cheap', 'new'][int(rng.integers(5))]} {i}"
                rows.append({"query": q, "locale": loc, "product_types": [lab], "weight": 1.0})
    df = pd.DataFrame(rows)
    return {"train": df.iloc[::2].reset_index(drop=True), "valid": df.iloc[1::4].reset_index(drop=True),
            "test": df.iloc[3::4].reset_index(drop=True)}


@pytest.fixture(scope="module")
def small_dataset():
    from q2pt.data import from_frames

    return from_frames(_frames(), source="test-frames")


# --------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("name", ["fasttext-per-locale", "fasttext-unified", "tfidf-per-locale", "tfidf-unified"])
def test_baselines_learn_and_score_in_class_order(small_dataset, tmp_path, monkeypatch, name):
    import tempfile

    from q2pt.experiments.baselines import build_baseline

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model = build_baseline(name, params={"fasttext": {"epoch": 30, "dim": 16, "bucket": 2048, "thread": 1}})
    model.fit(small_dataset)
    assert list(scratch.iterdir()) == []  # fastText's training files are cleaned up
    assert model.classes_ == ["shoe", "sock", "tv"]
    assert model.n_networks == (1 if name.endswith("unified") else 2)
    scores = model.predict_proba(["wool socks", "oled tv", "sneakers"], ["us", "de", "us"])
    assert scores.shape == (3, 3) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    # columns follow classes_: each query's best type is its own
    assert [model.classes_[i] for i in scores.argmax(axis=1)] == ["sock", "tv", "shoe"]
    model.save(tmp_path / "saved")
    files = {p.suffix for p in (tmp_path / "saved").rglob("*") if p.is_file()}
    assert ".pkl" not in files and ".pickle" not in files
    assert (tmp_path / "saved" / "manifest.json").is_file()


def test_fasttext_scores_are_the_ova_sigmoids(small_dataset):
    """The scores equal sigmoid(output matrix . hidden) for every label (ova: independent
    sigmoids), checked against fastText's own one-line predict."""
    from q2pt.experiments.baselines import build_baseline

    model = build_baseline("fasttext-unified", params={"fasttext": {"epoch": 20, "dim": 8, "bucket": 1024,
                                                                    "thread": 1}})
    model.fit(small_dataset)
    ft = model.models["*"]
    scores = model.predict_proba(["ankle socks"], ["us"])[0]
    raw = dict((lab, p) for p, lab in ft.f.predict("q2ptloc_us ankle socks\n", -1, 0.0, "strict"))
    for j, cls in enumerate(model.classes_):
        idx = model.model_labels["*"].index(cls)
        assert scores[j] == pytest.approx(raw[f"__label__{idx}"], abs=1e-6)
    # ova: the probabilities are independent (they need not sum to 1)
    assert not math.isclose(float(scores.sum()), 1.0, abs_tol=1e-3)


def test_per_locale_baseline_scores_zero_for_unseen_locale(small_dataset):
    from q2pt.experiments.baselines import build_baseline

    model = build_baseline("tfidf-per-locale").fit(small_dataset)
    scores = model.predict_proba(["socks", "socks"], ["fr", "us"])
    assert np.all(scores[0] == 0) and scores[1].max() > 0


def test_unknown_baseline_and_parameter():
    from q2pt.experiments.baselines import build_baseline

    with pytest.raises(ConfigError, match="unknown baseline"):
        build_baseline("svm")
    with pytest.raises(ConfigError, match="unknown fasttext parameter"):
        build_baseline("fasttext-unified", params={"fasttext": {"epochs": 3}})


# --------------------------------------------------------------------------- units


def test_corrupt_labels_rate_and_kinds():
    from q2pt.experiments.studies import corrupt_labels

    frame = pd.DataFrame({"query": [f"q{i}" for i in range(2000)], "locale": "us",
                          "product_types": [["a", "b"] if i % 2 else ["c"] for i in range(2000)]})
    pool = ["a", "b", "c", "d", "e"]
    out, counts = corrupt_labels(frame, 0.2, pool, np.ones(5), np.random.default_rng(0))
    assert counts["labels"] == 3000
    share = (counts["dropped"] + counts["replaced"]) / counts["labels"]
    assert 0.17 < share < 0.23
    assert 0.4 < counts["dropped"] / (counts["dropped"] + counts["replaced"]) < 0.6
    assert len(out) == 2000 - counts["rows_removed"] and counts["rows_removed"] > 0
    assert all(len(labs) >= 1 and len(set(labs)) == len(labs) for labs in out["product_types"])
    clean, c0 = corrupt_labels(frame, 0.0, pool, np.ones(5), np.random.default_rng(0))
    assert c0["dropped"] == c0["replaced"] == 0 and clean["product_types"].tolist() == frame["product_types"].tolist()
    # a label depth's cut names (train.subtype_names) go with their label: a corrupted one's are gone
    cut = frame.assign(cut_names=[{"a": ["a1"], "b": ["b1"]} if i % 2 else {"c": ["c1"]} for i in range(2000)])
    noisy, _ = corrupt_labels(cut, 0.2, pool, np.ones(5), np.random.default_rng(0))
    assert noisy["product_types"].tolist() == out["product_types"].tolist()  # the same draws
    for i, labs, below in zip(noisy.index, noisy["product_types"], noisy["cut_names"]):
        assert set(below or {}) == ({"a", "b"} if i % 2 else {"c"}) & set(labs)  # the row's own labels kept
    assert any(below is None for below in noisy["cut_names"])


def test_data_size_plan_uses_all_rows_at_the_largest_fraction():
    from q2pt.experiments.studies import data_size_plan

    ref, sizes = data_size_plan(240, [0.25, 0.5, 1.0, 2.0])
    assert ref == 120 and sizes == {0.25: 30, 0.5: 60, 1.0: 120, 2.0: 240}
    ref, sizes = data_size_plan(100, [0.5, 1.0])
    assert ref == 100 and sizes == {0.5: 50, 1.0: 100}


def test_nearest_locale_by_character_profile():
    from q2pt.experiments.studies import nearest_locale

    best, sims = nearest_locale(["rote schuhe herren", "laufschuhe damen"],
                                {"de": ["schuhe rot", "herren laufschuhe", "damen schuhe"],
                                 "jp": ["スニーカー メンズ", "テレビ 55型"], "us": ["red shoes", "tv 55 inch"]})
    assert best == "de" and sims["de"] > sims["us"] > sims["jp"] - 1e-9


def test_conflict_mask_for_user_data():
    from q2pt.experiments.evaluation import conflict_mask

    test = pd.DataFrame({"query": ["Chips", "chips", "tv", "tv"], "locale": ["us", "uk", "us", "uk"],
                         "product_types": [["crisps"], ["fries"], ["tv"], ["tv"]]})
    train = pd.DataFrame({"query": ["pants"], "locale": ["us"], "product_types": [["trousers"]]})
    mask = conflict_mask(test, {"train": train, "test": test})
    assert mask.tolist() == [True, True, False, False]
    sim = test.assign(sim_conflict_word=["chips", "", "", None])
    assert conflict_mask(sim).tolist() == [True, False, False, False]


def test_top1_accuracy_uses_intent_when_present():
    from q2pt.experiments.evaluation import top1_accuracy

    frame = pd.DataFrame({"query": ["chips", "chips"], "locale": ["us", "uk"],
                          "product_types": [["crisps", "dip"], ["fries"]], "intent": ["crisps", "fries"]})
    scores = np.array([[0.1, 0.9, 0.0], [0.2, 0.1, 0.7]])  # classes: crisps, dip, fries
    out = top1_accuracy(frame, scores, ["crisps", "dip", "fries"], np.array([True, True]))
    assert out["truth"] == "intent" and out["accuracy"] == 0.5
    assert out["locales"] == {"uk": {"n": 1, "accuracy": 1.0}, "us": {"n": 1, "accuracy": 0.0}}
    out = top1_accuracy(frame.drop(columns="intent"), scores, ["crisps", "dip", "fries"], np.array([True, True]))
    assert out["truth"] == "labels" and out["accuracy"] == 1.0


def test_gains_table_and_small_stores():
    from q2pt.experiments.evaluation import gains_table, small_stores

    sizes = {"us": 900, "de": 300, "pl": 60}
    assert small_stores(sizes, 1 / 3) == ["pl"]
    m = {
        "non-unified": {"global": {"r_at_p": 0.5}, "locales": {"us": {"r_at_p": 0.6}, "de": {"r_at_p": 0.4},
                                                              "pl": {"r_at_p": None}}},
        "unified-aware": {"global": {"r_at_p": 0.55}, "locales": {"us": {"r_at_p": 0.58}, "de": {"r_at_p": 0.5},
                                                                 "pl": {"r_at_p": 0.3}}},
    }
    rows = gains_table(m, sizes, small=["pl"])
    assert [r["locale"] for r in rows] == ["us", "de", "pl", "global"]
    assert rows[0]["gains"]["unified-aware"] == pytest.approx(-0.02)
    assert rows[1]["gains"]["unified-aware"] == pytest.approx(0.1)
    assert rows[2]["gains"]["unified-aware"] is None and rows[2]["small"]
    assert rows[3]["n_train"] == 1260


def test_settings_layers_and_errors():
    from q2pt.experiments.settings import resolve_settings, split_overrides

    exp, rest = split_overrides(["--experiment.bootstrap", "7", "--train.lr=0.1", "--experiment.variants=[\"non-unified\"]"])
    assert exp == {"bootstrap": 7, "variants": ["non-unified"]} and rest == ["--train.lr=0.1"]
    s = resolve_settings("tiny", {"bootstrap": 5, "fasttext": {"dim": 4}}, exp)
    assert s.bootstrap == 7 and s.fasttext["dim"] == 4 and s.fasttext["epoch"] == 10 and s.budget == "tiny"
    with pytest.raises(ConfigError, match="experiment.bogus"):
        split_overrides(["--experiment.bogus", "1"])
    with pytest.raises(ConfigError, match="noise rates"):
        resolve_settings("quick", None, {"noise_rates": [1.5]})
    with pytest.raises(ConfigError, match="unknown variant"):
        resolve_settings("quick", None, {"variants": ["per-locale"]})


def test_an_experiment_with_nothing_to_run_is_refused(tmp_path):
    from q2pt.experiments import ExperimentRequest, run_experiment

    with pytest.raises(ConfigError, match="nothing to run"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", preset="tiny", progress=False,
                                         overrides=["--experiment.variants", "[]", "--experiment.baselines", "[]"]))
    assert not (tmp_path / "o").exists()


def test_config_file_experiment_section_is_checked(tmp_path):
    from q2pt.experiments import ExperimentRequest, run_experiment

    cfg = tmp_path / "exp.yaml"
    cfg.write_text("train:\n  max_epochs: 1\nexperiment:\n  bootstrapp: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="experiment.bootstrapp"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", preset="tiny", config=cfg))
    cfg.write_text("model:\n  encoder: ngram\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="--encoder"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", preset="tiny", config=cfg))
    assert not (tmp_path / "o").exists()


def test_report_html_escapes_and_embeds(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from q2pt.experiments.report import Report

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = tmp_path / "f.png"
    fig.savefig(png)
    plt.close(fig)
    rep = Report("T <1>")
    rep.heading("Sec & more")
    rep.para("a `<code>` and **bold** <script>")
    rep.table(["a|b", "c"], [["x|y", 1.5]])
    rep.figure(png, "figures/f.png", "cap")
    page = rep.to_html()
    assert "<script>" not in page and "&lt;script&gt;" in page and "<code>&lt;code&gt;</code>" in page
    assert 'src="data:image/png;base64,' in page
    md = rep.to_markdown()
    assert "| a\\|b | c |" in md and "![cap](figures/f.png)" in md


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Main comparison + every study on the tiny SIMULATED store (one run for all tests)."""
    import os

    from q2pt.encoders.testing import make_tiny_hf_model
    from q2pt.experiments import ExperimentRequest, run_experiment

    base = tmp_path_factory.mktemp("experiment")
    os.environ["Q2PT_CACHE"] = str(tmp_path_factory.getbasetemp() / "q2pt-cache")
    hf = make_tiny_hf_model(base / "hf", ["red shoes", "rote schuhe", "tv 55 zoll", "chips", "pants"] * 3,
                            dim=16, layers=1, heads=2, vocab_size=300)
    req = ExperimentRequest(out=base / "report", preset="tiny", encoder="ngram", studies=["all"],
                            overrides=FAST, hf_model=str(hf), progress=False)
    result = run_experiment(req)
    return req, result


def _html_refs(page: str) -> list[str]:
    return re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)


def test_report_files_and_self_contained_html(experiment):
    req, result = experiment
    out = Path(req.out)
    for name in ("report.md", "report.html", "results.json"):
        assert (out / name).is_file()
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"pr_curves.png", "pr_curves_locales.png", "gains.png", "rap_by_locale.png", "infrastructure.png",
            "study_data_size.png", "study_label_noise.png"} <= set(pngs)
    page = (out / "report.html").read_text(encoding="utf-8")
    refs = _html_refs(page)
    assert refs and all(r.startswith("data:image/png;base64,") or r.startswith("#") for r in refs)
    assert sum(r.startswith("data:image/png") for r in refs) == len(pngs)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert not (out / "models").exists()  # size measured, then removed (keep_models False)
    json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_report_sections_and_provenance(experiment):
    req, result = experiment
    md = result.report_md.read_text(encoding="utf-8")
    for heading in ("## Main comparison: R@P80 per locale", "## Unified vs non-unified: gains per locale",
                    "## Precision-recall curves", "## Infrastructure", "## Study: data size (pl)",
                    "## Study: cold start of a new store (se)", "## Study: pre-training", "## Study: label noise",
                    "## Study: classification head", "## Study: locale conflicts", "## Configuration"):
        assert heading in md, heading
    assert "SIMULATED" in md and result.results["data"]["fingerprint"] in md
    assert "q2pt experiment --preset tiny --seed 0 --encoder ngram --study all" in md
    m = result.results["machine"]
    assert m["cores"] >= 1 and m["cpu_model"] and m["q2pt_version"]
    assert "q2pt 0." in md and f"{m['cores']} cores" in md
    for label in ("non-unified", "unified-agnostic", "unified-aware", "fastText OVA (per locale)",
                  "TF-IDF + LR (unified)"):
        assert label in result.headline()


def _entries(ev):
    yield ev["global"]
    yield from ev["locales"].values()


def test_main_numbers_in_range_and_cis_contain_points(experiment):
    _, result = experiment
    res = result.results
    main = res["sections"]["main"]
    assert len(main["runs"]) == 9
    test_rows = res["data"]["rows"]["test"]
    for key in main["runs"]:
        rec = res["runs"][key]
        ev = rec["evals"]["test"]
        assert ev["global"]["n_queries"] == test_rows
        assert set(ev["locales"]) == set(res["data"]["locales"])
        for e in _entries(ev):
            if e["r_at_p"] is None:
                continue
            assert 0.0 <= e["r_at_p"] <= 1.0
            lo, hi = e["r_at_p_ci"]
            assert lo is not None and 0.0 <= lo <= e["r_at_p"] + 1e-9 <= hi + 2e-9 <= 1.0 + 2e-9
        infra = rec["infra"]
        assert infra["train_seconds"] > 0 and infra["model_bytes"] > 0
        assert infra["train_peak_rss_mb"] >= infra["train_peak_rss_increase_mb"] >= 0
        curve = ev["pr_curves"]["global"]
        assert len(curve["recall"]) == len(curve["precision"]) > 0
        assert all(0 <= x <= 1 for x in curve["recall"] + curve["precision"])
    n_loc = len(res["data"]["locales"])
    assert res["runs"]["main/non-unified"]["infra"]["networks"] == n_loc
    assert res["runs"]["main/unified-aware"]["infra"]["networks"] == 1
    assert res["runs"]["main/fasttext-per-locale"]["infra"]["networks"] == n_loc
    # the evaluation sees signal: the unified TF-IDF baseline retrieves something at P80
    assert res["runs"]["main/tfidf-unified"]["evals"]["test"]["global"]["r_at_p"] > 0.05


def test_gains_are_differences_and_ordered_by_training_size(experiment):
    _, result = experiment
    res = result.results
    main = res["sections"]["main"]
    gains = main["gains"]
    sizes = list(main["train_sizes"].values())
    assert sizes == sorted(sizes, reverse=True)
    assert [g["locale"] for g in gains] == [*main["train_sizes"], "global"]
    for g in gains:
        loc = g["locale"]
        def rap(v, loc=loc):
            ev = res["runs"][f"main/{v}"]["evals"]["test"]
            return (ev["global"] if loc == "global" else ev["locales"][loc])["r_at_p"]
        assert g["base"] == rap("non-unified")
        for v in ("unified-agnostic", "unified-aware"):
            if g["base"] is None or rap(v) is None:
                assert g["gains"][v] is None
            else:
                assert g["gains"][v] == pytest.approx(rap(v) - g["base"])
    assert set(main["small_stores"]) <= set(main["train_sizes"])


def test_studies_sections(experiment):
    _, result = experiment
    sec = result.results["sections"]
    ds = sec["data-size"]
    assert ds["locale"] == "pl" and {r["fraction"] for r in ds["rows"]} == {0.5, 2.0}
    assert ds["sizes"]["2.0"] == ds["locale_train_rows"] and ds["sizes"]["0.5"] == round(ds["locale_train_rows"] / 4)
    assert {r["variant"] for r in ds["rows"]} == {"non-unified", "unified-aware"}
    cs = sec["cold-start"]
    assert cs["locale"] == "se" and cs["nearest"] != "se" and len(cs["rows"]) == 3
    pt = sec["pretraining"]
    assert [r["encoder"] for r in pt["rows"]][0] == "ngram" and pt["rows"][-1]["encoder"].startswith("hf:")
    ln = sec["label-noise"]
    assert {r["rate"] for r in ln["rows"]} == {0.0, 0.4}
    assert ln["corruption"]["0.4"]["train"]["dropped"] > 0 and ln["corruption"]["0"]["train"]["replaced"] == 0
    hd = sec["head"]
    assert [r["hidden"] for r in hd["rows"]] == [[], [8]]
    # the linear head is the main comparison's model: reused, not retrained
    main_aware = result.results["runs"]["main/unified-aware"]
    assert hd["rows"][0]["reused_from"] == "main/unified-aware" and hd["rows"][1]["reused_from"] is None
    assert hd["rows"][0]["r_at_p"] == main_aware["evals"]["test"]["global"]["r_at_p"]
    assert {r["rate"]: r["reused_from"] for r in sec["label-noise"]["rows"]} == {0.0: "main/unified-agnostic",
                                                                                 0.4: None}
    # head 16 -> L vs 16 -> 8 -> L, L the outputs: every node of the simulated store's tree (types, groups,
    # departments)
    from q2pt.data import load_dataset

    n_out = len({" > ".join(t.split(" > ")[:k]) for ts in load_dataset(None, preset="tiny").train["product_types"]
                 for t in ts for k in range(1, t.count(" > ") + 2)})
    assert hd["rows"][1]["parameters"] - hd["rows"][0]["parameters"] == (16 * 8 + 8 + 9 * n_out) - 17 * n_out
    lc = sec["locale-conflicts"]
    assert lc["n_queries"] > 0 and len(lc["rows"]) == 9
    for s in (ds["rows"], cs["rows"], pt["rows"], ln["rows"], hd["rows"]):
        for r in s:
            if r["r_at_p"] is not None:
                assert 0 <= r["r_at_p"] <= 1
                if r.get("r_at_p_ci") and r["r_at_p_ci"][0] is not None:
                    assert r["r_at_p_ci"][0] - 1e-9 <= r["r_at_p"] <= r["r_at_p_ci"][1] + 1e-9
    for r in lc["rows"]:
        assert r["n"] == lc["n_queries"] and 0 <= r["accuracy"] <= 1


def test_cold_start_excludes_the_store(experiment):
    _, result = experiment
    runs = result.results["runs"]
    rec = runs["cold-start/se/unified-agnostic"]
    se_train = result.results["data"]["train_sizes"]["se"]
    total = sum(result.results["data"]["train_sizes"].values())
    assert rec["n_train"] == total - se_train
    assert set(rec["evals"]["new-store"]["locales"]) == {"se"}


def test_resume_skips_cached_runs_and_refuses_other_data(experiment, monkeypatch):
    from q2pt.experiments import ExperimentRequest, run_experiment
    from q2pt.models import Q2PTModel

    req, result = experiment

    def boom(*a, **k):
        raise AssertionError("a cached run was retrained")

    monkeypatch.setattr(Q2PTModel, "fit", boom)
    again = run_experiment(ExperimentRequest(out=req.out, preset="tiny", encoder="ngram", studies=["head"],
                                             overrides=FAST, hf_model=req.hf_model, progress=False))
    assert again.results["runs"]["head/linear/unified-aware"]["finished"] == \
        result.results["runs"]["head/linear/unified-aware"]["finished"]
    # nor a run whose model is asked for and was not kept (experiment.keep_models)
    with pytest.raises(AssertionError, match="retrained"):
        run_experiment(ExperimentRequest(out=req.out, preset="tiny", encoder="ngram", overrides=[
            *FAST, "--experiment.keep_models", "true"], hf_model=req.hf_model, progress=False))
    # a changed training config is not a cache hit
    changed = [*FAST, "--train.max_epochs", "2"]
    with pytest.raises(AssertionError, match="retrained"):
        run_experiment(ExperimentRequest(out=req.out, preset="tiny", encoder="ngram", studies=["head"],
                                         overrides=changed, progress=False))
    # so is a taxonomy file, or an edit of it: it shapes the tree a model learns (the data fingerprint does not see it)
    taxonomy = Path(req.out).parent / "taxonomy.txt"
    taxonomy.write_text("clothing > tops > t_shirt\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="retrained"):
        run_experiment(ExperimentRequest(out=req.out, preset="tiny", encoder="ngram", studies=["head"],
                                         overrides=[*FAST, "--data.taxonomy", str(taxonomy)], progress=False))
    from q2pt.experiments.runner import _model_shaping_data

    first = _model_shaping_data({"taxonomy": str(taxonomy), "label_separator": " > "})
    taxonomy.write_text("clothing > tops > shirt\n", encoding="utf-8")
    assert _model_shaping_data({"taxonomy": str(taxonomy)}) != first and "label_separator" not in first
    assert _model_shaping_data({"label_separator": "/"}) == {"label_separator": "/"}
    assert _model_shaping_data({"locale_languages": {"uk": ["en"]}}) == {"locale_languages": {"uk": ["en"]}}
    # other data in the same folder is refused
    with pytest.raises(ConfigError, match="other data"):
        run_experiment(ExperimentRequest(out=req.out, preset="tiny", seed=1, encoder="ngram", studies=["head"],
                                         overrides=FAST, progress=False))


def test_hf_model_without_the_pretraining_study_is_said_unused(tmp_path, caplog):
    from q2pt.errors import ConfigError
    from q2pt.experiments import ExperimentRequest, run_experiment

    with caplog.at_level("WARNING", logger="q2pt"), pytest.raises(ConfigError, match="nothing to run"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", preset="tiny", hf_model="some/model", progress=False,
                                         overrides=["--experiment.variants", "[]", "--experiment.baselines", "[]"]))
    assert "--hf-model is the Hugging Face encoder of the pretraining study" in caplog.text
    assert "--encoder hf:some/model" in caplog.text


def test_pretraining_without_hf_model_is_skipped_with_reason(experiment):
    from q2pt.experiments import ExperimentRequest, run_experiment

    req, _ = experiment
    again = run_experiment(ExperimentRequest(out=req.out, preset="tiny", encoder="ngram", studies=["pretraining"],
                                             overrides=FAST, progress=False))
    sec = again.results["sections"]["pretraining"]
    assert [r["encoder"] for r in sec["rows"]] == ["ngram"]  # cached: not retrained
    assert sec["skipped"] and "--hf-model" in sec["skipped"][0]["reason"]
    assert "Skipped `hf`" in again.report_md.read_text(encoding="utf-8")


def test_cli_on_user_data(tmp_path, capsys):
    """``--data DIR``: the report names the user's data and fingerprint (not SIMULATED), and
    the locale-conflict queries are found from the labels (same query, disjoint types)."""
    from q2pt.cli import main
    from q2pt.data import load_dataset

    frames = _frames(12)
    extra = {"train": [("chips", "de", ["fries"]), ("potato crisps", "us", ["crisps"]), ("fries", "de", ["fries"])],
             "valid": [("crisps bag", "us", ["crisps"])], "test": [("Chips", "us", ["crisps"])]}
    data = tmp_path / "data"
    data.mkdir()
    for split, df in frames.items():
        add = pd.DataFrame([{"query": q, "locale": loc, "product_types": p, "weight": 1.0} for q, loc, p in extra[split]])
        pd.concat([df, add], ignore_index=True).to_json(data / f"{split}.jsonl", orient="records", lines=True)
    out = tmp_path / "report"
    code = main(["experiment", "--data", str(data), "--encoder", "ngram", "--out", str(out), "--study", "locale-conflicts",
                 "--no-progress", "-q", "--experiment.budget", "tiny", "--experiment.bootstrap", "20",
                 "--experiment.variants", '["non-unified", "unified-agnostic"]',
                 "--experiment.baselines", '["tfidf-unified"]', "--train.threads", "1",
                 "--model.encoder_options.dim", "8", "--model.encoder_options.buckets", "1024"])
    stdout = capsys.readouterr().out
    assert code == 0
    fp = load_dataset(data).fingerprint
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "**Data: user data**" in md and fp in md and "SIMULATED" not in md
    assert f"--data {data}" in md
    assert "non-unified" in stdout and "TF-IDF + LR (unified)" in stdout and "global" in stdout
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    lc = res["sections"]["locale-conflicts"]
    assert lc["n_queries"] == 1 and lc["truth"].startswith("one of the query's product types")
    assert {r["n"] for r in lc["rows"]} == {1}
    assert res["data"]["simulated"] is False and res["sections"]["main"]["settings"]["budget"] == "tiny"
    # each variant's training config, for q2pt train --config: what the experiment trained
    assert sorted(p.name for p in (out / "configs").iterdir()) == ["non-unified.yaml", "unified-agnostic.yaml"]
    assert "configs/VARIANT.yaml" in md
    import yaml

    from q2pt.config import Config, resolve_config

    written = yaml.safe_load((out / "configs" / "unified-agnostic.yaml").read_text(encoding="utf-8"))
    assert "path" not in written["data"] and "threads" not in written["train"]
    trained = res["sections"]["main"]["training_config"]["unified-agnostic"]
    assert written["train"]["max_epochs"] == trained["train"]["max_epochs"] == 3  # the tiny budget's
    assert written["model"]["encoder_options"] == {"dim": 8, "buckets": 1024}
    again = resolve_config(out / "configs" / "unified-agnostic.yaml")
    assert again.recipe() == written and again.model.variant == "unified-agnostic"
    assert Config.from_dict(trained).recipe()["train"] == written["train"]
    capsys.readouterr()
    assert main(["train", "--config", str(out / "configs" / "non-unified.yaml"), "--data", str(data), "--out",
                 str(tmp_path / "m"), "--print-config"]) == 0
    assert "non-unified" in capsys.readouterr().out


def test_a_train_config_file_with_an_experiment_section_points_to_the_experiments_configs(tmp_path, capsys):
    from q2pt.cli import main

    cfg = tmp_path / "exp.yaml"
    cfg.write_text("model:\n  encoder: ngram\nexperiment:\n  bootstrap: 20\n", encoding="utf-8")
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "its experiment section is q2pt experiment's" in err and "OUT/configs/VARIANT.yaml" in err


def test_cli_errors_are_clean(tmp_path, capsys):
    from q2pt.cli import main

    code = main(["experiment", "--preset", "tiny", "--out", str(tmp_path / "o"), "--experiment.nope", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "experiment.nope" in err and "Traceback" not in err
    code = main(["experiment", "--preset", "tiny", "--out", str(tmp_path / "o"), "--encoder", "bert"])
    assert code == 2 and "--encoder" in capsys.readouterr().err
    code = main(["experiment", "--preset", "tiny", "--out", str(tmp_path / "o"), "--model.variant", "non-unified"])
    err = capsys.readouterr().err
    assert code == 2 and "model.variant cannot be set" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["experiment", "--preset", "tiny", "--out", str(tmp_path / "o"), "--study", "nope"])


def test_report_durations_carry_one_unit():
    from q2pt.experiments.report import _secs

    assert _secs(None) == "-"
    assert _secs(383.44) == "383.4 s"
    assert _secs(5082.0) == "84.7 min"  # not "84.7 min s" (a unit in the text after the value)


def test_every_run_has_pooled_and_deployed_figures(experiment):
    """Each evaluation keeps the pooled R@P under its old key and adds the as-deployed figures;
    baselines are judged by thresholds calibrated on valid, and so are the q2pt variants here: the
    simulated store has a tree, so they are hierarchical models, whose own thresholds are per
    level (a flat variant's own: tests/test_experiment_folds.py, user data without paths)."""
    _, result = experiment
    res = result.results
    for key, rec in res["runs"].items():
        for name, ev in rec["evals"].items():
            assert "r_at_p" in ev["global"], (key, name)
            dep = ev["deployed"]
            assert set(dep["locales"]) == set(ev["locales"]) and "global" in dep["thresholds"]
            assert dep["global"]["n_queries"] == ev["global"]["n_queries"]
            if dep["global"]["recall"] is not None:
                assert 0 <= dep["global"]["recall"] <= 1
            # a locale's own threshold needs the positives training's rule asks of this kind of model
            floors = {int(m) for m in re.findall(r"positives < (\d+)", " ".join(dep["threshold_details"].values()))}
            unified = BASELINES[rec["name"]][1] if rec["kind"] == "baseline" else rec["name"] != "non-unified"
            expected = locale_min_positives(None, unified)
            assert floors == {expected} if unified else floors <= {expected}, (key, floors)  # tiny: < 200 each
            if rec["kind"] == "baseline":
                assert dep["threshold_source"] == "calibrated on valid"
            elif not rec.get("reused_from"):
                assert dep["threshold_source"].startswith("calibrated on valid: a hierarchical model"), key
    # cold start: the new store's rows use the global threshold, or the nearest store's when given its id
    cs = res["sections"]["cold-start"]
    evs = res["runs"]["cold-start/se/unified-aware"]["evals"]
    thr = evs["nearest-id"]["deployed"]["thresholds"]
    assert evs["nearest-id"]["deployed"]["locales"]["se"]["threshold"] == thr.get(cs["nearest"], thr["global"])
    assert evs["new-store"]["deployed"]["locales"]["se"]["threshold"] == evs["new-store"]["deployed"]["thresholds"]["global"]
    md = result.report_md.read_text(encoding="utf-8")
    assert "global R@P80 (pooled)" in md and "global recall as deployed (precision reached)" in md
    assert "global (as deployed)" in result.headline()


def test_per_type_diagnostics_of_the_main_comparison(experiment):
    """Every main-comparison run carries per-type precision / recall / support as deployed, and
    the report lists the types that fail most for the default model."""
    _, result = experiment
    res = result.results
    test = None
    for key, rec in res["runs"].items():
        if not key.startswith("main/"):
            continue
        types = rec["evals"]["test"]["deployed"]["types"]
        dep = rec["evals"]["test"]["deployed"]["global"]
        tp = sum(t["true_positives"] for t in types["types"])
        predicted = sum(t["predicted"] for t in types["types"])
        assert predicted == dep["n_predicted"] and tp == dep["n_true_positives"], key  # the same operating point
        test = test or rec
    assert test is not None
    md = result.report_md.read_text(encoding="utf-8")
    assert "Product types that fail most: " in md and "| product type | support | predicted |" in md


def test_experiment_on_category_paths_reports_every_level(tmp_path, capsys):
    """Labels that are paths: the q2pt variants learn the tree, are judged on the data's own
    types like the baselines, and the report adds their figures per level and coverage."""
    from q2pt.cli import main

    parents = {"shoes": "fashion", "boots": "fashion", "tv": "electronics", "phone": "electronics"}
    data = tmp_path / "data"
    data.mkdir()
    for split, df in _frames(12).items():
        df = df.copy()
        df["product_types"] = df["product_types"].map(lambda ts: [f"{parents.get(t, 'misc')} > {t}" for t in ts])
        df.to_json(data / f"{split}.jsonl", orient="records", lines=True)
    out = tmp_path / "report"
    code = main(["experiment", "--data", str(data), "--encoder", "ngram", "--out", str(out), "--no-progress", "-q",
                 "--experiment.budget", "tiny", "--experiment.bootstrap", "20",
                 "--experiment.variants", '["unified-aware"]', "--experiment.baselines", '["tfidf-unified"]',
                 "--train.threads", "1", "--model.encoder_options.dim", "8", "--model.encoder_options.buckets", "1024"])
    capsys.readouterr()
    assert code == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    ev = res["runs"]["main/unified-aware"]["evals"]["test"]
    assert set(ev["tree"]["levels"]) == {"1", "2"} and ev["tree"]["hierarchical"]["global"]["coverage"] is not None
    assert "threshold_source" in ev["deployed"] and "hierarchical" in ev["deployed"]["threshold_source"]
    # judged on the data's own (level-2) types, as the baseline is
    tfidf = res["runs"]["main/tfidf-unified"]["evals"]["test"]
    assert ev["global"]["n_positives"] == tfidf["global"]["n_positives"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Per level of the product-type tree" in md and "coverage" in md
    assert ev["tree"]["leaf"]["global"]["r_at_p"] is not None and "leaf R@P80" in md
    assert "Per locale (R@P80 per level and at the leaves" in md and ": L2 |" in md
