"""Shared test set-up: everything offline, small and seeded."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the simulated-data cache inside the test session's temporary folder."""
    cache = tmp_path_factory.getbasetemp() / "q2pt-cache"
    monkeypatch.setenv("Q2PT_CACHE", str(cache))
    yield
