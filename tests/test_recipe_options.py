"""The recipe options: the softmax output, the composite (``use+ngram``) encoder, sparse_lr,
the linear probe and the learning-rate schedule."""

import numpy as np
import pytest
import torch

from q2pt.config import resolve_config  # noqa: E402
from q2pt.encoders import build_encoder, encoder_from_config  # noqa: E402
from q2pt.errors import ConfigError  # noqa: E402
from q2pt.models import Q2PTModel, load_model  # noqa: E402
from q2pt.network import Q2PTNet  # noqa: E402
from q2pt.training import lr_factor, make_optimizers, prepare_split, train_step  # noqa: E402
from support import tiny_dataset  # noqa: E402


def test_softmax_output_scores_sum_to_one_and_sigmoid_does_not():
    enc = build_encoder("ngram", dim=8, buckets=64)
    batch = enc.tokenize(["a b", "c", "d e f"], None)
    soft = Q2PTNet(enc, 5, output="softmax")
    assert torch.allclose(soft.scores(batch).sum(1), torch.ones(3), atol=1e-5)
    sig = Q2PTNet(enc, 5, output="sigmoid")
    logits = sig(batch)
    assert torch.allclose(sig.scores(batch), torch.sigmoid(logits))
    with pytest.raises(ConfigError, match="unknown output"):
        Q2PTNet(enc, 5, output="tanh")


def test_softmax_loss_is_cross_entropy_against_the_label_set():
    """Hand check: two labels of three true -> the loss is the mean of their -log p."""
    data = tiny_dataset(8, 4, 4)
    cfg = resolve_config(None, ["--model.encoder_options.dim", "4", "--model.encoder_options.buckets", "32",
                                "--model.output", "softmax", "--train.threads", "1"], "ngram")
    from q2pt.network import build_network

    classes = sorted({t for ts in data.train["product_types"] for t in ts})
    torch.manual_seed(0)
    network = build_network(cfg, classes, None)
    split = prepare_split(network.encoder, data.train, classes, locale_aware=False)
    idx = np.arange(split.n)
    with torch.no_grad():
        logits = network(split.tokens.take(idx))
    y = torch.from_numpy(split.targets[idx].toarray())
    expected = float((-(torch.log_softmax(logits, 1) * y).sum(1) / y.sum(1)).mean())
    loss = train_step(network, [], split, idx, None, split.targets, torch.from_numpy(split.weights), output="softmax")
    assert loss == pytest.approx(expected, rel=1e-5)


def test_softmax_model_trains_saves_and_reloads(tmp_path):
    data = tiny_dataset()
    cfg = resolve_config(None, ["--model.encoder_options.dim", "32", "--model.encoder_options.buckets", "4096",
                                "--train.batch_size", "16", "--train.max_epochs", "8", "--train.lr", "0.05",
                                "--model.output", "softmax", "--train.threads", "1"], "ngram")
    model = Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "m", progress=False)
    test = data.test
    scores = model.predict_proba(test["query"].tolist(), test["locale"].tolist())
    assert np.allclose(scores.sum(1), 1.0, atol=1e-5)
    # it learned the toy problem: the top type is a true one for most test queries
    top = [model.classes_[i] for i in scores.argmax(1)]
    assert np.mean([t in labels for t, labels in zip(top, test["product_types"])]) > 0.8
    again = load_model(tmp_path / "m")
    assert again.config.model.output == "softmax"
    assert np.allclose(again.predict_proba(test["query"].tolist(), test["locale"].tolist()), scores, atol=1e-6)


def test_composite_spec_config_and_round_trip(tmp_path):
    enc = build_encoder("ngram+use", locales=["de", "en"], ngram={"dim": 16, "buckets": 256})
    assert enc.spec == "ngram+use" and enc.dim == 16 + 512
    assert [p.kind for p in enc.parts] == ["ngram", "use"]
    batch = enc.tokenize(["rote schuhe", "tv"], ["de", "en"])
    assert {k.split(".")[0] for k in batch} == {"p0", "p1"}
    enc.eval()
    with torch.no_grad():
        out = enc(batch)
    assert out.shape == (2, 528)
    # the composite's sparse parameters are its parts' (the ngram bag)
    assert enc.sparse_parameters() == enc.parts[0].sparse_parameters() == [enc.parts[0].bag.weight]
    enc.save_assets(tmp_path / "enc")
    again = encoder_from_config(enc.get_config(), tmp_path / "enc")
    again.load_state_dict(enc.state_dict())
    again.eval()
    with torch.no_grad():
        assert torch.allclose(again(again.tokenize(["rote schuhe", "tv"], ["de", "en"])), out)


def test_composite_bad_specs_and_options():
    with pytest.raises(ConfigError, match="twice"):
        build_encoder("ngram+ngram")
    with pytest.raises(ConfigError, match="per part kind"):
        build_encoder("ngram+use", dim=8)
    with pytest.raises(ConfigError):
        build_encoder("ngram+nonsense")
    with pytest.raises(ConfigError, match="model.encoder"):
        resolve_config(encoder="use+use")


def test_composite_defaults_give_the_ngram_part_its_own_rate():
    cfg = resolve_config(encoder="use+ngram")
    assert cfg.train.sparse_lr == pytest.approx(1e-2)  # the ngram encoder's rate
    assert cfg.train.encoder_lr == resolve_config(encoder="use").train.encoder_lr
    assert cfg.model.encoder_options == {"use": {"embedding": "freeze"}}
    net = Q2PTNet(build_encoder("use+ngram", ngram={"dim": 8, "buckets": 64}), 3)
    opts = make_optimizers(net, cfg.train)
    sparse = [o for o in opts if isinstance(o, torch.optim.SparseAdam)]
    assert len(sparse) == 1 and sparse[0].param_groups[0]["lr"] == pytest.approx(1e-2)


def test_planned_examples_counts_every_networks_steps():
    from q2pt.experiments.estimate import estimate_seconds, planned_examples

    sizes = {"a": 1000, "b": 100}
    cfg = resolve_config(None, {"train.batch_size": 50, "train.max_epochs": 2, "train.min_steps": 0}, "ngram")
    # unified: ceil(1100 / 50) = 22 steps an epoch, 2 epochs, 50 queries a step
    assert planned_examples(cfg, sizes) == 22 * 2 * 50
    non = resolve_config(None, {"train.batch_size": 50, "train.max_epochs": 2, "train.min_steps": 10,
                                "model.variant": "non-unified"}, "ngram")
    # a: 20 steps/epoch x 2 = 40 >= 10; b: 2 steps/epoch -> 5 epochs for 10 steps
    assert planned_examples(non, sizes) == 40 * 50 + 10 * 50
    capped = resolve_config(None, {"train.batch_size": 50, "train.max_steps": 7}, "ngram")
    assert planned_examples(capped, sizes) == 7 * 50
    est = estimate_seconds([cfg], [], sizes, train_qps=1100.0, encoder_kind="ngram")
    assert est["variants"] == pytest.approx(2200 / 1100.0) and est["baselines"] == 0.0


def test_the_estimate_counts_the_name_rows_each_network_gets():
    import pandas as pd

    from q2pt.experiments.estimate import name_counts, planned_examples

    train = pd.DataFrame({"locale": ["a", "a", "b"], "query": ["x", "y", "z"], "product_types": [
        ["home > kitchen > frying_pan"], ["home > kitchen > pots", "toys"], ["home > garden"]]})
    # a: home, kitchen, frying pan, pots, toys; b: home, garden; all: the six distinct names
    assert name_counts(train, " > ") == {"a": 5, "b": 2, "*": 6}
    # the names a label depth cut away count for the locale of the row they were cut from ("pots" is one already)
    train["cut_names"] = [None, {"toys": ["dolls", "pots"]}, {"home > garden": ["rakes"]}]
    assert name_counts(train, " > ", True) == {"a": 6, "b": 3, "*": 8}
    assert name_counts(train, " > ") == {"a": 5, "b": 2, "*": 6}  # train.subtype_names off
    sizes, names = {"a": 1000, "b": 100}, {"a": 50, "b": 100, "*": 120}
    flags = {"train.batch_size": 50, "train.max_epochs": 1, "train.min_steps": 0}
    non = resolve_config(None, {**flags, "model.variant": "non-unified"}, "ngram")
    assert planned_examples(non, sizes, names) == (21 + 4) * 50  # ceil(1050 / 50) + ceil(200 / 50) steps
    assert planned_examples(resolve_config(None, flags, "ngram"), sizes, names) == 25 * 50  # ceil(1220 / 50)
    off = resolve_config(None, {**flags, "model.variant": "non-unified", "train.name_examples": 0}, "ngram")
    assert planned_examples(off, sizes, names) == (20 + 2) * 50  # no names: the training queries alone


def test_composite_with_e5_keeps_the_use_table_as_its_pretrained_resource(tmp_path):
    from q2pt.encoders.use import pretrained_resource

    enc = build_encoder("use+e5", locales=["de", "en"])
    assert enc.dim == 512 + 384 * 2  # e5 + its locale block
    assert enc.pretrained_resource() == pretrained_resource()
    assert set(enc.pretrained_state()) == {"parts.0.embedding.weight"}
    net = Q2PTNet(enc, 3)
    from q2pt.weights import pack_state

    tensors, metadata = pack_state(net)  # the use table is stored as a (here empty) delta
    assert any(k.endswith("#pretrained_delta.rows") for k in tensors)


def test_composite_tokens_are_cached_per_part_and_gather_like_tokenizing():
    from q2pt.training import TokenCache

    enc = build_encoder("ngram+use", locales=["de", "en"], ngram={"dim": 8, "buckets": 256})
    queries, locales = ["rote schuhe", "tv", "big red sofa now", "pfanne"], ["de", "en", "en", "de"]
    cache = TokenCache(enc, queries, locales)
    assert cache.layout == "parts" and [c.layout for c in cache._parts] == ["flat", "flat"]
    idx = np.array([2, 0])
    enc.eval()
    with torch.no_grad():
        got = enc(cache.take(idx))
        want = enc(enc.tokenize([queries[2], queries[0]], [locales[2], locales[0]]))
    assert torch.allclose(got, want, atol=1e-5)


def test_lr_factor_probe_warmup_and_decay():
    cfg = resolve_config(None, ["--train.probe_steps", "10", "--train.warmup_steps", "4",
                                "--train.lr_decay", "linear"], "ngram").train
    # the encoder waits for the probe, then warms up; the head warms up at once
    assert [lr_factor(cfg, s, 100, "encoder") for s in (0, 9)] == [0.0, 0.0]
    assert lr_factor(cfg, 10, 100, "encoder") == pytest.approx(0.25 * 0.9)
    assert lr_factor(cfg, 0, 100, "head") == pytest.approx(0.25)
    assert lr_factor(cfg, 50, 100, "head") == pytest.approx(0.5)
    assert lr_factor(cfg, 100, 100, "sparse") == 0.0
    cos = resolve_config(None, ["--train.lr_decay", "cosine"], "ngram").train
    assert [round(lr_factor(cos, s, 10, "head"), 6) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    plain = resolve_config(None, [], "ngram").train
    assert all(lr_factor(plain, s, 10, g) == 1.0 for s in (0, 9) for g in ("head", "encoder"))
    with pytest.raises(ConfigError):
        resolve_config(None, ["--train.lr_decay", "step"], "ngram")


def test_linear_probe_trains_the_head_and_leaves_the_encoder():
    data = tiny_dataset(64, 16, 8)
    flags = ["--model.encoder_options.dim", "8", "--model.encoder_options.buckets", "128", "--train.threads", "1",
             "--train.batch_size", "16", "--train.max_epochs", "1", "--train.seed", "0"]
    torch.manual_seed(0)
    probe = Q2PTModel(config=resolve_config(None, flags + ["--train.probe_steps", "100"], "ngram")).fit(data, progress=False)
    torch.manual_seed(0)
    plain = Q2PTModel(config=resolve_config(None, flags, "ngram")).fit(data, progress=False)
    torch.manual_seed(0)
    fresh = Q2PTModel(config=resolve_config(None, flags, "ngram"))
    from q2pt.network import build_network

    init = build_network(fresh.config, plain.classes_, plain.locales_).state_dict()
    net_p, net_f = probe.networks["*"].state_dict(), plain.networks["*"].state_dict()
    enc = [k for k in init if k.startswith("encoder.")]
    head = [k for k in init if not k.startswith("encoder.")]
    assert enc and head
    assert all(torch.equal(net_p[k], init[k]) for k in enc)  # frozen for the whole (probe) run
    assert not all(torch.equal(net_f[k], init[k]) for k in enc)  # trained without the probe
    assert not all(torch.equal(net_p[k], init[k]) for k in head)
