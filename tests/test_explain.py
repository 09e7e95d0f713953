"""Explanations by occlusion: a hand-built scorer whose contributions are known, the CLI and
the HTTP route on a tiny trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from q2pt.errors import ConfigError
from q2pt.explain import explain, words_of
from q2pt.inference import UNIFIED, InferenceCore
from support import need

CLASSES = ["shoes", "socks"]


def _rule_core(variant: str = "unified-aware") -> InferenceCore:
    """Scores by rule: shoes = 0.1 + 0.6 [word 'boots'] + 0.2 [locale token 'de'];
    socks = 0.3 [word 'wool'] - 0.1 [word 'boots'] + 0.1 (never below 0)."""

    def tokenize(queries, token_locales=None):
        return list(zip(queries, token_locales or [None] * len(queries)))

    def forward(key, batch):
        out = []
        for query, token in batch:
            words = query.split()
            shoes = 0.1 + 0.6 * ("boots" in words) + 0.2 * (token == "de")
            socks = max(0.0, 0.1 + 0.3 * ("wool" in words) - 0.1 * ("boots" in words))
            out.append([shoes, socks])
        return np.asarray(out)

    return InferenceCore(variant=variant, classes=CLASSES, locales=["de", "fr"], thresholds={"global": 0.5},
                         tokenizers={UNIFIED: tokenize}, forward=forward)


def test_words_of_keeps_spans():
    assert words_of("  red  boots x") == [("red", 2, 5), ("boots", 7, 12), ("x", 13, 14)]


def test_occlusion_gives_the_known_contributions():
    result = explain(_rule_core(), "red wool boots", "de")
    assert result["product_type"] == "shoes" and result["score"] == pytest.approx(0.9)
    contrib = {w["word"]: w["contribution"] for w in result["words"]}
    assert contrib == pytest.approx({"red": 0.0, "wool": 0.0, "boots": 0.6})
    assert result["locale_token"]["token"] == "de"
    assert result["locale_token"]["contribution"] == pytest.approx(0.2)
    assert result["predicted"] and result["threshold"] == 0.5
    # another type: boots lowers socks, wool raises it
    socks = explain(_rule_core(), "red wool boots", "de", "socks")
    assert {w["word"]: w["contribution"] for w in socks["words"]} == pytest.approx(
        {"red": 0.0, "wool": 0.3, "boots": -0.1})
    assert socks["locale_token"]["contribution"] == pytest.approx(0.0)


def test_no_locale_token_without_one():
    unseen = explain(_rule_core(), "boots", "xx")  # unseen locale: agnostic, nothing to occlude
    assert unseen["locale_token"] is None and unseen["locale_used"] is None and unseen["warnings"]
    agnostic = explain(_rule_core("unified-agnostic"), "boots", "de")
    assert agnostic["locale_token"] is None and agnostic["score"] == pytest.approx(0.7)


def test_bad_requests_are_clear_errors():
    with pytest.raises(ConfigError, match="empty"):
        explain(_rule_core(), "   ", "de")
    with pytest.raises(ConfigError, match="not one of the model's 2 types"):
        explain(_rule_core(), "boots", "de", "hats")


def test_explain_cli_and_http_agree_on_a_trained_model(aware_dir, capsys):
    need("torch")
    need("fastapi")
    from fastapi.testclient import TestClient

    from q2pt.cli import main
    from q2pt.serving.app import create_app
    from q2pt.serving.runtime import load_runtime

    query = "kinder kopfhörer rot"
    assert main(["explain", "--model", str(aware_dir), "--locale", "de_DE", query, "--json", "-q"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["product_type"] == "headphones" and [w["word"] for w in cli["words"]] == query.split()
    top = max(cli["words"], key=lambda w: w["contribution"])
    assert top["word"] == "kopfhörer"
    with TestClient(create_app(load_runtime(aware_dir))) as client:
        resp = client.post("/v1/explain", json={"query": query, "locale": "de_DE"})
        assert resp.status_code == 200, resp.text
        http = resp.json()
        assert http["product_type"] == cli["product_type"]
        assert [w["contribution"] for w in http["words"]] == pytest.approx([w["contribution"] for w in cli["words"]],
                                                                           abs=1e-6)
        bad = client.post("/v1/explain", json={"query": query, "locale": "de_DE", "product_type": "nope"})
        assert bad.status_code == 422 and bad.json()["field"] == "product_type"
        assert client.post("/v1/explain", json={"query": " ", "locale": "de_DE"}).json()["field"] == "query"
    assert main(["explain", "--model", str(aware_dir), "--locale", "de_DE", query]) == 0
    assert "kopfhörer" in capsys.readouterr().out
    # what predict and /v1/explain refuse, the CLI refuses too (3,000 words ran for 33 s; '' was "unseen")
    assert main(["explain", "--model", str(aware_dir), "--locale", "de_DE", "rot " * 60]) == 2
    assert "query has 240 characters, over the limit of 200 (--max-query-chars)" in capsys.readouterr().err
    assert main(["explain", "--model", str(aware_dir), "--locale", "de_DE", "--max-query-chars", "300",
                 "rot " * 60, "-q"]) == 0
    capsys.readouterr()
    assert main(["explain", "--model", str(aware_dir), "--locale", "", query]) == 2
    assert "field 'locale': expected a non-empty locale id" in capsys.readouterr().err


def test_bars_of_tiny_contributions_stay_short():
    from q2pt.cli.review import format_explanation

    result = {"predicted": False, "locale_used": "us", "product_type": "shoes", "score": 0.1, "threshold": 0.5,
              "query": "red shoes", "locale": "us", "locale_token": None, "warnings": [],
              "words": [{"word": "red", "contribution": 1e-6}, {"word": "shoes", "contribution": -2e-6}]}
    lines = format_explanation(result).splitlines()[1:3]
    assert [len(line.split()) for line in lines] == [2, 2], lines  # word and value: no bar
    result["words"][1]["contribution"] = 0.3  # a real contribution: a full bar, the tiny one none
    lines = format_explanation(result).splitlines()[1:3]
    assert lines[1].endswith("+" * 20) and lines[0].rstrip().endswith("+0.0000")
