"""The built-in SIMULATED store: taxonomy loader, lexicon and generator (q2pt.data.simulate)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from q2pt.data import lexicon as lx
from q2pt.data import simulate as sim
from q2pt.data.schema import normalize_query
from q2pt.data.taxonomy import ATTRIBUTE_SLOTS, LANGUAGES, LOCALES, build_taxonomy, load_taxonomy
from q2pt.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def tiny() -> tuple[dict[str, pd.DataFrame], dict, sim.SimulationReport]:
    return sim._simulate("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_all(tiny) -> pd.DataFrame:
    splits = tiny[0]
    return pd.concat([splits[s].assign(split=s) for s in SPLITS], ignore_index=True)


# --------------------------------------------------------------------------- taxonomy


def test_builtin_taxonomy_is_complete():
    tax = load_taxonomy()
    assert len(tax.departments) >= 20
    assert len(tax.types) >= 300
    for t in tax.types.values():
        assert set(t.names) == set(LANGUAGES)
        assert all(len(set(forms)) >= 2 for forms in t.names.values()), t.id
        assert set(t.attributes) <= ATTRIBUTE_SLOTS
        assert all(r in tax.types for r in t.related_ids())
        assert t.locales_only is None or set(t.locales_only) <= set(LOCALES)
    linked = sum(bool(t.related_ids()) for t in tax.types.values())
    assert linked > len(tax.types) / 2  # related types are linked
    assert any(t.locales_only for t in tax.types.values())
    for loc in LOCALES:
        sold = set(tax.sold_in(loc))
        assert all((t.id in sold) == (t.locales_only is None or loc in t.locales_only) for t in tax.types.values())


def _department(dep_id: str, type_ids: list[str], **override) -> dict:
    types = []
    for tid in type_ids:
        t = {
            "id": tid,
            "names": {lang: [f"{tid} {lang}", f"{tid}s {lang}"] for lang in LANGUAGES},
            "attributes": ["colour", "brand"],
            "related": {"accessory": [], "complement": [], "substitute": []},
            "prior": 1.0,
            "locales_only": None,
        }
        t.update(override.get(tid, {}))
        types.append(t)
    return {"id": dep_id, "name": {lang: dep_id for lang in LANGUAGES}, "types": types}


def _problems(excinfo) -> list[str]:
    return [f"{p.file}|{p.field}|{p.message}" for p in excinfo.value.problems]


def _refusal(*departments: tuple[str, dict]) -> str:
    """Every problem ``build_taxonomy`` reports for these (file, DEPARTMENT) pairs, one a line."""
    with pytest.raises(DataError) as excinfo:
        build_taxonomy(list(departments))
    return "\n".join(_problems(excinfo))


def test_taxonomy_validation_reports_every_problem():
    names = {lang: ["only one form"] for lang in LANGUAGES}
    del names["ja"]
    bad = _department(
        "toys",
        ["kite", "ball"],
        kite={"names": names, "attributes": ["colour", "flavour"], "locales_only": ["xx"], "prior": 0},
        ball={"related": {"accessory": ["pump"], "lookalike": []}},
    )
    text = _refusal(("d01_toys.py", bad))
    assert "d01_toys.py|types[0](kite).names.ja|missing language" in text
    assert "types[0](kite).names.en|needs >= 2 distinct surface forms" in text
    assert "unknown attribute slots ['flavour']" in text
    assert "unknown locales ['xx']" in text
    assert "types[0](kite).prior" in text
    assert "unknown relation kind 'lookalike'" in text


def test_taxonomy_duplicates_and_dangling_links():
    a = _department("toys", ["kite"], kite={"related": {"accessory": ["string_reel"]}})
    b = _department("toys", ["kite", "yoyo"])
    text = _refusal(("d01_toys.py", a), ("d02_toys.py", b))
    assert "department id 'toys' already defined in d01_toys.py" in text
    assert "duplicate type id 'kite'" in text
    assert "unknown type id 'string_reel'" in text


def test_taxonomy_groups_are_validated_and_give_each_type_its_path():
    a = _department("toys", ["kite", "yoyo", "ball", "top"])
    a["groups"] = {"outdoor": ["kite", "ball"], "Bad Id": ["yoyo", "top"], "solo": ["top"],
                   "indoor": ["yoyo", "top", "kite", "sled"]}
    b = _department("games", ["chess", "go"])
    b["groups"] = {"outdoor": ["chess", "go"]}
    text = _refusal(("d01_toys.py", a), ("d02_games.py", b))
    assert "d01_toys.py|groups.Bad Id|group id 'Bad Id' is not snake_case" in text
    assert "groups.solo|a group needs >= 2 types" in text
    assert "groups.indoor|'kite' is already in group 'outdoor'" in text
    assert "groups.indoor|'sled' is not a type of this department" in text
    a["groups"] = {"outdoor": ["kite", "ball"], "toys": ["yoyo", "top"]}
    text = _refusal(("d01_toys.py", a), ("d02_games.py", b))  # across departments: once each is well formed
    assert "d02_games.py|groups.outdoor|duplicate group id 'outdoor' (first defined in d01_toys.py)" in text
    assert "d01_toys.py|groups.toys|group id 'toys' is also a type or department id" in text
    a["groups"] = {"outdoor": ["kite", "ball"]}
    b["groups"] = {"board_games": ["chess", "go"]}
    tax = build_taxonomy([("d01_toys.py", a), ("d02_games.py", b)])
    assert tax.types["kite"].path() == ("toys", "outdoor", "kite") and tax.types["yoyo"].path() == ("toys", "yoyo")
    assert tax.to_dict()["departments"][0]["groups"] == {"outdoor": ["kite", "ball"]}
    assert tax.to_dict()["types"][0]["group"] == "outdoor" and tax.to_dict()["types"][1]["group"] is None


def test_the_simulated_store_has_a_three_level_tree():
    from q2pt.data import load_dataset
    from q2pt.data.tree import LabelTree

    tax = load_taxonomy()
    assert sum(len(d.groups) for d in tax.departments.values()) >= 80
    assert sum(t.group is not None for t in tax.types.values()) > 0.8 * len(tax.types)
    ds = load_dataset(None, preset="tiny", seed=0)
    paths = {p for ts in ds.train["product_types"] for p in ts}
    assert {len(p.split(" > ")) for p in paths} == {2, 3}  # a type in no group hangs under its department
    assert all(tuple(p.split(" > ")) == tax.types[p.split(" > ")[-1]].path() for p in paths)
    tree = LabelTree.from_labels(sorted(paths))
    assert tree.depth == 3 and not tree.shared_names()
    flat = load_dataset(None, preset="tiny", seed=0, simulated_tree=False)
    assert all(" > " not in p for ts in flat.train["product_types"] for p in ts)


def test_taxonomy_loads_a_folder_and_reports_broken_modules(tmp_path: Path):
    good = _department("toys", ["kite", "yoyo"], kite={"related": {"substitute": ["yoyo"]}})
    (tmp_path / "d01_toys.py").write_text(f"DEPARTMENT = {good!r}\n", encoding="utf-8")
    (tmp_path / "notes.py").write_text("raise RuntimeError('not a department module')\n", encoding="utf-8")
    tax = load_taxonomy(tmp_path)
    assert list(tax.types) == ["kite", "yoyo"]
    assert tax.lookup("Kite  EN", "en") == ["kite"]
    assert tax.to_dict()["types"][0]["related"]["substitute"] == ["yoyo"]

    (tmp_path / "d02_broken.py").write_text("DEPARTMENT = {\n", encoding="utf-8")
    with pytest.raises(DataError, match="d02_broken.py cannot be imported"):
        load_taxonomy(tmp_path)
    (tmp_path / "d02_broken.py").write_text("OTHER = 1\n", encoding="utf-8")
    with pytest.raises(DataError, match="has no DEPARTMENT"):
        load_taxonomy(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_taxonomy(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        load_taxonomy(empty)


# --------------------------------------------------------------------------- lexicon


def test_lexicon_tables_are_consistent_with_the_taxonomy():
    assert lx.check_lexicon().problems == []
    tax = load_taxonomy()
    keys = [f"{t.department}:{t.id}" for t in tax.types.values()]
    for word, table in lx.CONFLICT_WORDS.items():
        assert all(t in tax.types for t in table.values()), word
    for loc, table in lx.LOCAL_FORMS.items():
        assert loc in LOCALES and all(t in tax.types for t in table), loc
    for lang, table in lx.AMBIGUOUS_FORMS.items():
        for word, ids in table.items():
            assert all(t in tax.types for t in ids), (lang, word)
    for group, pattern in lx.BRAND_GROUP_PATTERNS.items():
        assert any(re.search(pattern, k) for k in keys), f"brand group {group} matches no type"
    for loc, tilts in lx.LOCALE_TILTS.items():
        for pattern, _ in tilts:
            assert any(re.search(pattern, k) for k in keys), f"tilt {loc} {pattern} matches no type"
    assert set(lx.LOCALE_SHARES) == set(LOCALES)


def test_noise_generators():
    assert lx.drop_accents("żółty szalik", "pl") == "zolty szalik"
    assert lx.drop_accents("kırmızı çanta", "tr") == "kirmizi canta"
    assert lx.drop_accents("أحمر", "ar") == "احمر"
    assert lx.drop_accents("ランニングシューズ", "ja") == "ランニングシューズ"
    rnd = random.Random(1)
    assert {lx.drop_accents("größe", "de", rnd) for _ in range(40)} == {"groesse", "grosse"}
    rules = lx.LANGUAGE_RULES["en"]
    typos = {lx.misspell("running shoes", rules, rnd) for _ in range(50)}
    assert "running shoes" not in typos and len(typos) > 10
    assert lx.katakana_to_hiragana("スニーカー") == "すにーかー"
    assert normalize_query(lx.to_fullwidth("nike 27cm")) == "nike 27cm"
    assert lx.format_number("1.5", "de", "de", rnd) == "1,5"
    assert lx.format_number("1.5", "us", "en", rnd) == "1.5"


def test_word_order_and_compounds():
    tax = load_taxonomy()
    priors = sim.store_priors(tax, 0, sim.QueryModel())
    rnd = random.Random(0)

    def queries(locale: str, type_id: str, lang: str, n: int = 300) -> list[str]:
        store = sim._Store(locale, tax, priors[locale], sim.QueryModel(), sim.ClickModel())
        i = store.index[type_id]
        return [sim._write_query(store, "product", i, lang, 2, rnd).text for _ in range(n)]

    de = queries("de", "running_shoes", "de")
    assert any(re.search(r"(herren|damen|kinder)\w*(lauf|schuh)", q) for q in de)  # compounds
    ja = queries("jp", "running_shoes", "ja")
    assert any(" " not in q and len(q) > 8 for q in ja)  # written without spaces
    assert sum(lx.has_script(q, "japanese") for q in ja) > 0.95 * len(ja)  # rarely an English loan
    fr = queries("fr", "running_shoes", "fr")
    assert sum(bool(re.search(r"\b(homme|femme|enfant)\b", q)) for q in fr) > 10
    ar = queries("sa", "running_shoes", "ar")
    assert sum(lx.has_script(q, "arabic") for q in ar) > 0.95 * len(ar)
    us = queries("us", "sweater", "en")
    assert any(re.search(r"\b(mens|womens|men's|women's)\b", q) for q in us)


# --------------------------------------------------------------------------- the generated data


def test_columns_and_labels(tiny):
    splits, tax, _ = tiny
    known = {t["id"] for t in tax["types"]}
    for name in SPLITS:
        df = splits[name]
        assert list(df.columns[:5]) == ["query", "locale", "product_types", "weight", "intent"]
        assert all(c.startswith("sim_") for c in df.columns[5:])
        assert (df["weight"] == 1.0).all()
        assert df["query"].map(lambda q: isinstance(q, str) and q.strip() != "").all()
        assert df["product_types"].map(lambda ls: isinstance(ls, list) and len(ls) > 0).all()
        assert all(set(ls) <= known for ls in df["product_types"])
        assert df["intent"].isin(known).all()
    train_labels = {t for ls in splits["train"]["product_types"] for t in ls}
    for name in ("valid", "test"):
        assert all(set(ls) <= train_labels for ls in splits[name]["product_types"])


def test_no_leakage_and_no_duplicates(tiny_all):
    key = tiny_all["query"].map(normalize_query) + "\x1f" + tiny_all["locale"]
    assert not key.duplicated().any()  # one row per (normalised query, locale), across splits too


def test_locales_languages_and_scripts(tiny, tiny_all):
    splits, _, _ = tiny
    assert set(tiny_all["locale"]) == set(LOCALES)
    train_counts = splits["train"]["locale"].value_counts()
    assert train_counts.min() >= 20
    by_loc = {loc: g for loc, g in tiny_all.groupby("locale")}
    def share(loc, script):
        return by_loc[loc]["query"].map(lambda q: lx.has_script(q, script)).mean()

    assert share("jp", "japanese") > 0.9
    assert share("sa", "arabic") > 0.85 and share("eg", "arabic") > 0.85
    assert 0.2 < share("ae", "arabic") < 0.8  # ae: Arabic and English
    assert share("us", "arabic") == 0 and share("de", "japanese") == 0
    assert set(by_loc["ca"]["sim_language"]) == {"en", "fr"}
    assert by_loc["de"]["query"].str.contains(r"\b(?:herren|damen|schwarz|weiß|größe)", regex=True).any()
    assert by_loc["tr"]["query"].str.contains(r"[ışğ]", regex=True).any()


def test_resource_imbalance():
    quick = sim.planned_counts("quick")
    assert max(quick.values()) / min(quick.values()) >= 20  # tens of times
    smallest = sorted(quick, key=quick.get)[:4]
    assert "pl" in smallest and "se" in smallest
    assert min(quick.values()) >= 300
    assert 38_000 <= sum(quick.values()) <= 42_000
    assert sum(sim.planned_counts("full").values()) >= 500_000
    tiny = sim.planned_counts("tiny")
    assert max(tiny.values()) / min(tiny.values()) >= 10


def test_conflict_words_depend_on_the_locale(tiny_all):
    bare = tiny_all[(tiny_all["sim_conflict_word"] != "") & (tiny_all["query"] == tiny_all["sim_conflict_word"])]
    meaning = {(r.sim_conflict_word, r.locale): r.intent for r in bare.itertuples()}
    words = {w for w, _ in meaning}
    differing = [w for w in words if len({t for (w2, _), t in meaning.items() if w2 == w}) >= 2]
    assert len(differing) >= 10, differing
    assert meaning[("pants", "us")] == "trousers" and meaning[("pants", "uk")] == "underwear_briefs"
    assert meaning[("football", "us")] == "american_football" and meaning[("football", "de")] == "soccer_ball"
    # the click labels follow: the mapped type is a label of the bare word
    for r in bare.itertuples():
        assert lx.CONFLICT_WORDS[r.sim_conflict_word].get(r.locale, r.intent) == r.intent
    labels = {(r.sim_conflict_word, r.locale): r.product_types for r in bare.itertuples()}
    assert "trousers" in labels[("pants", "us")] and "trousers" not in labels[("pants", "uk")]


def test_noisy_multilabel_and_query_traits(tiny_all):
    n = len(tiny_all)
    card = tiny_all["product_types"].map(len)
    assert 0.05 < (card > 1).mean() < 0.4  # multi-label, as click labels are
    intent_in = [i in ls for i, ls in zip(tiny_all["intent"], tiny_all["product_types"])]
    assert 0.85 < sum(intent_in) / n < 1.0  # labels are noisy, mostly right
    brands = tiny_all[tiny_all["sim_kind"] == "brand_only"]
    assert (brands["product_types"].map(len) > 1).any()  # a bare brand is ambiguous
    assert tiny_all["sim_misspelled"].mean() > 0.02
    assert tiny_all["sim_accents_dropped"].mean() > 0.01
    assert tiny_all["sim_loanword"].mean() > 0.01
    non_en = tiny_all[tiny_all["sim_language"].isin(["de", "fr", "es", "it", "nl", "sv", "pl", "tr", "pt"])]
    english = re.compile(r"\b(?:sale|set|original|premium|outlet|black|white|men|women|shoes|phone case)\b")
    assert non_en["query"].str.contains(english).any()  # English words in non-English queries
    # locale-specific priors: the top intents differ between stores
    top = {loc: Counter(g["intent"]).most_common(1)[0][0] for loc, g in tiny_all.groupby("locale")}
    assert len(set(top.values())) > 3


def test_locales_only_types_stay_home(tiny_all):
    tax = load_taxonomy()
    for r in tiny_all.itertuples():
        assert tax.types[r.intent].sold_in(r.locale), (r.intent, r.locale)


def test_report_and_taxonomy_dict(tiny):
    splits, tax, report = tiny
    assert tax["simulated"] is True
    assert len(tax["departments"]) >= 20 and len(tax["types"]) >= 300
    t0 = tax["types"][0]
    assert set(t0) >= {"id", "department", "names", "related", "locales_only", "attributes"}
    assert set(t0["names"]) == set(LANGUAGES)
    assert tax["locale_words"]["pants"]["uk"] == "underwear_briefs"
    assert sum(report.rows["train"].values()) == len(splits["train"])
    json.dumps(tax)  # JSON-ready


# --------------------------------------------------------------------------- files


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_write_simulated_is_deterministic_and_atomic(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    info = sim.write_simulated(a, "tiny", seed=3)
    sim.write_simulated(b, "tiny", seed=3)
    assert set(info["files"]) == {"train.parquet", "valid.parquet", "test.parquet", "taxonomy.json",
                                  "simulated.json", "DATASHEET.md"}
    assert _digests(a) == _digests(b)  # byte-identical
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    sheet = (a / "DATASHEET.md").read_text(encoding="utf-8")
    assert "SIMULATED" in sheet and "seed 3" in sheet and "| pl |" in sheet and "Known limitations" in sheet
    manifest = json.loads((a / "simulated.json").read_text(encoding="utf-8"))
    assert manifest["simulated"] is True and manifest["rows"] == info["rows"]
    train = pd.read_parquet(a / "train.parquet")
    assert len(train) == info["rows"]["train"] and list(train["product_types"].iloc[0])

    # another seed gives other data; re-writing over a simulated folder is allowed
    other = sim.write_simulated(a, "tiny", seed=4)
    assert other["fingerprint"] != info["fingerprint"]


def test_write_simulated_formats_and_errors(tmp_path: Path):
    info = sim.write_simulated(tmp_path / "j", "tiny", seed=0, fmt="jsonl")
    first = json.loads((tmp_path / "j" / "valid.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert isinstance(first["product_types"], list) and first["weight"] == 1.0
    assert info["rows"]["valid"] > 0
    with pytest.raises(ConfigError, match="format"):
        sim.write_simulated(tmp_path / "x", "tiny", fmt="xlsx")
    with pytest.raises(ConfigError, match="preset"):
        sim.write_simulated(tmp_path / "x", "huge")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a simulated dataset"):
        sim.write_simulated(mine, "tiny")
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep me"


@pytest.mark.slow
def test_quick_preset_sizes():
    splits, _, _report = sim._simulate("quick", seed=0)
    sizes = pd.concat(splits.values())["locale"].value_counts()
    assert 36_000 <= sizes.sum() <= 42_000
    assert sizes.max() / sizes.min() >= 20
    assert set(sizes.sort_values().index[:4]) >= {"pl", "se"}
