"""Dataset IO: formats, layouts, fingerprints, the simulated-store cache."""

from __future__ import annotations

import json
import sys
import types

import pandas as pd
import pytest

import q2pt.data
from q2pt.data import Dataset, from_frames, load_dataset, simulated_cache_dir
from q2pt.data.io import read_raw_dataset, write_dataset
from q2pt.data.schema import fingerprint, normalize_query, split_labels
from q2pt.errors import ConfigError, DataError

FORMATS = ["parquet", "jsonl", "csv", "tsv"]


def tricky_splits() -> dict[str, pd.DataFrame]:
    """Small dataset with text that stresses every format (separators, quotes, unicode)."""
    train = pd.DataFrame(
        {
            "query": ['red "running" shoes, size 42', "tv\twall mount", "Kaffeemühle", "赤い 靴", "NaN", "  lamp  "],
            "locale": ["en_US", "en_US", "de_DE", "ja_JP", "en_US", "en_US"],
            "product_types": [["shoes", "sneakers"], ["tv_mount"], ["coffee_grinder"], ["shoes"], ["bread"], ["lamp"]],
            "weight": [1.0, 0.1 + 0.2, 2.5, 1.0, 1e-3, 7.0],
            "intent": ["shoes", "tv_mount", "coffee_grinder", "shoes", "bread", "lamp"],
        }
    )
    valid = pd.DataFrame(
        {"query": ["blue sneakers"], "locale": ["en_US"], "product_types": [["sneakers"]], "weight": [1.0],
         "intent": ["sneakers"]}
    )
    test = pd.DataFrame(
        {"query": ["multi\nline query"], "locale": ["de_DE"], "product_types": [["lamp", "shoes"]], "weight": [1.0],
         "intent": ["lamp"]}
    )
    return {"train": train, "valid": valid, "test": test}


def assert_same_content(a: Dataset, b: Dataset) -> None:
    for split in ("train", "valid", "test"):
        x, y = a.splits[split], b.splits[split]
        assert x["query"].tolist() == y["query"].tolist()
        assert x["locale"].tolist() == y["locale"].tolist()
        assert x["product_types"].tolist() == y["product_types"].tolist()
        assert x["weight"].tolist() == y["weight"].tolist()
        assert x["intent"].tolist() == y["intent"].tolist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_directory_round_trip_every_format(tmp_path, fmt):
    ds = from_frames(tricky_splits())
    out = write_dataset(ds, tmp_path / "ds", fmt)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{fmt}" for s in ("test", "train", "valid"))
    back = load_dataset(out)
    assert_same_content(ds, back)
    assert back.fingerprint == ds.fingerprint
    assert back.source == str(out) and back.simulated is False
    assert back.labels == ["bread", "coffee_grinder", "lamp", "shoes", "sneakers", "tv_mount"]
    assert back.locales == ["de_DE", "en_US", "ja_JP"]
    assert isinstance(back.train["product_types"].iloc[0], list)
    assert back.train["weight"].dtype == "float64"


@pytest.mark.parametrize("fmt", FORMATS)
def test_single_file_with_split_column(tmp_path, fmt):
    ds = from_frames(tricky_splits())
    path = write_dataset(ds, tmp_path / f"all.{fmt}", single_file=True)
    raw = read_raw_dataset(path)
    assert raw.layout == "file"
    back = load_dataset(path)
    assert_same_content(ds, back)
    assert "split" not in back.train.columns
    assert back.fingerprint == ds.fingerprint


def test_csv_labels_joined_with_bar_and_weight_optional(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "train.csv").write_text("query,locale,product_types\nred shoes,en_US,shoes | sneakers\n", encoding="utf-8")
    (d / "valid.tsv").write_text("query\tlocale\tproduct_types\nhat\ten_US\tshoes\n", encoding="utf-8")
    (d / "test.jsonl").write_text('{"query": "cap", "locale": "en_US", "product_types": ["shoes"]}\n', encoding="utf-8")
    ds = load_dataset(d)  # mixed formats are fine
    assert ds.train["product_types"].tolist() == [["shoes", "sneakers"]]
    assert ds.train["weight"].tolist() == [1.0]
    assert split_labels("a|b") == ["a", "b"] and split_labels("") == []


def test_csv_with_bom_crlf_and_quoted_newlines(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "train.csv").write_bytes(
        b'\xef\xbb\xbfquery,locale,product_types,weight\r\nred shoes,en_US,shoes, 1.5\r\n"multi\r\nline",en_US,a,2\r\n'
    )
    (d / "valid.csv").write_bytes(b"query,locale,product_types\r\nx,en_US,a\r\n")
    (d / "test.csv").write_bytes(b"query,locale,product_types\r\ny,en_US,shoes\r\n")
    ds = load_dataset(d)
    assert ds.train["query"].tolist() == ["red shoes", "multi\r\nline"]
    assert ds.train["weight"].tolist() == [1.5, 2.0]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_utf16_file_is_refused_with_how_to_fix_it(tmp_path, encoding):
    """A spreadsheet's "Unicode text" export (with or without a byte order mark) is named as
    such, not read as garbage with missing columns."""
    f = tmp_path / "rows.tsv"
    f.write_bytes("query\tlocale\tproduct_types\tsplit\r\ncafé\tfr\tcoffee\ttrain\r\n".encode(encoding))
    with pytest.raises(DataError, match="UTF-16 or UTF-32.*save it as UTF-8"):
        read_raw_dataset(f)


def test_fingerprint_ignores_order_and_extra_columns_but_not_content():
    splits = tricky_splits()
    fp = fingerprint(splits)
    shuffled = {k: v.sample(frac=1.0, random_state=1).reset_index(drop=True) for k, v in splits.items()}
    shuffled["test"] = shuffled["test"].assign(product_types=[["shoes", "lamp"]], intent=["other"])
    assert fingerprint(shuffled) == fp
    no_weight = {k: v.drop(columns=["weight"]).assign(weight=1.0) for k, v in splits.items()}
    assert fingerprint(no_weight) != fp  # weights differ from the original
    changed = {k: v.copy() for k, v in splits.items()}
    changed["valid"].loc[0, "query"] = "blue sneaker"
    assert fingerprint(changed) != fp
    moved = {k: v.copy() for k, v in splits.items()}
    moved["valid"], moved["test"] = splits["test"], splits["valid"]
    assert fingerprint(moved) != fp
    assert len(fp) == 16 and int(fp, 16) >= 0


def test_normalize_query():
    assert normalize_query("  Red\u00a0SHOES \t size ４２ ") == "red shoes size 42"
    # characters that show nothing do not make another query (duplicates, leakage)
    assert normalize_query("k7자동차매트\u200b") == normalize_query("K7자동차매트") == "k7자동차매트"
    assert normalize_query("\u200fشعر\ufeff") == "شعر" and normalize_query("soft\u00adware") == "software"
    from q2pt.data.schema import normalize_queries

    queries = ["k7자동차매트\u200b", "a\u200b b", "Red\u00a0SHOES", "\u2066x\u2069"]
    assert normalize_queries(pd.Series(queries)).tolist() == [normalize_query(q) for q in queries]


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope")
    d = tmp_path / "d"
    d.mkdir()
    (d / "valid.csv").write_text("query,locale,product_types\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_dataset(d)
    msgs = [p.message for p in err.value.problems]
    assert any("no train file" in m for m in msgs) and any("missing test file" in m for m in msgs)
    (d / "train.csv").write_text("query,locale,product_types\n", encoding="utf-8")
    (d / "train.jsonl").write_text("", encoding="utf-8")
    (d / "test.xlsx").write_text("x", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_dataset(d)
    msgs = " | ".join(p.message for p in err.value.problems)
    assert "more than one train file" in msgs and "test.xlsx: unsupported file type" in msgs


def test_wrong_extension_and_single_file_without_split(tmp_path):
    f = tmp_path / "data.xlsx"
    f.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported file type"):
        load_dataset(f)
    g = tmp_path / "data.csv"
    g.write_text("query,locale,product_types\nred,en_US,shoes\n", encoding="utf-8")
    with pytest.raises(DataError, match="needs a 'split' column"):
        load_dataset(g)


def test_unreadable_files_name_the_file(tmp_path):
    d = tmp_path / "d"
    write_dataset(from_frames(tricky_splits()), d, "parquet")
    (d / "valid.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError) as err:
        load_dataset(d)
    assert err.value.problems[0].file.endswith("valid.parquet")
    assert "cannot read Parquet" in err.value.problems[0].message
    e = tmp_path / "e.csv"
    e.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        load_dataset(e)


def test_write_refuses_to_clobber(tmp_path):
    ds = from_frames(tricky_splits())
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(ConfigError, match="already exists"):
        write_dataset(ds, out)
    assert (out / "precious.txt").exists()
    with pytest.raises(ConfigError, match="holds more than a dataset"):  # --overwrite replaces a data folder only
        write_dataset(ds, out, "csv", overwrite=True)
    assert (out / "precious.txt").exists()
    (out / "precious.txt").unlink()
    write_dataset(ds, out, "parquet")
    write_dataset(ds, out, "csv", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["test.csv", "train.csv", "valid.csv"]
    with pytest.raises(ConfigError, match="is a file"):
        write_dataset(ds, out / "train.csv", overwrite=True)


# ------------------------------------------------------------------ simulated store cache
@pytest.fixture
def fake_simulator(monkeypatch):
    """A stand-in for q2pt.data.simulate that records its calls."""
    calls: list[tuple[str, int]] = []
    mod = types.ModuleType("q2pt.data.simulate")
    mod.PRESETS = {"tiny": {}, "quick": {}, "full": {}}
    mod.SIMULATOR_VERSION = "test-1"

    def simulate(preset, seed):
        calls.append((preset, seed))
        splits = tricky_splits()
        splits["train"] = splits["train"].assign(sim_noise=[seed] * len(splits["train"]))
        return splits, {"departments": 2, "preset": preset}

    mod.simulate = simulate
    monkeypatch.setitem(sys.modules, "q2pt.data.simulate", mod)
    monkeypatch.setattr(q2pt.data, "simulate", mod, raising=False)
    return mod, calls


def test_simulated_store_is_cached_and_reused(fake_simulator, tmp_path, monkeypatch):
    mod, calls = fake_simulator
    monkeypatch.setenv("Q2PT_CACHE", str(tmp_path / "cache"))
    ds = load_dataset(None, preset="tiny", seed=3)
    folder = tmp_path / "cache" / "simulated" / "tiny-seed3"
    assert simulated_cache_dir("tiny", 3) == folder
    assert calls == [("tiny", 3)]
    assert ds.simulated and ds.source == "simulated:tiny:seed=3"
    assert ds.taxonomy == {"departments": 2, "preset": "tiny"}
    assert ds.train["sim_noise"].tolist() == [3] * 6
    again = load_dataset(None, preset="tiny", seed=3)
    assert calls == [("tiny", 3)]  # reused, not regenerated
    assert again.fingerprint == ds.fingerprint
    # an incomplete cache (manifest gone) is regenerated
    (folder / "simulated.json").unlink()
    load_dataset(None, preset="tiny", seed=3)
    assert len(calls) == 2
    # a new simulator version invalidates the cache
    mod.SIMULATOR_VERSION = "test-2"
    load_dataset(None, preset="tiny", seed=3)
    assert len(calls) == 3
    # no stray temporary folders are left beside the cache
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny-seed3"]


def test_simulated_default_cache_location(fake_simulator, monkeypatch, tmp_path):
    monkeypatch.delenv("Q2PT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert simulated_cache_dir("quick", 0) == tmp_path / ".cache" / "q2pt" / "simulated" / "quick-seed0"


def test_unknown_preset_is_a_config_error(fake_simulator):
    with pytest.raises(ConfigError, match="unknown simulated preset"):
        load_dataset(None, preset="huge")


def test_dataset_written_by_simulator_is_marked_simulated(tmp_path):
    d = write_dataset(from_frames(tricky_splits()), tmp_path / "d")
    assert load_dataset(d).simulated is False
    (d / "simulated.json").write_text(json.dumps({"simulated": True, "taxonomy": {"x": 1}}), encoding="utf-8")
    ds = load_dataset(d)
    assert ds.simulated is True and ds.taxonomy == {"x": 1}


# ------------------------------------------------------------------ the real simulator
def test_real_simulator_tiny_preset_loads_and_is_deterministic(tmp_path, monkeypatch):
    from q2pt.data import simulate as sim
    ds = load_dataset(None, preset="tiny", seed=0)  # the session's cache (shared with other tests)
    assert ds.simulated and ds.source == "simulated:tiny:seed=0"
    assert all(len(ds.splits[s]) > 0 for s in ("train", "valid", "test"))
    assert {"query", "locale", "product_types", "weight"} <= set(ds.train.columns)
    # a second generation elsewhere gives the same content
    monkeypatch.setenv("Q2PT_CACHE", str(tmp_path / "cache2"))
    assert load_dataset(None, preset="tiny", seed=0).fingerprint == ds.fingerprint
    assert "tiny" in sim.PRESETS
