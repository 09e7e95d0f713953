"""``q2pt experiment --folds K``: the main comparison on each fold, then the aggregate.

Two tiny folds of a small two-store dataset (written with ``q2pt.data.io.write_dataset``),
the n-gram encoder, one epoch, two variants and the unified TF-IDF baseline: seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from q2pt.errors import ConfigError, DataError
from support import need

pytestmark = pytest.mark.integration

need("torch")

FAST = [
    "--experiment.budget", "tiny", "--experiment.bootstrap", "20",
    "--experiment.variants", '["non-unified", "unified-aware"]',
    "--experiment.baselines", '["tfidf-unified"]', "--experiment.tfidf", '{"max_features": 2000}',
    "--train.max_epochs", "1", "--train.threads", "1",
    "--model.encoder_options.dim", "8", "--model.encoder_options.buckets", "1024",
]


def _rows(n_per: int = 30) -> pd.DataFrame:
    words = {"shoe": ["shoes", "sneakers", "boots"], "tv": ["tv", "television", "oled"],
             "sock": ["socks", "wool socks", "ankle socks"]}
    rng = np.random.default_rng(0)
    rows = []
    for loc in ("us", "de"):
        for i in range(n_per):
            for lab, ws in words.items():
                q = f"{ws[i % 3]} {['red', 'blue', 'big', 'cheap', 'new'][int(rng.integers(5))]} {i}"
                rows.append({"query": q, "locale": loc, "product_types": [lab], "weight": 1.0})
    return pd.DataFrame(rows)


def _write_folds(root: Path, k: int = 2) -> Path:
    from q2pt.data.io import write_dataset

    df = _rows()
    for i in range(k):
        order = np.random.default_rng(i).permutation(len(df))
        n = len(df)
        parts = {"train": df.iloc[order[: n // 2]], "valid": df.iloc[order[n // 2 : 3 * n // 4]],
                 "test": df.iloc[order[3 * n // 4 :]]}
        write_dataset({s: p.reset_index(drop=True) for s, p in parts.items()}, root / f"fold-{i}", "jsonl")
    return root


@pytest.fixture(scope="module")
def folds_run(tmp_path_factory):
    from q2pt.cli import main

    base = tmp_path_factory.mktemp("folds")
    data = _write_folds(base / "data")
    out = base / "cv"
    code = main(["experiment", "--data", str(data), "--folds", "2", "--encoder", "ngram", "--out", str(out),
                 "--no-progress", "-q", *FAST])
    assert code == 0
    return data, out


def test_each_fold_is_a_complete_experiment(folds_run):
    data, out = folds_run
    for i in range(2):
        fold = out / f"fold-{i}"
        for name in ("results.json", "report.md", "report.html"):
            assert (fold / name).is_file()
        res = json.loads((fold / "results.json").read_text(encoding="utf-8"))
        assert res["data"]["source"] == str(data / f"fold-{i}")
        assert len(res["sections"]["main"]["runs"]) == 3
        assert f"--data {data / f'fold-{i}'}" in res["sections"]["main"]["command"]
        for key in res["sections"]["main"]["runs"]:
            rec = res["runs"][key]
            dep = rec["evals"]["test"]["deployed"]
            assert rec["evals"]["test"]["global"]["n_queries"] == dep["global"]["n_queries"]
            assert set(dep["locales"]) == {"us", "de"} and "global" in dep["thresholds"]
            g = dep["global"]
            if g["recall"] is not None:
                assert 0 <= g["recall"] <= 1 and g["recall_ci"][0] <= g["recall"] <= g["recall_ci"][1]
            # q2pt variants are judged by their own stored thresholds, baselines calibrated on valid
            assert dep["threshold_source"] == ("model" if rec["kind"] == "variant" else "calibrated on valid")


def test_the_folds_training_configs_are_written_once_more_at_the_top(folds_run):
    _, out = folds_run
    names = sorted(p.name for p in (out / "configs").iterdir())
    assert names and all((out / "fold-1" / "configs" / n).read_bytes() == (out / "configs" / n).read_bytes()
                         for n in names)


def test_aggregate_results_and_report(folds_run):
    data, out = folds_run
    agg = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert agg["kind"] == "folds" and agg["k"] == 2 and agg["data_dir"] == str(data)
    assert [f["name"] for f in agg["folds"]] == ["fold-0", "fold-1"]
    assert list(agg["models"]) == ["non-unified", "unified-aware", "tfidf-unified"]
    folds = [json.loads((out / f"fold-{i}" / "results.json").read_text(encoding="utf-8")) for i in range(2)]
    for name, m in agg["models"].items():
        evs = [f["runs"][f"main/{name}"]["evals"]["test"] for f in folds]
        pooled = [e["global"]["r_at_p"] for e in evs]
        deployed = [e["deployed"]["global"]["recall"] for e in evs]
        assert m["global_r_at_p"]["values"] == pooled and m["global_deployed_recall"]["values"] == deployed
        for stats, vals in ((m["global_r_at_p"], pooled), (m["global_deployed_recall"], deployed)):
            vals = [v for v in vals if v is not None]
            assert stats["n"] == len(vals)
            if len(vals) == 2:
                assert stats["mean"] == pytest.approx(np.mean(vals))
                assert stats["std"] == pytest.approx(np.std(vals, ddof=1))
                assert stats["min"] == min(vals) and stats["max"] == max(vals)
        loc = m["locales"]["us"]["r_at_p"]
        assert loc["values"] == [e["locales"]["us"]["r_at_p"] for e in evs]
        assert m["train_seconds"]["n"] == 2 and m["train_seconds"]["mean"] > 0
    md = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    for page in (md, html):
        assert "2 folds" in page and "K = 2" in page
        assert str(data / "fold-0") in page and str(data / "fold-1") in page and str(out / "fold-1") in page
        assert "global R@P80 (pooled)" in page and "global recall as deployed (precision reached)" in page
        assert "TF-IDF + LR (unified)" in page and "±" in page
    assert "q2pt experiment --data" in md and "--folds 2" in md
    assert (out / "figures" / "folds_rap_by_locale.png").is_file()
    assert agg["unused_folds"] == [] and "Not every fold is used" not in md


def test_fold_folders_beyond_k_are_named_in_the_report(folds_run, tmp_path):
    from q2pt.experiments import unused_folds
    from q2pt.experiments.report import render_folds_report

    data, out = folds_run
    (tmp_path / "fold-0").mkdir()
    (tmp_path / "fold-1").mkdir()
    (tmp_path / "fold-2").mkdir()
    assert unused_folds(tmp_path, 2) == ["fold-2"] and unused_folds(tmp_path, 3) == []
    agg = json.loads((out / "results.json").read_text(encoding="utf-8"))
    paths = render_folds_report(tmp_path / "report", {**agg, "unused_folds": ["fold-2"]})
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "Not every fold is used" in md and "fold-2" in md and "--folds 3" in md


def test_rerun_resumes_from_the_folds(folds_run, monkeypatch, caplog):
    from q2pt.experiments import ExperimentRequest, run_experiment
    from q2pt.experiments.baselines import TfidfBaseline
    from q2pt.models import Q2PTModel

    data, out = folds_run

    def boom(*a, **k):
        raise AssertionError("a cached run was retrained")

    monkeypatch.setattr(Q2PTModel, "fit", boom)
    monkeypatch.setattr(TfidfBaseline, "fit", boom)
    before = json.loads((out / "results.json").read_text(encoding="utf-8"))
    (out / "fold-2").mkdir()  # an earlier run's third fold: said, left alone
    try:
        with caplog.at_level("WARNING", logger="q2pt"):
            result = run_experiment(ExperimentRequest(out=out, data=data, folds=2, encoder="ngram", overrides=FAST,
                                                      progress=False))
    finally:
        (out / "fold-2").rmdir()
    assert result.results["models"]["non-unified"]["global_r_at_p"] == before["models"]["non-unified"]["global_r_at_p"]
    assert len(result.fold_results) == 2 and "pooled" in result.headline()
    assert "1 fold folder(s) of an earlier run" in caplog.text and "(fold-2)" in caplog.text


def test_missing_fold_folders_are_named(tmp_path):
    from q2pt.experiments import ExperimentRequest, run_experiment

    data = _write_folds(tmp_path / "data", k=2)
    with pytest.raises(DataError, match=r"lacks fold-2, fold-3 .*expected fold-0 \.\.\. fold-3"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", data=data, folds=4, overrides=FAST))
    with pytest.raises(DataError, match="not a directory"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", data=tmp_path / "nope", folds=2, overrides=FAST))
    assert not (tmp_path / "o").exists()


def test_folds_argument_errors(tmp_path, capsys):
    from q2pt.cli import main
    from q2pt.experiments import ExperimentRequest, run_experiment

    data = _write_folds(tmp_path / "data", k=2)
    with pytest.raises(ConfigError, match="--study cannot be combined with --folds"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", data=data, folds=2, studies=["head"]))
    with pytest.raises(ConfigError, match="at least 2"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", data=data, folds=1))
    with pytest.raises(ConfigError, match="needs --data"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", preset="tiny", folds=2))
    # the folds' parent folder without --folds: a hint, not a missing-file error
    with pytest.raises(ConfigError, match="--folds 2"):
        run_experiment(ExperimentRequest(out=tmp_path / "o", data=data, overrides=FAST))
    # an output folder holding a single experiment is not overwritten
    single = tmp_path / "single"
    single.mkdir()
    (single / "results.json").write_text('{"format_version": 1}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a q2pt cross-validation results file"):
        run_experiment(ExperimentRequest(out=single, data=data, folds=2, overrides=FAST))
    code = main(["experiment", "--data", str(tmp_path / "data"), "--folds", "3", "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "fold-2" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_label_depth_is_recorded_and_applied(tmp_path):
    """``data.label_depth`` in the config: the data is loaded at that depth, and the results
    and the report say so."""
    from q2pt.data.io import write_dataset
    from q2pt.experiments import ExperimentRequest, run_experiment

    df = _rows(12)
    sub = {"shoe": ["shoe > sneaker", "shoe > boot"], "tv": ["tv > oled"], "sock": ["sock > wool", "sock > ankle"]}
    df["product_types"] = [[sub[labs[0]][i % len(sub[labs[0]])]] for i, labs in enumerate(df["product_types"])]
    write_dataset({"train": df.iloc[::2], "valid": df.iloc[1::4], "test": df.iloc[3::4]}, tmp_path / "data", "jsonl")
    over = [*FAST, "--experiment.variants", '["unified-aware"]', "--experiment.baselines", "[]"]
    result = run_experiment(ExperimentRequest(out=tmp_path / "o", data=tmp_path / "data", encoder="ngram",
                                              config={"data": {"label_depth": 1}}, overrides=over, progress=False))
    data = result.results["data"]
    assert data["label_depth"] == 1 and data["n_labels"] == 3
    assert result.results["runs"]["main/unified-aware"]["label_depth"] == 1
    assert "label depth 1" in result.report_md.read_text(encoding="utf-8")
    assert "label depth 1" in result.headline()


def test_folds_aggregate_and_report_a_hierarchical_models_levels(tmp_path):
    from q2pt.experiments.evaluation import aggregate_folds
    from q2pt.experiments.report import render_folds_report

    def fold(l1: float, l2: float, leaf: float, coverage: float) -> dict:
        tree = {"levels": {"1": {"global": {"r_at_p": l1}}, "2": {"global": {"r_at_p": l2}}},
                "leaf": {"global": {"r_at_p": leaf}},
                "hierarchical": {"global": {"precision": 0.9, "recall": 0.4, "coverage": coverage}}}
        test = {"global": {"r_at_p": l1}, "locales": {"us": {"r_at_p": l1}}, "tree": tree}
        flat = {"global": {"r_at_p": 0.3}, "locales": {"us": {"r_at_p": 0.3}}}
        return {"sections": {"main": {"runs": ["main/tree", "main/flat"], "train_sizes": {"us": 10}}},
                "runs": {"main/tree": {"name": "tree", "label": "Tree", "evals": {"test": test}},
                         "main/flat": {"name": "flat", "label": "Flat", "evals": {"test": flat}}}}

    agg = aggregate_folds([fold(0.6, 0.2, 0.1, 0.5), fold(0.4, 0.1, 0.05, 0.7)])
    tree = agg["models"]["tree"]["tree"]
    assert tree["levels"]["1"]["mean"] == pytest.approx(0.5) and tree["levels"]["2"]["values"] == [0.2, 0.1]
    assert tree["leaf"]["mean"] == pytest.approx(0.075) and tree["coverage"]["mean"] == pytest.approx(0.6)
    assert "tree" not in agg["models"]["flat"]  # a flat model has no levels
    results = {**agg, "kind": "folds", "k": 2, "folds": [], "precision": 0.8}
    render_folds_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Per level of the product-type tree" in md and "level 2 R@P80" in md and "leaf R@P80" in md
    assert "0.150 ± 0.071" in md  # level 2 of the tree: mean ± sd


def test_a_test_locale_without_training_rows_counts_as_missed_for_non_unified(tmp_path):
    """A store with test rows only (validation warns: unseen_locale): non-unified has no
    network for it, so its pairs are missed (said, and counted in the results), and the
    experiment finishes instead of stopping after training."""
    from q2pt.data.io import write_dataset
    from q2pt.experiments import ExperimentRequest, run_experiment

    df = _rows(12)
    test = df.iloc[3::4].copy()
    cold = test[test["locale"] == "us"].assign(locale="fr", query=lambda f: "fr " + f["query"])
    write_dataset({"train": df.iloc[::2], "valid": df.iloc[1::4], "test": pd.concat([test, cold])},
                  tmp_path / "data", "jsonl")
    result = run_experiment(ExperimentRequest(out=tmp_path / "o", data=tmp_path / "data", encoder="ngram",
                                              overrides=[*FAST, "--experiment.baselines", "[]"], progress=False))
    runs = result.results["runs"]
    main = runs["main/non-unified"]["evals"]["test"]
    assert main["unserved_locale_rows"] == {"fr": len(cold)}
    assert main["locales"]["fr"]["r_at_p"] == 0.0
    assert "unserved_locale_rows" not in runs["main/unified-aware"]["evals"]["test"]  # served agnostically
    assert f"no network for fr ({len(cold)} test rows)" in result.report_md.read_text(encoding="utf-8")
