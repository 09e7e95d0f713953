"""ONNX export and the ONNX runtime: outputs equal PyTorch's within 1e-4 (ngram models of
every layout, and the USE encoder), int8 quantization and its measured
R@P cost, `q2pt export onnx`, `serve --runtime onnx`, refusal of wrong or broken files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support import need

need("torch")
onnx = need("onnx")
need("onnxruntime")
need("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from q2pt.cli import main  # noqa: E402
from q2pt.errors import ConfigError, ModelLoadError  # noqa: E402
from q2pt.models import load_model  # noqa: E402
from q2pt.serving.app import create_app  # noqa: E402
from q2pt.serving.onnx_export import evaluate_exports, export_onnx, format_evaluation  # noqa: E402
from q2pt.serving.runtime import OnnxRuntime, TorchRuntime, load_runtime  # noqa: E402
from q2pt.serving.settings import ServeSettings  # noqa: E402
from support import HANDMADE_LOCALES as LOCALES  # noqa: E402
from support import handmade_dataset, handmade_frame  # noqa: E402

# varied queries: other scripts, repeated words, long and one-character ones, unseen words
QUERIES = handmade_frame(40, 7)["query"].tolist() + [
    "x", "schuhe schuhe schuhe", "スマホケース 赤", "детские наушники", "a b c d e f g h i j k l m n o p",
]


@pytest.fixture(scope="module")
def aware_export(aware_dir, tmp_path_factory):
    model = load_model(aware_dir)
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "aware.onnx")


def _compare(model, path, locales):
    torch_rt, onnx_rt = TorchRuntime(model), OnnxRuntime(model, path)
    qs = [q for _ in locales for q in QUERIES]
    res = [torch_rt.resolve(loc) for loc in locales for _ in QUERIES]
    a, b = torch_rt.predict(qs, res), onnx_rt.predict(qs, res)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    return float(np.nanmax(np.abs(a - b)))


def test_unified_export_equals_pytorch(aware_export):
    model, result = aware_export
    assert result.path.is_file() and result.files == {"*": result.path}
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4 and result.n_checked > 0
    # every locale with its token, and an unseen one without (locale-agnostic)
    assert _compare(model, result.path, list(LOCALES) + ["xx_XX"]) <= 1e-4
    graph = onnx.load(str(result.path))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["q2pt.labels"]) == model.classes_
    assert meta["q2pt.variant"] == "unified-aware" and json.loads(meta["q2pt.inputs"]) == ["ids", "offsets"]
    # a flat model's file carries its calibrated thresholds and its fingerprint, as a tree's does
    assert json.loads(meta["q2pt.thresholds"]) == pytest.approx(model.thresholds_)
    assert meta["q2pt.model_fingerprint"] == model.fingerprint and "q2pt.tree" not in meta
    assert [o.name for o in graph.graph.output] == ["probabilities"]


def test_nonunified_export_is_a_folder_per_locale(nonunified_dir, tmp_path):
    model = load_model(nonunified_dir)
    result = export_onnx(model, tmp_path / "nu")
    assert sorted(p.name for p in (tmp_path / "nu").iterdir()) == ["de_DE.onnx", "en_US.onnx", "fr_FR.onnx", "index.json"]
    assert json.loads((tmp_path / "nu" / "index.json").read_text())["files"]["de_DE"] == "de_DE.onnx"
    assert result.max_abs_diff <= 1e-4
    assert _compare(model, result.path, list(LOCALES)) <= 1e-4
    with pytest.raises(ConfigError, match="folder"):
        export_onnx(model, tmp_path / "nu.onnx")


def test_int8_export_and_its_measured_cost(aware_export, tmp_path):
    model, fp32 = aware_export
    int8 = export_onnx(model, tmp_path / "int8.onnx", quantize="int8")
    meta = {p.key: p.value for p in onnx.load(str(int8.path)).metadata_props}
    assert meta["q2pt.quantize"] == "int8"
    assert 0 < int8.max_abs_diff < 0.1  # quantized: close, not equal
    ev = evaluate_exports(model, handmade_dataset(), {"onnx-fp32": fp32.path, "onnx-int8": int8.path})
    runs = ev["runtimes"]
    assert set(runs) == {"torch", "onnx-fp32", "onnx-int8"} and ev["n_queries"] == 150
    assert runs["onnx-fp32"]["max_abs_diff_vs_torch"] <= 1e-4
    assert runs["onnx-fp32"]["global"] == pytest.approx(runs["torch"]["global"])
    assert set(runs["onnx-int8"]["locales"]) == set(LOCALES)
    assert runs["torch"]["answers_differ_vs_torch"] == runs["onnx-fp32"]["answers_differ_vs_torch"] == 0
    assert 0 <= runs["onnx-int8"]["answers_differ_vs_torch"] <= ev["n_queries"]
    table = format_evaluation(ev)
    assert "| onnx-int8 |" in table and "delta vs torch" in table and "answers differ" in table


def test_serving_with_the_onnx_runtime_matches_torch(aware_dir, aware_export):
    _, result = aware_export
    payload = {"queries": [{"query": q, "locale": loc} for q, loc in
                           [("rot schuhe", "de_DE"), ("gift card", "en_US"), ("écouteurs", "zz")]], "top_k": 5}
    out = {}
    for name, rt in [("torch", load_runtime(aware_dir)),
                     ("onnx", load_runtime(aware_dir, "onnx", onnx_path=result.path, threads=1))]:
        with TestClient(create_app(rt, ServeSettings())) as client:
            out[name] = client.post("/v1/predict/batch", json=payload).json()["results"]
            single = client.post("/v1/predict", json={"query": "rot schuhe", "locale": "de_DE"}).json()
            assert single["predicted"][0] == "shoes"
            info = client.get("/v1/model").json()
            assert info["runtime"] == name
    for a, b in zip(out["torch"], out["onnx"]):
        assert [t["product_type"] for t in a["product_types"]] == [t["product_type"] for t in b["product_types"]]
        np.testing.assert_allclose([t["score"] for t in a["product_types"]],
                                   [t["score"] for t in b["product_types"]], atol=1e-4)
        assert a["predicted"] == b["predicted"] and a["locale_used"] == b["locale_used"]


def test_onnx_runtime_exports_at_startup_without_a_file(nonunified_dir):
    rt = load_runtime(nonunified_dir, "onnx")
    assert rt.name == "onnx" and rt.describe()["path"] is None
    res = [rt.resolve("fr_FR")]
    torch_rt = TorchRuntime(load_model(nonunified_dir))
    np.testing.assert_allclose(rt.predict(["baskets"], res), torch_rt.predict(["baskets"], res), atol=1e-4)


def test_onnx_files_of_another_model_or_broken_are_refused(aware_dir, aware_export, nonunified_dir, tmp_path):
    _, result = aware_export
    other = load_model(nonunified_dir)
    with pytest.raises(ModelLoadError, match="must be a folder"):
        OnnxRuntime(other, tmp_path / "missing")
    (tmp_path / "partial").mkdir()
    with pytest.raises(ModelLoadError, match="not found for locale 'de_DE'"):
        OnnxRuntime(other, tmp_path / "partial")
    with pytest.raises(ModelLoadError, match="ONNX file not found"):
        load_runtime(aware_dir, "onnx", onnx_path=tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not an onnx graph")
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        load_runtime(aware_dir, "onnx", onnx_path=tmp_path / "garbage.onnx")
    # a graph of the non-unified model's de_DE network scores other labels than the unified model
    nu = export_onnx(other, tmp_path / "nu", verify=False)
    (tmp_path / "wrong.onnx").write_bytes(nu.files["de_DE"].read_bytes())
    with pytest.raises(ModelLoadError, match="different model"):
        load_runtime(aware_dir, "onnx", onnx_path=tmp_path / "wrong.onnx")
    # a retrained model keeps the labels: the export of the one before it is refused by fingerprint
    import shutil

    retrained = tmp_path / "retrained"
    shutil.copytree(aware_dir, retrained)
    manifest = json.loads((retrained / "manifest.json").read_text(encoding="utf-8"))
    manifest["thresholds"] = {k: min(1.0, v + 0.01) for k, v in manifest["thresholds"].items()}
    (retrained / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="different model .fingerprint"):
        load_runtime(retrained, "onnx", onnx_path=result.path)
    assert load_runtime(aware_dir, "onnx", onnx_path=result.path).name == "onnx"  # its own model's export is served
    with pytest.raises(ConfigError, match="--runtime onnx"):
        load_runtime(aware_dir, "torch", onnx_path=result.path)
    with pytest.raises(ConfigError, match="quantiz"):
        export_onnx(other, tmp_path / "q", quantize="int4")


def test_export_cli(aware_dir, nonunified_dir, tmp_path, capsys):
    assert main(["export", "onnx", "--model", str(aware_dir), "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "wrote ONNX export of unified-aware model" in out and "max |ONNX - PyTorch|" in out
    assert (tmp_path / "m.onnx").is_file()
    assert main(["export", "onnx", "--model", str(nonunified_dir), "--out", str(tmp_path / "nu"),
                 "--quantize", "int8", "--no-verify"]) == 0
    assert "wrote int8 ONNX export of non-unified model" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "nu").glob("*.onnx")) == ["de_DE.onnx", "en_US.onnx", "fr_FR.onnx"]
    assert main(["export", "onnx", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.onnx")]) == 3
    assert "does not exist" in capsys.readouterr().err
    # an existing target (a file, a non-unified model's export folder) is replaced only when told
    (tmp_path / "data.jsonl").write_text("the user's data\n", encoding="utf-8")
    for model, out in ((aware_dir, "data.jsonl"), (aware_dir, "m.onnx"), (nonunified_dir, "nu")):
        assert main(["export", "onnx", "--model", str(model), "--out", str(tmp_path / out), "--no-verify"]) == 2
        assert "exists: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "data.jsonl").read_text(encoding="utf-8") == "the user's data\n"
    for model, out in ((aware_dir, "m.onnx"), (nonunified_dir, "nu")):
        assert main(["export", "onnx", "--model", str(model), "--out", str(tmp_path / out), "--no-verify",
                     "--overwrite", "-q"]) == 0
    # a unified model exported into a folder writes OUT/model.onnx beside what is there
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "README.txt").write_text("notes\n", encoding="utf-8")
    assert main(["export", "onnx", "--model", str(aware_dir), "--out", str(tmp_path / "exports"), "--no-verify", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["README.txt", "model.onnx"]
    # --overwrite never replaces a folder that is not an earlier export (a model folder, say)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep\n", encoding="utf-8")
    assert main(["export", "onnx", "--model", str(nonunified_dir), "--out", str(tmp_path / "mine"), "--no-verify",
                 "--overwrite"]) == 2
    assert "not an earlier ONNX export" in capsys.readouterr().err and (tmp_path / "mine" / "precious.txt").is_file()


def test_export_cli_measures_the_int8_cost(aware_dir, tmp_path, capsys):
    from q2pt.data.io import write_dataset

    data = write_dataset(handmade_dataset(), tmp_path / "data", "jsonl")
    argv = ["export", "onnx", "--model", str(aware_dir), "--out", str(tmp_path / "int8.onnx"), "--quantize", "int8",
            "--evaluate", "--data", str(data)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "R@P80 on the test split (150 queries)" in out
    assert "| torch |" in out and "| onnx-fp32 |" in out and "| onnx-int8 |" in out
    assert main([*argv, "--json", "--overwrite"]) == 0
    cost = json.loads(capsys.readouterr().out)
    runs = cost["runtimes"]
    assert runs["onnx-fp32"]["global"] == pytest.approx(runs["torch"]["global"])
    assert 0.0 <= runs["onnx-int8"]["global"] <= 1.0
    assert cost["dataset"]["simulated"] is False


def test_use_encoder_export_equals_pytorch(tmp_path):
    """The USE encoder's flat batches (repeat_interleave, index_add with repeated indices)
    survive the export. The slowest test here (~15 s): the graph carries USE's 128k x 512
    embedding table.
    The network is built, not trained: pretrained USE weights plus a random head."""
    from q2pt.config import resolve_config
    from q2pt.models import Q2PTModel
    from q2pt.network import build_network

    cfg = resolve_config(encoder="use", flags={"model.variant": "unified-aware"})
    model = Q2PTModel(config=cfg)
    classes = ["headphones", "phone case", "shoes"]
    model.networks = {"*": build_network(cfg, classes, LOCALES).eval()}
    model.classes_, model.locales_, model.network_labels_ = classes, list(LOCALES), {"*": classes}
    result = export_onnx(model, tmp_path / "use.onnx")
    assert result.max_abs_diff <= 1e-4
    assert _compare(model, result.path, ["de_DE", "xx_XX"]) <= 1e-4
