"""q2pt compare and the per-type diagnostics: two tiny models with a known difference."""

import json

import numpy as np
import pytest

from support import need

need("torch")


def _silenced(model_dir, label):
    """The model of ``model_dir`` with product type ``label`` never predicted (its logit -50, and
    no vote for it in the query memory)."""
    import torch

    from q2pt.models import load_model

    model = load_model(model_dir)
    net = model.networks["*"]
    col = model.classes_.index(label)
    last = net.head[-1]
    with torch.no_grad():
        last.weight[col] = 0.0
        last.bias[col] = -50.0
        if net.memory_values is not None:
            net.memory_values[net.memory_labels == col] = 0.0
    return model


@pytest.fixture(scope="module")
def rows():
    from support import handmade_dataset

    return handmade_dataset().test


def test_a_model_against_itself_differs_by_nothing(aware_dir, rows):
    from q2pt.comparison import compare_models, gate_failures
    from q2pt.models import load_model

    a, b = load_model(aware_dir), load_model(aware_dir)
    result = compare_models(a, b, rows, bootstrap=50)
    g = result["global"]
    assert g["difference"] == 0.0 and g["difference_ci"] == [0.0, 0.0]
    assert g["agreement"] == {"exact": 1.0, "jaccard": 1.0}
    assert result["types"] == []  # nothing changed, and the report says so
    assert all(t["change"] == 0.0 for t in result["thresholds"])
    assert gate_failures(result, 0.0) == []
    from q2pt.comparison import format_comparison

    result["models"] = {s: {"name": s, "renamed_as_b": {}} for s in ("a", "b")}
    result["data"], result["notes"] = {"source": "rows", "n_queries": len(rows)}, []
    assert "recall changed: none among the types with at least 5 positive pairs" in format_comparison(result)


def test_a_silenced_type_is_the_largest_change_and_fails_the_gate(aware_dir, rows):
    from q2pt.comparison import compare_models, format_comparison, gate_failures
    from q2pt.models import load_model

    a = load_model(aware_dir)
    b = _silenced(aware_dir, "shoes")
    result = compare_models(a, b, rows, bootstrap=100)
    top = result["types"][0]
    assert top["type"] == "shoes" and top["recall_b"] == 0.0 and top["change"] == -top["recall_a"] < 0
    support = sum("shoes" in set(t) for t in rows["product_types"])
    assert top["support"] == support
    g = result["global"]
    assert g["difference"] < 0
    lo, hi = g["difference_ci"]
    assert lo <= g["difference"] <= hi and hi <= 0.0  # the paired CI sits below zero
    assert g["agreement"]["exact"] < 1.0
    failures = gate_failures(result, 1.0)
    assert failures and failures[0].startswith("global")
    # the reverse comparison passes the same gate (B better than A)
    assert gate_failures(compare_models(b, a, rows, bootstrap=0), 1.0) == []
    text = format_comparison({**result, "gate": {"points": 1.0, "failures": failures}})
    assert "| shoes |" in text and "Gate failed" in text


def test_paired_bootstrap_difference_is_paired():
    from q2pt.metrics import paired_bootstrap_difference

    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < 0.3).astype(np.int8)
    s = rng.random((200, 4)) * 0.5 + y * 0.4
    # the same model twice: every resample's difference is 0
    assert paired_bootstrap_difference((y, s, None), (y, s, None), n_boot=50) == (0.0, 0.0)
    # B perfect: its R@P is 1 on every resample, so the interval is 1 - A's bootstrap interval
    lo, hi = paired_bootstrap_difference((y, s, None), (y, y.astype(float), None), n_boot=200)
    assert 0.0 < lo <= hi <= 1.0


def test_compare_cli_gate_exit_status_and_outputs(aware_dir, tmp_path, rows, capsys):
    from q2pt.cli import main

    data = tmp_path / "rows.jsonl"
    frame = rows.copy()
    frame["product_types"] = frame["product_types"].map(list)
    frame[["query", "locale", "product_types"]].to_json(data, orient="records", lines=True, force_ascii=False)
    b = tmp_path / "b"
    _silenced(aware_dir, "shoes").save(b)
    out = tmp_path / "report.json"
    code = main(["compare", str(aware_dir), str(b), "--data", str(data), "--bootstrap", "50",
                 "--fail-if-worse", "1", "--out", str(out), "-q", "--min-support", "3"])
    assert code == 1
    assert "Gate failed" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["gate"]["passed"] is False and report["models"]["b"]["fingerprint"]
    assert report["data"]["n_queries"] == len(rows)
    assert main(["compare", str(b), str(aware_dir), "--data", str(data), "--bootstrap", "0",
                 "--fail-if-worse", "1", "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["gate"]["passed"] is True
    assert main(["compare", str(aware_dir), str(b), "--data", str(data), "--fail-if-worse", "-1"]) == 2
    capsys.readouterr()
    # an existing report is replaced only when asked
    assert main(["compare", str(aware_dir), str(b), "--data", str(data), "--out", str(out), "-q"]) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err and json.loads(out.read_text()) == report
    assert main(["compare", str(b), str(aware_dir), "--data", str(data), "--bootstrap", "0", "--fail-if-worse", "1",
                 "--out", str(out), "--overwrite", "-q"]) == 0
    text = capsys.readouterr().out
    assert "deployed precision A / B" in text  # the recall won is said beside the precision paid for it
    assert "Gate passed: B is nowhere worse than A by more than 1 points, globally and in the" in text
    assert json.loads(out.read_text())["gate"]["passed"] is True
    # the library gives what the command prints: the same result, the same markdown
    from q2pt.comparison import compare_folders, format_comparison

    result = compare_folders(aware_dir, b, data, bootstrap=50, fail_if_worse=1.0, min_support=3)
    assert result == report and result["notes"] == [] and result["config"]["min_support"] == 3
    # a model against itself, or on data of other labels, passes the gate: the notes say why it means nothing
    same = compare_folders(aware_dir, aware_dir, data, bootstrap=0, fail_if_worse=1.0)
    assert same["gate"]["passed"] and any("the same model" in note for note in same["notes"])
    other = tmp_path / "other.jsonl"
    frame["product_types"] = frame["product_types"].map(lambda ts: [f"shop > {t}" for t in ts])
    frame[["query", "locale", "product_types"]].to_json(other, orient="records", lines=True, force_ascii=False)
    foreign = compare_folders(aware_dir, b, other, bootstrap=0)
    assert foreign["data"]["pairs_known_a"] == 0.0
    assert sum("knows the product types of 0% of the data's pairs" in note for note in foreign["notes"]) == 2
    text = format_comparison(result)
    assert f"A = {aware_dir} (unified-aware / " in text and f"Rows: {data}, {len(rows)} queries." in text


def test_per_type_report_on_hand_counted_sets():
    from q2pt.diagnostics import per_type_report

    truth = [["a"], ["a", "b"], ["b"], ["c"]]
    pred = [["a"], ["b"], ["a"], []]
    report = per_type_report(truth, pred, ["x", "x", "y", "y"], top=2)
    by_type = {e["type"]: e for e in report["types"]}
    assert by_type["a"] == {"type": "a", "support": 2, "predicted": 2, "true_positives": 1, "precision": 0.5,
                            "recall": 0.5, "f1": 0.5, "errors": 2}
    assert by_type["c"]["precision"] is None and by_type["c"]["recall"] == 0.0
    # locale y: a false alarm for a, a miss for b and one for c: one error each; the types with
    # support first (b, c), then by name
    assert [e["type"] for e in report["locales"]["y"]["failing"]] == ["b", "c"]
    assert [e["type"] for e in report["failing"]] == ["a", "b"]  # 2 errors, then b: 1 (support 2)


def test_evaluate_reports_per_type_metrics(aware_dir, rows):
    from q2pt.models import load_model

    model = load_model(aware_dir)
    result = model.evaluate(rows, top_types=3)
    types = result["types"]
    assert sum(e["support"] for e in types["types"]) == sum(len(set(t)) for t in rows["product_types"])
    assert set(types["locales"]) == set(rows["locale"])
    assert all(len(v["failing"]) <= 3 for v in types["locales"].values())
    # the per-type counts agree with the calibrated operating point's pooled recall
    tp = sum(e["true_positives"] for e in types["types"])
    pos = sum(e["support"] for e in types["types"])
    assert tp / pos == pytest.approx(result["global"]["calibrated"]["recall"])


def test_a_hierarchical_model_is_compared_as_evaluate_judges_it(tree_model_dir):
    """On every node of its tree, the true types with their ancestors: its R@P and its recall
    as deployed are those of q2pt evaluate."""
    from q2pt.comparison import compare_models
    from q2pt.models import load_model

    folder, test = tree_model_dir
    model = load_model(folder)
    result = compare_models(model, model, test, bootstrap=0)
    judged = model.evaluate(test)
    assert result["global"]["a"] == pytest.approx(judged["global"]["r_at_p"])
    assert result["global"]["deployed"]["a"]["recall"] == pytest.approx(judged["global"]["calibrated"]["recall"])
    # the pairs gated on are the pairs judged: every node's (a locale's count gates it)
    assert result["global"]["n_positives"] == judged["global"]["n_positives"]
    for loc, entry in result["locales"].items():
        assert entry["n_positives"] == judged["locales"][loc]["n_positives"]
    assert "n_positives_a" not in result["global"]
