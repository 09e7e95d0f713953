"""The training loop: cached token batches, seeding, early stopping, checkpoints and resume."""

import json

import numpy as np
import pytest

from support import need, with_levels

torch = need("torch")

from q2pt.data.labels import multi_hot  # noqa: E402
from q2pt.errors import ConfigError  # noqa: E402
from q2pt.models import Q2PTModel, load_model  # noqa: E402
from q2pt.training import RowSparseAdam, TokenCache, TrainHooks  # noqa: E402
from test_models import ngram_config, tiny_dataset, tiny_frame  # noqa: E402


class Interrupt(Exception):
    pass


def _interrupt_at(step: int, stage: str | None = None) -> TrainHooks:
    def after_step(current_stage: str, global_step: int) -> None:
        if global_step == step and (stage is None or current_stage == stage):
            raise Interrupt(f"stopped at {current_stage} step {global_step}")

    return TrainHooks(after_step=after_step)


def _encoders(tmp_path):
    from q2pt.encoders import build_encoder

    yield "ngram", build_encoder("ngram", locales=["de_DE", "en_US"], dim=8, buckets=256)
    yield "use", build_encoder("use", locales=["de_DE", "en_US"])
    need("transformers")
    from q2pt.encoders.testing import make_tiny_hf_model

    folder = make_tiny_hf_model(tmp_path / "hf", tiny_frame(40, 0)["query"].tolist())
    yield "hf", build_encoder(f"hf:{folder}", locales=["de_DE", "en_US"])


def test_token_cache_gathers_rows_like_tokenizing_them(tmp_path):
    frame = tiny_frame(30, 3)
    queries, locales = frame["query"].tolist(), frame["locale"].tolist()
    idx = np.array([7, 2, 29, 2, 11])
    layouts = {}
    for kind, encoder in _encoders(tmp_path):
        encoder.eval()
        cache = TokenCache(encoder, queries, locales)
        layouts[kind] = cache.layout
        with torch.inference_mode():
            got = encoder(cache.take(idx))
            want = encoder(encoder.tokenize([queries[i] for i in idx], [locales[i] for i in idx]))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # every encoder's tokens are cached and gathered, none re-tokenized per batch
    assert layouts == {"ngram": "flat", "use": "flat", "hf": "rows"}


def test_multi_hot_counts_labels_outside_the_label_space():
    y, missing = multi_hot([["a"], ["b", "z"], ["z", "y"]], ["a", "b"])
    assert y.toarray().tolist() == [[1, 0], [0, 1], [0, 0]]
    assert missing.tolist() == [0, 1, 2]


def _weights(model):
    return {k: {n: t.clone() for n, t in net.state_dict().items()} for k, net in model.networks.items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0, msg=f"{key}/{name}")


def test_training_is_seeded_and_reproducible():
    data = tiny_dataset(64, 16, 8)
    cfg = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.locale_dropout", "0.2")
    a = Q2PTModel(config=cfg).fit(data, progress=False)
    b = Q2PTModel(config=cfg).fit(data, progress=False)
    _assert_same_weights(_weights(a), _weights(b))
    other = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.locale_dropout", "0.2", "--train.seed", "1")
    c = Q2PTModel(config=other).fit(data, progress=False)
    assert not torch.equal(a.networks["*"].head[0].weight, c.networks["*"].head[0].weight)


@pytest.mark.parametrize(
    "variant, extra, stop",
    [
        # unified, checkpoints every 3 steps, interrupted mid-epoch
        ("unified-aware", ["--train.checkpoint_every", "3"], (11, None)),
        # unified, checkpoints at epoch ends, evaluation every 4 steps
        ("unified-agnostic", ["--train.eval_every", "4"], (9, None)),
        # non-unified, interrupted while training the second locale's network
        ("non-unified", ["--train.checkpoint_every", "2"], (5, "en_US")),
    ],
)
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, variant, extra, stop):
    data = tiny_dataset(64, 16, 8)
    cfg = ngram_config(variant, "--train.max_epochs", "4", "--train.locale_dropout", "0.25", "--model.dropout", "0.2", *extra)
    full = Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "full", progress=False)

    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        Q2PTModel(config=cfg).fit(data, out_dir=out, progress=False, hooks=_interrupt_at(*stop))
    assert (out / "checkpoints" / "run.json").is_file() and not (out / "manifest.json").exists()
    # checkpoints are safetensors + JSON only: no pickle
    files = [p for p in (out / "checkpoints").rglob("*") if p.is_file()]
    assert files and all(p.suffix in (".json", ".safetensors") for p in files)
    resumed = Q2PTModel(config=cfg).fit(data, out_dir=out, resume=True, progress=False)

    _assert_same_weights(_weights(full), _weights(resumed))
    q, loc = data.test["query"].tolist(), data.test["locale"].tolist()
    np.testing.assert_array_equal(full.predict_proba(q, loc), load_model(out).predict_proba(q, loc))
    assert full.manifest["training"] == resumed.manifest["training"]
    assert not (out / "checkpoints").exists()


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    data = tiny_dataset(32, 8, 8)
    cfg = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.checkpoint_every", "1")
    with pytest.raises(Interrupt):
        Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "m", progress=False, hooks=_interrupt_at(2))
    other = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.lr", "0.001")
    with pytest.raises(ConfigError, match=r"different config \(train.lr: 0.05 -> 0.001\)"):
        Q2PTModel(config=other).fit(data, out_dir=tmp_path / "m", resume=True, progress=False)


def _checkpoint_without(out, data, cfg, *keys: str) -> dict:
    """Train ``cfg`` into ``out`` until a checkpoint at step 2, then take ``keys`` (dotted) out of
    its run.json, as an earlier q2pt without them wrote it; returns the run.json as written."""
    with pytest.raises(Interrupt):
        Q2PTModel(config=cfg).fit(data, out_dir=out, progress=False, hooks=_interrupt_at(2))
    run_json = out / "checkpoints" / "run.json"
    text = run_json.read_text()
    written, run = json.loads(text), json.loads(text)
    for key in keys:
        section, name = key.split(".")
        del run["config"][section][name]
    run_json.write_text(json.dumps(run))
    return written


def test_resume_of_a_checkpoint_older_than_a_key_keeps_its_recipe(tmp_path):
    """A run checkpointed before model.head_init existed trained with random rows: resuming it
    under the new default (names) is refused naming the key; asking for its recipe resumes."""
    data = tiny_dataset(32, 8, 8)
    cfg = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.checkpoint_every", "1",
                       "--model.head_init", "random")
    _checkpoint_without(tmp_path / "m", data, cfg, "model.head_init")
    new_default = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.checkpoint_every", "1")
    assert new_default.model.head_init == "auto"  # names for this flat model
    with pytest.raises(ConfigError, match=r"different config \(model.head_init: 'random' -> 'names'\)"):
        Q2PTModel(config=new_default).fit(data, out_dir=tmp_path / "m", resume=True, progress=False)
    resumed = Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "m", resume=True, progress=False)
    assert resumed.config.model.head_init == "random"


def test_a_run_identity_compares_the_head_start_that_head_init_resolves_to(tmp_path):
    """"auto" starts a flat model from the names: a flat run checkpointed under "names", or
    under "auto" written as such (before 2026-12-06 the run's identity kept the setting),
    resumes under "auto"; a tree of three levels starts from random rows under "auto"."""

    data = tiny_dataset(32, 8, 8)
    flags = ("--train.max_epochs", "3", "--train.checkpoint_every", "1")
    auto = ngram_config("unified-aware", *flags)
    assert auto.model.head_init == "auto"
    for written in ("names", "auto"):
        out = tmp_path / written
        with pytest.raises(Interrupt):
            Q2PTModel(config=ngram_config("unified-aware", *flags, "--model.head_init", "names")).fit(
                data, out_dir=out, progress=False, hooks=_interrupt_at(2))
        run_json = out / "checkpoints" / "run.json"
        run = json.loads(run_json.read_text())
        assert run["config"]["model"]["head_init"] == "names"  # written resolved
        run["config"]["model"]["head_init"] = written
        run_json.write_text(json.dumps(run))
        resumed = Q2PTModel(config=auto).fit(data, out_dir=out, resume=True, progress=False)
        assert resumed.manifest["training"]["*"]["steps"] > 2
    tree_flags = (*flags, "--model.hierarchy", "tree")
    with pytest.raises(Interrupt):
        Q2PTModel(config=ngram_config("unified-aware", *tree_flags, "--model.head_init", "names")).fit(
            with_levels(data, 3), out_dir=tmp_path / "t", progress=False, hooks=_interrupt_at(2))
    with pytest.raises(ConfigError, match=r"model.head_init: 'names' -> 'random'"):
        Q2PTModel(config=ngram_config("unified-aware", *tree_flags)).fit(
            with_levels(data, 3), out_dir=tmp_path / "t", resume=True, progress=False)
    # a tree of two levels checkpointed under "auto" before 2026-12-06 started from random rows,
    # which today's "auto" does not: refused
    with pytest.raises(Interrupt):
        Q2PTModel(config=ngram_config("unified-aware", *tree_flags, "--model.head_init", "random")).fit(
            with_levels(data, 2), out_dir=tmp_path / "two", progress=False, hooks=_interrupt_at(2))
    run_json = tmp_path / "two" / "checkpoints" / "run.json"
    run = json.loads(run_json.read_text())
    run["config"]["model"]["head_init"] = "auto"
    run_json.write_text(json.dumps(run))
    with pytest.raises(ConfigError, match=r"model.head_init: 'random' -> 'names'"):
        Q2PTModel(config=ngram_config("unified-aware", *tree_flags)).fit(
            with_levels(data, 2), out_dir=tmp_path / "two", resume=True, progress=False)


def test_resume_of_a_checkpoint_older_than_the_names_and_the_stop_metric(tmp_path):
    """A flat run checkpointed before train.name_examples and train.stop_metric existed trained
    without the type names and stopped on R@P: today's default names refuse it, naming the key;
    the stop metric does not (on a flat model "auto" is R@P); its recipe resumes."""
    data = tiny_dataset(32, 8, 8)
    cfg = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.checkpoint_every", "1",
                       "--train.name_examples", "0")
    run = _checkpoint_without(tmp_path / "m", data, cfg, "train.name_examples", "train.stop_metric")
    assert run["config"]["train"]["stop_metric"] == "r_at_p"  # recorded resolved
    today = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.checkpoint_every", "1")
    with pytest.raises(ConfigError, match=r"different config \(train.name_examples: 0.0 -> 0.3\);"):
        Q2PTModel(config=today).fit(data, out_dir=tmp_path / "m", resume=True, progress=False)
    resumed = Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "m", resume=True, progress=False)
    assert resumed.manifest["training"]["*"]["stop_metric"] == "r_at_p"
    assert "name_examples" not in resumed.manifest["training"]["*"]


def test_resume_is_not_refused_for_keys_that_only_calibrate(tmp_path):
    """Thresholds are calibrated after training: a run checkpointed before
    train.locale_threshold_min_positives existed (read as 20) resumes under today's default and
    calibrates with it; so does one resumed with per-type thresholds asked for."""
    data = tiny_dataset(32, 8, 8)
    cfg = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.checkpoint_every", "1")
    run = _checkpoint_without(tmp_path / "m", data, cfg)
    assert "locale_threshold_min_positives" not in run["config"]["train"]  # not part of a run's identity
    with pytest.raises(ConfigError, match=r"different config \(train.lr"):  # a key that trains still refuses
        Q2PTModel(config=ngram_config("unified-aware", "--train.max_epochs", "3", "--train.lr", "0.001")).fit(
            data, out_dir=tmp_path / "m", resume=True, progress=False)
    again = ngram_config("unified-aware", "--train.max_epochs", "3", "--train.checkpoint_every", "1",
                         "--train.type_thresholds", "true")
    resumed = Q2PTModel(config=again).fit(data, out_dir=tmp_path / "m", resume=True, progress=False)
    assert resumed.config.train.locale_threshold_min_positives is None and resumed.config.train.type_thresholds
    locales = {k: v for k, v in resumed.manifest["threshold_details"].items() if k != "global"}
    assert locales and all(v.endswith("positives < 200") for v in locales.values()), locales


def test_resume_without_checkpoint_trains_from_scratch(tmp_path):
    data = tiny_dataset(32, 8, 8)
    cfg = ngram_config("unified-agnostic", "--train.max_epochs", "2")
    a = Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "a", resume=True, progress=False)
    b = Q2PTModel(config=cfg).fit(data, progress=False)
    _assert_same_weights(_weights(a), _weights(b))


def test_early_stopping_keeps_the_best_weights(tmp_path):
    data = tiny_dataset(96, 32, 8)
    # valid R@P soon reaches its ceiling on this easy data and cannot improve any more
    cfg = ngram_config("unified-agnostic", "--train.max_epochs", "30", "--train.patience", "2")
    model = Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "m", progress=False)
    summary = model.manifest["training"]["*"]
    history = summary["history"]
    assert summary["stopped_early"] and summary["epochs"] < 30
    best = max(h["valid_r_at_p"] for h in history)
    assert summary["stop_metric"] == "r_at_p" and summary["best_valid_r_at_p"] == best
    assert "early stopping on validation R@P80 (patience 2)" in (tmp_path / "m" / "MODEL_CARD.md").read_text()
    # the last two evaluations did not beat the best one (patience 2) ...
    assert all(h["valid_r_at_p"] <= best for h in history[-2:]) and history[-3]["valid_r_at_p"] == best
    # ... and the kept weights are the best ones: they reproduce the best R@P on valid
    from q2pt.metrics import recall_at_precision

    y, _ = multi_hot([list(x) for x in data.valid["product_types"]], model.classes_)
    scores = model.predict_proba(data.valid["query"].tolist(), data.valid["locale"].tolist())
    assert recall_at_precision(y.toarray(), scores, 0.8).recall == pytest.approx(best)


def test_early_stopping_on_pr_auc_keeps_the_weights_best_by_it(tmp_path):
    data = tiny_dataset(96, 32, 8)
    cfg = ngram_config("unified-agnostic", "--train.max_epochs", "8", "--train.patience", "2",
                       "--train.stop_metric", "pr_auc", "--model.memory_weight", "0")
    model = Q2PTModel(config=cfg).fit(data, progress=False)
    summary = model.manifest["training"]["*"]
    assert summary["stop_metric"] == "pr_auc" and "best_valid_r_at_p" not in summary
    history = [h["valid_pr_auc"] for h in summary["history"]]
    assert len(set(history)) > 1  # the metric moves from epoch to epoch: the choice is a real one
    assert summary["best_valid_pr_auc"] == max(history)
    # no PR-AUC gain in 2 evaluations (patience 2) stopped it, at the first best evaluation
    assert summary["stopped_early"] and summary["epochs"] < 8
    assert summary["best_step"] == summary["history"][history.index(max(history))]["step"] < summary["history"][-1]["step"]
    from q2pt.metrics import pr_auc

    y, missing = multi_hot([list(x) for x in data.valid["product_types"]], model.classes_)
    scores = model.predict_proba(data.valid["query"].tolist(), data.valid["locale"].tolist())
    assert pr_auc(y.toarray(), scores, int(missing.sum())) == pytest.approx(max(history))


def test_the_stop_metric_by_default_is_pr_auc_for_a_tree_and_r_at_p_for_a_flat_model(tree_model_dir):
    from q2pt.config import resolve_config
    from q2pt.training.loop import stop_metric

    train = resolve_config().train
    assert (stop_metric(train, hierarchical=True), stop_metric(train, hierarchical=False)) == ("pr_auc", "r_at_p")
    fixed = resolve_config(flags={"train.stop_metric": "r_at_p"}).train
    assert stop_metric(fixed, hierarchical=True) == "r_at_p"
    tree = load_model(tree_model_dir[0])
    assert tree.manifest["training"]["*"]["stop_metric"] == "pr_auc"
    history = tree.manifest["training"]["*"]["history"]
    assert history and all("valid_pr_auc" in h for h in history)
    assert "early stopping on validation PR-AUC" in (tree_model_dir[0] / "MODEL_CARD.md").read_text()


def test_min_steps_raises_the_epoch_budget_of_small_networks(tmp_path):
    data = tiny_dataset(96, 32, 8)
    base = ("--train.max_epochs", "2", "--train.patience", "1", "--train.batch_size", "32")
    plain = Q2PTModel("non-unified", config=ngram_config("non-unified", *base)).fit(data, progress=False)
    steps = {k: v["steps"] for k, v in plain.manifest["training"].items()}
    cfg = ngram_config("non-unified", *base, "--train.min_steps", "20")
    model = Q2PTModel("non-unified", config=cfg).fit(data, progress=False)
    raised = {k: v["steps"] for k, v in model.manifest["training"].items()}
    # every per-locale network trains at least min_steps, early stopping waits for it ...
    assert min(raised.values()) >= 20 > max(steps.values())
    # ... and the epoch budget was raised, not the batch shrunk
    assert all(v["epochs"] > 2 for v in model.manifest["training"].values())


def test_max_steps_and_no_validation_data():
    full = tiny_dataset(32, 8, 8)
    from q2pt.data import from_frames

    data = from_frames({"train": full.train, "valid": full.valid.iloc[:0], "test": full.test}, validate=False)
    cfg = ngram_config("unified-aware", "--train.max_steps", "3")
    model = Q2PTModel(config=cfg).fit(data, progress=False)
    summary = model.manifest["training"]["*"]
    assert summary["steps"] == 3 and summary["best_valid_r_at_p"] is None
    assert model.thresholds_ == {"global": 0.5}
    assert model.manifest["metrics"] is None


def test_checkpoint_layout(tmp_path):
    data = tiny_dataset(32, 8, 8)
    cfg = ngram_config("non-unified", "--train.max_epochs", "2")
    with pytest.raises(Interrupt):  # in the second network
        Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "m", progress=False, hooks=_interrupt_at(1, "en_US"))
    ck = tmp_path / "m" / "checkpoints"
    run = json.loads((ck / "run.json").read_text())
    assert run["data_fingerprint"] == data.fingerprint and run["labels"]
    assert sorted(p.name for p in (ck / "done").iterdir()) == ["de_DE.json", "de_DE.safetensors"]
    assert not (tmp_path / "m" / "manifest.json").exists()
    Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "m", resume=True, progress=False)
    # saved: the checkpoints go (the model folder holds every network's best weights)
    assert (tmp_path / "m" / "manifest.json").is_file() and not ck.exists()


def test_row_sparse_adam_matches_torch_sparse_adam():
    torch.manual_seed(0)
    bags = [torch.nn.EmbeddingBag(50, 6, mode="mean", sparse=True) for _ in range(2)]
    bags[1].load_state_dict(bags[0].state_dict())
    start = bags[0].weight.detach().clone()
    opts = [torch.optim.SparseAdam(bags[0].parameters(), lr=0.05), RowSparseAdam(bags[1].parameters(), lr=0.05)]
    for _ in range(6):
        ids = torch.randint(0, 50, (30,))
        offsets = torch.tensor([0, 7, 7, 19])  # one empty bag; ids repeat: gradients need coalescing
        target = torch.randn(4, 6)
        for bag, opt in zip(bags, opts):
            opt.zero_grad()
            ((bag(ids, offsets) - target) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(bags[0].weight, bags[1].weight, rtol=1e-6, atol=1e-7)
    assert not torch.equal(bags[1].weight, start)  # it did train
    for key in ("exp_avg", "exp_avg_sq"):
        a = opts[0].state[bags[0].weight][key]
        b = opts[1].state[bags[1].weight][key]
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    assert opts[0].state[bags[0].weight]["step"] == opts[1].state[bags[1].weight]["step"] == 6


# ----------------------------------------------------------------- pretrained deltas


class _PretrainedEncoder(torch.nn.Module):
    """A stand-in encoder whose ``table`` is rebuildable from a "pretrained resource"."""

    def __init__(self, reference, resource):
        super().__init__()
        self.table = torch.nn.Parameter(reference.clone())
        self.bias = torch.nn.Parameter(torch.zeros(3))
        self._reference, self._resource = reference, resource

    def pretrained_state(self):
        return {"table": self._reference}

    def pretrained_resource(self):
        return self._resource


class _Net(torch.nn.Module):
    def __init__(self, reference, resource):
        super().__init__()
        self.encoder = _PretrainedEncoder(reference, resource)
        self.head = torch.nn.Linear(4, 2)


def test_pretrained_delta_codec_round_trips_exactly(tmp_path):
    from safetensors.torch import save_file

    from q2pt.errors import ModelLoadError
    from q2pt.weights import DELTA_ROWS, DELTA_VALUES, pack_state, read_safetensors, unpack_state

    reference = torch.randn(50, 4)
    reference[7, 0] = 0.0
    resource = {"package": "pkg", "version": "1.0", "file": "w.npz", "sha256": "a" * 64}
    net = _Net(reference, resource)
    with torch.no_grad():
        net.encoder.table[3] += 1.0
        net.encoder.table[7, 0] = -0.0  # equal to 0.0 as a number, but not bitwise: stored
        net.head.weight.fill_(0.5)
    tensors, metadata = pack_state(net)
    assert "encoder.table" not in tensors and tensors["encoder.table" + DELTA_ROWS].tolist() == [3, 7]
    assert tensors["encoder.table" + DELTA_VALUES].shape == (2, 4) and "encoder.bias" in tensors
    save_file(tensors, str(tmp_path / "w.safetensors"), metadata=metadata)
    tensors, metadata = read_safetensors(tmp_path / "w.safetensors")

    fresh = _Net(reference, resource)
    fresh.load_state_dict(unpack_state(fresh, tensors, metadata, source="w.safetensors"))
    for name, value in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    assert torch.signbit(fresh.encoder.table[7, 0])
    # an untouched table is stored as zero rows and rebuilt as the reference itself
    clean = _Net(reference, resource)
    packed, meta = pack_state(clean)
    assert packed["encoder.table" + DELTA_ROWS].numel() == 0
    assert unpack_state(clean, packed, meta)["encoder.table"] is reference
    # plain state dicts pass through
    assert unpack_state(clean, clean.state_dict()).keys() == clean.state_dict().keys()

    other = _Net(reference, {**resource, "version": "2.0", "sha256": "b" * 64})
    with pytest.raises(ModelLoadError) as info:
        unpack_state(other, tensors, metadata, source="w.safetensors")
    assert all(x in str(info.value) for x in ("w.safetensors", "pkg", "a" * 64, "b" * 64))
    bad = dict(tensors, **{"encoder.table" + DELTA_ROWS: torch.tensor([3, 50])})
    with pytest.raises(ModelLoadError, match="corrupt"):
        unpack_state(fresh, bad, metadata, source="w.safetensors")


def test_optimizer_state_of_untouched_rows_is_stored_row_sparse():
    from q2pt.training.optim import optimizer_from_tensors, optimizer_to_tensors

    table = torch.nn.Embedding(4096, 8, sparse=True)
    opt = RowSparseAdam(table.parameters(), lr=0.1)
    table(torch.tensor([1, 5, 4000])).sum().backward()
    opt.step()
    tensors, index = optimizer_to_tensors(opt, "opt0")
    entry = index["state"]["0"]["exp_avg"]
    assert entry == {"row_sparse": "opt0.0.exp_avg", "shape": [4096, 8]}
    assert tensors["opt0.0.exp_avg.rows"].tolist() == [1, 5, 4000]
    again = RowSparseAdam(torch.nn.Embedding(4096, 8, sparse=True).parameters(), lr=0.1)
    optimizer_from_tensors(again, tensors, index)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(again.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])


def test_use_resume_gives_the_same_result_and_small_checkpoints(tmp_path):
    """use with a sparsely trained table: interrupted + resumed == uninterrupted; the
    checkpoints hold the touched rows only (table and optimiser moments)."""
    from test_models import _small_problem, use_config

    train, data = _small_problem()
    # 3 steps of 8 queries, evaluated and checkpointed after each; interrupted after step 2
    cfg = use_config("unified-aware", "--model.encoder_options.embedding", "sparse", "--train.max_epochs", "1",
                     "--train.eval_every", "1", "--train.checkpoint_every", "1", "--model.dropout", "0.2")
    full = Q2PTModel(config=cfg).fit(data, out_dir=tmp_path / "full", progress=False)
    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        Q2PTModel(config=cfg).fit(data, out_dir=out, progress=False, hooks=_interrupt_at(2))
    last = out / "checkpoints" / "last"
    # the table alone is 262 MB (net) and its two Adam moments 524 MB (optim); stored here:
    # the ~3.4M other weights (~14 MB) and their two moments (~27 MB), plus the touched rows
    assert (last / "net.safetensors").stat().st_size < 20e6
    assert (last / "optim.safetensors").stat().st_size < 40e6
    resumed = Q2PTModel(config=cfg).fit(data, out_dir=out, resume=True, progress=False)
    a, b = full.networks["*"].state_dict(), resumed.networks["*"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    q, loc = train["query"].tolist(), train["locale"].tolist()
    np.testing.assert_array_equal(full.predict_proba(q, loc), load_model(out).predict_proba(q, loc))
    assert full.manifest["training"] == resumed.manifest["training"]
