"""Name examples (``train.name_examples``): the rows built from the product types' names on a
hand-built case, and what a trained model does with them (training rows, query memory, summary)."""

from __future__ import annotations

import pandas as pd
import pytest

from support import need

need("torch")

from q2pt.config import resolve_config  # noqa: E402
from q2pt.data import from_frames, load_dataset  # noqa: E402
from q2pt.data.tree import LabelTree, type_name  # noqa: E402
from q2pt.models import Q2PTModel  # noqa: E402
from q2pt.training.names import name_examples  # noqa: E402

TYPES = ["home > pots", "kitchen > pots", "kitchen > frying_pan"]


def test_one_row_per_name_spread_over_the_locales():
    rows = name_examples(TYPES, ["de", "en"], 0.3, sep=" > ")
    assert rows["query"].tolist() == ["frying pan", "pots"]  # "_" read as a space; sorted names
    assert rows["locale"].tolist() == ["de", "en"]
    # both "pots" types share one row: the name alone does not tell them apart
    assert rows["product_types"].tolist() == [["kitchen > frying_pan"], ["home > pots", "kitchen > pots"]]
    assert rows["weight"].tolist() == [0.3, 0.3]
    assert name_examples(TYPES, ["de", "en", "fr"], 1.0, sep=" > ")["locale"].tolist() == ["de", "en"]


def test_in_a_tree_a_name_is_also_a_positive_of_its_ancestors():
    tree = LabelTree.from_labels(TYPES, " > ")
    classes = sorted(tree.parent)  # every node: home, kitchen and the three leaves
    rows = name_examples(classes, ["de"], 0.5, sep=" > ", tree=tree)
    labels = dict(zip(rows["query"], rows["product_types"]))
    assert labels["frying pan"] == ["kitchen", "kitchen > frying_pan"]
    assert labels["pots"] == ["home", "home > pots", "kitchen", "kitchen > pots"]
    assert labels["kitchen"] == ["kitchen"]
    assert set(rows["locale"]) == {"de"}


def test_subtype_names_are_more_names_of_their_type():
    cut = {"kitchen > pots": ["saucepans", "stock pots"], "home > pots": ["planters", "frying pan"]}
    rows = name_examples(TYPES, ["de"], 0.3, sep=" > ", subtype_names=cut)
    labels = dict(zip(rows["query"], rows["product_types"]))
    assert labels == {"frying pan": ["home > pots", "kitchen > frying_pan"],  # merged with the type's own name
                      "planters": ["home > pots"], "pots": ["home > pots", "kitchen > pots"],
                      "saucepans": ["kitchen > pots"], "stock pots": ["kitchen > pots"]}
    tree = LabelTree.from_labels(TYPES, " > ")
    in_tree = name_examples(sorted(tree.parent), ["de"], 0.3, sep=" > ", tree=tree, subtype_names=cut)
    assert dict(zip(in_tree["query"], in_tree["product_types"]))["saucepans"] == ["kitchen", "kitchen > pots"]
    # names of types the network does not have are not its names
    assert name_examples(["kitchen > frying_pan"], ["de"], 0.3, sep=" > ", subtype_names=cut)["query"].tolist() == [
        "frying pan"]


def test_weight_zero_or_nothing_to_name_gives_no_rows():
    assert name_examples(TYPES, ["de"], 0.0, sep=" > ").empty
    assert name_examples([], ["de"], 1.0, sep=" > ").empty


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(None, preset="tiny")


def _fit(tiny, variant, names):
    flags = {"train.max_epochs": 1, "train.threads": 1, "model.encoder_options": {"dim": 16, "buckets": 2048},
             "train.batch_size": 64, "model.variant": variant, "train.name_examples": names}
    return Q2PTModel(config=resolve_config(overrides=flags, encoder="ngram")).fit(tiny, progress=False)


def _memory_rows(frame, aware):
    return len({(q, loc if aware else "") for q, loc in zip(frame["query"], frame["locale"])})


@pytest.mark.parametrize("variant", ["unified-aware", "non-unified"])
def test_a_model_trains_on_its_types_names_and_keeps_them_in_its_memory(tiny, variant):
    rows_before = len(tiny.train)
    model = _fit(tiny, variant, 0.5)
    training = model.manifest["training"]
    for stage, labels in model.network_labels_.items():
        frame = tiny.train if stage == "*" else tiny.train[tiny.train["locale"] == stage]
        names = name_examples(labels, sorted(tiny.train["locale"].unique()) if stage == "*" else [stage], 0.5,
                              sep=" > ", tree=model.tree_)
        assert training[stage]["name_examples"] == len(names) == len({type_name(c) for c in labels}) > 0
        # each name is a memory row of its own unless a training query of its locale already reads the same
        both = pd.concat([frame, names], ignore_index=True)
        assert training[stage]["memory_queries"] == _memory_rows(both, variant == "unified-aware")
        assert training[stage]["memory_queries"] > _memory_rows(frame, variant == "unified-aware")
    assert len(tiny.train) == rows_before  # the dataset given is not changed
    off = _fit(tiny, variant, 0.0)
    assert all("name_examples" not in s for s in off.manifest["training"].values())


def _raw_cut_store(shoe="boots"):
    """German shoes are "shoe" ("boots"), English ones "sneakers"; both stores have "pans"."""
    paths = {"de": [f"fashion > shoes > {shoe}", "home > kitchen > pans"],
             "en": ["fashion > shoes > sneakers", "home > kitchen > pans"]}

    def frame(offset):
        return pd.DataFrame([{"query": f"{p.split(' > ')[1]} {offset + i}", "locale": loc, "product_types": [p]}
                             for i in range(6) for loc in ("de", "en") for p in paths[loc]])
    return {"train": frame(0), "valid": frame(100), "test": frame(200)}


def _cut_store(shoe="boots"):
    return from_frames(_raw_cut_store(shoe), label_depth=2)


def _fit_cut(data, variant, on):
    flags = {"train.max_epochs": 1, "train.threads": 1, "model.encoder_options": {"dim": 16, "buckets": 2048},
             "train.name_examples": 0.5, "train.subtype_names": on, "model.hierarchy": "flat",
             "model.variant": variant}
    return Q2PTModel(config=resolve_config(overrides=flags, encoder="ngram")).fit(data, progress=False)


@pytest.mark.parametrize("on", [True, False])
def test_a_cut_store_trains_on_the_names_cut_away(on):
    data = _cut_store()
    assert data.cut_names == {"fashion > shoes": ["boots", "sneakers"], "home > kitchen": ["pans"]}
    model = _fit_cut(data, "unified-aware", on)
    # the types' own names ("shoes", "kitchen"), and with subtype names "boots", "sneakers", "pans"
    assert model.manifest["training"]["*"]["name_examples"] == (5 if on else 2)
    assert model.manifest["config"]["train"]["subtype_names"] is on


def test_a_store_network_gets_the_names_cut_from_its_own_rows_alone():
    model = _fit_cut(_cut_store(), "non-unified", True)
    # de: shoes, kitchen, boots, pans; en: shoes, kitchen, sneakers, pans (not the other store's shoes)
    assert {loc: s["name_examples"] for loc, s in model.manifest["training"].items()} == {"de": 4, "en": 4}


def test_a_run_is_the_same_run_only_with_the_same_names_below_the_cut():
    from q2pt.training.fit import _run_identity

    boots, clogs = _cut_store("boots"), _cut_store("clogs")
    assert boots.fingerprint == clogs.fingerprint and boots.cut_names != clogs.cut_names
    config = resolve_config(overrides={"train.name_examples": 0.5}, encoder="ngram")
    ident = [_run_identity(config, d, boots.labels, boots.locales) for d in (boots, clogs)]
    assert ident[0] != ident[1] and ident[0]["config"]["train"]["subtype_names"] is True
    off = resolve_config(overrides={"train.name_examples": 0.5, "train.subtype_names": False}, encoder="ngram")
    assert _run_identity(off, boots, boots.labels, boots.locales) == _run_identity(off, clogs, boots.labels,
                                                                                   boots.locales)
    # with nothing cut, the key changes nothing: the identity reads as before it existed (an older checkpoint resumes)
    uncut = load_dataset(None, preset="tiny")
    plain = _run_identity(config, uncut, uncut.labels, uncut.locales)
    assert plain["config"]["train"]["subtype_names"] is False and "cut_names_sha256" not in plain


@pytest.mark.parametrize("depth", [None, 2, 9])
def test_a_cached_experiment_record_sees_the_names_below_the_cut(tmp_path, depth):
    """The experiment's run identity: with a depth that cuts, a digest of the cut names (which
    the fingerprint does not see) and the key; with no depth, or one that cuts nothing, neither
    (the record reads as before the key existed, so it stays a cache hit)."""
    from q2pt.experiments.runner import ExperimentRunner, RunSpec, model_identity
    from q2pt.experiments.settings import resolve_settings, stable_hash

    def identity(shoe):
        data = from_frames(_raw_cut_store(shoe), label_depth=depth)
        over = [] if depth is None else ["--data.label_depth", str(depth)]
        runner = ExperimentRunner(data, resolve_settings("tiny", None, {"baselines": []}), tmp_path / f"{shoe}",
                                  train_overrides=over, encoder="ngram", progress=False)
        spec = RunSpec("main/unified-aware", "variant", "unified-aware", "u", config=runner.config_for("unified-aware"))
        ident = runner.run_identity(spec, [], data)
        return ident, model_identity(spec, ident), spec.model_identity()

    (boots, boots_model, boots_spec), (clogs, clogs_model, _) = identity("boots"), identity("clogs")
    if depth == 2:
        assert boots["cut_names_sha256"] != clogs["cut_names_sha256"]
        assert boots["config"]["train"]["subtype_names"] is True
        # a study's reuse of a main run (same_as) compares the model hash: it sees the names too
        assert stable_hash(boots_model) != stable_hash(clogs_model)
        assert boots_model["cut_names_sha256"] == boots["cut_names_sha256"]
    else:
        assert "cut_names_sha256" not in boots and "subtype_names" not in boots["config"]["train"]
        # the model hash reads as before the key existed too (an older main run is still reused)
        boots_spec["config"]["train"].pop("subtype_names")
        assert boots_model == boots_spec and stable_hash(boots_model) == stable_hash(clogs_model)


def test_the_identity_sees_which_store_a_name_below_the_cut_came_from():
    """Two stores swapping their subtypes: the same cut paths and the same names overall, but
    each store's network would learn other names."""
    from q2pt.training.fit import _run_identity

    swapped = _raw_cut_store()
    for frame in swapped.values():
        frame["locale"] = frame["locale"].map({"de": "en", "en": "de"})
    one, two = _cut_store(), from_frames(swapped, label_depth=2)
    assert one.cut_names == two.cut_names and one.fingerprint == two.fingerprint
    config = resolve_config(overrides={"train.name_examples": 0.5, "model.variant": "non-unified"}, encoder="ngram")
    assert _run_identity(config, one, one.labels, one.locales) != _run_identity(config, two, two.labels, two.locales)
