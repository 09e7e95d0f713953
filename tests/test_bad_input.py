"""Bad input found by a new user's walk (2026-12-07): each case is the input, with the error,
count or warning it must get, and what it must not do (a traceback, a value silently changed)."""

from __future__ import annotations

import json
import logging

import pytest

from support import need, run_cli

need("torch")

from q2pt.cli import main  # noqa: E402
from q2pt.config import resolve_config  # noqa: E402
from q2pt.data.schema import has_visible_text, query_problem  # noqa: E402
from q2pt.errors import ConfigError  # noqa: E402

HEADER = "query,locale,product_types"


run = run_cli  # q2pt ARGV through the CLI: (code, out, err), never a traceback


def test_a_file_of_rows_to_split_keeps_its_read_problems(tmp_path, capsys):
    """validate said OK where split refused: the reader's problems were dropped for a file
    without a split column; an empty one is an error, a missing column is said once."""
    bad = tmp_path / "rows.csv"
    bad.write_text(HEADER + "\nr1,us,a\nr2,us,a,EXTRA\nr3,us,b\n", encoding="utf-8")
    code, out, _ = run(capsys, "data", "validate", bad)
    assert code == 2 and "rows.csv, row 2: expected 3 fields, found 4" in out
    empty = tmp_path / "empty.csv"
    empty.write_text(HEADER + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "data", "validate", empty)
    assert code == 2 and "no rows to split" in out
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("query,locale\nr1,us\n", encoding="utf-8")
    code, out, _ = run(capsys, "data", "validate", nocol)
    assert code == 2 and out.count("missing column 'product_types'") == 1


def test_a_locale_that_is_a_list_or_an_object_is_a_row_error(tmp_path, capsys):
    rows = tmp_path / "loc.jsonl"
    rows.write_text(json.dumps({"query": "x", "locale": ["us"], "product_types": ["a"], "split": "train"}) + "\n"
                    + json.dumps({"query": "y", "locale": {"a": 1}, "product_types": ["a"], "split": "test"}) + "\n",
                    encoding="utf-8")
    code, out, _ = run(capsys, "data", "validate", rows)
    assert code == 2
    assert "row 1, field 'locale': locale must be a string id, got list" in out
    assert "row 2, field 'locale': locale must be a string id, got dict" in out


def test_a_header_column_without_a_name_is_refused_naming_it(tmp_path, capsys):
    f = tmp_path / "trailing.csv"
    f.write_text(HEADER + ",\nx,us,a,\n", encoding="utf-8")
    code, _, err = run(capsys, "data", "validate", f)
    assert code == 2 and "column(s) 4 of the header have no name" in err


def test_extra_columns_keep_their_values_through_a_split(tmp_path, capsys):
    import pyarrow.parquet as pq

    rows = [{"query": "a", "locale": "us", "product_types": ["x"], "id": 1, "order": 9007199254740993},
            {"query": "b", "locale": "us", "product_types": ["y"], "id": "B-2", "order": None},
            {"query": "c", "locale": "us", "product_types": ["y"], "id": None, "order": 5}]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, _, err = run(capsys, "data", "split", src, "--out", tmp_path / "s", "--valid", "0", "--test", "0")
    assert code == 0
    assert "column 'id' mixes values of several kinds (1 int, 1 str)" in err  # a Parquet column holds one kind
    got = {r["query"]: r for r in pq.read_table(tmp_path / "s" / "train.parquet").to_pylist()}
    assert [got[q]["order"] for q in "abc"] == [9007199254740993, None, 5]  # exact, not rounded floats
    assert [got[q]["id"] for q in "abc"] == ["1", "B-2", None]


def test_a_bool_is_not_a_number_in_the_config():
    for flags in ({"train.max_epochs": True}, {"train.max_steps": False}, {"model.head_hidden": [True]}):
        with pytest.raises(ConfigError, match="expected a number, got true/false"):
            resolve_config(flags=flags)
    assert resolve_config(flags={"train.subtype_names": False}).train.subtype_names is False


def test_queries_that_show_nothing_are_empty_everywhere():
    for shown in ("\u200b", "\x00\x01", " \u3000\u00a0", "\ufeff", "\u2066\u2069", ""):
        assert not has_visible_text(shown)
        assert query_problem(shown)[0] == "empty_query"
    for fine in ("a", "a\x00b", "\u200bx", "e\u0301", "日本"):
        assert has_visible_text(fine) and query_problem(fine) is None


def test_max_query_chars_below_one_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "validate", str(tmp_path), "--max-query-chars", "0"])
    assert exit_.value.code == 2 and "must be at least 1, got 0" in capsys.readouterr().err


def test_click_log_fields_that_are_not_text_are_counted_as_such(tmp_path, capsys):
    log = tmp_path / "clicks.jsonl"
    rows = [{"query": "red shoes", "locale": "us", "product_type": "shoes", "clicks": 5},
            {"query": "blue hat", "locale": "us", "product_type": ["hats"], "clicks": 5},
            {"query": "\u200b\u200b", "locale": "us", "product_type": "shoes", "clicks": 5}]  # shows nothing
    log.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, _, _ = run(capsys, "data", "from-clicks", log, "--out", tmp_path / "d", "--valid", "0", "--test", "0")
    assert code == 0  # the log's bad rows are dropped and counted, not the whole log refused
    dropped = json.loads((tmp_path / "d" / "clicks_report.json").read_text(encoding="utf-8"))["rows_dropped"]
    assert dropped == {"product_type not text (a number, list or object)": 1, "empty or missing query": 1}


def test_predict_says_what_it_replaces_and_keeps_extra_values_exact(aware_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.csv"
    src.write_bytes(b"query,locale,note,predicted_types,store\nred shoes,de_DE,my note,keep me,Caf\xe9\n")
    code, _, err = run(capsys, "predict", "--model", aware_dir, "--input", src, "--out", tmp_path / "o.csv")
    assert code == 0
    assert "input column(s) note, predicted_types are replaced by the prediction columns" in err
    assert "1 value(s) of column 'store' have bytes that are not UTF-8 (first at row 1)" in err
    assert "Caf\ufffd" in (tmp_path / "o.csv").read_text(encoding="utf-8")
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"query": ["red shoes", "hat", "lamp"], "locale": ["de_DE"] * 3,
                             "order": pa.array([9007199254740993, None, 5], type=pa.int64())}), ints)
    for out in ("o.parquet", "o.jsonl"):
        assert run(capsys, "predict", "--model", aware_dir, "--input", ints, "--out", tmp_path / out)[0] == 0
    assert pq.read_table(tmp_path / "o.parquet").column("order").to_pylist() == [9007199254740993, None, 5]
    lines = (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["order"] for line in lines] == [9007199254740993, None, 5]
    nested = tmp_path / "nested.jsonl"
    nested.write_text(json.dumps({"query": "hat", "locale": "de_DE", "extra": {"a": [1, 2]}}) + "\n", encoding="utf-8")
    assert run(capsys, "predict", "--model", aware_dir, "--input", nested, "--out", tmp_path / "n.csv")[0] == 0
    assert '"{""a"": [1, 2]}"' in (tmp_path / "n.csv").read_text(encoding="utf-8")  # JSON, not Python's repr


def test_a_fallback_locale_is_ignored_by_a_unified_model_and_said_once(aware_dir, caplog):
    from q2pt.inference import _fallback_ignored
    from q2pt.models import load_model
    from q2pt.serving.runtime import load_runtime

    _fallback_ignored.cache_clear()  # said once a process: this test's process too
    model = load_model(aware_dir)
    with caplog.at_level(logging.WARNING, logger="q2pt"):
        model.predict(["hat", "lamp"], ["zz", "zz"], fallback_locale="qq")
        model.predict(["hat"], ["zz"], fallback_locale="qq")
    said = [r.getMessage() for r in caplog.records if "fallback locale (qq)" in r.getMessage()]
    assert len(said) == 1 and "ignored" in said[0]
    assert load_runtime(aware_dir, fallback_locale="qq").fallback_locale is None  # /v1/model says none


def test_data_overwrite_replaces_only_a_data_folder_and_never_its_input(tmp_path, capsys):
    rows = tmp_path / "week" / "week2.jsonl"
    rows.parent.mkdir()
    rows.write_text("".join(json.dumps({"query": f"q{i}", "locale": "us", "product_types": ["a"]}) + "\n"
                            for i in range(12)), encoding="utf-8")
    code, _, err = run(capsys, "data", "split", rows, "--out", rows.parent, "--overwrite")
    assert code == 2 and "holds" in err and "which this command reads" in err and rows.is_file()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = run(capsys, "data", "split", rows, "--out", notes, "--overwrite")
    assert code == 2 and "holds more than a dataset" in err and (notes / "notes.txt").is_file()
    out = tmp_path / "splits"
    for folds in ((), ("--folds", "2"), ()):  # a split's own folder (or folds) is replaced
        assert run(capsys, "data", "split", rows, "--out", out, "--overwrite", *folds)[0] == 0


def test_an_experiment_refuses_data_keys_it_would_not_read(tmp_path, capsys):
    for argv in (["--data.path", "x"], ["--data.preset", "tiny"], ["--data.seed", "3"]):
        code, _, err = run(capsys, "experiment", "--encoder", "ngram", "--out", tmp_path / "e", *argv)
        assert code == 2 and "an experiment's data is set by --data PATH" in err, argv
    conf = tmp_path / "c.yaml"
    conf.write_text("data:\n  preset: tiny\n", encoding="utf-8")
    code, _, err = run(capsys, "experiment", "--config", conf, "--encoder", "ngram", "--out", tmp_path / "e")
    assert code == 2 and "data.preset (in the config file)" in err
    code, _, err = run(capsys, "experiment", "--data", tmp_path, "--seed", "5", "--out", tmp_path / "e")
    assert code == 2 and "--seed seeds the simulated store" in err
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    code, _, err = run(capsys, "experiment", "--preset", "tiny", "--out", tmp_path / "afile")
    assert code == 2 and "is a file; the report folder is written there" in err


# ---------------------------------------------------------------- a second walk (2026-12-07, later)


def test_config_files_and_label_maps_in_other_encodings_are_named_not_a_traceback(tmp_path, capsys):
    """A UTF-16 config (Notepad, PowerShell) and a Latin-1 label map (Excel) were tracebacks; a
    byte-order mark on UTF-8 is read (a JSON config with one was refused, a CSV label map read
    its header as a mapping)."""
    utf16 = tmp_path / "c.yaml"
    utf16.write_bytes("train:\n  max_epochs: 2\n".encode("utf-16"))
    code, _, err = run(capsys, "train", "--out", tmp_path / "m", "--encoder", "ngram", "--print-config",
                       "--config", utf16)
    assert code == 2 and f"config file {utf16} is not UTF-8 text (UTF-16, by its byte-order mark" in err
    bom = tmp_path / "c.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"train": {"max_epochs": 2}}).encode())
    code, out, _ = run(capsys, "train", "--out", tmp_path / "m", "--encoder", "ngram", "--print-config",
                       "--config", bom)
    assert code == 0 and json.loads(out)["train"]["max_epochs"] == 2
    latin1 = tmp_path / "lm.csv"
    latin1.write_bytes(b"old,new\ncaf\xe9,coffee\n")
    from q2pt.errors import DataError
    from q2pt.training.warm import read_label_map

    with pytest.raises(DataError, match=r"the label map .*lm\.csv is not UTF-8 text \(invalid continuation byte "
                                        r"at byte 11\)"):
        read_label_map(latin1)
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbfold,new\nsneakers,shoes\n")
    assert read_label_map(excel) == {"sneakers": "shoes"}


def test_an_empty_label_separator_is_a_usage_error_in_the_data_commands(tmp_path, capsys):
    rows = tmp_path / "ok.csv"
    rows.write_text(HEADER + "\nr1,us,a\n", encoding="utf-8")
    for command in ("validate", "stats"):
        with pytest.raises(SystemExit) as info:
            main(["data", command, str(rows), "--label-separator", ""])
        assert info.value.code == 2
        assert "--label-separator: must not be empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # 0 is "all"; -1 was read as all too
        main(["data", "validate", str(rows), "--max-problems", "-1"])
    assert info.value.code == 2 and "--max-problems: must be at least 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["train.lr", "train.encoder_lr", "train.name_examples"])
def test_an_infinite_number_in_the_config_is_refused(key):
    """``--train.lr 1e999`` trained, then failed on NaN scores, leaving checkpoints behind."""
    with pytest.raises(ConfigError, match=key.split(".")[1]):
        resolve_config(overrides={key: float("inf")})


def test_a_nan_weight_and_spaces_around_a_type_are_said(tmp_path, capsys):
    """A JSONL NaN weight was reported as "no weight"; a type's surrounding spaces were stripped
    without a word; 'a||' was one error said twice."""
    rows = tmp_path / "w.jsonl"
    rows.write_text('{"query": "a", "locale": "us", "product_types": ["x"], "weight": NaN, "split": "train"}\n'
                    '{"query": "b", "locale": "us", "product_types": ["\\tx"], "weight": 2, "split": "train"}\n'
                    '{"query": "c", "locale": "us", "product_types": ["x"], "weight": 2, "split": "test"}\n',
                    encoding="utf-8")
    code, out, _ = run(capsys, "data", "validate", rows)
    assert code == 0
    assert "row 1, field 'weight': no weight (NaN, read as no value): weight 1 (the default)" in out
    assert "row 2, field 'product_types': product type(s) with spaces around them, read without: '\\tx'" in out
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\nr1,us,sneakers||\n", encoding="utf-8")
    code, out, _ = run(capsys, "data", "validate", bad)
    assert code == 2 and out.count("empty product type") == 1


def test_validate_reads_the_folders_locales_file_as_training_does(tmp_path, capsys):
    """validate said OK where train refused the folder for its locales.json."""
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.jsonl").write_text(
            json.dumps({"query": f"q {split}", "locale": "us", "product_types": ["a"]}) + "\n", encoding="utf-8")
    (tmp_path / "locales.json").write_text('{"us": "en"}', encoding="utf-8")
    code, out, _ = run(capsys, "data", "validate", tmp_path)
    assert code == 2 and "locales.json: store 'us': expected a non-empty list of language codes, got 'en'" in out


def test_refusals_that_came_late_come_first(aware_dir, tmp_path, capsys):
    """An --out that is a file, an encoder option of the wrong kind, --chunk-size without
    --stream, and export's --evaluate data: refused before any data is read or file written."""
    taken = tmp_path / "ok.csv"
    taken.write_text("x\n", encoding="utf-8")
    code, _, err = run(capsys, "train", "--out", taken, "--data", tmp_path / "missing", "--encoder", "ngram")
    assert code == 2 and "it exists and is not a folder" in err  # (not "no such file" of the data)
    code, _, err = run(capsys, "train", "--out", tmp_path / "m", "--encoder", "ngram",
                       "--model.encoder_options.dim", "abc", "--print-config")
    assert code == 2 and "model.encoder_options.dim: encoder 'ngram' takes int (default 128), got 'abc'" in err
    code, _, err = run(capsys, "predict", "--model", aware_dir, "--input", taken, "--out", tmp_path / "p.jsonl",
                       "--chunk-size", "0")
    assert code == 2 and "--chunk-size sets the parts of --stream" in err
    out = tmp_path / "m.onnx"
    code, _, err = run(capsys, "export", "onnx", "--model", aware_dir, "--out", out, "--evaluate",
                       "--data", tmp_path / "missing")
    assert code == 2 and "missing" in err and not out.exists()
    out.write_text("an earlier export", encoding="utf-8")  # where it goes is checked before the data is read
    code, _, err = run(capsys, "export", "onnx", "--model", aware_dir, "--out", out, "--evaluate",
                       "--data", tmp_path / "missing")
    assert code == 2 and "--overwrite" in err and "missing" not in err
    assert out.read_text(encoding="utf-8") == "an earlier export"
