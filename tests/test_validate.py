"""Validation: every problem kind, with its file, row and field."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from q2pt.data import from_frames, load_dataset
from q2pt.data.labels import has_empty_level
from q2pt.data.validate import validate_dataset, validate_frames
from q2pt.errors import DataError

HEADER = "query,locale,product_types"
GOOD_VALID = HEADER + "\nblue hat,en_US,hat\n"
GOOD_TEST = HEADER + "\ngreen hat,en_US,hat\n"


def make(tmp_path: Path, train: str | bytes, valid: str | bytes = GOOD_VALID, test: str | bytes = GOOD_TEST,
         ext: str = "csv", name: str = "d") -> Path:
    d = tmp_path / name
    d.mkdir()
    for split, content in (("train", train), ("valid", valid), ("test", test)):
        e = ext if split == "train" else "csv"
        data = content.encode("utf-8") if isinstance(content, str) else content
        (d / f"{split}.{e}").write_bytes(data)
    return d


def only(report, kind):
    found = [p for p in report.problems if p.kind == kind]
    assert found, f"no {kind} in {[str(p) for p in report.problems]}"
    return found


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_clean_dataset_has_no_problems(tmp_path):
    d = make(tmp_path, HEADER + "\nred shoes,en_US,shoes|hat\n")
    r = validate_dataset(d)
    assert r.ok and r.problems == []
    assert r.summary["rows"] == {"train": 1, "valid": 1, "test": 1}
    assert "OK" in r.format()


def test_missing_column(tmp_path):
    d = make(tmp_path, "query,locale\nred shoes,en_US\n")
    (p,) = only(validate_dataset(d), "missing_column")
    assert p.file.endswith("train.csv") and p.row is None and p.field == "product_types"
    assert p.severity == "error"


def test_csv_row_level_problems_have_file_row_field(tmp_path):
    train = "\n".join(
        [
            "query,locale,product_types,weight",
            "red shoes,en_US,shoes,1",  # 1 ok
            "   ,en_US,shoes,1",  # 2 empty query
            "x" * 21 + ",en_US,shoes,1",  # 3 too long (limit 20)
            "lamp,,lamp,1",  # 4 empty locale
            "lamp,en US,lamp,1",  # 5 locale with whitespace
            "lamp,en_US,,1",  # 6 empty labels
            "lamp,en_US,a||b,1",  # 7 empty label inside
            "lamp,en_US,lamp,-2",  # 8 bad weight
            "lamp,en_US,lamp,abc",  # 9 bad weight
            "lamp,en_US,lamp,1,extra",  # 10 malformed (5 fields)
            "lamp2,en_US,lamp|lamp,1",  # 11 duplicate label (warning)
        ]
    ) + "\n"
    r = validate_dataset(make(tmp_path, train), max_query_chars=20)
    where = {(p.kind, p.row, p.field) for p in r.problems if p.file.endswith("train.csv")}
    assert ("empty_query", 2, "query") in where
    assert ("query_too_long", 3, "query") in where
    assert ("bad_locale", 4, "locale") in where
    assert ("bad_locale", 5, "locale") in where
    assert ("empty_labels", 6, "product_types") in where
    assert ("bad_label", 7, "product_types") in where
    assert ("bad_weight", 8, "weight") in where
    assert ("bad_weight", 9, "weight") in where
    assert ("malformed_row", 10, None) in where
    assert ("duplicate_label", 11, "product_types") in where
    assert not any(row == 1 for _, row, _ in where)
    assert not r.ok
    dup = only(r, "duplicate_label")[0]
    assert dup.severity == "warning"


def test_non_utf8_bytes_are_found_by_row_and_field(tmp_path):
    train = b"query,locale,product_types\nred shoes,en_US,shoes\nbad \xff\xfe query,en_US,shoes\nok,en_US,sh\xe9\n"
    test_ = (b'{"query": "fine", "locale": "en_US", "product_types": ["hat"]}\n'
             b'{"query": "caf\xe9", "locale": "en_US", "product_types": ["hat"]}\n')
    d = make(tmp_path, train)
    (d / "test.csv").unlink()
    (d / "test.jsonl").write_bytes(test_)
    r = validate_dataset(d)
    found = {(Path(p.file).name, p.row, p.field) for p in only(r, "non_utf8")}
    assert found == {("train.csv", 2, "query"), ("train.csv", 3, "product_types"), ("test.jsonl", 2, "query")}


def test_non_utf8_in_tsv(tmp_path):
    d = make(tmp_path, b"query\tlocale\tproduct_types\nok\ten_US\that\nx\ten_US\tha\x80t\n", ext="tsv")
    (p,) = only(validate_dataset(d), "non_utf8")
    assert p.file.endswith("train.tsv") and p.row == 2 and p.field == "product_types"


def test_jsonl_problems_use_line_numbers(tmp_path):
    train = jsonl(
        {"query": "red shoes", "locale": "en_US", "product_types": ["shoes"]},  # 1
        {"locale": "en_US", "product_types": ["shoes"]},  # 2 missing query
        {"query": 123, "locale": "en_US", "product_types": ["shoes"]},  # 3 wrong type
        {"query": "lamp", "locale": "en_US", "product_types": "lamp"},  # 4 string, not list
        {"query": "lamp", "locale": "en_US", "product_types": []},  # 5 empty list
        {"query": "lamp", "locale": "en_US", "product_types": ["a", 3]},  # 6 non-string label
        {"query": "lamp", "locale": "en_US", "product_types": ["a|b"]},  # 7 reserved separator
        {"query": "lamp", "locale": "en_US", "product_types": ["a"], "weight": True},  # 8 bool weight
        "{not json",  # 9
        "",  # 10 blank line
        "[1, 2]",  # 11 not an object
        {"query": "lamp", "locale": None, "product_types": ["a"]},  # 12 null locale
        '{"query": "lamp", "locale": "en_US", "product_types": ["a"], "query": "desk lamp"}',  # 13 key twice
    )
    r = validate_dataset(make(tmp_path, train, ext="jsonl"))
    where = {(p.kind, p.row, p.field) for p in r.problems if p.file.endswith("train.jsonl")}
    assert ("missing_value", 2, "query") in where
    assert ("wrong_type", 3, "query") in where
    assert ("wrong_type", 4, "product_types") in where
    assert ("empty_labels", 5, "product_types") in where
    assert ("bad_label", 6, "product_types") in where
    assert ("bad_label", 7, "product_types") in where
    assert ("bad_weight", 8, "weight") in where
    assert ("malformed_row", 9, None) in where
    assert ("blank_line", 10, None) in where
    assert ("malformed_row", 11, None) in where
    assert ("missing_value", 12, "locale") in where
    twice = [p for p in r.problems if p.row == 13]
    assert [(p.kind, p.field) for p in twice] == [("malformed_row", None)]
    assert "'query'" in twice[0].message and "twice" in twice[0].message


def test_parquet_problems(tmp_path):
    df = pd.DataFrame({"query": ["ok", ""], "locale": ["en_US", "en_US"], "product_types": [["a"], []],
                       "weight": [1.0, None]})
    d = tmp_path / "d"
    d.mkdir()
    df.to_parquet(d / "train.parquet")
    (d / "valid.csv").write_text(GOOD_VALID, encoding="utf-8")
    (d / "test.csv").write_text(GOOD_TEST, encoding="utf-8")
    where = {(p.kind, p.row, p.field, p.severity) for p in validate_dataset(d).problems}
    assert {("empty_query", 2, "query", "error"), ("empty_labels", 2, "product_types", "error"),
            ("missing_weight", 2, "weight", "warning")} <= where  # a null weight: the default 1, counted
    assert not any(kind == "bad_weight" for kind, *_ in where)


def test_a_weight_in_some_rows_only_leaves_the_others_at_the_default(tmp_path):
    train = jsonl(
        {"query": "red shoes", "locale": "en_US", "product_types": ["shoes"], "weight": 2.5},
        {"query": "lamp", "locale": "en_US", "product_types": ["lamp"]},
        {"query": "hat", "locale": "en_US", "product_types": ["hat"], "weight": None},
        {"query": "cap", "locale": "en_US", "product_types": ["hat"], "weight": -1},
    )
    r = validate_dataset(make(tmp_path, train, ext="jsonl"))
    train_problems = [p for p in r.problems if p.file.endswith("train.jsonl")]
    assert {(p.kind, p.row, p.severity) for p in train_problems} == {
        ("missing_weight", 2, "warning"), ("missing_weight", 3, "warning"), ("bad_weight", 4, "error")}
    csv = HEADER + ",weight\nred shoes,en_US,shoes,2\nlamp,en_US,lamp,\nhat,en_US,hat, \n"
    r = validate_dataset(make(tmp_path, csv, name="c"))
    assert {(p.kind, p.row) for p in r.problems if p.file.endswith("train.csv")} == {
        ("missing_weight", 2), ("missing_weight", 3)}
    assert r.ok
    # a CSV cell spelled as pandas and R write "no value" is absent too; other text is not a weight
    csv = HEADER + ",weight\nred shoes,en_US,shoes,2\nlamp,en_US,lamp,NA\nhat,en_US,hat,nan\ncap,en_US,hat,lots\n"
    r = validate_dataset(make(tmp_path, csv, name="na"))
    assert {(p.kind, p.row) for p in r.problems if p.file.endswith("train.csv")} == {
        ("missing_weight", 2), ("missing_weight", 3), ("bad_weight", 4)}


def test_a_split_column_in_a_directorys_files_may_leave_rows_without_a_value(tmp_path):
    # the file names the split: a row without a value is in it, a row naming another split is an error
    train = HEADER + ",split\nred shoes,en_US,shoes,train\nlamp,en_US,lamp,\nhat,en_US,hat,valid\n"
    r = validate_dataset(make(tmp_path, train))
    assert {(p.kind, p.row) for p in r.problems if p.kind == "bad_split"} == {("bad_split", 3)}
    ok = HEADER + ",split\nred shoes,en_US,shoes,train\nlamp,en_US,lamp,\nhat,en_US,hat,\n"
    r = validate_dataset(make(tmp_path, ok, name="ok"))
    assert not [p for p in r.problems if p.kind == "bad_split"] and r.summary["rows"]["train"] == 3


def test_leakage_is_an_error_with_both_rows(tmp_path):
    train = HEADER + "\nred shoes,en_US,shoes\nRed  SHOES,de_DE,shoes\nhat,en_US,hat\n"
    valid = HEADER + "\nblue hat,en_US,hat\nRED shoes ,en_US,shoes\n"
    test = HEADER + "\nred shoes,de_DE,shoes\nblue  HAT,en_US,hat\nnew,en_US,hat\n"
    r = validate_dataset(make(tmp_path, train, valid, test))
    leaks = {(Path(p.file).name, p.row): p.message for p in only(r, "leakage")}
    assert set(leaks) == {("valid.csv", 2), ("test.csv", 1), ("test.csv", 2)}
    assert "train row 1" in leaks[("valid.csv", 2)]
    assert "train row 2" in leaks[("test.csv", 1)]  # same query, other locale row
    assert "valid row 1" in leaks[("test.csv", 2)]
    assert all(p.severity == "error" for p in only(r, "leakage"))
    with pytest.raises(DataError):
        load_dataset(make(tmp_path, train, valid, test, name="e"))
    # validate=False skips the checks between rows
    assert len(load_dataset(make(tmp_path, train, valid, test, name="f"), validate=False).test) == 3


def test_duplicates_and_conflicts_are_warnings(tmp_path):
    train = HEADER + "\nred shoes,en_US,shoes|hat\nRed Shoes,en_US,hat|shoes\nred shoes,en_US,socks\nred shoes,de_DE,x\n"
    r = validate_dataset(make(tmp_path, train))
    (dup,) = only(r, "duplicate_row")
    (conf,) = only(r, "conflicting_labels")
    assert (dup.row, conf.row) == (2, 3) and "row 1" in dup.message and "row 1" in conf.message
    assert dup.severity == conf.severity == "warning"
    assert r.ok  # warnings only (plus unseen labels)


def test_labels_and_locales_only_in_valid_test_are_counted_warnings(tmp_path):
    train = HEADER + "\nred shoes,en_US,shoes\n"
    valid = HEADER + "\nhat,en_US,hat|shoes\ncap,en_US,hat\n"
    test = HEADER + "\nlampe,de_DE,lamp\n"
    r = validate_dataset(make(tmp_path, train, valid, test))
    unseen = {(Path(p.file).name, p.row): p.message for p in only(r, "unseen_label")}
    assert set(unseen) == {("valid.csv", 1), ("test.csv", 1)}
    assert "'hat' never appears in train: 2 valid row(s)" in unseen[("valid.csv", 1)]
    assert r.summary["unseen_label_pairs"] == {"valid": 2, "test": 1}
    assert r.summary["label_pairs"] == {"valid": 3, "test": 1}
    (loc,) = only(r, "unseen_locale")
    assert loc.file.endswith("test.csv") and loc.field == "locale"
    assert r.ok
    assert "2 of 3 (query, product type) pairs" in r.format()


def test_empty_splits(tmp_path):
    r = validate_dataset(make(tmp_path, HEADER + "\n", valid=HEADER + "\n"))
    kinds = {(Path(p.file).name, p.severity) for p in only(r, "empty_split")}
    assert kinds == {("train.csv", "error"), ("valid.csv", "warning")}


def test_single_file_bad_split_and_blank_lines(tmp_path):
    f = tmp_path / "all.csv"
    f.write_text(
        "split,query,locale,product_types\ntrain,red,en_US,a\n\ntraining,blue,en_US,a\nvalid,x,en_US,a\ntest,y,en_US,a\n",
        encoding="utf-8",
    )
    r = validate_dataset(f)
    (bad,) = only(r, "bad_split")
    assert (bad.row, bad.field) == (3, "split") and "'training'" in bad.message
    (blank,) = only(r, "blank_line")
    assert blank.row == 2 and blank.severity == "warning"
    assert r.summary["rows"] == {"train": 1, "valid": 1, "test": 1}


def test_reports_all_problems_but_caps_the_printed_list(tmp_path):
    train = HEADER + "\n" + "".join(f" ,en_US,a\nq{i},en_US,\n" for i in range(60))
    other = HEADER + "\nblue hat,en_US,a\n"
    r = validate_dataset(make(tmp_path, train, other, other.replace("blue", "green")))
    assert len(r.problems) == 120
    assert r.counts()["error"] == {"empty_query": 60, "empty_labels": 60}
    text = r.format(max_problems=10)
    assert "120 errors" in text and "... and 110 more problems" in text
    assert "1-based data rows" in text
    with pytest.raises(DataError) as err:
        load_dataset(make(tmp_path, train, other, other.replace("blue", "green"), name="e"))
    assert len(err.value.problems) == 120
    assert "and 70 more problems" in str(err.value)


def test_warnings_do_not_block_loading(tmp_path):
    train = HEADER + "\nred shoes,en_US,shoes|shoes\n"
    ds = load_dataset(make(tmp_path, train))
    assert ds.train["product_types"].tolist() == [["shoes"]]  # counted once, and the warning says so
    assert {p.kind for p in ds.warnings} == {"duplicate_label", "unseen_label"}


def test_validate_frames_and_from_frames():
    frames = {
        "train": pd.DataFrame({"query": ["a", "b"], "locale": ["en", "en"], "product_types": [["x"], ["x", "y"]]}),
        "valid": pd.DataFrame({"query": ["a"], "locale": ["en"], "product_types": [["x"]]}),
        "test": pd.DataFrame({"query": ["c"], "locale": ["en"], "product_types": [["x"]], "weight": [0.0]}),
    }
    r = validate_frames(frames, source="mem")
    assert {p.kind for p in r.errors} == {"leakage", "bad_weight"}
    with pytest.raises(DataError, match="invalid dataset mem"):
        from_frames(frames, source="mem")


def test_validation_speed_is_vectorised_enough(tmp_path):
    """20k rows validate in well under the time a per-row Python-heavy approach would need."""
    import time

    n = 20_000
    df = pd.DataFrame({
        "split": ["train"] * (n - 2000) + ["valid"] * 1000 + ["test"] * 1000,
        "query": [f"query number {i}" for i in range(n)],
        "locale": ["en_US", "de_DE"] * (n // 2),
        "product_types": [["a", "b"] if i % 2 else ["a"] for i in range(n)],
    })
    f = tmp_path / "big.parquet"
    df.to_parquet(f)
    t = time.perf_counter()
    r = validate_dataset(f)
    assert r.ok
    assert time.perf_counter() - t < 10.0


def test_a_path_with_an_empty_level_is_read_without_it_and_counted(tmp_path):
    train = jsonl(
        {"query": "pan", "locale": "en_US", "product_types": ["home > kitchen > pans"]},
        {"query": "pot", "locale": "en_US", "product_types": ["home >  > pans"]},
        {"query": "lid", "locale": "en_US", "product_types": [" > lids"]},
        {"query": "cup", "locale": "en_US", "product_types": ["home > kitchen > "]},
    )
    r = validate_dataset(make(tmp_path, train, ext="jsonl"))
    found = {(p.row, p.severity, p.message.split(" reads it as ")[-1]) for p in only(r, "empty_level")}
    assert found == {(2, "warning", "'home > pans'"), (3, "warning", "'lids'"), (4, "warning", "'home > kitchen'")}
    assert r.ok
    assert has_empty_level("a>>b") and not has_empty_level("a > b") and not has_empty_level("plain")


def test_a_labelled_file_without_a_split_column_is_checked_as_rows_to_split(tmp_path):
    f = tmp_path / "week.csv"
    f.write_text(HEADER + "\nred shoes,en_US,shoes\nRed Shoes,en_US,shoes\n,en_US,hat\nlamp,en_US,lamp\n", encoding="utf-8")
    r = validate_dataset(f)
    assert {(p.kind, p.row) for p in r.problems} == {("duplicate_row", 2), ("empty_query", 3)}  # no empty splits
    assert r.summary["rows"] == {"rows to split": 4} and "rows to split" in r.format()
    assert "| product types: " in r.format() and "in train" not in r.format()  # no train split yet
    assert (r.summary["errors"], r.summary["warnings"]) == (1, 1)  # the empty splits are not counted either
    (dup,) = only(r, "duplicate_row")
    assert "data split merges them" in dup.message and "both rows count" not in dup.message
    with pytest.raises(DataError, match="needs a 'split' column"):  # training still needs splits
        load_dataset(f)
