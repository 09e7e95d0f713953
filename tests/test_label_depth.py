"""data.label_depth: product type paths cut at load time, for training and evaluation."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from q2pt.config import resolve_config
from q2pt.data import from_frames, load_configured, load_dataset
from q2pt.data.io import write_dataset, write_table
from q2pt.data.labels import cut_level_names, truncate_labels, truncate_path
from q2pt.errors import ConfigError
from q2pt.experiments.runner import derive_dataset
from support import need

PATHS = {
    "fashion > shoes > sneakers": {"en_US": "sneakers", "de_DE": "turnschuhe"},
    "fashion > shoes > boots": {"en_US": "boots", "de_DE": "stiefel"},
    "fashion > bags": {"en_US": "handbag", "de_DE": "handtasche"},
    "electronics > tv > oled": {"en_US": "oled tv", "de_DE": "oled fernseher"},
    "home > kitchen > pans": {"en_US": "frying pan", "de_DE": "bratpfanne"},
}


def path_frame(n: int, offset: int) -> pd.DataFrame:
    rows = []
    paths = list(PATHS)
    for i in range(n):
        loc = ("en_US", "de_DE")[i % 2]
        path = paths[(i // 2) % len(paths)]
        labels = [path]
        if i % 7 == 0:  # two paths that share their first level
            labels.append("fashion > shoes > boots" if path != "fashion > shoes > boots" else "fashion > bags")
        rows.append({"query": f"{PATHS[path][loc]} {offset + i}", "locale": loc, "product_types": labels})
    return pd.DataFrame(rows)


def splits() -> dict[str, pd.DataFrame]:
    return {"train": path_frame(80, 0), "valid": path_frame(30, 1000), "test": path_frame(30, 2000)}


@pytest.mark.parametrize(
    "label, depth, expected",
    [
        ("a > b > c", 1, "a"),
        ("a > b > c", 2, "a > b"),
        ("a > b > c", 3, "a > b > c"),
        ("a > b > c", 9, "a > b > c"),  # deeper than the path: unchanged
        ("a", 2, "a"),
        ("a>b>c", 2, "a > b"),  # odd spacing
        ("  a  >b  >   c ", 2, "a > b"),
        ("a > > b", 2, "a > b"),  # empty level dropped
        ("a>b", 5, "a > b"),  # normalised even when not cut
        (">", 1, ">"),  # nothing but separators: kept
    ],
)
def test_truncate_path(label, depth, expected):
    assert truncate_path(label, depth) == expected


def test_truncate_path_other_separators():
    assert truncate_path("a/b/c", 2, "/") == "a/b"
    assert truncate_path("a :: b :: c", 1, " :: ") == "a"
    assert truncate_path("a b c", 2, " ") == "a b"
    with pytest.raises(ValueError):
        truncate_path("a > b", 0)


def test_truncate_labels_merges_duplicates_and_counts_changes():
    df = pd.DataFrame({
        "query": ["q1", "q2", "q3"],
        "locale": ["us", "us", "us"],
        "product_types": [["a > b > c", "a > b > d", "x"], ["a>b"], ["y > z"]],
        "weight": [1.0, 2.0, 1.0],
    })
    out, changed = truncate_labels(df, 2)
    assert out["product_types"].tolist() == [["a > b", "x"], ["a > b"], ["y > z"]]  # duplicates merged
    assert changed == 3  # a>b>c, a>b>d, a>b (spacing)
    assert df["product_types"].tolist()[0] == ["a > b > c", "a > b > d", "x"]  # input untouched
    assert out["weight"].tolist() == [1.0, 2.0, 1.0]
    one, changed1 = truncate_labels(df, 1)
    assert one["product_types"].tolist() == [["a", "x"], ["a"], ["y"]] and changed1 == 4
    same, none = truncate_labels(df, None)
    assert same is df and none == 0


def test_load_dataset_truncates_and_changes_the_fingerprint(tmp_path, caplog):
    folder = write_dataset(splits(), tmp_path / "d", "jsonl")
    full = load_dataset(folder)
    with caplog.at_level("INFO", logger="q2pt.data"):
        cut = load_dataset(folder, label_depth=1)
    assert "labels changed" in caplog.text
    assert cut.labels == ["electronics", "fashion", "home"]
    assert len(full.labels) == len(PATHS)
    assert cut.fingerprint != full.fingerprint
    assert load_dataset(folder, label_depth=2).fingerprint not in (cut.fingerprint, full.fingerprint)
    assert load_dataset(folder, label_depth=3).fingerprint == full.fingerprint  # nothing deeper than 3
    assert all(len(set(labs)) == len(labs) for labs in cut.train["product_types"])
    mem = from_frames(splits(), label_depth=1)
    assert mem.fingerprint == cut.fingerprint
    via_config = load_configured(resolve_config(None, ["--data.label_depth", "1", "--data.path", str(folder)]).data)
    assert via_config.fingerprint == cut.fingerprint
    assert load_configured({"path": str(folder), "label_depth": 2}).labels == load_dataset(folder, label_depth=2).labels
    with pytest.raises(ConfigError, match="label_depth"):
        load_dataset(folder, label_depth=0)


def test_cut_level_names():
    lists = [["a > b > c > d"], ["a>b>e", "a > b > c"], ["a > b"], ["x > y_z  w"]]
    assert cut_level_names(lists, 2) == {"a > b": ["c", "d", "e"]}  # sorted, no repeats; "a > b" adds none
    assert cut_level_names(lists, 1) == {"a": ["b", "c", "d", "e"], "x": ["y z w"]}  # "_" and spaces as words
    assert cut_level_names([["a/b/c"]], 1, "/") == {"a": ["b", "c"]}
    assert cut_level_names(lists, 4) == {}
    with pytest.raises(ValueError):
        cut_level_names(lists, 0)


def test_a_cut_dataset_keeps_the_cut_names_of_its_training_split_alone(tmp_path):
    data = splits()
    data["test"].loc[0, "product_types"] = ["fashion > shoes > slippers"]  # a test-only subtype
    folder = write_dataset(data, tmp_path / "d", "jsonl")
    assert load_dataset(folder).cut_names == {}  # nothing cut
    assert load_dataset(folder, label_depth=1).cut_names == {
        "electronics": ["oled", "tv"], "fashion": ["bags", "boots", "shoes", "sneakers"], "home": ["kitchen", "pans"]}
    assert load_dataset(folder, label_depth=2).cut_names == {
        "electronics > tv": ["oled"], "fashion > shoes": ["boots", "sneakers"], "home > kitchen": ["pans"]}
    two = load_dataset(folder, label_depth=2)
    assert from_frames(data, label_depth=2).cut_names == two.cut_names
    # each training row carries its own
    assert two.train["cut_names"].tolist()[1:5] == [{"fashion > shoes": ["sneakers"]}, {"fashion > shoes": ["boots"]},
                                                    {"fashion > shoes": ["boots"]}, None]  # "fashion > bags": none
    assert "cut_names" not in two.valid.columns and "cut_names" not in load_dataset(folder).train.columns


def test_a_study_trains_with_the_cut_names_of_the_rows_it_keeps():
    data = splits()
    data["train"].loc[1, "product_types"] = ["fashion > shoes > slippers"]  # a German row's subtype alone
    two = from_frames(data, label_depth=2)
    assert two.cut_names["fashion > shoes"] == ["boots", "slippers", "sneakers"]
    english = two.train[two.train["locale"] == "en_US"]
    without_de = derive_dataset(two, {"train": english, "valid": two.valid, "test": two.test}, "without de_DE")
    assert without_de.cut_names == {"electronics > tv": ["oled"], "fashion > shoes": ["boots", "sneakers"],
                                    "home > kitchen": ["pans"]}


def test_config_fields():
    config = resolve_config(None, [])
    assert config.data.label_depth is None and config.data.label_separator == " > "
    config = resolve_config(None, ["--data.label_depth", "2", "--data.label_separator", "/"])
    assert config.data.label_depth == 2 and config.data.label_separator == "/"
    assert config.to_dict()["data"]["label_depth"] == 2
    with pytest.raises(ConfigError, match="label_depth"):
        resolve_config(None, ["--data.label_depth", "0"])
    with pytest.raises(ConfigError, match="label_separator"):
        resolve_config(None, {"data.label_separator": ""})


FAST = [
    "--encoder", "ngram", "--model.encoder_options.dim", "16", "--model.encoder_options.buckets", "1024",
    "--train.batch_size", "32", "--train.max_epochs", "1", "--train.max_steps", "3", "--train.lr", "0.05",
    "--train.threads", "1",
    "--no-progress", "-q",
]


def test_a_model_trained_with_label_depth_records_it_and_evaluates_cut_labels(tmp_path, capsys):
    need("torch")
    from q2pt.cli import main

    folder = write_dataset(splits(), tmp_path / "d", "parquet")
    model = tmp_path / "m"
    code = main(["train", "--data", str(folder), "--variant", "unified-agnostic", "--out", str(model),
                 "--data.label_depth", "1", *FAST])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["config"]["data"]["label_depth"] == 1
    assert manifest["config"]["data"]["label_separator"] == " > "
    assert manifest["labels"] == ["electronics", "fashion", "home"]
    assert manifest["data"]["fingerprint"] == load_dataset(folder, label_depth=1).fingerprint
    assert manifest["data"]["fingerprint"] != load_dataset(folder).fingerprint

    capsys.readouterr()  # the train command's output
    code = main(["evaluate", "--model", str(model), "--data", str(folder), "--json", "-q"])
    assert code == 0
    g = json.loads(capsys.readouterr().out)["global"]
    assert g["n_queries"] == 30 and g["n_missing"] == 0  # test labels cut to depth 1 as in training
    assert g["n_positives"] == sum(len({p.split(" > ")[0] for p in labs}) for labs in splits()["test"]["product_types"])

    labelled = tmp_path / "labelled.jsonl"  # a plain labelled file (no split column) is cut too
    row = {"query": "oled tv 9", "locale": "en_US", "product_types": ["electronics>tv"]}
    write_table(pd.DataFrame([row]), labelled)
    code = main(["evaluate", "--model", str(model), "--data", str(labelled), "--json", "-q"])
    assert code == 0
    g = json.loads(capsys.readouterr().out)["global"]
    assert g["n_positives"] == 1 and g["n_missing"] == 0


def test_cut_names_are_made_at_load_time_never_written_or_read(tmp_path, caplog):
    cut = from_frames(splits(), label_depth=2)
    folder = write_dataset(cut, tmp_path / "d", "parquet")  # a cut dataset saved: its paths as cut, no names
    again = load_dataset(folder)
    assert "cut_names" not in again.train.columns and again.cut_names == {}
    assert again.fingerprint == cut.fingerprint
    given = splits()
    given["train"]["cut_names"] = "a user's column"
    with caplog.at_level("WARNING", logger="q2pt.data"):
        loaded = from_frames(given, label_depth=2)
    assert "'cut_names' of split(s) train ignored" in caplog.text
    assert loaded.cut_names == cut.cut_names
