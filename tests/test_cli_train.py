"""`q2pt train`, `q2pt evaluate`, `q2pt predict` end to end (in-process, ngram encoder)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from support import need

need("torch")

from q2pt.cli import main  # noqa: E402
from q2pt.data.io import write_dataset, write_table  # noqa: E402
from support import LOCALES, TYPES, tiny_dataset  # noqa: E402

FAST = [
    "--encoder", "ngram", "--model.encoder_options.dim", "32", "--model.encoder_options.buckets", "4096",
    "--train.batch_size", "16", "--train.max_epochs", "8", "--train.lr", "0.05", "--train.threads", "1",
    "--no-progress",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "tiny"
    write_dataset(tiny_dataset(), folder, "parquet")
    return folder


@pytest.fixture(scope="module")
def models(data_dir, tmp_path_factory):
    """Model folders trained through the CLI: {variant: path}."""
    out = {}
    for variant in ("unified-aware", "non-unified"):
        folder = tmp_path_factory.mktemp("cli") / variant
        code = main(["train", "--data", str(data_dir), "--variant", variant, "--out", str(folder), "-q", *FAST])
        assert code == 0
        out[variant] = folder
    return out


def test_train_writes_a_model_folder(models, capsys):
    manifest = json.loads((models["unified-aware"] / "manifest.json").read_text())
    assert manifest["variant"] == "unified-aware" and manifest["labels"] == TYPES
    assert manifest["config"]["train"]["lr"] == 0.05 and manifest["config"]["model"]["encoder"] == "ngram"
    assert not (models["unified-aware"] / "checkpoints").exists()  # removed once the model is saved
    assert (models["non-unified"] / "models" / "de_DE" / "model.safetensors").is_file()


def test_train_prints_validation_table(data_dir, tmp_path, capsys):
    code = main(["train", "--data", str(data_dir), "--variant", "unified-agnostic", "--out", str(tmp_path / "m"),
                 "-q", *FAST, "--train.max_epochs", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "R@P80" in out and "de_DE" in out and "global" in out and "model saved to" in out


def test_a_model_records_its_data_folder_wherever_it_was_named_from(data_dir, tmp_path, monkeypatch, capsys):
    """``--data tiny`` from the data's parent was recorded as "tiny": ``train --config`` of the
    saved config elsewhere (and ``export onnx --evaluate``) looked for ./tiny."""
    monkeypatch.chdir(data_dir.parent)
    assert main(["train", "--data", data_dir.name, "--out", str(tmp_path / "m"), "-q", *FAST,
                 "--train.max_epochs", "1"]) == 0
    saved = json.loads((tmp_path / "m" / "manifest.json").read_text())["config"]["data"]["path"]
    assert Path(saved).is_absolute() and Path(saved).samefile(data_dir)


def test_train_config_file_and_resume(data_dir, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  max_epochs: 2\n  checkpoint_every: 3\nmodel:\n  variant: unified-agnostic\n")
    args = ["train", "--data", str(data_dir), "--config", str(cfg), "--out", str(tmp_path / "m"), "-q", *FAST]
    args.remove("8")
    args.remove("--train.max_epochs")
    assert main(args) == 0
    first = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert first["config"]["train"]["max_epochs"] == 2 and first["variant"] == "unified-agnostic"
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2  # nothing left to train: said, and the model kept
    assert "holds a finished model: there is no run to resume" in capsys.readouterr().err
    assert json.loads((tmp_path / "m" / "manifest.json").read_text()) == first


def test_parser_variants_match_the_config():
    from q2pt.cli.train import VARIANTS
    from q2pt.config import VARIANTS as CONFIG_VARIANTS

    assert VARIANTS == CONFIG_VARIANTS


def test_train_rejects_unknown_keys_and_bad_values(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "m"), "--train.lrr", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "'train.lrr'" in err and "train.lr" in err and "Traceback" not in err
    code = main(["train", "--out", str(tmp_path / "m"), "--train.batch_size", "-3"])
    assert code == 2 and "train.batch_size" in capsys.readouterr().err
    code = main(["train", "--out", str(tmp_path / "m"), "--print-config", "--encoder", "ngram", "--train.lr", "0.5"])
    assert code == 0 and json.loads(capsys.readouterr().out)["train"]["lr"] == 0.5
    # --threads, as evaluate and predict spell it, is train.threads (a flag: above the config file)
    code = main(["train", "--out", str(tmp_path / "m"), "--print-config", "--threads", "1"])
    assert code == 0 and json.loads(capsys.readouterr().out)["train"]["threads"] == 1
    code = main(["train", "--out", str(tmp_path / "m"), "--print-config", "--threads", "-1"])
    assert code == 2 and "train.threads" in capsys.readouterr().err
    # --print-config writes nothing, so it needs no --out; training does
    code = main(["train", "--print-config", "--encoder", "ngram"])
    assert code == 0 and json.loads(capsys.readouterr().out)["model"]["encoder"] == "ngram"
    code = main(["train", "--encoder", "ngram"])
    assert code == 2 and "--out MODEL_DIR is needed" in capsys.readouterr().err
    # an encoder option the encoder does not take: refused before --print-config shows it
    code = main(["train", "--print-config", "--encoder", "ngram", "--model.encoder_options.dimm", "8"])
    assert code == 2 and "unknown option(s) dimm for encoder 'ngram'" in capsys.readouterr().err


def test_evaluate_prints_a_table_or_json(models, data_dir, tmp_path, capsys):
    code = main(["evaluate", "--model", str(models["unified-aware"]), "--data", str(data_dir), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "R@P80" in printed and "en_US" in printed
    assert "R@P80: pooled, each row's pairs ranked under one threshold" in printed  # which figure is which
    assert "deployed R / P: as deployed, at the thresholds the model serves" in printed
    code = main(["evaluate", "--model", str(models["unified-aware"]), "--data", str(data_dir), "--json", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["locales"]) == set(LOCALES)
    for entry in [result["global"], *result["locales"].values()]:
        for key in ("r_at_p", "threshold", "pr_auc", "n_queries"):
            assert key in entry
    assert result["global"]["n_queries"] == 48
    assert result["global"]["r_at_p"] > 0.8
    assert 0.0 <= result["global"]["calibrated"]["precision"] <= 1.0


def test_evaluate_says_when_rows_were_in_the_training_data(models, data_dir, tmp_path, capsys):
    from q2pt.data import load_dataset
    from q2pt.models import load_model
    from q2pt.overlap import training_overlap

    ds = load_dataset(data_dir)
    rows = pd.concat([ds.train.head(5), ds.valid.head(2), ds.test.head(3)])[["query", "locale", "product_types"]]
    rows["query"] = rows["query"].str.upper()  # the same query, as the data layer normalises it
    path = tmp_path / "mixed.jsonl"
    write_table(rows, path)
    code = main(["evaluate", "--model", str(models["unified-aware"]), "--data", str(path), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["data"]["training_overlap"] == {"checked": True, "rows": 10, "in_train": 5,
                                                                    "in_valid": 2}
    assert "5 of 10 rows are in the model's training split and 2 in its validation split" in captured.err
    code = main(["evaluate", "--model", str(models["unified-aware"]), "--data", str(data_dir), "--json", "-q"])
    assert code == 0 and json.loads(capsys.readouterr().out)["data"]["training_overlap"]["in_train"] == 0
    # compare says it of each model, in its log, its JSON and the markdown report a release PR carries
    a, b = str(models["unified-aware"]), str(models["non-unified"])
    report = tmp_path / "report.md"
    code = main(["compare", a, b, "--data", str(path), "--json", "--out", str(report)])
    captured = capsys.readouterr()
    assert code == 0 and "5 of 10 rows are in model A's training split" in captured.err
    assert json.loads(captured.out)["data"]["training_overlap_b"]["in_valid"] == 2
    assert "**Warning:** 5 of 10 rows are in model B's training split" in report.read_text(encoding="utf-8")
    model = load_model(models["unified-aware"])
    assert model.seen_ is not None  # the folder keeps what it learnt; a folder from before is checked from its data:
    model.seen_ = None
    assert training_overlap(model, rows) == {"checked": True, "rows": 10, "in_train": 5, "in_valid": 2}
    model.manifest["data"]["simulated"] = True  # a folder that q2pt data simulate wrote: its rows are on disk
    assert training_overlap(model, rows) == {"checked": True, "rows": 10, "in_train": 5, "in_valid": 2}
    model.config.data.path = None
    assert "simulated store made in memory" in training_overlap(model, rows)["reason"]
    model = load_model(models["unified-aware"])  # the data changed since training: not checked, and said why
    model.seen_ = None
    model.manifest["data"]["fingerprint"] = "0" * 64
    out = training_overlap(model, rows)
    assert out["checked"] is False and "changed" in out["reason"]
    model.config.data.path = str(tmp_path / "gone")
    assert "not found" in training_overlap(model, rows)["reason"]


def test_evaluate_a_single_file_counts_unknown_labels_as_missed(models, tmp_path, capsys):
    frame = pd.DataFrame([
        {"query": "red shoes", "locale": "en_US", "product_types": ["shoes"]},
        {"query": "rot fernseher", "locale": "de_DE", "product_types": ["television", "gadget"]},
    ])
    path = tmp_path / "labelled.jsonl"
    write_table(frame, path)
    code = main(["evaluate", "--model", str(models["unified-aware"]), "--data", str(path), "--json",
                 "--precision", "0.5", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    g = result["global"]
    assert g["n_queries"] == 2 and g["n_positives"] == 3 and g["n_missing"] == 1
    assert g["r_at_p"] <= 2 / 3 + 1e-9  # "gadget" can never be found
    # such a file has no valid split: every row is used, and a --split that asks for one is told so
    code = main(["compare", str(models["unified-aware"]), str(models["non-unified"]), "--data", str(path),
                 "--split", "valid", "--json", "--bootstrap", "10", "-q"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["data"]["n_queries"] == 2
    assert "has no split column: every row is used, not a valid split" in captured.err


def test_evaluate_reports_bad_rows_and_corrupt_models(models, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("query,locale,product_types\nred shoes,en_US,\n")
    code = main(["evaluate", "--model", str(models["unified-aware"]), "--data", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv" in err and "row 1" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    code = main(["evaluate", "--model", str(broken), "--data", str(bad)])
    err = capsys.readouterr().err
    assert code == 3 and "manifest.json is corrupt" in err and "Traceback" not in err


def test_predict_queries(models, capsys):
    code = main(["predict", "--model", str(models["unified-aware"]), "--locale", "en_US", "red shoes", "cheap skillet", "-q"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("red shoes\tshoes (") and lines[1].startswith("cheap skillet\tfrying_pan (")
    # a query with a line break or a tab stays one line of tab-separated columns (shown escaped)
    code = main(["predict", "--model", str(models["unified-aware"]), "--locale", "en_US", "red\nshoes\tx", "-q"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 1 and lines[0].startswith("red\\nshoes\\tx\t"), lines
    code = main(["predict", "--model", str(models["unified-aware"]), "--locale", "de_DE", "--json", "--top-k", "2",
                 "--threshold", "0", "rote pfanne"])
    record = json.loads(capsys.readouterr().out)
    assert record["predicted_types"][0] == "frying_pan" and len(record["predicted_types"]) == 2


def test_predict_unseen_locale(models, capsys):
    code = main(["predict", "--model", str(models["unified-aware"]), "--locale", "fr_FR", "red shoes"])
    captured = capsys.readouterr()
    assert code == 0 and "agnostic" in captured.out and "fr_FR" in captured.err
    code = main(["predict", "--model", str(models["non-unified"]), "--locale", "fr_FR", "red shoes"])
    err = capsys.readouterr().err
    assert code == 2 and "fr_FR" in err and "--fallback-locale" in err
    code = main(["predict", "--model", str(models["non-unified"]), "--locale", "fr_FR", "--fallback-locale", "en_US",
                 "red shoes"])
    out = capsys.readouterr().out
    assert code == 0 and "shoes (" in out and "fallback locale en_US" in out


@pytest.mark.parametrize("ext", ["parquet", "jsonl", "csv", "tsv"])
def test_predict_file(models, tmp_path, ext, capsys):
    frame = pd.DataFrame({"query": ["red shoes", "rot fernseher", "big couch"], "locale": ["en_US", "de_DE", "en_US"],
                          "id": [1, 2, 3]})
    inp = tmp_path / f"in.{ext}"
    write_table(frame, inp)
    out = tmp_path / f"out.{ext}"
    code = main(["predict", "--model", str(models["non-unified"]), "--input", str(inp), "--out", str(out), "-q",
                 "--top-k", "1"])
    assert code == 0
    if ext == "parquet":
        result = pd.read_parquet(out)
        types = [list(x) for x in result["predicted_types"]]
    elif ext == "jsonl":
        result = pd.read_json(out, lines=True)
        types = list(result["predicted_types"])
    else:
        result = pd.read_csv(out, sep="," if ext == "csv" else "\t")
        types = [x.split("|") for x in result["predicted_types"]]
    assert [str(x) for x in result["id"]] == ["1", "2", "3"]  # the input rows and columns are kept
    assert types == [["shoes"], ["television"], ["sofa"]]
    assert "predicted_scores" in result.columns and "note" in result.columns


def test_predict_file_skips_blank_lines_and_says_so(models, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"query": "red shoes", "locale": "en_US"}\n\n{"query": "big couch", "locale": "en_US"}\n\n',
                   encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code = main(["predict", "--model", str(models["unified-aware"]), "--input", str(inp), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and "2 blank lines skipped" in err and "wrote 2 predictions" in err
    assert [r["query"] for r in pd.read_json(out, lines=True).to_dict("records")] == ["red shoes", "big couch"]
    inp.write_text('{"query": "red shoes", "locale": "en_US"}\n{not json\n', encoding="utf-8")
    assert main(["predict", "--model", str(models["unified-aware"]), "--input", str(inp), "--out", str(out),
                 "--overwrite"]) == 2
    assert "row 2" in capsys.readouterr().err  # a malformed row is still refused


def test_predict_to_csv_keeps_a_product_types_column_as_read_and_never_writes_over_its_input(models, tmp_path, capsys):
    inp = tmp_path / "labelled.csv"
    inp.write_text('query,locale,product_types\n"shoes, red",en_US,shoes|sneakers\ntv,en_US,tv\n', encoding="utf-8")
    out = tmp_path / "out.tsv"
    assert main(["predict", "--model", str(models["unified-aware"]), "--input", str(inp), "--out", str(out), "-q"]) == 0
    assert pd.read_csv(out, sep="\t")["product_types"].tolist() == ["shoes|sneakers", "tv"]  # not s|h|o|e|s...
    before = inp.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["predict", "--model", str(models["unified-aware"]), "--input", str(inp), "--out", str(inp), *extra]) == 2
        assert "is the input file" in capsys.readouterr().err and inp.read_bytes() == before


def test_predict_does_not_replace_an_existing_out_file_unless_told(models, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"query": "red shoes", "locale": "en_US"}\n', encoding="utf-8")
    out = tmp_path / "out.csv"
    out.write_text("earlier work\n", encoding="utf-8")
    args = ["predict", "--model", str(models["unified-aware"]), "--input", str(inp), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists: pass --overwrite" in err and out.read_text(encoding="utf-8") == "earlier work\n"
    assert main([*args, "--overwrite", "-q"]) == 0
    assert pd.read_csv(out)["query"].tolist() == ["red shoes"]
    # a folder is where --stream writes its parts (--overwrite once meant --stream)
    assert main([*args[:-1], str(tmp_path / "preds"), "--overwrite"]) == 2
    assert "a folder of parts is written with --stream" in capsys.readouterr().err
    # QUERY arguments print their predictions: an --out beside them would be ignored, so it is refused
    assert main(["predict", "--model", str(models["unified-aware"]), "--locale", "en_US", "--out", str(out), "x"]) == 2
    assert "--out writes the predictions of --input" in capsys.readouterr().err


def test_a_flat_model_refuses_a_depth_limit_on_the_command_line(models, tmp_path, capsys):
    code = main(["predict", "--model", str(models["unified-aware"]), "--locale", "en_US", "--max-depth", "1", "red shoes"])
    err = capsys.readouterr().err
    assert code == 2 and "max_depth applies to hierarchical models" in err and "Traceback" not in err
    assert "or it was trained with model.hierarchy flat" in err
    code = main(["predict", "--model", str(models["unified-aware"]), "--locale", "en_US", "--no-backoff", "red shoes"])
    assert code == 2 and "backoff false applies to hierarchical models" in capsys.readouterr().err


def test_predict_argument_errors(models, tmp_path, capsys):
    m = str(models["unified-aware"])
    for args, fragment in [
        (["predict", "--model", m, "red shoes"], "--locale"),
        (["predict", "--model", m], "nothing to predict"),
        (["predict", "--model", m, "--input", "x.csv"], "--out"),
        (["predict", "--model", m, "--locale", "en_US", "--threshold", "2", "x"], "threshold"),
        (["predict", "--model", m, "--locale", "en_US", "--top-k", "0", "x"], "top-k"),
    ]:
        assert main(args) == 2
        assert fragment in capsys.readouterr().err
    missing_col = tmp_path / "nolocale.csv"
    missing_col.write_text("query\nred shoes\n")
    assert main(["predict", "--model", m, "--input", str(missing_col), "--out", str(tmp_path / "o.csv")]) == 2
    assert "locale" in capsys.readouterr().err


@pytest.mark.parametrize("extra, expected",
                         [([], None), (["--threads", "1"], 1), (["--threads", "2"], 2), (["--threads", "0"], None)])
def test_predict_threads_apply_without_stream(models, monkeypatch, capsys, extra, expected):
    """--threads (default 0: torch's own) sets torch's threads for plain predict too, and is restored after."""
    import torch

    import q2pt.predict

    seen = []
    real = q2pt.predict.predict_rows

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(q2pt.predict, "predict_rows", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # something other than the values tested
    try:
        code = main(["predict", "--model", str(models["unified-aware"]), "--locale", "en_US", "red shoes", "-q", *extra])
        assert code == 0 and "shoes (" in capsys.readouterr().out
        assert seen == [3 if expected is None else expected]  # 0: torch's own setting is left alone
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert main(["predict", "--model", str(models["unified-aware"]), "--locale", "en_US", "x", "--threads", "-1"]) == 2
    assert "--threads" in capsys.readouterr().err
