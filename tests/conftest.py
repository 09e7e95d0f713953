"""Shared test set-up: everything offline, small and seeded."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the simulated-data cache inside the test session's temporary folder."""
    cache = tmp_path_factory.getbasetemp() / "q2pt-cache"
    monkeypatch.setenv("Q2PT_CACHE", str(cache))
    yield


# ------------------------------------------------- trained models, once per test session
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory, variant: str) -> Path:
    """A trained ngram model folder of ``variant``, trained once per session (cached on disk
    under the session's base temp, so every test module reuses it)."""
    from q2pt.config import resolve_config
    from q2pt.models import Q2PTModel
    from support import handmade_dataset

    out = tmp_path_factory.getbasetemp() / "q2pt-serving-models" / variant
    if not (out / "manifest.json").is_file():
        cfg = resolve_config(encoder="ngram", flags={
            "model.variant": variant, "train.max_epochs": 8, "train.batch_size": 32, "train.lr": 0.05,
            "train.threads": 1, "model.encoder_options": {"dim": 16, "buckets": 4096},
        })
        Q2PTModel(config=cfg).fit(handmade_dataset(), out_dir=out, progress=False)
    return out


@pytest.fixture(scope="session")
def aware_dir(tmp_path_factory):
    return trained_model_dir(tmp_path_factory, "unified-aware")


@pytest.fixture(scope="session")
def nonunified_dir(tmp_path_factory):
    return trained_model_dir(tmp_path_factory, "non-unified")


@pytest.fixture(scope="session")
def agnostic_dir(tmp_path_factory):
    return trained_model_dir(tmp_path_factory, "unified-agnostic")


@pytest.fixture(scope="session")
def stream_model_dir(tmp_path_factory):
    """A small ngram model (unified-aware), saved: the streaming and Ray tests' model."""
    from q2pt.config import resolve_config
    from q2pt.data import from_frames
    from q2pt.models import Q2PTModel
    from support import stream_split

    data = from_frames({"train": stream_split(300, 1), "valid": stream_split(60, 2), "test": stream_split(20, 3)})
    cfg = resolve_config(encoder="ngram", overrides={
        "train.max_epochs": 2, "train.batch_size": 32, "train.threads": 1,
        "model.encoder_options": {"dim": 16, "buckets": 2048},
    })
    folder = tmp_path_factory.mktemp("stream-model") / "model"
    Q2PTModel(config=cfg).fit(data, out_dir=folder, progress=False)
    return folder


@pytest.fixture(scope="session")
def tree_model_dir(tmp_path_factory):
    """A small hierarchical ngram model (the hand-made types as paths of 1-3 levels), saved,
    with the test split of its data."""
    from q2pt.config import resolve_config
    from q2pt.data import from_frames
    from q2pt.models import Q2PTModel
    from support import handmade_dataset

    data = handmade_dataset()
    paths = {"shoes": "fashion > shoes", "headphones": "electronics > audio > headphones",
             "phone case": "electronics > phone accessories > phone case", "toy bricks": "toys > bricks",
             "gift card": "gift card"}
    splits = {}
    for name in ("train", "valid", "test"):
        f = getattr(data, name).copy()
        f["product_types"] = f["product_types"].map(lambda ts: [paths[t] for t in ts])
        splits[name] = f
    out = tmp_path_factory.mktemp("tree") / "model"
    cfg = resolve_config(encoder="ngram", flags={
        "train.max_epochs": 6, "train.batch_size": 32, "train.lr": 0.05, "train.threads": 1,
        "model.encoder_options": {"dim": 16, "buckets": 4096}})
    Q2PTModel(config=cfg).fit(from_frames(splits, validate=False), out_dir=out, progress=False)
    return out, splits["test"]
