"""q2pt.data.split and `q2pt data split`: leak-free per-locale splits, folds, small stores."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from q2pt.data import normalize_query
from q2pt.data.split import fold_frames, format_report, merge_duplicates, split_file, split_frame, write_splits
from q2pt.data.validate import validate_dataset
from q2pt.errors import ConfigError
from support import run_cli

SIZES = {"us": 60, "de": 30, "pl": 7, "se": 2, "xx": 1}


def frame(sizes=SIZES, dupes=True) -> pd.DataFrame:
    """Hand-made rows: ``sizes[loc]`` distinct queries per locale, plus duplicates that
    differ in case/spacing (one with other product types, one with a larger weight)."""
    rows = []
    for loc, n in sizes.items():
        for i in range(n):
            rows.append({"query": f"item {i} {loc}", "locale": loc, "product_types": [f"t{i % 3}"], "weight": 1.0})
    if dupes:
        rows.append({"query": "ITEM 1  us", "locale": "us", "product_types": ["t1"], "weight": 1.0})  # same labels
        rows.append({"query": " Item 2 US ", "locale": "us", "product_types": ["t9", "t2"], "weight": 3.0})
        rows.append({"query": "item 1 us", "locale": "de", "product_types": ["t1"], "weight": 1.0})  # other locale
    return pd.DataFrame(rows)


def keys(df: pd.DataFrame) -> set[tuple[str, str]]:
    return {(loc, normalize_query(q)) for q, loc in zip(df["query"], df["locale"])}


def test_merge_duplicates_unions_labels_and_counts():
    merged, info = merge_duplicates(frame())
    n_in = sum(SIZES.values()) + 3
    assert info == {"rows_in": n_in, "rows_out": n_in - 2, "duplicates_merged": 2, "groups_merged": 2,
                    "label_conflicts": 1}
    row = merged[(merged["locale"] == "us") & (merged["query"] == "item 2 us")].iloc[0]  # first query text kept
    assert row["product_types"] == ["t2", "t9"] and row["weight"] == 3.0  # union, max weight
    assert len(merged[merged["locale"] == "de"]) == SIZES["de"] + 1  # "item 1 us" in de is its own query


def test_split_is_leak_free_stratified_and_complete():
    splits, report = split_frame(frame(), valid=0.1, test=0.2, seed=3)
    assert report["duplicates_merged"] == 2 and report["weight_merge"] == "max"
    seen: set = set()
    for df in splits.values():
        k = keys(df)
        assert len(k) == len(df)  # no duplicate rows
        assert not (k & seen)  # no (locale, normalized query) in two splits
        seen |= k
    assert seen == keys(frame())  # nothing lost
    loc = report["locales"]
    assert loc["us"] == {"groups": 60, "train": 42, "valid": 6, "test": 12}
    assert loc["de"] == {"groups": 31, "train": 22, "valid": 3, "test": 6}
    assert loc["pl"] == {"groups": 7, "train": 5, "valid": 1, "test": 1}  # small: still in every split
    assert loc["se"] == {"groups": 2, "train": 1, "valid": 0, "test": 1}
    assert loc["xx"] == {"groups": 1, "train": 1, "valid": 0, "test": 0}
    assert report["locales_missing"] == {"valid": ["se", "xx"], "test": ["xx"]}
    assert report["splits"] == {s: len(df) for s, df in splits.items()}
    for split in ("train", "valid", "test"):
        counts = splits[split]["locale"].value_counts().to_dict()
        assert counts == {k: v[split] for k, v in loc.items() if v[split]}


def test_split_is_deterministic_by_seed_and_ignores_row_order():
    a, _ = split_frame(frame(), seed=1)
    b, _ = split_frame(frame().sample(frac=1.0, random_state=7).reset_index(drop=True), seed=1)
    c, _ = split_frame(frame(), seed=2)
    for s in a:
        assert keys(a[s]) == keys(b[s])
    assert keys(a["test"]) != keys(c["test"])


def test_folds_partition_every_locale():
    k = 4
    folds = fold_frames(frame(), k, valid=0.25, seed=0)
    assert len(folds) == k
    all_keys = keys(merge_duplicates(frame())[0])
    tests = [keys(splits["test"]) for splits, _ in folds]
    assert set().union(*tests) == all_keys and sum(map(len, tests)) == len(all_keys)  # each group in one test fold
    for i, (splits, report) in enumerate(folds):
        assert report["fold"] == i and report["folds"] == k
        parts = [keys(splits[s]) for s in ("train", "valid", "test")]
        assert set().union(*parts) == all_keys and sum(map(len, parts)) == len(all_keys)
        us = report["locales"]["us"]
        assert us["test"] == 15 and us["valid"] == round(45 * 0.25) and us["train"] == 45 - us["valid"]
        assert report["locales"]["pl"]["test"] in (1, 2)  # 7 groups in 4 near-equal parts
    # more folds than the largest locale has queries: some fold would test on nothing
    largest = max(len(g) for _, g in merge_duplicates(frame())[0].groupby("locale"))
    assert len(fold_frames(frame(), largest, seed=0)) == largest
    with pytest.raises(ConfigError, match=f"--folds {largest + 1}: the largest locale has {largest} queries, so 1 fold"):
        fold_frames(frame(), largest + 1, seed=0)


def test_train_per_locale_moves_rows_to_test():
    base, _ = split_frame(frame(), seed=0)
    splits, report = split_frame(frame(), seed=0, train_per_locale=5)
    assert keys(splits["valid"]) == keys(base["valid"])  # valid unchanged
    assert keys(splits["train"]) <= keys(base["train"])
    assert keys(splits["test"]) == keys(base["test"]) | (keys(base["train"]) - keys(splits["train"]))
    loc = report["locales"]
    assert loc["us"]["train"] == 5 and loc["us"]["moved_to_test"] == 48 - 5
    assert loc["pl"]["train"] == 5 and loc["pl"]["moved_to_test"] == 0  # had exactly 5
    assert loc["se"]["train"] == 1 and loc["se"]["moved_to_test"] == 0
    assert report["moved_to_test"] == sum(v["moved_to_test"] for v in loc.values())
    assert sum(report["splits"].values()) == sum(base_n for base_n in (len(df) for df in base.values()))
    folds = fold_frames(frame(), 3, seed=0, train_per_locale=4)
    for _splits, rep in folds:
        assert rep["locales"]["us"]["train"] == 4 and rep["moved_to_test"] > 0
        assert sum(rep["splits"].values()) == len(merge_duplicates(frame())[0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f: split_frame(f, valid=0.6, test=0.4), "below 1"),
        (lambda f: split_frame(f, valid=-0.1), "--valid"),
        (lambda f: split_frame(f, test=1.0), "--test"),
        (lambda f: split_frame(f, seed=-1), "--seed"),
        (lambda f: split_frame(f, train_per_locale=0), "--train-per-locale"),
        (lambda f: fold_frames(f, 1), "--folds"),
        (lambda f: fold_frames(f, 3, valid=1.0), "--valid"),
    ],
)
def test_bad_parameters_are_config_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call(frame())


def test_write_splits_and_validate(tmp_path):
    splits, report = split_frame(frame(), seed=0)
    out = write_splits(splits, tmp_path / "d", "csv", report=report)
    assert validate_dataset(out).ok
    assert json.loads((out / "split.json").read_text())["duplicates_merged"] == 2
    with pytest.raises(ConfigError, match="already exists"):
        write_splits(splits, out, "csv")
    write_splits(splits, out, "jsonl", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]


def write_input(tmp_path, df=None, name="rows.jsonl"):
    path = tmp_path / name
    df = frame() if df is None else df
    with open(path, "w", encoding="utf-8") as fh:
        for rec in df.to_dict("records"):
            fh.write(json.dumps(rec) + "\n")
    return path


run = run_cli  # q2pt ARGV through the CLI: (code, out, err), never a traceback


def test_cli_split_writes_a_valid_dataset(tmp_path, capsys):
    src = write_input(tmp_path)
    code, out, err = run(capsys, "data", "split", src, "--out", tmp_path / "d", "--format", "tsv", "--seed", "5")
    assert code == 0, err
    assert "2 duplicate rows" in out and "pl" in out and "wrote" in out
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["split.json", "test.tsv", "train.tsv", "valid.tsv"]
    report = json.loads((tmp_path / "d" / "split.json").read_text())
    assert report["seed"] == 5 and report["valid"] == 0.1 and report["test"] == 0.1
    assert report["duplicates_merged"] == 2 and len(report["source_sha256"]) == 64
    assert report["locales"]["us"]["groups"] == 60
    code, out, _ = run(capsys, "data", "validate", tmp_path / "d", "--json")
    check = json.loads(out)
    assert code == 0 and check["ok"]
    assert not {"leakage", "duplicate_row", "conflicting_labels"} & set(check["counts"]["warning"])
    # --json, and again without --overwrite
    code, out, _ = run(capsys, "data", "split", src, "--out", tmp_path / "j", "--json")
    assert code == 0 and json.loads(out)["rows_out"] == sum(SIZES.values()) + 1
    code, _, err = run(capsys, "data", "split", src, "--out", tmp_path / "d")
    assert code == 2 and err.startswith("q2pt: ") and "--overwrite" in err
    # an empty split asked for is named as asked for, not blamed on the data; -q as every command
    code, out, _ = run(capsys, "data", "split", src, "--out", tmp_path / "nv", "--valid", "0", "-q")
    assert code == 0 and "no valid rows for (--valid 0)" in out


def test_cli_folds_and_train_per_locale(tmp_path, capsys):
    src = write_input(tmp_path)
    code, out, err = run(capsys, "data", "split", src, "--out", tmp_path / "f", "--folds", "3",
                         "--train-per-locale", "10", "--format", "jsonl")
    assert code == 0, err
    assert "fold-2" in out and "moved" in out
    top = json.loads((tmp_path / "f" / "split.json").read_text())
    assert top["folds"] == 3 and top["fold_dirs"] == ["fold-0", "fold-1", "fold-2"]
    tests = set()
    for i in range(3):
        folder = tmp_path / "f" / f"fold-{i}"
        assert validate_dataset(folder).ok
        rep = json.loads((folder / "split.json").read_text())
        assert rep["fold"] == i and rep["locales"]["us"]["train"] == 10
        tests |= {(r["locale"], r["query"]) for r in map(json.loads, (folder / "test.jsonl").read_text().splitlines())}
    assert len(tests) == sum(SIZES.values()) + 1
    code, out, err = run(capsys, "data", "validate", tmp_path / "f")  # the folds' root is no dataset: which is
    assert code == 2 and "it holds cross-validation folds: give one, e.g." in out + err and "fold-0" in out + err


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--folds", "1"], "--folds"),
        (["--folds", "3", "--test", "0.2"], "--test does not apply with --folds"),
        (["--valid", "0.5", "--test", "0.5"], "below 1"),
        (["--valid", "1.5"], "--valid"),
        (["--seed", "-1"], "--seed"),
        (["--train-per-locale", "0"], "--train-per-locale"),
    ],
)
def test_cli_parameter_errors_exit_2(tmp_path, capsys, extra, match):
    src = write_input(tmp_path)
    code, _, err = run(capsys, "data", "split", src, "--out", tmp_path / "o", *extra)
    assert code == 2 and err.startswith("q2pt: ") and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_bad_rows_and_paths_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("query,locale,product_types\nred shoes,us,shoes\n  ,us,shoes\nblue,us,\n", encoding="utf-8")
    code, _, err = run(capsys, "data", "split", bad, "--out", tmp_path / "o")
    assert code == 2 and err.startswith("q2pt: ")
    assert "bad.csv, row 2, field 'query'" in err and "bad.csv, row 3, field 'product_types'" in err
    assert not (tmp_path / "o").exists()
    code, _, err = run(capsys, "data", "split", tmp_path / "missing.jsonl", "--out", tmp_path / "o")
    assert code == 2 and "no such file" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "data", "split", write_input(tmp_path), "--out", blocker / "sub")
    assert code == 2 and "cannot write" in err and "not a directory" in err


def test_split_file_repools_a_dataset(tmp_path):
    splits, _ = split_frame(frame(), seed=0)
    first = write_splits(splits, tmp_path / "d", "parquet")
    report = split_file(first, tmp_path / "again", seed=9)
    assert report["rows_in"] == sum(SIZES.values()) + 1 and report["duplicates_merged"] == 0
    assert "pooled" in report["source_layout"] and len(report["source_files"]) == 3
    assert validate_dataset(tmp_path / "again").ok


def test_no_weight_column_stays_unweighted(tmp_path):
    df = frame().drop(columns=["weight"])
    report = split_file(write_input(tmp_path, df), tmp_path / "o", fmt="jsonl")
    assert report["duplicates_merged"] == 2
    first = json.loads((tmp_path / "o" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"query", "locale", "product_types"}


def test_a_fold_without_train_rows_is_refused(tmp_path):
    one = pd.DataFrame([{"query": "a", "locale": "us", "product_types": ["t"]}])
    with pytest.raises(ConfigError, match="the largest locale has 1 queries, so 1 fold"):  # and nothing written
        split_file(write_input(tmp_path, one), tmp_path / "o", folds=2)
    assert not (tmp_path / "o").exists()


def test_a_split_column_in_some_rows_is_ignored_not_an_error_in_the_others(tmp_path):
    df = frame(dupes=False).drop(columns=["weight"])
    path = tmp_path / "rows.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, rec in enumerate(df.to_dict("records")):
            fh.write(json.dumps({**rec, "split": "valid"} if i == 0 else rec) + "\n")
            if i == 1:
                fh.write(json.dumps({**rec, "query": "odd one", "split": "nonsense"}) + "\n")
    report = split_file(path, tmp_path / "o", seed=0)
    assert report["rows_in"] == len(df) + 1
    assert "given in 2 of 101 rows" in report["source_layout"] and "ignored" in report["source_layout"]
    assert validate_dataset(tmp_path / "o").ok
    # a directory whose train file has the column in some rows only: pooled and split again too
    d = tmp_path / "dir"
    d.mkdir()
    for name, part in (("train", df.iloc[:80]), ("valid", df.iloc[80:90]), ("test", df.iloc[90:])):
        with open(d / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for i, rec in enumerate(part.to_dict("records")):
                fh.write(json.dumps({**rec, "split": name} if i == 0 and name == "train" else rec) + "\n")
    report = split_file(d, tmp_path / "o2", seed=0)
    assert report["rows_in"] == len(df) and validate_dataset(tmp_path / "o2").ok


def test_the_text_report_gives_the_source_warnings(tmp_path):
    df = frame(dupes=False).drop(columns=["weight"])
    df.loc[0, "product_types"] = ["home >  > t0"]
    report = split_file(write_input(tmp_path, df), tmp_path / "o", seed=0)
    assert report["source_warnings"]["empty_level"] == 1
    assert "warnings in the source: empty_level 1" in format_report(report)
