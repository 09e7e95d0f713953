"""The query memory (``model.memory_*``): the neighbours' vote on a hand-built case, what a
trained model keeps, its blend into the scores, the size cap, and the saved model's round trip."""

from __future__ import annotations

import numpy as np
import pytest

from support import need

need("torch")

import torch  # noqa: E402

from q2pt.config import resolve_config  # noqa: E402
from q2pt.data import load_dataset  # noqa: E402
from q2pt.errors import ConfigError  # noqa: E402
from q2pt.models import Q2PTModel, load_model  # noqa: E402
from q2pt.network import Q2PTNet  # noqa: E402


class _Identity(torch.nn.Module):
    dim = 4

    def forward(self, batch):
        return batch["x"]


def test_the_vote_of_the_nearest_training_queries_on_a_hand_built_case():
    net = Q2PTNet(_Identity(), 3, memory={"weight": 0.5, "k": 2, "temperature": 0.1})
    # three training queries: e0 -> {0}, e1 -> {1, 2}, (e1 + e2)/sqrt2 -> {2}; label 3 pads
    net.set_memory(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 1.0, 1.0, 0]]),
                   torch.tensor([[0, 3], [1, 2], [2, 3]]))
    z = torch.tensor([[0.0, 2.0, 0, 0]])  # cosine 1 with e1, 0.707 with the third, 0 with e0
    w = torch.softmax(torch.tensor([1.0, 2 ** -0.5]) / 0.1, dim=0)
    np.testing.assert_allclose(net.memory_scores(z)[0].numpy(), [0.0, w[0], 1.0], rtol=1e-5, atol=1e-7)
    net.memory_k = 10  # more neighbours asked than stored: all three vote
    assert net.memory_scores(z).shape == (1, 3)
    with torch.no_grad():
        plain = net.probabilities(net({"x": z}))
        np.testing.assert_allclose(net.scores({"x": z}).numpy(), (0.5 * plain + 0.5 * net.memory_scores(z)).numpy(),
                                   rtol=1e-6)
    # keys changed in place (as load_state_dict does): the vote follows them, not a stale copy
    with torch.no_grad():
        net.memory_keys.copy_(torch.tensor([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1.0]]))
    net.memory_k = 1
    np.testing.assert_allclose(net.memory_scores(z)[0].numpy(), [1.0, 0.0, 0.0], atol=1e-7)
    with pytest.raises(ConfigError, match="out of range"):
        net.set_memory(torch.eye(4)[:2], torch.tensor([[0], [4]]))


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(None, preset="tiny")


def _fit(tiny, **overrides):
    flags = {"train.max_epochs": 1, "train.threads": 1, "model.encoder_options": {"dim": 16, "buckets": 2048},
             "train.batch_size": 64, "train.name_examples": 0.0, **overrides}  # the training queries alone
    # (the type names in the memory: tests/test_name_examples.py)
    return Q2PTModel(config=resolve_config(overrides=flags, encoder="ngram")).fit(tiny, progress=False)


def test_a_trained_model_keeps_its_training_queries_and_blends_their_vote(tiny, tmp_path):
    model = _fit(tiny)
    net = model.networks["*"]
    assert net.has_memory and net.memory_keys.shape == (len(tiny.train), net.encoder.dim)
    assert model.manifest["training"]["*"]["memory_queries"] == len(tiny.train)
    q, loc = tiny.test["query"].tolist()[:40], tiny.test["locale"].tolist()[:40]
    with_memory = model.predict_proba(q, loc)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(q, loc), with_memory, atol=1e-6)
    # weight 0: no memory at all, the paper's network
    off = _fit(tiny, **{"model.memory_weight": 0.0})
    assert not off.networks["*"].has_memory and off.networks["*"].memory_keys is None
    assert "memory_keys" not in off.networks["*"].state_dict()
    assert not np.allclose(off.predict_proba(q, loc), with_memory)


def test_a_narrower_memory_projects_keys_and_queries_alike(tiny, tmp_path):
    model = _fit(tiny, **{"model.memory_dim": 6})
    net = model.networks["*"]
    assert net.memory_keys.shape == (len(tiny.train), 6) and net.memory_projection.shape == (16, 6)
    np.testing.assert_allclose(net.memory_keys.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    # the projection is orthonormal: the principal directions of the unit embeddings
    np.testing.assert_allclose((net.memory_projection.T @ net.memory_projection).numpy(), np.eye(6), atol=1e-5)
    q, loc = tiny.test["query"].tolist()[:40], tiny.test["locale"].tolist()[:40]
    narrow = model.predict_proba(q, loc)
    model.save(tmp_path / "m")
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(q, loc), narrow, atol=1e-6)
    from q2pt.serving.onnx_export import export_onnx  # the ONNX export scores as torch does

    assert export_onnx(model, tmp_path / "narrow.onnx").max_abs_diff <= 1e-4
    # a training query's own projected embedding is its nearest key
    batch = net.encoder.tokenize(tiny.train["query"].tolist()[:5], tiny.train["locale"].tolist()[:5])
    with torch.no_grad():
        z = net.encoder(batch) @ net.memory_projection
        sims = torch.nn.functional.normalize(z, dim=1) @ net.memory_keys.T
    assert (sims.max(dim=1).values > 1 - 1e-4).all()
    with pytest.raises(ConfigError, match="projection"):
        net.set_memory(torch.eye(4)[:2], torch.tensor([[0], [1]]), projection=torch.zeros(16, 3))


def test_the_memory_is_capped(tiny):
    model = _fit(tiny, **{"model.memory_max_queries": 100, "model.variant": "non-unified"})
    for key, net in model.networks.items():
        n_locale = int((tiny.train["locale"].astype(str) == key).sum())
        assert net.memory_keys.shape[0] == min(100, n_locale)
