"""Click logs to labels: thresholds, purchase weighting, dropped counts, splitting."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from q2pt.data import load_dataset
from q2pt.data.clicks import from_clicks, labels_from_clicks
from q2pt.data.schema import normalize_query
from q2pt.errors import ConfigError, DataError

LOG = """query,locale,product_type,clicks,purchases
red shoes,en_US,shoes,10,1
Red  Shoes,en_US,shoes,5,0
red shoes,en_US,socks,3,2
red shoes,en_US,laces,1,0
tv,de_DE,tv,8,0
tv,de_DE,remote,1,4
lamp,de_DE,lamp,1,0
,de_DE,tv,3,0
sofa,fr_FR,sofa,abc,0
sofa,fr_FR,,3,0

zero,fr_FR,x,0,0
big,fr_FR,a,90,0
big,fr_FR,b,9,0
big,fr_FR,c,1,0
"""


@pytest.fixture
def log_file(tmp_path):
    f = tmp_path / "clicks.csv"
    f.write_text(LOG, encoding="utf-8")
    return f


def labels_of(splits):
    rows = pd.concat(splits.values(), ignore_index=True)
    return {(q, loc): labs for q, loc, labs in zip(rows["query"], rows["locale"], rows["product_types"])}


def test_default_thresholds_exact_labels_and_counts(log_file):
    splits, rep = labels_from_clicks(log_file, valid_frac=0.0, test_frac=0.0)
    assert labels_of(splits) == {
        ("red shoes", "en_US"): ["shoes", "socks"],  # laces: 1 click < 2
        ("tv", "de_DE"): ["tv"],  # remote: 1 click < 2 (purchases ignored by default)
        ("big", "fr_FR"): ["a"],  # b: share 9/100 < 0.1; c: 1 click
    }
    assert splits["train"]["weight"].tolist() == [1.0, 1.0, 1.0]
    assert rep.rows_read == 15 and rep.rows_used == 11
    assert rep.rows_dropped == {
        "blank line": 1,
        "empty or missing query": 1,
        "clicks missing or not a non-negative number (at most 2^53)": 1,
        "empty or missing product type": 1,
    }
    assert rep.examples["empty or missing query"].endswith("row 8")
    assert rep.query_variants_merged == 1
    assert (rep.pairs_total, rep.pairs_kept) == (10, 4)
    assert rep.pairs_dropped == {
        "engagement below --min-clicks 2.0": 5,
        "share of the query's engagement below --min-share 0.1": 1,
    }
    assert (rep.queries_total, rep.queries_labelled) == (5, 3)
    assert rep.queries_dropped == {
        "no clicks (or weighted purchases) at all": 1,
        "no product type passed the thresholds": 1,
    }
    # nothing silently dropped: every row read is used or counted
    assert rep.rows_used + sum(rep.rows_dropped.values()) == rep.rows_read
    text = rep.format()
    assert "dropped 1 rows: empty or missing query" in text and "dropped 5 pairs" in text


def test_purchase_weight_changes_labels_and_order(log_file):
    splits, rep = labels_from_clicks(log_file, valid_frac=0.0, test_frac=0.0, purchase_weight=1.0)
    got = labels_of(splits)
    assert got[("tv", "de_DE")] == ["tv", "remote"]  # 1 + 4 purchases = 5 >= 2, share 5/13
    assert got[("red shoes", "en_US")] == ["shoes", "socks"]  # ordered by engagement: 16, 5
    assert rep.params["purchase_weight"] == 1.0


def test_thresholds_are_inclusive_and_configurable(log_file):
    splits, _ = labels_from_clicks(log_file, valid_frac=0.0, test_frac=0.0, min_share=0.09, min_clicks=1)
    got = labels_of(splits)
    assert got[("big", "fr_FR")] == ["a", "b"]  # share 0.09 >= 0.09; c: 1/100 < 0.09
    assert got[("lamp", "de_DE")] == ["lamp"]
    assert got[("red shoes", "en_US")] == ["shoes", "socks"]  # laces 1/19 = 0.053 < 0.09


def test_spelling_with_most_engagement_is_kept():
    log = pd.DataFrame(
        {"query": ["Red Shoes", "red  shoes", "red shoes"], "locale": ["en"] * 3, "product_type": ["s"] * 3,
         "clicks": [5, 2, 4]}
    )
    splits, rep = labels_from_clicks(log, valid_frac=0.0, test_frac=0.0)
    # "red  shoes" and "red shoes" are the same spelling once whitespace is tidied: 6 > 5
    assert splits["train"]["query"].tolist() == ["red shoes"]
    assert rep.query_variants_merged == 1


def make_log(n_en: int, n_de: int) -> pd.DataFrame:
    rows = [(f"query {i}", "en_US", "t", 5) for i in range(n_en)] + [(f"anfrage {i}", "de_DE", "t", 5) for i in range(n_de)]
    rows += [(f"QUERY  {i}", "en_US", "t", 1) for i in range(n_en)]  # variants of the same normalized queries
    return pd.DataFrame(rows, columns=["query", "locale", "product_type", "clicks"])


def test_split_by_normalized_query_within_locale_with_seed():
    log = make_log(10, 20)
    splits, rep = labels_from_clicks(log, valid_frac=0.1, test_frac=0.2, seed=7)
    assert rep.locales == {"de_DE": {"train": 14, "valid": 2, "test": 4}, "en_US": {"train": 7, "valid": 1, "test": 2}}
    keys = {s: {(normalize_query(q), loc) for q, loc in zip(df["query"], df["locale"])} for s, df in splits.items()}
    assert not (keys["train"] & keys["valid"]) and not (keys["train"] & keys["test"]) and not (keys["valid"] & keys["test"])
    again, _ = labels_from_clicks(log.sample(frac=1.0, random_state=3), valid_frac=0.1, test_frac=0.2, seed=7)
    for s in splits:
        assert sorted(again[s]["query"]) == sorted(splits[s]["query"])  # input order does not matter
    other, _ = labels_from_clicks(log, valid_frac=0.1, test_frac=0.2, seed=8)
    assert sorted(other["test"]["query"]) != sorted(splits["test"]["query"])


def test_from_clicks_writes_a_loadable_dataset_and_report(log_file, tmp_path):
    out = tmp_path / "ds"
    rep = from_clicks(log_file, out, fmt="jsonl", valid_frac=0.0, test_frac=0.0)
    ds = load_dataset(out)
    assert len(ds.train) == 3 and ds.labels == ["a", "shoes", "socks", "tv"]
    saved = json.loads((out / "clicks_report.json").read_text(encoding="utf-8"))
    assert saved["rows_dropped"] == rep.rows_dropped
    with pytest.raises(ConfigError, match="already exists"):
        from_clicks(log_file, out)
    from_clicks(log_file, out, overwrite=True)
    assert (out / "train.parquet").exists() and not (out / "train.jsonl").exists()


def test_non_utf8_and_malformed_rows_are_dropped_and_counted(tmp_path):
    f = tmp_path / "log.tsv"
    f.write_bytes(
        b"query\tlocale\tproduct_type\tclicks\n"
        b"red\ten\tshoes\t5\n"
        b"r\xffd\ten\tshoes\t5\n"
        b"too\tmany\tfields\t1\t2\n"
        b"red\ten\tshoes\t-3\n"
    )
    splits, rep = labels_from_clicks(f, valid_frac=0.0, test_frac=0.0)
    assert rep.rows_dropped == {
        "bytes that are not UTF-8": 1,
        "malformed row": 1,
        "clicks missing or not a non-negative number (at most 2^53)": 1,
    }
    assert rep.rows_read == 4 and rep.rows_used == 1
    assert labels_of(splits) == {("red", "en"): ["shoes"]}


def test_bad_logs_and_parameters(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("query,locale,clicks\nred,en,3\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        labels_from_clicks(f)
    assert err.value.problems[0].field == "product_type"
    with pytest.raises(ConfigError, match="--min-share"):
        labels_from_clicks(f, min_share=1.5)
    with pytest.raises(ConfigError, match="below 1"):
        labels_from_clicks(f, valid_frac=0.5, test_frac=0.5)
    g = tmp_path / "weak.csv"
    g.write_text("query,locale,product_type,clicks\nred,en,shoes,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="no query got a label"):
        from_clicks(g, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    h = tmp_path / "two.csv"
    h.write_text("query,locale,product_type,clicks\nred,en,shoes,5\nblue,en,shoes,5\n", encoding="utf-8")
    with pytest.raises(DataError, match="would be invalid"):  # 2 queries, 45% + 45%: no train row
        from_clicks(h, tmp_path / "out", valid_frac=0.45, test_frac=0.45)
    assert not (tmp_path / "out").exists()


def test_purchases_left_empty_count_as_none_and_are_not_checked_unused(tmp_path):
    """An optional purchases column that is sometimes empty: 0 purchases (counted), not a dropped
    row; at the default weight 0 purchases are not used, so not checked either."""
    f = tmp_path / "p.csv"
    f.write_text("query,locale,product_type,clicks,purchases\n"
                 + "".join(f"q{i},en,shoes,5,\n" for i in range(9)) + "q9,en,shoes,5,1\nq10,en,shoes,5,lots\n",
                 encoding="utf-8")
    _, unused = labels_from_clicks(f, valid_frac=0, test_frac=0)
    assert unused.rows_used == 11 and unused.rows_dropped == {} and unused.purchases_missing == 0
    _, weighted = labels_from_clicks(f, valid_frac=0, test_frac=0, purchase_weight=2.0)
    assert weighted.rows_used == 10 and weighted.rows_dropped == {"purchases not a non-negative number (at most 2^53)": 1}
    assert weighted.purchases_missing == 9 and "9 rows without a purchases value: counted as 0" in weighted.format()


def test_locales_that_differ_only_in_case_name_the_log_row_and_types_in_case_are_said(tmp_path):
    f = tmp_path / "c.jsonl"
    rows = [{"query": f"q{i}", "locale": "us", "product_type": "Shoes" if i % 2 else " shoes", "clicks": 5}
            for i in range(6)] + [{"query": "x", "locale": "US", "product_type": "shoes", "clicks": 5}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"c.jsonl, row 7, field locale: locale ids us \(6 rows\), US \(1 row\) "
                                        r"differ only in case"):
        labels_from_clicks(f)
    f.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]), encoding="utf-8")
    _, report = labels_from_clicks(f, valid_frac=0, test_frac=0)
    assert report.types_stripped == 3 and report.types_case_apart == ["Shoes", "shoes"]
    assert "2 product types differ from another only in case" in report.format()


def test_counts_too_large_to_add_up_are_dropped_and_said(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("query,locale,product_type,clicks\nh,en,a,1e308\nh,en,b,1e308\nk,en,a,5\nk,en,b,5\n", encoding="utf-8")
    _, report = labels_from_clicks(f, valid_frac=0, test_frac=0)
    assert report.rows_dropped == {"clicks missing or not a non-negative number (at most 2^53)": 2}
    assert report.queries_labelled == 1 and report.pairs_kept == 2  # k: a and b at 50% each
