"""q2pt as a Python library, used as a notebook would: what the CLI checks and records, the
library does too (the saved config, label depth, row checks, an existing model folder)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from q2pt.data.io import write_dataset
from q2pt.errors import ConfigError, DataError
from support import ngram_config, tiny_dataset, with_levels


@pytest.fixture(scope="module")
def path_data(tmp_path_factory):
    """A dataset folder whose product types are paths of three levels."""
    folder = tmp_path_factory.mktemp("paths") / "data"
    write_dataset(with_levels(tiny_dataset(96, 32, 32), 3), folder, "jsonl")
    return folder


@pytest.fixture(scope="module")
def cut_model(path_data, tmp_path_factory):
    """Trained from Python on the folder loaded with its paths cut to one level, from a config
    that names neither the folder nor the depth."""
    from q2pt.data import load_dataset
    from q2pt.models import Q2PTModel

    ds = load_dataset(path_data, label_depth=1)
    out = tmp_path_factory.mktemp("cut") / "model"
    model = Q2PTModel(config=ngram_config("unified-aware", "--train.max_epochs", "3")).fit(
        ds, out_dir=out, progress=False)
    return ds, model, out


def test_a_model_records_how_its_data_was_loaded(cut_model, path_data, capsys):
    from q2pt.cli import main
    from q2pt.data import load_configured
    from q2pt.models import load_model

    ds, model, out = cut_model
    saved = load_model(out)
    assert saved.config.data.label_depth == 1 and saved.config.data.path == str(path_data)
    assert load_configured(saved.config.data).fingerprint == ds.fingerprint  # the data it was trained on
    # the command judges it on the types it learnt (the folder's paths cut as at training)
    assert main(["evaluate", "--model", str(out), "--data", str(path_data), "--json", "-q"]) == 0
    import json

    judged = json.loads(capsys.readouterr().out)
    assert judged["global"]["r_at_p"] == pytest.approx(model.evaluate(ds.test)["global"]["r_at_p"])
    assert judged["data"]["training_overlap"]["checked"] is True


def test_evaluate_cuts_the_labels_as_the_model_was_trained(cut_model, path_data):
    from q2pt.data import load_dataset

    ds, model, _ = cut_model
    raw = load_dataset(path_data).test  # full paths
    assert raw["product_types"].map(lambda ts: " > " in ts[0]).all()
    assert model.evaluate(raw)["global"] == model.evaluate(ds.test)["global"]


def test_a_depth_the_config_contradicts_is_refused(path_data):
    from q2pt.data import load_dataset
    from q2pt.models import Q2PTModel

    ds = load_dataset(path_data, label_depth=1)
    with pytest.raises(ConfigError, match=r"cut with label_depth 1 .*the config's data.label_depth is 2"):
        Q2PTModel(config=ngram_config("unified-aware", "--data.label_depth", "2")).fit(ds, progress=False)


def test_an_existing_model_folder_is_replaced_only_when_asked(cut_model):
    from q2pt.models import Q2PTModel

    ds, _, out = cut_model
    before = (out / "manifest.json").read_bytes()
    cfg = ngram_config("unified-aware", "--train.max_epochs", "1")
    with pytest.raises(ConfigError, match="holds a model already: pass --overwrite \\(overwrite=True\\)"):
        Q2PTModel(config=cfg).fit(ds, out_dir=out, progress=False)
    with pytest.raises(ConfigError, match="holds a finished model: there is no run to resume"):
        Q2PTModel(config=cfg).fit(ds, out_dir=out, resume=True, progress=False)
    assert (out / "manifest.json").read_bytes() == before


def test_prediction_refuses_rows_that_are_not_text(cut_model):
    _, model, _ = cut_model
    bad = [None, "shoes", float("nan"), "", b"shoes", 12, "  "]
    with pytest.raises(DataError) as info:
        model.predict_proba(bad, "de_DE")
    assert [(p.row, p.field) for p in info.value.problems] == [(1, "query"), (3, "query"), (4, "query"),
                                                                (5, "query"), (6, "query"), (7, "query")]
    with pytest.raises(DataError) as info:
        model.predict(["a", "b\udcff"], ["de_DE", None])  # a lone surrogate: not valid UTF-8
    assert [(p.row, p.field) for p in info.value.problems] == [(2, "query"), (2, "locale")]
    with pytest.raises(DataError, match="got 2 queries but 1 locales"):
        model.predict(["a", "b"], ["de_DE"])
    with pytest.raises(DataError, match="locales: expected a locale id"):
        model.predict(["a"], None)
    # what the checks let through predicts as before: a Series, an array, one string
    queries = pd.Series(["rot schuhe", "blau hose"], index=[10, 3])
    expected = model.predict_proba(["rot schuhe", "blau hose"], "de_DE")
    np.testing.assert_array_equal(model.predict_proba(queries, "de_DE"), expected)
    np.testing.assert_array_equal(model.predict_proba(np.array(["rot schuhe", "blau hose"]), "de_DE"), expected)


def test_evaluate_refuses_labels_that_are_not_lists(cut_model):
    ds, model, _ = cut_model
    joined = ds.test.assign(product_types=ds.test["product_types"].map("|".join))  # as pd.read_csv gives them
    with pytest.raises(DataError, match="without a list of product types") as info:
        model.evaluate(joined)
    assert info.value.problems[0].row == 1 and "load_labelled" in info.value.problems[0].message
    with pytest.raises(DataError, match="missing column.*product_types"):
        model.evaluate(ds.test.drop(columns=["product_types"]))
    one_none = ds.test.copy()
    one_none.at[one_none.index[2], "product_types"] = None
    with pytest.raises(DataError) as info:
        model.evaluate(one_none)
    assert [p.row for p in info.value.problems] == [3]


def test_recalibrating_a_tree_from_python_gives_its_thresholds_again(tree_model_dir):
    """The public calibrate_thresholds adds a tree's ancestors to the rows itself."""
    from q2pt.calibration import calibrate_thresholds
    from q2pt.models import load_model
    from support import handmade_dataset

    model = load_model(tree_model_dir[0])
    paths = {"shoes": "fashion > shoes", "headphones": "electronics > audio > headphones",  # as the fixture's
             "phone case": "electronics > phone accessories > phone case", "toy bricks": "toys > bricks",
             "gift card": "gift card"}
    valid = handmade_dataset().valid
    valid = valid.assign(product_types=valid["product_types"].map(lambda ts: [paths[t] for t in ts]))
    thresholds, levels = dict(model.thresholds_), dict(model.level_thresholds_)
    calibrate_thresholds(model, valid)
    assert model.thresholds_ == thresholds and model.level_thresholds_ == levels


def test_the_variant_and_encoder_are_the_configs():
    from q2pt.models import Q2PTModel

    model = Q2PTModel(config=ngram_config("non-unified"))
    model.config.model.variant = "unified-agnostic"
    assert model.variant == "unified-agnostic" and model.encoder == "ngram"


def test_top_k_and_the_fallback_locale_are_read_as_the_cli_reads_them(nonunified_dir):
    from q2pt.models import load_model

    model = load_model(nonunified_dir)
    for bad in (2.5, 0, True, "3"):
        with pytest.raises(ConfigError, match="top_k must be a whole number of at least 1"):
            model.predict(["schuhe"], "de_DE", top_k=bad)
    assert len(model.predict(["schuhe"], "de_DE", top_k=np.int64(1), threshold=0.0)[0]) == 1
    # a fallback locale with spaces and another case is the model's, as a query's locale is
    assert model.predict(["schuhe"], "it_IT", fallback_locale=" DE_de ") == model.predict(["schuhe"], "de_DE")


def test_a_warm_start_from_a_loaded_model_records_its_folder(cut_model):
    from q2pt.models import Q2PTModel, load_model

    ds, model, out = cut_model
    assert model.folder == str(out) and load_model(out).folder == str(out)
    child = Q2PTModel(config=ngram_config("unified-aware", "--train.max_epochs", "1", "--data.label_depth", "1"))
    warm = child.warm_start_from(load_model(out))
    assert warm.manifest_entry()["path"] == str(out)


def test_a_warm_start_is_checked_against_the_depth_the_data_was_loaded_with(path_data, cut_model):
    from q2pt.data import load_dataset
    from q2pt.models import Q2PTModel

    uncut = Q2PTModel(config=ngram_config("unified-aware", "--train.max_epochs", "1")).fit(
        load_dataset(path_data), progress=False)  # paths of three levels, not cut
    child = Q2PTModel(config=ngram_config("unified-aware", "--train.max_epochs", "1"))
    warm = child.warm_start_from(uncut)  # both configs say no depth: accepted here
    with pytest.raises(ConfigError, match="its data.label_depth is None, this training's is 1"):
        child.fit(load_dataset(path_data, label_depth=1), warm_start=warm, progress=False)


def test_streaming_checks_top_k_before_writing(nonunified_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from q2pt.streaming import stream_predict

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"query": ["schuhe"], "locale": ["de_DE"]}), path)
    for bad in (2.5, "3"):
        with pytest.raises(ConfigError, match="top_k must be a whole number"):
            stream_predict(str(nonunified_dir), path, tmp_path / "out", top_k=bad, workers=0, progress=False)
        assert not (tmp_path / "out").exists()


def test_the_weekly_loop_keeps_last_weeks_queries_out_of_this_weeks_judgement(cut_model, path_data, tmp_path,
                                                                              capsys):
    """Queries recur week to week: data split --seen-by keeps the ones a model (and its parents)
    learnt out of the new valid and test; a warm start whose valid holds them says so; evaluate
    counts rows the parents learnt, from the hashes the model folder keeps (the parent folder
    rotated away and the data folder reused)."""
    import json
    import shutil

    from q2pt.cli import main
    from q2pt.data import load_dataset
    from q2pt.data.io import write_table
    from q2pt.data.schema import query_keys

    ds, _, original = cut_model
    parent = tmp_path / "last-week"
    shutil.copytree(original, parent)
    raw = load_dataset(path_data)
    week2 = tmp_path / "week2.jsonl"  # last week's train and test rows again
    rows = pd.concat([raw.train, raw.test])[["query", "locale", "product_types"]]
    write_table(rows, week2)
    assert main(["data", "split", str(week2), "--out", str(tmp_path / "w2"), "--seen-by", str(parent), "--json",
                 "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    learnt = set(query_keys(ds.train)) | set(query_keys(ds.valid))
    assert report["seen_to_train"] == len(set(query_keys(rows)) & learnt) > 0 and report["seen_by"] == [str(parent)]
    new = load_dataset(tmp_path / "w2")
    assert not (set(query_keys(new.valid)) | set(query_keys(new.test))) & learnt
    assert len(new.valid) and len(new.test)
    for extra in (["--folds", "2"], ["--train-per-locale", "5"]):
        assert main(["data", "split", str(week2), "--out", str(tmp_path / "w2x"), "--seen-by", str(parent),
                     *extra]) == 2
        assert "--seen-by" in capsys.readouterr().err
    # a plain split puts some of them in valid: the warm start says its thresholds rest on them
    assert main(["data", "split", str(week2), "--out", str(tmp_path / "plain"), "-q"]) == 0
    child = tmp_path / "child"
    assert main(["train", "--data", str(tmp_path / "plain"), "--init-from", str(parent), "--out", str(child),
                 "--train.max_epochs", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "validation rows were learnt by the model this one is warm-started from" in err
    # the parent folder rotated away: the child's folder still knows what its parent learnt
    shutil.rmtree(parent)
    learnt_rows = tmp_path / "learnt.jsonl"
    write_table(raw.train[["query", "locale", "product_types"]], learnt_rows)
    code = main(["evaluate", "--model", str(child), "--data", str(learnt_rows), "--json"])
    captured = capsys.readouterr()
    overlap = json.loads(captured.out)["data"]["training_overlap"]
    assert code == 0 and overlap["in_ancestors"] > 0 and "ancestors_unchecked" not in overlap
    assert overlap["in_train"] + overlap["in_valid"] + overlap["in_ancestors"] == len(raw.train)
    assert "rows are in the training or validation splits of the model(s) it was warm-started from" in captured.err
    assert main(["data", "split", str(week2), "--out", str(tmp_path / "w3"), "--seen-by", str(child), "-q"]) == 0


def test_seen_by_shares_few_new_queries_between_valid_and_test():
    from q2pt.data.split import split_frame
    from q2pt.seen import key_hashes

    frame = pd.DataFrame({"query": [f"q{i}" for i in range(100)], "locale": "de",
                          "product_types": [["a"]] * 100})
    seen = key_hashes(frame.iloc[:97])  # 3 new queries where valid and test would take 10 each
    splits, report = split_frame(frame, valid=0.1, test=0.1, seed=0, seen=seen)
    assert (len(splits["valid"]), len(splits["test"]), len(splits["train"])) == (2, 1, 97)
    assert report["seen_to_train"] == 97 and report["seen_per_locale"] == {"de": 97}
    assert not set(splits["valid"]["query"]) & set(frame["query"].iloc[:97])


def test_queries_learnt_are_found_in_the_hashes_of_older_model_folders():
    """Model folders written before invisible characters were normalised away hold hashes of the
    old form: a learnt query with a zero-width space is found in either."""
    from q2pt.data.schema import query_keys
    from q2pt.seen import SeenQueries, key_hashes, seen_in

    rows = pd.DataFrame({"query": ["k7 매트\u200b", "plain", "new one"], "locale": "ko", "product_types": [["a"]] * 3})
    old = pd.util.hash_pandas_object(query_keys(rows.iloc[:2], keep_invisible=True), index=False).to_numpy("uint64")
    assert old[0] not in key_hashes(rows.iloc[:1])  # the hash changed with the normalisation ...
    assert seen_in(rows, old).tolist() == [True, True, False]  # ... and the old one is still found
    assert seen_in(rows, key_hashes(rows.iloc[:1])).tolist() == [True, False, False]
    seen = SeenQueries(np.sort(old), np.zeros(0, dtype=np.uint64))
    assert seen.lookup(rows)["train"].tolist() == [True, True, False]


def test_a_warm_start_names_likely_renames_only():
    from q2pt.training.warm import _likely_renames

    gone = ["shoes > sneakers", "phones & telecommunications", "garden"]
    new = ["shoes > sneaker", "phones and telecommunications", "kitchen"]
    assert _likely_renames(gone, new) == [("shoes > sneakers", "shoes > sneaker"),
                                          ("phones & telecommunications", "phones and telecommunications")]
    assert _likely_renames(["garden"], ["kitchen", "toys"]) == []  # ordinary churn: no warning


def test_an_experiments_configs_folder_holds_this_runs_variants_only(tmp_path):
    from q2pt.experiments.runner import write_training_configs

    write_training_configs(tmp_path, {"non-unified": ngram_config("non-unified"),
                                      "unified-aware": ngram_config("unified-aware")})
    write_training_configs(tmp_path, {"unified-aware": ngram_config("unified-aware")})  # a rerun, one variant
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == ["unified-aware.yaml"]
