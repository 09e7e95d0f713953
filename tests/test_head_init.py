"""``model.head_init names``: the output layer starts from the encoder's embeddings of the
product types' names."""

import pytest
import torch

from q2pt.config import resolve_config
from q2pt.data.tree import type_name
from q2pt.encoders import build_encoder
from q2pt.errors import ConfigError
from q2pt.network import Q2PTNet, build_network
from q2pt.training import fit_networks
from support import tiny_dataset, with_levels


def test_type_name_is_the_last_level_in_words():
    assert type_name("kitchen > cookware > frying_pan") == "frying pan"
    assert type_name("home & garden > kitchen,dining & bar") == "kitchen,dining & bar"
    assert type_name("shoes") == "shoes"
    assert type_name("a/b/c_d", "/") == "c d"
    assert type_name("a >  b  ") == "b"
    assert type_name("___") == "___"  # nothing left in words: the label itself


def test_a_query_that_is_a_types_name_starts_with_that_type_on_top():
    names = ["frying pan", "running shoes", "coffee maker", "garden hose", "mug"]
    enc = build_encoder("ngram", dim=16, buckets=512)
    torch.manual_seed(0)
    net = Q2PTNet(enc, len(names))
    assert net.init_head_from_names(names, 10.0)
    weight = net.head[-1].weight.detach()
    assert torch.allclose(weight.sum(0), torch.zeros(weight.shape[1]), atol=1e-4)  # centred over the types
    net.eval()
    with torch.no_grad():
        logits = net(enc.tokenize(names, None)) - net.head[-1].bias
    assert logits.argmax(1).tolist() == list(range(len(names)))
    # the scale: each row is scale x (unit embedding - mean unit embedding)
    with torch.no_grad():
        unit = enc(enc.tokenize(names, None))
    unit = unit / unit.norm(dim=1, keepdim=True)
    assert torch.allclose(weight, 10.0 * (unit - unit.mean(0)), atol=1e-5)


def test_head_init_refuses_a_wrong_count_and_leaves_hidden_heads_alone():
    enc = build_encoder("ngram", dim=8, buckets=64)
    net = Q2PTNet(enc, 3)
    with pytest.raises(ConfigError, match="2 type names for a network of 3 outputs"):
        net.init_head_from_names(["a", "b"], 10.0)
    deep = Q2PTNet(enc, 3, hidden=[4])
    before = [p.detach().clone() for p in deep.head.parameters()]
    assert not deep.init_head_from_names(["a", "b", "c"], 10.0)
    assert all(torch.equal(a, b) for a, b in zip(before, deep.head.parameters()))


def test_training_starts_from_the_names_by_default_and_from_random_on_request(monkeypatch):
    data = tiny_dataset(40, 16, 8)
    started = {}

    def no_training(net, *args, **kwargs):  # record the head training would start from
        started[kwargs["stage"]] = net.head[-1].weight.detach().clone()
        raise _Stop

    import q2pt.training.fit as fit

    monkeypatch.setattr(fit, "train_network", no_training)
    flags = ["--model.encoder_options.dim", "8", "--model.encoder_options.buckets", "64", "--train.threads", "1"]
    heads = {}
    for init in ("names", "random"):
        cfg = resolve_config(None, flags + ["--model.head_init", init], "ngram")
        with pytest.raises(_Stop):
            fit_networks(cfg, data, progress=False)
        heads[init] = next(iter(started.values()))
    classes = sorted({t for ts in data.train["product_types"] for t in ts})
    cfg = resolve_config(None, flags, "ngram")
    assert cfg.model.head_init == "auto"  # names for a flat model
    torch.manual_seed(cfg.train.seed)
    expected = build_network(cfg, classes, sorted(set(data.train["locale"])))
    assert expected.init_head_from_names([type_name(c) for c in classes], cfg.model.head_init_scale)
    assert torch.allclose(heads["names"], expected.head[-1].weight, atol=1e-5)
    assert not torch.allclose(heads["random"], heads["names"], atol=1e-2)
    assert float(heads["random"].norm(dim=1).max()) < 2.0  # PyTorch's default init: small rows
    # "auto" starts a model learning a tree of two levels from the names too (since 2026-12-06), a
    # deeper one from random rows; "names" starts any tree from the names
    from q2pt.models import Q2PTModel

    for levels, init, from_names in ((2, "auto", True), (3, "auto", False), (3, "names", True)):
        tree_cfg = resolve_config(None, flags + ["--model.head_init", init, "--model.hierarchy", "tree"], "ngram")
        with pytest.raises(_Stop):
            Q2PTModel(config=tree_cfg).fit(with_levels(data, levels), progress=False)
        norm = float(next(iter(started.values())).norm(dim=1).max())
        assert norm > 2.0 if from_names else norm < 2.0, (levels, init)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("levels, cache_sees_names", [(1, False), (2, True), (3, False)])
def test_a_cached_experiment_record_sees_a_tree_that_auto_now_starts_from_the_names(tmp_path, levels,
                                                                                  cache_sees_names):
    """Before 2026-12-06 "auto" started every tree from random rows: a record of a two-level tree
    under "auto" is not today's model, so the run identity reads "names" there; flat models and
    deeper trees train as before and keep their identity (their records stay cache hits)."""
    from q2pt.experiments.runner import ExperimentRunner, RunSpec
    from q2pt.experiments.settings import resolve_settings

    deep = with_levels(tiny_dataset(40, 16, 8), levels)
    runner = ExperimentRunner(deep, resolve_settings("tiny", None, {"baselines": []}), tmp_path, encoder="ngram",
                              progress=False)
    spec = RunSpec("main/unified-aware", "variant", "unified-aware", "u", config=runner.config_for("unified-aware"))
    assert spec.config.model.head_init == "auto"
    ident = runner.run_identity(spec, [], deep)
    assert ident["config"]["model"]["head_init"] == ("names" if cache_sees_names else "auto")
    explicit = RunSpec("main/x", "variant", "unified-aware", "u",
                       config=runner.config_for("unified-aware").model_copy(deep=True))
    explicit.config.model.head_init = "random"
    assert runner.run_identity(explicit, [], deep)["config"]["model"]["head_init"] == "random"
