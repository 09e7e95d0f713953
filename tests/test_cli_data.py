"""``q2pt data ...`` through q2pt.cli.main: exit codes, output, no tracebacks."""

from __future__ import annotations

import json

import pytest

from q2pt.cli import main

HEADER = "query,locale,product_types"


def make(tmp_path, train=HEADER + "\nred shoes,en_US,shoes\n", name="d"):
    d = tmp_path / name
    d.mkdir()
    (d / "train.csv").write_text(train, encoding="utf-8")
    (d / "valid.csv").write_text(HEADER + "\nblue hat,en_US,shoes\n", encoding="utf-8")
    (d / "test.csv").write_text(HEADER + "\ngreen cap,de_DE,shoes\n", encoding="utf-8")
    return d


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_validate_ok_and_invalid(tmp_path, capsys):
    code, out, err = run(capsys, "data", "validate", str(make(tmp_path)))
    assert code == 0 and "OK: 0 errors" in out and err == ""
    bad = make(tmp_path, HEADER + "\n  ,en_US,shoes\nred,en_US,\n", name="bad")
    code, out, _ = run(capsys, "data", "validate", str(bad))
    assert code == 2
    assert "train.csv, row 1, field 'query': empty query, or only whitespace, control or invisible characters" in out
    assert "train.csv, row 2, field 'product_types'" in out
    assert "1-based data rows" in out


def test_validate_json_and_limits(tmp_path, capsys):
    bad = make(tmp_path, HEADER + "\n" + "".join(f"{'x' * 12} {i},en_US,shoes\n" for i in range(5)))
    code, out, _ = run(capsys, "data", "validate", str(bad), "--json", "--max-query-chars", "10", "--max-problems", "2")
    report = json.loads(out)
    assert code == 2 and report["ok"] is False
    assert report["counts"]["error"] == {"query_too_long": 5}
    assert report["counts"]["warning"] == {"unseen_locale": 1}  # de_DE only in test
    assert report["problems_shown"] == 2 and report["problems_total"] == 6
    assert report["problems"][0] == {
        "file": str(bad / "train.csv"), "row": 1, "field": "query", "severity": "error", "kind": "query_too_long",
        "message": "query has 14 characters, over the limit of 10 (--max-query-chars)",
    }


def test_unreadable_input_is_a_clean_error(tmp_path, capsys):
    code, out, err = run(capsys, "data", "validate", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("q2pt: ") and "no such file" in err
    d = tmp_path / "nodir"
    d.mkdir()
    code, _, err = run(capsys, "data", "stats", str(d))
    assert code == 2 and "no train file" in err


def test_stats_text_and_json(tmp_path, capsys):
    d = make(tmp_path)
    code, out, _ = run(capsys, "data", "stats", str(d))
    assert code == 0 and "en_US" in out and "de_DE" in out
    code, out, _ = run(capsys, "data", "stats", str(d), "--json")
    st = json.loads(out)
    assert code == 0 and st["queries"] == {"train": 1, "valid": 1, "test": 1, "total": 3}
    assert st["locales"]["en_US"]["shared_product_types"] == 1


def test_stats_on_invalid_data_stops_with_the_validation_message(tmp_path, capsys):
    bad = make(tmp_path, HEADER + "\nblue hat,en_US,shoes\n")  # leaks into valid
    code, out, err = run(capsys, "data", "stats", str(bad))
    assert code == 2 and out == ""
    assert err.startswith("q2pt: invalid dataset") and "leakage" in err and "valid.csv, row 1" in err


def test_from_clicks(tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text(
        "query,locale,product_type,clicks,purchases\n"
        + "".join(f"q{i},en_US,shoes,5,0\nq{i},en_US,socks,1,3\n" for i in range(10))
        + ",en_US,shoes,3,0\n",
        encoding="utf-8",
    )
    out_dir = tmp_path / "ds"
    code, out, _ = run(capsys, "data", "from-clicks", str(log), "--out", str(out_dir), "--purchase-weight", "1",
                       "--valid-frac", "0.2", "--test-frac", "0.2", "--format", "tsv")
    assert code == 0
    assert "dropped 1 rows: empty or missing query" in out and f"wrote {out_dir}" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["clicks_report.json", "test.tsv", "train.tsv", "valid.tsv"]
    code, out, _ = run(capsys, "data", "stats", str(out_dir), "--json")
    assert json.loads(out)["queries"] == {"train": 6, "valid": 2, "test": 2, "total": 10}
    # the output exists now: refuse, then --overwrite
    code, _, err = run(capsys, "data", "from-clicks", str(log), "--out", str(out_dir))
    assert code == 2 and "already exists" in err
    code, out, _ = run(capsys, "data", "from-clicks", str(log), "--out", str(out_dir), "--overwrite", "--json")
    assert code == 0 and json.loads(out)["queries_labelled"] == 10


def test_from_clicks_bad_input(tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text("query,locale,clicks\nq,en,3\n", encoding="utf-8")
    code, _, err = run(capsys, "data", "from-clicks", str(log), "--out", str(tmp_path / "o"))
    assert code == 2 and "missing column 'product_type'" in err
    code, _, err = run(capsys, "data", "from-clicks", str(log), "--out", str(tmp_path / "o"), "--min-share", "2")
    assert code == 2 and "--min-share" in err


def test_simulate_and_default_simulated_store(tmp_path, capsys):
    out_dir = tmp_path / "sim"
    code, out, _ = run(capsys, "data", "simulate", "--preset", "tiny", "--seed", "1", "--out", str(out_dir),
                       "--format", "jsonl")
    assert code == 0 and "SIMULATED" in out
    assert (out_dir / "train.jsonl").exists()
    code, out, _ = run(capsys, "data", "validate", str(out_dir))
    assert code == 0
    code, out, _ = run(capsys, "data", "stats", str(out_dir), "--json")
    assert json.loads(out)["simulated"] is True
    # no PATH: the built-in simulated store
    code, out, _ = run(capsys, "data", "stats", "--preset", "tiny", "--json")
    st = json.loads(out)
    assert code == 0 and st["source"] == "simulated:tiny:seed=0" and st["simulated"] is True
    # a folder that is not a simulated dataset is not replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x", encoding="utf-8")
    code, _, err = run(capsys, "data", "simulate", "--preset", "tiny", "--out", str(other))
    assert code == 2 and err.startswith("q2pt: ") and (other / "keep.txt").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["data", "simulate", "--preset", "huge", "--out", "x"])
    assert exc.value.code == 2
    capsys.readouterr()
