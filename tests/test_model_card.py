"""The model card: written into every model folder from its manifest, hashed with the other
files, served at /v1/model/card."""

from __future__ import annotations

import json
import shutil

from support import need

need("torch")


def test_every_saved_model_has_a_card_with_its_facts(aware_dir, nonunified_dir):
    for folder, variant in ((aware_dir, "unified-aware"), (nonunified_dir, "non-unified")):
        card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert "MODEL_CARD.md" in manifest["files"]  # checked on load like every other file
        assert f"# Model card: q2pt {variant} / ngram" in card
        data = manifest["data"]
        assert data["source"] in card and data["fingerprint"] in card and "real data, not simulated" in card
        for loc in manifest["locales"]:
            entry = manifest["metrics"]["locales"][loc]
            lo, hi = entry["r_at_p_ci"]  # calibration measures CIs now
            assert f"| {loc} | {data['locale_counts']['train'][loc]} | {entry['n_queries']} |" in card
            assert f"[{lo:.3f}, {hi:.3f}]" in card
            assert f"{manifest['thresholds'].get(loc, manifest['thresholds']['global']):.4f}" in card
        assert f"{len(manifest['labels'])} product types" in card
        assert "Parent model: none (trained from scratch)" in card
        assert "## Intended use" in card and "## Known limits" in card


def test_card_limits_name_small_locales_and_unseen_locale_behaviour():
    from q2pt.model_card import render_model_card

    manifest = {
        "variant": "non-unified", "encoder": {"spec": "use"}, "labels": ["a", "b"], "locales": ["big", "tiny"],
        "data": {"source": "sim", "simulated": True, "fingerprint": "f", "n_train": 5010, "n_valid": 600,
                 "locale_counts": {"train": {"big": 5000, "tiny": 10}}},
        "config": {"train": {"precision_target": 0.8}},
        "metrics": {"global": {"r_at_p": 0.5, "n_queries": 600, "n_positives": 640},
                    "locales": {"big": {"r_at_p": 0.6, "n_queries": 590, "n_positives": 630, "r_at_p_ci": [0.5, 0.7]},
                                "tiny": {"r_at_p": 0.0, "n_queries": 10, "n_positives": 10, "r_at_p_ci": [0.0, 0.2]}}},
        "thresholds": {"global": 0.4, "big": 0.5},
        "threshold_details": {"global": "g", "big": "b"},
        "parent": {"path": "/models/old", "fingerprint": "abc"},
    }
    card = render_model_card(manifest)
    limits = card.split("## Known limits")[1]
    assert "`tiny` (10 training queries, 10 validation positives)" in limits and "`big`" not in limits
    assert "refused" in limits and "fallback locale" in limits  # non-unified: unseen locales
    assert "SIMULATED" in card and "SIMULATED" in limits
    assert "`/models/old` (fingerprint `abc`)" in card
    assert "| tiny | 10 | 10 | 10 | 0.000 | [0.000, 0.200] | 0.4000 | global threshold (g) |" in card
    # the floor a locale's own threshold needed: the saved one (none saved: 20, as q2pt then did), else the variant's
    assert "fewer than 20 validation positives" in limits
    unified = {**manifest, "variant": "unified-aware"}
    assert "fewer than 20 validation positives" in render_model_card(unified)
    unified["config"] = {"train": {"precision_target": 0.8, "locale_threshold_min_positives": None}}
    assert "fewer than 200 validation positives" in render_model_card(unified)
    unified["config"]["train"]["locale_threshold_min_positives"] = 35
    assert "fewer than 35 validation positives" in render_model_card(unified)


def test_card_is_served_and_linked(aware_dir, tmp_path):
    need("fastapi")
    from fastapi.testclient import TestClient

    from q2pt.serving.app import create_app
    from q2pt.serving.runtime import load_runtime

    with TestClient(create_app(load_runtime(aware_dir))) as client:
        info = client.get("/v1/model").json()
        resp = client.get(info["model_card"])
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/markdown")
        assert resp.text == (aware_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
        assert 'href="/v1/model/card"' in client.get("/").text  # the demo page links it
    # a folder written before model cards: the card is rendered from its manifest
    old = tmp_path / "old"
    shutil.copytree(aware_dir, old, ignore=shutil.ignore_patterns("checkpoints"))
    (old / "MODEL_CARD.md").unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"]["MODEL_CARD.md"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(load_runtime(old))) as client:
        assert client.get("/v1/model/card").text.startswith("# Model card: q2pt unified-aware / ngram")
