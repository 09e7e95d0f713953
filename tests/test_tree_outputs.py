"""A hierarchical model's predictions carry each type's level and ancestors on every batch
path (``q2pt predict`` text and --json, predict_frame / predict_file, streaming, the Ray
predictor); a flat model's (and a ``flat`` prediction's) outputs keep their columns."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from support import need

need("torch")
pa = need("pyarrow")
pq = need("pyarrow.parquet")

from q2pt.data.tree import split_path  # noqa: E402
from q2pt.predict import ANCESTORS, LEVELS, NOTE, SCORES, TYPES  # noqa: E402

QUERIES = ["kinder kopfhörer", "rote schuhe"]
HEADPHONES = "electronics > audio > headphones"


def assert_paths_agree(types, levels, ancestors):
    """Per query: a level and an ancestor list per type; the level is the number of the type
    path's parts and the ancestors are its prefixes, top level first."""
    assert len(types) == len(levels) == len(ancestors)
    for ts, lvs, ancs in zip(types, levels, ancestors):
        assert len(ts) == len(lvs) == len(ancs)
        for t, lv, anc in zip(ts, lvs, ancs):
            parts = split_path(t)
            assert lv == len(parts)
            assert anc == [" > ".join(parts[:k]) for k in range(1, len(parts))]


def test_predict_cli_json_and_text_show_levels_and_ancestors(tree_model_dir, capsys):
    from q2pt.cli import main

    folder, _ = tree_model_dir
    base = ["predict", "--model", str(folder), "--locale", "de_DE", *QUERIES, "-q"]
    assert main([*base, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r[TYPES] for r in records] == [[HEADPHONES], ["fashion > shoes"]]
    assert [r[LEVELS] for r in records] == [[3], [2]]
    assert [r[ANCESTORS] for r in records] == [[["electronics", "electronics > audio"]], [["fashion"]]]
    assert list(records[0]) == ["query", "locale", TYPES, SCORES, LEVELS, ANCESTORS, NOTE]
    assert main([*base, "--json", "--max-depth", "2"]) == 0
    top = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert top[0][TYPES] == ["electronics > audio"] and top[0][LEVELS] == [2] and top[0][ANCESTORS] == [["electronics"]]
    assert main(base) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"kinder kopfhörer\t{HEADPHONES} \([01]\.\d{{3}}, level 3\)", lines[0]), lines[0]
    assert re.fullmatch(r"rote schuhe\tfashion > shoes \([01]\.\d{3}, level 2\)", lines[1]), lines[1]
    # --flat: every confident type, as a flat model answers: no levels or ancestors
    assert main([*base, "--json", "--flat"]) == 0
    flat = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"electronics", "electronics > audio", HEADPHONES} <= set(flat[0][TYPES])
    assert list(flat[0]) == ["query", "locale", TYPES, SCORES, NOTE]
    assert main([*base, "--flat"]) == 0
    assert "level" not in capsys.readouterr().out


def test_predict_frame_and_file_add_levels_and_ancestors(tree_model_dir, tmp_path):
    from q2pt.models import load_model
    from q2pt.predict import predict_file, predict_frame

    folder, test = tree_model_dir
    model = load_model(folder)
    frame = test[["query", "locale"]].reset_index(drop=True)
    out = predict_frame(model, frame)
    assert list(out.columns) == ["query", "locale", TYPES, SCORES, LEVELS, ANCESTORS, NOTE]
    assert_paths_agree(out[TYPES], out[LEVELS], out[ANCESTORS])
    assert any(3 in lvs for lvs in out[LEVELS])  # the deepest level is predicted
    flat = predict_frame(model, frame, flat=True)
    assert list(flat.columns) == ["query", "locale", TYPES, SCORES, NOTE]

    pd.DataFrame({"query": QUERIES, "locale": ["de_DE"] * 2}).to_csv(tmp_path / "in.csv", index=False)
    assert predict_file(model, tmp_path / "in.csv", tmp_path / "out.parquet") == 2
    got = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert got[LEVELS] == [[3], [2]] and got[ANCESTORS] == [[["electronics", "electronics > audio"]], [["fashion"]]]
    assert predict_file(model, tmp_path / "in.csv", tmp_path / "out.csv") == 2
    text = pd.read_csv(tmp_path / "out.csv")
    assert text[LEVELS].astype(str).tolist() == ["3", "2"]
    assert [json.loads(a) for a in text[ANCESTORS]] == got[ANCESTORS]


@pytest.mark.parametrize("workers", [0, 1])
def test_streaming_output_has_typed_level_and_ancestor_columns(tree_model_dir, tmp_path, workers):
    from q2pt.streaming import read_output, stream_predict

    folder, test = tree_model_dir
    queries = [*QUERIES, *test["query"].tolist()[:6]]
    pq.write_table(pa.table({"query": queries, "locale": ["de_DE"] * len(queries)}), tmp_path / "in.parquet")
    merged = tmp_path / "out.parquet"
    stream_predict(folder, tmp_path / "in.parquet", merged, workers=workers, chunk_size=3, progress=False)
    table = read_output(merged)
    assert table.schema.field(LEVELS).type == pa.list_(pa.int32())
    assert table.schema.field(ANCESTORS).type == pa.list_(pa.list_(pa.string()))
    got = table.to_pydict()
    assert got[TYPES][:2] == [[HEADPHONES], ["fashion > shoes"]]
    assert got[LEVELS][:2] == [[3], [2]]
    assert_paths_agree(got[TYPES], got[LEVELS], got[ANCESTORS])
    flat = stream_predict(folder, tmp_path / "in.parquet", tmp_path / "flat", workers=workers, chunk_size=3,
                          progress=False, flat=True)
    assert read_output(flat.output).column_names == ["query", "locale", "input_row", TYPES, SCORES, NOTE]


def test_ray_predictor_adds_typed_level_and_ancestor_columns(tree_model_dir):
    from q2pt.ray_predict import RayPredictor

    folder, _ = tree_model_dir
    table = pa.table({"query": QUERIES, "locale": ["de_DE", "de_DE"]})
    out = RayPredictor(str(folder))(table)
    assert out.column_names == ["query", "locale", TYPES, SCORES, LEVELS, ANCESTORS, NOTE]
    assert out.schema.field(LEVELS).type == pa.list_(pa.int32())
    assert out.schema.field(ANCESTORS).type == pa.list_(pa.list_(pa.string()))
    assert out.column(LEVELS).to_pylist() == [[3], [2]]
    assert out.column(ANCESTORS).to_pylist() == [[["electronics", "electronics > audio"]], [["fashion"]]]
    flat = RayPredictor(str(folder), flat=True)(table)
    assert flat.column_names == ["query", "locale", TYPES, SCORES, NOTE]


def test_a_flat_models_outputs_have_no_path_columns(stream_model_dir, tmp_path, capsys):
    from q2pt.cli import main
    from q2pt.models import load_model
    from q2pt.predict import predict_frame
    from q2pt.ray_predict import RayPredictor
    from q2pt.streaming import read_output, stream_predict

    model = load_model(stream_model_dir)
    assert model.tree_ is None
    frame = pd.DataFrame({"query": ["red shoe", "blue phone"], "locale": ["de", "us"]})
    assert list(predict_frame(model, frame).columns) == ["query", "locale", TYPES, SCORES, NOTE]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "in.parquet")
    out = stream_predict(stream_model_dir, tmp_path / "in.parquet", tmp_path / "out.parquet", workers=0,
                         progress=False)
    assert read_output(out.output).column_names == ["query", "locale", "input_row", TYPES, SCORES, NOTE]
    ray_out = RayPredictor(str(stream_model_dir))(pa.Table.from_pandas(frame, preserve_index=False))
    assert ray_out.column_names == ["query", "locale", TYPES, SCORES, NOTE]
    assert main(["predict", "--model", str(stream_model_dir), "--locale", "de", "red shoe", "--json", "-q"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["query", "locale", TYPES, SCORES, NOTE]
    assert main(["predict", "--model", str(stream_model_dir), "--locale", "de", "red shoe", "-q"]) == 0
    assert "level" not in capsys.readouterr().out
    # an input carrying an earlier hierarchical answer: its path columns go with the flat answer
    stale = frame.assign(predicted_levels=[[1], [2]], predicted_ancestors=[[[]], [["x"]]])
    assert list(predict_frame(model, stale).columns) == ["query", "locale", TYPES, SCORES, NOTE]
    stale_table = pa.Table.from_pandas(stale, preserve_index=False)
    assert RayPredictor(str(stream_model_dir))(stale_table).column_names == ["query", "locale", TYPES, SCORES, NOTE]
    pq.write_table(stale_table, tmp_path / "stale.parquet")
    out = stream_predict(stream_model_dir, tmp_path / "stale.parquet", tmp_path / "stale-out.parquet", workers=0,
                         progress=False)
    assert read_output(out.output).column_names == ["query", "locale", "input_row", TYPES, SCORES, NOTE]
