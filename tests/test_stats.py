"""Dataset statistics on a hand-made dataset (exact numbers)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from q2pt.data import from_frames, load_dataset
from q2pt.data.stats import dataset_stats, format_stats


def df(rows):
    return pd.DataFrame(rows, columns=["query", "locale", "product_types"])


@pytest.fixture
def ds():
    return from_frames(
        {
            "train": df([("red shoes", "en_US", ["shoes", "socks"]), ("tv", "en_US", ["tv"]),
                         ("Schuhe", "de_DE", ["shoes"]), ("lampe", "de_DE", ["lamp"])]),
            "valid": df([("hat", "en_US", ["hat"])]),
            "test": df([("TV", "de_DE", ["tv", "remote"]), ("tv ", "de_DE", ["tv"])]),
        },
        source="hand-made",
    )


def test_stats_numbers(ds):
    st = dataset_stats(ds)
    assert st["queries"] == {"train": 4, "valid": 1, "test": 2, "total": 7}
    assert st["n_locales"] == 2
    assert st["product_types"] == 6 and st["product_types_in_train"] == 4
    assert st["product_types_in_all_locales"] == 2 and st["product_types_shared"] == 2
    assert st["labels_per_query"] == {"mean": round(9 / 7, 4), "median": 1.0, "max": 2}
    en, de = st["locales"]["en_US"], st["locales"]["de_DE"]
    assert en["queries"] == {"train": 2, "valid": 1, "test": 0, "total": 3}
    assert de["queries"] == {"train": 2, "valid": 0, "test": 2, "total": 4}
    assert (en["distinct_queries"], de["distinct_queries"]) == (3, 3)  # "TV" and "tv " are one query
    assert en["labels_per_query"] == {"mean": round(4 / 3, 4), "median": 1.0, "max": 2}
    assert de["labels_per_query"] == {"mean": 1.25, "median": 1.0, "max": 2}
    # en: shoes socks tv hat; de: shoes lamp tv remote; shared: shoes, tv
    assert (en["product_types"], en["shared_product_types"], en["own_product_types"]) == (4, 2, 2)
    assert (de["product_types"], de["shared_product_types"], de["own_product_types"]) == (4, 2, 2)
    assert list(st["locales"]) == ["de_DE", "en_US"]
    json.dumps(st)  # JSON-serialisable


def test_format_stats_lists_every_locale(ds):
    text = format_stats(dataset_stats(ds))
    lines = text.splitlines()
    assert any(line.startswith("de_DE") and line.split()[1:4] == ["2", "0", "2"] for line in lines)
    assert any(line.startswith("en_US") and line.split()[-3:] == ["4", "2", "2"] for line in lines)
    assert "fingerprint" in text


def test_stats_on_the_simulated_tiny_store():
    st = dataset_stats(load_dataset(None, preset="tiny", seed=0))
    assert st["simulated"] is True and st["n_locales"] >= 2
    assert sum(loc["queries"]["total"] for loc in st["locales"].values()) == st["queries"]["total"]
    for loc in st["locales"].values():
        assert loc["shared_product_types"] + loc["own_product_types"] == loc["product_types"]
