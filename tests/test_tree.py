"""Product-type trees: paths and the tree, ancestor closure, back-off decisions on hand-built
scores, per-level and hierarchical metrics on hand-computed cases, and a tiny hierarchical
model end to end (saved, reloaded, served over HTTP and through ONNX)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from q2pt.data.tree import LabelTree, closed_frame, read_taxonomy, split_path, training_tree
from q2pt.errors import ConfigError, DataError
from q2pt.inference import UNIFIED, InferenceCore, tree_columns
from q2pt.metrics import calibrate_level_thresholds, set_precision_recall
from support import need

PATHS = ["home > kitchen > pots", "home > kitchen > pans", "home > garden > pots", "toys"]


def test_paths_with_odd_separators_and_commas():
    assert split_path("home>kitchen ,dining & bar >  pots") == ["home", "kitchen ,dining & bar", "pots"]
    assert split_path("a | b|c", " | ") == ["a", "b", "c"]
    assert split_path(" > a >> b > ") == ["a", "b"]  # empty levels dropped
    tree = LabelTree.from_labels(["shoes, bags & more/boots", "x/y/z"], sep="/")
    assert tree.parent == {"shoes, bags & more": None, "shoes, bags & more/boots": "shoes, bags & more",
                           "x": None, "x/y": "x", "x/y/z": "x/y"}
    assert tree.normalize("x / y") == "x/y" and tree.depth == 3


def test_tree_structure_and_a_name_under_two_parents():
    tree = LabelTree.from_labels(PATHS)
    assert tree.nodes == ["home", "home > garden", "home > garden > pots", "home > kitchen",
                          "home > kitchen > pans", "home > kitchen > pots", "toys"]
    assert tree.level["home > kitchen"] == 2 and tree.is_leaf("toys") and not tree.is_leaf("home > kitchen")
    assert tree.ancestors("home > kitchen > pots") == ["home", "home > kitchen"]
    assert tree.shared_names() == {"pots": ["home > garden > pots", "home > kitchen > pots"]}
    stats = tree.stats([["home > kitchen > pots"], ["toys"]], ["de", "fr"])
    assert [lv["nodes"] for lv in stats["levels"]] == [2, 2, 3]
    assert stats["levels"][0]["branching_mean"] == 2.0  # home: kitchen, garden (toys has none)
    assert stats["types_per_level_per_locale"] == {"de": {"1": 1, "2": 1, "3": 1}, "fr": {"1": 1}}
    assert LabelTree.from_json(tree.to_json()).parent == tree.parent
    # a top-level name that comes back deeper is shared too (the top counts as a parent)
    assert LabelTree.from_labels(["toys", "home > toys", "a > b"]).shared_names() == {"toys": ["home > toys", "toys"]}


def test_ancestor_closure_and_the_training_tree(tmp_path):
    tree = LabelTree.from_labels(PATHS)
    assert tree.close(["home>kitchen>pots", "toys"]) == ["home", "home > kitchen", "home > kitchen > pots", "toys"]
    assert tree.close(["home > attic > boxes"]) == ["home", "home > attic", "home > attic > boxes"]  # unseen
    frame = pd.DataFrame({"query": ["q"], "locale": ["de"], "product_types": [["home > kitchen > pots"]]})
    closed, added = closed_frame(frame, tree)
    assert closed["product_types"][0] == ["home", "home > kitchen", "home > kitchen > pots"] and added == 2
    assert training_tree("auto", ["a", "b"]) is None and training_tree("flat", PATHS) is None
    assert training_tree("tree", ["a", "b"]) is not None  # asked for: a one-level tree
    (tmp_path / "tax.txt").write_text("# a taxonomy\nhome > attic > boxes\n\nsports\n", encoding="utf-8")
    assert read_taxonomy(tmp_path / "tax.txt") == ["home > attic > boxes", "sports"]
    assert "home > attic" in training_tree("auto", PATHS, taxonomy=tmp_path / "tax.txt").parent
    (tmp_path / "bad.txt").write_text(" > \n", encoding="utf-8")
    with pytest.raises(DataError):
        read_taxonomy(tmp_path / "bad.txt")
    (tmp_path / "gap.txt").write_text("home > kitchen\nhome >  > pots\n> toys\n", encoding="utf-8")
    with pytest.raises(DataError) as info:  # read as "home > pots" and "toys" without a word before
        read_taxonomy(tmp_path / "gap.txt")
    assert [(p.row, p.message) for p in info.value.problems] == [
        (2, "an empty level in 'home >  > pots'"), (3, "an empty level in '> toys'")]


def test_validate_reports_the_tree_per_level_and_locale_and_names_under_two_parents(tmp_path, capsys):
    from q2pt.cli import main

    rows = [("q1", "de", "home > kitchen > pots", "train"), ("q2", "fr", "toys", "train"),
            ("q3", "fr", "home > toys", "train"), ("q4", "fr", "toys", "valid"), ("q5", "de", "toys", "test")]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"query": "{q}", "locale": "{loc}", "product_types": ["{t}"], "split": "{sp}"}}\n'
                            for q, loc, t, sp in rows))
    assert main(["data", "validate", str(data)]) == 0
    out = capsys.readouterr().out
    assert "product types per level per locale: de 2/1/1; fr 2/1/0" in out  # ancestors included
    assert "the name 'toys' is under 2 parents (home > toys; toys)" in out
    taxonomy = tmp_path / "tax.txt"  # a taxonomy file's paths join the tree
    taxonomy.write_text("home > kitchen > pots > steel\nhome > garden\n")
    assert main(["data", "validate", str(data), "--taxonomy", str(taxonomy)]) == 0
    assert "product type tree: depth 4, 7 nodes" in capsys.readouterr().out
    assert main(["data", "stats", str(data), "--taxonomy", str(taxonomy)]) == 0
    assert "level 4: 1 types, 1 leaves" in capsys.readouterr().out


def test_validate_counts_every_name_under_several_parents(tmp_path):
    from q2pt.data.validate import validate_dataset

    rows = [(f"q{i}{side}", f"{side} > x{i}") for i in range(25) for side in "ab"]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"query": "{q}", "locale": "de", "product_types": ["{t}"]}}\n' for q, t in rows))
    report = validate_dataset(data)
    assert report.counts()["warning"]["tree_shared_name"] == 25 == report.summary["tree"]["names_under_several_parents"]


def _core(scores: list[float], level_thresholds=None):
    tree = LabelTree.from_labels(PATHS)
    classes = tree.nodes
    return InferenceCore(variant="unified-agnostic", classes=classes, locales=["de"], thresholds={"global": 0.5},
                         tokenizers={UNIFIED: lambda q, loc: q},
                         forward=lambda key, batch: np.asarray([scores] * len(batch)), tree=tree,
                         level_thresholds=level_thresholds)


# classes: home, home>garden, home>garden>pots, home>kitchen, home>kitchen>pans, home>kitchen>pots, toys
def _paths(core, **kw):
    res = core.resolve_all(["de"])
    return [(p["product_type"], p["level"]) for p in core.select_paths(core.scores(["q"], res), res, **kw)[0]]


def test_backoff_decisions_on_hand_built_scores():
    sure_pot = _core([0.9, 0.1, 0.1, 0.8, 0.2, 0.7, 0.1])
    assert _paths(sure_pot) == [("home > kitchen > pots", 3)]
    unsure_leaf = _core([0.9, 0.1, 0.1, 0.8, 0.3, 0.4, 0.1])  # which kitchen item? neither is sure
    assert _paths(unsure_leaf) == [("home > kitchen", 2)]  # back off to the parent
    assert _paths(unsure_leaf, backoff=False) == []  # no back-off: nothing at the bottom is sure
    assert _paths(sure_pot, max_depth=2) == [("home > kitchen", 2)]
    assert _paths(unsure_leaf, max_depth=2, backoff=False) == [("home > kitchen", 2)]  # level 2 is the bottom
    two = _core([0.9, 0.6, 0.1, 0.8, 0.2, 0.7, 0.95])
    assert _paths(two) == [("toys", 1), ("home > kitchen > pots", 3), ("home > garden", 2)]  # best first
    assert _paths(two, top_k=1) == [("toys", 1)]
    res = two.resolve_all(["de"])
    answer = two.select_paths(two.scores(["q"], res), res)[0][1]
    assert answer["ancestors"] == [{"product_type": "home", "score": pytest.approx(0.9)},
                                   {"product_type": "home > kitchen", "score": pytest.approx(0.8)}]
    # per-level thresholds: level 3 needs 0.75 -> the pot (0.7) is unsure, back off to the kitchen
    strict = _core([0.9, 0.1, 0.1, 0.8, 0.2, 0.7, 0.1], {"global": {"3": 0.75}})
    assert _paths(strict) == [("home > kitchen", 2)]
    with pytest.raises(ConfigError):
        _paths(sure_pot, max_depth=0)


def test_compare_lists_a_trees_level_thresholds(tree_model_dir):
    from q2pt.comparison import compare_models, format_comparison
    from q2pt.models import load_model

    folder, test = tree_model_dir
    model = load_model(folder)
    result = compare_models(model, model, test, bootstrap=0)
    keys = [t["key"] for t in result["thresholds"]]
    assert keys[:4] == ["global", "global level 1", "global level 2", "global level 3"], keys
    level3 = next(t for t in result["thresholds"] if t["key"] == "global level 3")
    assert level3["a"] == pytest.approx(model.level_thresholds_["global"]["3"]) and level3["change"] == 0.0
    result["models"] = {s: {"name": s} for s in "ab"}
    result["data"] = {"source": "test", "n_queries": len(test)}
    result["notes"] = []
    assert "| global level 1 |" in format_comparison(result)


def test_export_evaluation_of_a_tree_judges_it_as_evaluate_does(tree_model_dir, tmp_path):
    """``q2pt export onnx --evaluate``: a tree's rows are judged with their ancestors (as
    ``q2pt evaluate`` judges them), not every ancestor answer as a false positive."""
    need("onnxruntime")
    need("onnx")
    from q2pt.data import from_frames
    from q2pt.models import load_model
    from q2pt.serving.onnx_export import evaluate_exports, export_onnx

    folder, test = tree_model_dir
    model = load_model(folder)
    fp32 = export_onnx(model, tmp_path / "m.onnx")
    rows = from_frames({"train": test, "valid": test, "test": test}, validate=False)
    ev = evaluate_exports(model, rows, {"onnx-fp32": fp32.path})
    expected = model.evaluate(test, bootstrap=0)["global"]["r_at_p"]
    assert expected > 0.5 and ev["runtimes"]["torch"]["global"] == pytest.approx(expected)
    assert ev["runtimes"]["onnx-fp32"]["global"] == pytest.approx(expected, abs=0.01)
    assert ev["runtimes"]["onnx-fp32"]["answers_differ_vs_torch"] == 0  # the same paths served


def test_a_confident_type_makes_its_ancestors_answers_whatever_their_levels_thresholds():
    """Calibrated level thresholds need not fall with depth (here level 1 is cut at 0.95, level 3
    at 0.6): a confident pot still means the kitchen and the home, with any max_depth, flat or not."""
    core = _core([0.9, 0.1, 0.1, 0.8, 0.2, 0.7, 0.1], {"global": {"1": 0.95, "2": 0.85, "3": 0.6}})
    assert _paths(core) == [("home > kitchen > pots", 3)]
    assert _paths(core, max_depth=2) == [("home > kitchen", 2)]  # not nothing: the pot is sure
    assert _paths(core, max_depth=1) == [("home", 1)]
    res = core.resolve_all(["de"])
    scores = core.scores(["q"], res)
    assert [t for t, _ in core.select(scores, res)[0]] == ["home", "home > kitchen", "home > kitchen > pots"]
    unsure = _core([0.9, 0.1, 0.1, 0.8, 0.2, 0.5, 0.1], {"global": {"1": 0.95, "2": 0.85, "3": 0.6}})
    assert _paths(unsure) == [] and _paths(unsure, max_depth=1) == []  # nothing sure, at any depth
    # explain says why the home is predicted below its own threshold
    from q2pt.cli.review import format_explanation
    from q2pt.explain import explain

    home = explain(core, "q", "de", "home")
    assert home["predicted"] and home["score"] < home["threshold"]
    assert "predicted: a type under it is confident" in format_explanation(home)
    # the API's flat answer: the best top_k confident types (the kitchen, 0.8, is cut at 0.85 but
    # its pot is sure; toys, 0.95, ranks first but is not confident at 0.99)
    from types import SimpleNamespace

    need("fastapi")
    from q2pt.serving.app import _Service

    flat_core = _core([0.9, 0.1, 0.1, 0.8, 0.2, 0.7, 0.95], {"global": {"1": 0.99, "2": 0.85, "3": 0.6}})
    rt = SimpleNamespace(core=flat_core, classes=flat_core.classes, threshold_for=flat_core.threshold_for)
    res = flat_core.resolve("de")
    row = flat_core.scores(["q"], [res])[0]
    answer = _Service.result(rt, "q", res, row, 2, None, SimpleNamespace(flat=True))
    assert answer["predicted"] == ["home", "home > kitchen"], answer  # not toys, the best score
    assert [t["product_type"] for t in answer["product_types"]] == ["toys", "home"]
    # a type the query's network does not score is never an answer, even above a confident child
    nan = float("nan")
    partial = _core([nan, 0.1, 0.1, 0.8, 0.2, 0.7, 0.1], {"global": {"1": 0.95, "2": 0.85, "3": 0.6}})
    res = partial.resolve_all(["de"])
    assert not partial.confident(np.asarray([[nan, 0.1, 0.1, 0.9, 0.2, 0.7, 0.1]]), partial.cuts(res))[0, 0]


def test_without_backoff_the_bottom_is_what_the_model_scores(tmp_path):
    """A taxonomy file may go deeper than the trained types: a type whose children are none of
    the model's columns is the bottom, so ``backoff=False`` still answers with it."""
    tree = LabelTree.from_labels(PATHS)  # pots and pans under the kitchen ...
    classes = ["home", "home > garden", "home > kitchen", "toys"]  # ... but the model scores level 2 only
    core = InferenceCore(variant="unified-agnostic", classes=classes, locales=["de"], thresholds={"global": 0.5},
                         tokenizers={UNIFIED: lambda q, loc: q}, tree=tree,
                         forward=lambda key, batch: np.asarray([[0.9, 0.1, 0.8, 0.1]] * len(batch)))
    assert _paths(core, backoff=False) == [("home > kitchen", 2)]
    # a query whose network scores none of the kitchen's children (NaN: a non-unified model's
    # locale network without them) has the kitchen as its bottom; the garden's child is scored
    nan = float("nan")
    partial = _core([0.9, 0.6, 0.2, 0.8, nan, nan, 0.1])
    assert _paths(partial, backoff=False) == [("home > kitchen", 2)]
    assert _paths(partial) == [("home > kitchen", 2), ("home > garden", 2)]
    # the taxonomy is cut like the labels (data.label_depth)
    taxonomy = tmp_path / "tax.txt"
    taxonomy.write_text("home > kitchen > pots > steel\nhome > garden > tools\n")
    cut = training_tree("tree", ["home > kitchen", "toys > cars"], taxonomy=taxonomy, depth=2)
    assert cut is not None and cut.depth == 2 and "home > garden" in cut.parent
    assert training_tree("tree", ["home > kitchen"], taxonomy=taxonomy).depth == 4


def test_recall_at_precision_per_level_on_a_hand_computed_case():
    from q2pt.metrics import evaluate_levels

    # level-1 column 0, level-2 column 1; rows 0-1 in store a, rows 2-3 in store b
    y = np.asarray([[1, 1], [1, 0], [0, 1], [1, 0]])
    s = np.asarray([[0.9, 0.8], [0.8, 0.3], [0.2, 0.7], [0.6, 0.75]])
    out = evaluate_levels(y, s, ["a", "a", "b", "b"], [1, 2], precision=0.8)
    assert set(out) == {"1", "2"}
    assert out["1"]["global"]["r_at_p"] == 1.0  # every level-1 positive ranks above the negative
    # level 2 ranked: 0.8 hit, 0.75 miss, 0.7 hit -> precision 1/1, 1/2, 2/3: only the first reaches 0.8
    assert out["2"]["global"]["r_at_p"] == pytest.approx(0.5)
    assert out["2"]["locales"]["a"]["r_at_p"] == 1.0
    assert out["2"]["locales"]["b"]["r_at_p"] == 0.0  # its top pair is a miss: 0.8 is never reached
    # a level-2 positive outside the label space (row 3) is a miss of that level only
    missing = evaluate_levels(y, s, ["a", "a", "b", "b"], [1, 2], precision=0.8, n_missing={2: [0, 0, 0, 1]})
    assert missing["2"]["global"]["r_at_p"] == pytest.approx(1 / 3) and missing["1"]["global"]["r_at_p"] == 1.0


def test_coverage_counts_answers_at_thresholds_that_reached_the_target():
    from q2pt.metrics import thresholds_reached

    details = {"global": "precision 0.812 >= 0.8, recall 0.400", "de": "precision 0.850 >= 0.8, recall 0.3",
               "fr": "global threshold: 3 positives < 20"}
    assert thresholds_reached(details) == {"global": True, "de": True, "fr": True}
    # a locale whose own pairs never reach the target is not at it on the global threshold either
    assert thresholds_reached({**details, "fr": "global threshold: precision 0.8 never reached"})["fr"] is False
    fallback = {"global": "precision 0.8 never reached; best-F1 threshold used (F1 0.1, precision 0.07, recall 0.2)",
                "de": "precision 0.850 >= 0.8, recall 0.3", "fr": "global threshold: precision 0.8 never reached"}
    assert thresholds_reached(fallback) == {"global": False, "de": True, "fr": False}
    assert thresholds_reached({"global": "default 0.5: no validation data to calibrate on"}) == {"global": False}
    # a flat core: de's own threshold reached the target, the global one (fr's) did not
    flat = InferenceCore(variant="unified-agnostic", classes=["a", "b"], locales=["de", "fr"],
                         thresholds={"global": 0.2, "de": 0.6}, tokenizers={UNIFIED: lambda q, loc: q},
                         forward=lambda key, batch: np.asarray([[0.9, 0.1]] * len(batch)),
                         thresholds_reached=thresholds_reached(fallback))
    assert flat.reached(flat.resolve_all(["de", "fr"])).tolist() == [[True, True], [False, False]]
    # a tree: only the levels with a threshold of their own count
    tree = _core([0.9, 0.1, 0.1, 0.8, 0.2, 0.7, 0.1], {"global": {"1": 0.5, "2": 0.5}})
    ok = tree.reached(tree.resolve_all(["de"]))[0]
    assert ok.tolist() == [lv in (1, 2) for lv in tree.node_level.tolist()]
    assert _paths(tree) == [("home > kitchen > pots", 3)]  # it answers at level 3 (the locale's threshold) ...
    set_pr = set_precision_recall([{"x"}], [{"x"}], ["de"], covered=[bool(ok[tree.column_of["home > kitchen > pots"]])])
    assert set_pr["global"]["coverage"] == 0.0 and set_pr["global"]["precision"] == 1.0  # ... which does not count
    # a locale whose own level-2 pairs never reached the target: cut at the level's threshold, not at the target
    tree = _core([0.9, 0.1, 0.1, 0.8, 0.2, 0.7, 0.1], {"global": {"1": 0.5, "2": 0.4}, "de": {"1": 0.6, "2": None}})
    res = tree.resolve_all(["de"])
    level = tree.node_level.tolist()
    assert tree.reached(res)[0].tolist() == [lv == 1 for lv in level]
    # level 2: the level's threshold (0.4); level 3, which has none: the locale's (the global 0.5)
    assert tree.cuts(res)[0].tolist() == [{1: 0.6, 2: 0.4, 3: 0.5}[lv] for lv in level]


def test_level_thresholds_and_set_metrics_on_hand_computed_cases():
    # two levels: level-1 column 0, level-2 column 1
    y = np.asarray([[1, 1], [1, 0], [0, 0], [1, 0]])
    s = np.asarray([[0.9, 0.8], [0.8, 0.3], [0.2, 0.7], [0.6, 0.1]])
    out = calibrate_level_thresholds(y, s, ["a"] * 4, [1, 2], 0.8, min_positives=1)
    # level 1: all three positives score above the negative: threshold 0.6, precision 1
    assert out["global"]["1"] == pytest.approx(0.6) and out["a"]["1"] == pytest.approx(0.6)
    assert out["global"]["2"] == pytest.approx(0.8)  # level 2: only the 0.8 positive is above the 0.7 negative
    # store b: enough positives at level 2, all below a negative: the target is never reached there
    yb = np.vstack([y, [[1, 1], [0, 0]]])
    sb = np.vstack([s, [[0.9, 0.2], [0.1, 0.9]]])
    both = calibrate_level_thresholds(yb, sb, ["a"] * 4 + ["b"] * 2, [1, 2], 0.8, min_positives=1)
    assert both["b"]["1"] == pytest.approx(0.9) and both["b"]["2"] is None
    assert "b" not in calibrate_level_thresholds(yb, sb, ["a"] * 4 + ["b"] * 2, [1, 2], 0.8, min_positives=2)
    truth = [{"home", "home > kitchen"}, {"toys"}, {"home"}]
    answers = [{"home"}, {"toys"}, set()]  # a right parent, a right type, nothing
    m = set_precision_recall(truth, answers, ["a", "a", "b"], bootstrap=0)
    assert m["global"]["precision"] == 1.0 and m["global"]["recall"] == pytest.approx(2 / 4)
    assert m["global"]["coverage"] == pytest.approx(2 / 3) and m["locales"]["b"]["coverage"] == 0.0


def test_a_hierarchical_model_round_trips_and_learns_every_level(tree_model_dir):
    from q2pt.inference import flat_model_refusal
    from q2pt.models import load_model
    from q2pt.predict import predict_rows

    folder, test = tree_model_dir
    model = load_model(folder)
    # a flat answer with options that shape a hierarchical one: refused by the library as by the CLI and API
    for options in ({"backoff": False}, {"max_depth": 1}):
        with pytest.raises(ConfigError, match="applies to hierarchical predictions .not with flat."):
            predict_rows(model, ["kopfhörer"], ["de_DE"], flat=True, **options)
    assert flat_model_refusal(True, None, False, True) == "backoff false applies to hierarchical predictions (not with flat)"
    assert flat_model_refusal(True, 2, True, False) is None and flat_model_refusal(False, None, True, True) is None
    assert model.tree_ is not None and model.tree_.depth == 3
    assert "served with one threshold per level" in (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "electronics" in model.classes_ and "electronics > audio" in model.classes_  # ancestors learned
    assert set(model.level_thresholds_["global"]) == {"1", "2", "3"}
    assert model.predict(["kopfhörer"], "de_DE") == [["electronics > audio > headphones"]]
    result = model.evaluate(test, bootstrap=20)
    assert set(result["levels"]) == {"1", "2", "3"} and result["levels"]["1"]["global"]["r_at_p"] > 0.9
    # the leaves: the bottom types, at any depth (the store's types under no group are leaves at level 2)
    leaves = {c for c in model.classes_ if model.tree_.is_leaf(c)}
    expected_leaf = sum(len({t for t in ts if t in leaves}) for ts in test["product_types"])
    assert result["leaf"]["global"]["n_positives"] == expected_leaf > 0 and result["leaf"]["global"]["r_at_p"] > 0.5
    h = result["hierarchical"]["global"]
    assert h["precision"] > 0.9 and 0 < h["coverage"] <= 1 and h["recall_ci"][0] <= h["recall"]
    # a type the model never learned, under a parent it knows: one missed leaf positive, not two
    # (its parent is not a deepest true type of the row)
    row = test.iloc[:1].copy()
    row["product_types"] = [["electronics > audio > turntables"]]
    unknown = model.evaluate(row, bootstrap=0)["leaf"]["global"]
    assert unknown["n_positives"] == 1 and unknown["n_missing"] == 1, unknown
    level1 = model.evaluate(test, level=1)
    expected = sum(len({t.split(" > ")[0] for t in ts}) for ts in test["product_types"])
    assert level1["level"] == 1 and level1["global"]["n_positives"] == expected
    with pytest.raises(ConfigError, match="levels 1 to 3"):
        model.evaluate(test, level=4)



def test_explain_of_a_tree_explains_the_type_it_predicts(tree_model_dir):
    """Without a named type, a tree explains its answer (the deepest confident type), not the
    top-level ancestor that always scores highest."""
    from q2pt.explain import explain
    from q2pt.models import load_model

    model = load_model(tree_model_dir[0])
    core = model.inference()
    out = explain(core, "kopfhörer", "de_DE")
    assert out["product_type"] == model.predict(["kopfhörer"], "de_DE")[0][0] == "electronics > audio > headphones"
    # a type named by its last level alone: the paths it may mean are named
    with pytest.raises(ConfigError, match=r"'headphones' is not one of the model's \d+ types; did you mean "
                                          r"'electronics > audio > headphones'\? \(a tree's types are named by"):
        explain(core, "kopfhörer", "de_DE", "headphones")
    with pytest.raises(ConfigError, match=r"did you mean 'fashion > shoes', "):  # a misspelling: the closest first
        explain(core, "kopfhörer", "de_DE", "fashion > shoe")
    with pytest.raises(ConfigError, match=r"'zzz' is not one of the model's \d+ types$"):
        explain(core, "kopfhörer", "de_DE", "zzz")
    # a type its warm start renamed: the new name, from the manifest's label map
    from q2pt.model_folder import parent_label_map

    renamed = parent_label_map({"parent": {"label_map": {"audio > phones": "electronics > audio > headphones"}}})
    assert parent_label_map(model.manifest) == {} and renamed == {"audio > phones": "electronics > audio > headphones"}
    with pytest.raises(ConfigError, match=r"'audio > phones' is not .* types: it was renamed "
                                          r"'electronics > audio > headphones' when this model was trained from"):
        explain(core, "kopfhörer", "de_DE", "audio > phones", renamed)


def test_evaluate_says_its_global_row_pools_every_node_of_a_tree(tree_model_dir, tmp_path, capsys):
    from q2pt.cli import main
    from q2pt.data.io import write_table

    folder, test = tree_model_dir
    rows = tmp_path / "test.jsonl"
    write_table(test[["query", "locale", "product_types"]], rows)
    assert main(["evaluate", "--model", str(folder), "--data", str(rows), "-q", "--types", "0"]) == 0
    out = capsys.readouterr().out
    assert "every node of the tree pooled" in out and "leaf" in out  # the experiment's figure is the leaf row


def test_a_level_a_locale_never_reached_survives_save_load_and_export(tree_model_dir, tmp_path):
    """None in level_thresholds (the locale's own pairs never reached the target at that level)
    is written as null, read back as None, cut at the level's threshold, not counted as reached."""
    need("onnxruntime")
    import json

    import onnx

    from q2pt.models import load_model
    from q2pt.serving.onnx_export import export_onnx

    folder, _ = tree_model_dir
    model = load_model(folder)
    model.level_thresholds_ = {**model.level_thresholds_, "de_DE": {"2": None}}
    model.manifest["level_thresholds"] = model.level_thresholds_
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.level_thresholds_["de_DE"] == {"2": None}
    core = again.inference()
    res = core.resolve_all(["de_DE", "fr_FR"])
    at_two = core.node_level == 2
    reached, cuts = core.reached(res), core.cuts(res)
    assert not reached[0, at_two].any() and reached[1, at_two].all()  # fr_FR: the level's own threshold
    assert cuts[0, at_two] == pytest.approx(again.level_thresholds_["global"]["2"])
    meta = {p.key: p.value for p in onnx.load(str(export_onnx(again, tmp_path / "t.onnx").path)).metadata_props}
    assert json.loads(meta["q2pt.level_thresholds"])["de_DE"] == {"2": None}


def test_hierarchical_http_and_onnx_outputs(tree_model_dir, tmp_path):
    need("fastapi")
    need("onnxruntime")
    from fastapi.testclient import TestClient

    from q2pt.serving.app import create_app
    from q2pt.serving.runtime import load_runtime

    folder, _ = tree_model_dir
    query = {"query": "kinder kopfhörer", "locale": "de_DE"}
    answers = {}
    for runtime in ("torch", "onnx"):
        with TestClient(create_app(load_runtime(folder, runtime))) as client:
            body = client.post("/v1/predict", json=query).json()
            answers[runtime] = body
            assert body["predicted"] == ["electronics > audio > headphones"]
            path = body["paths"][0]
            assert path["level"] == 3 and [a["product_type"] for a in path["ancestors"]] == [
                "electronics", "electronics > audio"]
            flat = client.post("/v1/predict", json={**query, "flat": True}).json()
            assert set(flat["predicted"]) >= {"electronics", "electronics > audio", "electronics > audio > headphones"}
            assert flat["paths"] is None
            top = client.post("/v1/predict", json={**query, "max_depth": 1}).json()
            assert top["predicted"] == ["electronics"]
            info = client.get("/v1/model").json()  # the thresholds "predicted" uses, per level
            assert info["tree"] == {"depth": 3, "nodes": len(info["product_types"])}
            assert set(info["level_thresholds"]["global"]) == {"1", "2", "3"}
            # top_k caps the paths as it caps a flat model's predicted types (and `q2pt predict --top-k`)
            many = client.post("/v1/predict", json={**query, "threshold": 0.0, "top_k": 2}).json()
            assert len(many["paths"]) == len(many["predicted"]) == 2, many["predicted"]
            for route, body in (("/v1/predict", {**query, "flat": True, "max_depth": 1}),
                                ("/v1/predict/batch", {"queries": [query], "flat": True, "max_depth": 1}),
                                ("/v1/predict", {**query, "flat": True, "backoff": False}),
                                ("/v1/predict/batch", {"queries": [query], "flat": True, "backoff": False})):
                refused = client.post(route, json=body)  # max_depth, backoff false would be ignored with flat
                assert refused.status_code == 422 and "not with flat" in refused.text, refused.text
                assert refused.json()["field"] == "flat"  # the field that conflicts, named
    assert [p["score"] for p in answers["onnx"]["paths"]] == pytest.approx(
        [p["score"] for p in answers["torch"]["paths"]], abs=1e-4)
    # the file alone carries what paths need: the tree, the score rule and the thresholds
    import json

    import onnx

    from q2pt.models import load_model
    from q2pt.serving.onnx_export import export_onnx

    model = load_model(folder)
    result = export_onnx(model, tmp_path / "tree.onnx")
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert LabelTree.from_json(json.loads(meta["q2pt.tree"])).parent == model.tree_.parent
    assert meta["q2pt.tree_scores"] == "consistent"
    assert json.loads(meta["q2pt.level_thresholds"]) == model.level_thresholds_
    assert json.loads(meta["q2pt.thresholds"]) == pytest.approx(model.thresholds_)


def test_predict_cli_options_for_trees(tree_model_dir, capsys):
    from q2pt.cli import main

    folder, _ = tree_model_dir
    assert main(["predict", "--model", str(folder), "--locale", "de_DE", "kopfhörer", "--max-depth", "2",
                 "--json", "-q"]) == 0
    assert '"predicted_types": ["electronics > audio"]' in capsys.readouterr().out
    assert main(["predict", "--model", str(folder), "--locale", "de_DE", "x", "--flat", "--max-depth", "1"]) == 2


def test_streaming_and_ray_predictors_take_the_tree_options(tree_model_dir, tmp_path):
    need("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from q2pt.ray_predict import RayPredictor
    from q2pt.streaming import stream_predict

    folder, test = tree_model_dir
    table = pa.table({"query": ["kinder kopfhörer", "rote schuhe"], "locale": ["de_DE", "de_DE"]})
    pq.write_table(table, tmp_path / "in.parquet")
    deep = stream_predict(folder, tmp_path / "in.parquet", tmp_path / "deep.parquet", workers=0, progress=False)
    top = stream_predict(folder, tmp_path / "in.parquet", tmp_path / "top.parquet", workers=0, progress=False,
                         max_depth=1)
    assert deep.rows == top.rows == 2
    got_deep = pq.read_table(tmp_path / "deep.parquet").column("predicted_types").to_pylist()
    got_top = pq.read_table(tmp_path / "top.parquet").column("predicted_types").to_pylist()
    assert got_deep == [["electronics > audio > headphones"], ["fashion > shoes"]]
    assert got_top == [["electronics"], ["fashion"]]
    ray_flat = RayPredictor(str(folder), flat=True)(table).column("predicted_types").to_pylist()
    assert set(ray_flat[0]) >= {"electronics", "electronics > audio", "electronics > audio > headphones"}
    assert RayPredictor(str(folder), max_depth=2)(table).column("predicted_types").to_pylist()[0] == [
        "electronics > audio"]


def test_a_hierarchical_network_starts_each_level_at_its_own_prior():
    need("torch")
    from types import SimpleNamespace

    from scipy import sparse

    from q2pt.training.fit import _output_prior

    # 4 queries, outputs: 2 top-level types (always one positive), 4 leaves (one each)
    targets = sparse.csr_matrix(np.asarray([[1, 0, 1, 0, 0, 0], [1, 0, 0, 1, 0, 0],
                                            [0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1]]))
    split = SimpleNamespace(targets=targets, n=4)
    prior = _output_prior(split, 6, np.asarray([1, 1, 2, 2, 2, 2]))
    assert prior.tolist() == [0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert _output_prior(split, 6, None) == pytest.approx(8 / 24)  # a flat model: one prior for all


def test_ancestor_loss_weight_is_a_weighted_mean_over_the_labels():
    need("torch")
    import torch
    import torch.nn.functional as F

    from q2pt.training.loop import example_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    pair = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    assert torch.allclose(example_loss(logits, y), pair.mean(dim=1))
    w = torch.tensor([0.3, 1.0, 1.0])  # the first output is a parent
    assert torch.allclose(example_loss(logits, y, label_weights=w), (pair * w).sum(dim=1) / 2.3)


def test_consistent_scores_lift_parents_to_their_most_confident_child():
    tree = LabelTree.from_labels(PATHS)

    def core(consistent, scores):
        return InferenceCore(variant="unified-agnostic", classes=tree.nodes, locales=["de"],
                             thresholds={"global": 0.5}, tokenizers={UNIFIED: lambda q, loc: q},
                             forward=lambda key, batch: np.asarray([scores] * len(batch)), tree=tree,
                             consistent=consistent)

    # home, home>garden, home>garden>pots, home>kitchen, home>kitchen>pans, home>kitchen>pots, toys
    raw = [0.2, 0.1, 0.1, 0.3, 0.2, 0.9, 0.1]
    for consistent, want in ((True, [0.9, 0.1, 0.1, 0.9, 0.2, 0.9, 0.1]), (False, raw)):
        c = core(consistent, raw)
        res = c.resolve_all(["de"])
        assert c.scores(["q"], res)[0].tolist() == pytest.approx(want)
    res = core(True, raw).resolve_all(["de"])
    assert _paths(core(True, raw)) == [("home > kitchen > pots", 3)]
    assert res[0].locale_used == "de"


def test_the_tree_structure_is_computed_once_per_label_list_and_follows_its_order():
    """A model builds an inference core per predict call: the tree's structure over its columns
    is cached per (tree, label list), and a list in another order gets its own, right, columns."""
    tree = LabelTree.from_labels(PATHS)
    nodes = tree.nodes
    first = tree_columns(tree, nodes)
    assert tree_columns(tree, list(nodes)) is first
    rev = list(reversed(nodes))
    other = tree_columns(tree, rev)
    assert other is not first
    pot = rev.index("home > kitchen > pots")
    assert [rev[c] for c in other.ancestors[pot]] == ["home", "home > kitchen"]
    assert other.level[pot] == 3 and other.leaf[pot] and not other.leaf[rev.index("home")]
    assert {rev[c] for c in other.children[rev.index("home > kitchen")]} == {"home > kitchen > pots",
                                                                           "home > kitchen > pans"}
    # the same scores in either column order: the same answer
    scores = dict(zip(nodes, [0.9, 0.1, 0.1, 0.8, 0.2, 0.7, 0.1]))
    for order in (nodes, rev):
        core = InferenceCore(variant="unified-agnostic", classes=order, locales=["de"], thresholds={"global": 0.5},
                             tokenizers={UNIFIED: lambda q, loc: q}, tree=tree,
                             forward=lambda key, batch, o=order: np.asarray([[scores[c] for c in o]] * len(batch)))
        assert _paths(core) == [("home > kitchen > pots", 3)]


def test_a_taxonomy_given_to_a_flat_model_is_said_to_be_unused(tmp_path, capsys):
    from q2pt.cli import main
    from q2pt.data.io import write_dataset
    from q2pt.models import load_model
    from support import handmade_dataset

    data = write_dataset(handmade_dataset(), tmp_path / "data", "jsonl")
    (tmp_path / "tax.txt").write_text("new dept > x\n", encoding="utf-8")
    code = main(["train", "--data", str(data), "--encoder", "ngram", "--out", str(tmp_path / "m"), "--no-progress",
                 "--train.max_steps", "1", "--train.threads", "1", "--model.encoder_options", '{"dim": 8, "buckets": 512}',
                 "--data.taxonomy", str(tmp_path / "tax.txt"), "--data.label_depth", "1"])  # the paths cut to one level
    assert code == 0 and "is not used: this model is flat" in capsys.readouterr().err
    assert load_model(tmp_path / "m").tree_ is None
    # a tree model: the taxonomy's nodes that no training query has are counted as not learned
    code = main(["train", "--data", str(data), "--encoder", "ngram", "--out", str(tmp_path / "t"), "--no-progress",
                 "--train.max_steps", "1", "--train.threads", "1", "--model.encoder_options", '{"dim": 8, "buckets": 512}',
                 "--data.taxonomy", str(tmp_path / "tax.txt"), "--model.hierarchy", "tree"])
    assert code == 0 and "2 node(s) no training query has (a taxonomy's) are in the tree, not learned" in \
        capsys.readouterr().err
    tree_model = load_model(tmp_path / "t")
    assert "new dept > x" in tree_model.tree_.parent and "new dept > x" not in tree_model.classes_
