"""The HTTP API: every route, every validation and error path (RFC 9457 problem bodies),
locale handling per variant, micro-batching, and `q2pt serve` start-up failures.

Models are small real ones: the ngram encoder trained for a few epochs on a hand-made
3-locale, 5-type data set (not the simulated store), cached once per test session and
shared with test_onnx.py and test_demo_page.py (session fixtures in conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from support import need

need("torch")
need("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from q2pt.cli import main  # noqa: E402
from q2pt.errors import ConfigError, ModelLoadError, UnknownLocaleError  # noqa: E402
from q2pt.serving.app import create_app  # noqa: E402
from q2pt.serving.batching import InferenceExecutor, MicroBatcher  # noqa: E402
from q2pt.serving.runtime import load_runtime  # noqa: E402
from q2pt.serving.settings import ServeSettings  # noqa: E402
from support import HANDMADE_LOCALES as LOCALES  # noqa: E402

SETTINGS = ServeSettings(max_batch=4, max_query_chars=64, max_body_bytes=4096, default_top_k=3)


@pytest.fixture(scope="module")
def aware(aware_dir):
    with TestClient(create_app(load_runtime(aware_dir), SETTINGS)) as client:
        yield client


@pytest.fixture(scope="module")
def nonunified(nonunified_dir):
    with TestClient(create_app(load_runtime(nonunified_dir), SETTINGS)) as client:
        yield client


def assert_problem(resp, status: int, slug: str, field: str | None = "any"):
    """An RFC 9457 problem document with this status, type and (optionally) field."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"] and isinstance(body["detail"], str) and body["detail"]
    assert "field" in body
    if field != "any":
        assert body["field"] == field, body
    return body


# ---------------------------------------------------------------- /v1/predict
def test_predict_returns_sorted_types_scores_and_flags(aware, aware_dir):
    from q2pt.models import load_model

    resp = aware.post("/v1/predict", json={"query": "rot schuhe", "locale": "de_DE", "top_k": 4})
    assert resp.status_code == 200
    body = resp.json()
    assert body["locale"] == body["locale_used"] == "de_DE"
    assert body["warnings"] == []
    types = body["product_types"]
    assert len(types) == 4
    scores = [t["score"] for t in types]
    assert scores == sorted(scores, reverse=True)
    assert types[0]["product_type"] == "shoes" and types[0]["predicted"]
    assert all(t["predicted"] == (t["score"] >= body["threshold"]) for t in types)
    assert body["predicted"] == [t["product_type"] for t in types if t["predicted"]]
    # the served scores are the library's, and the threshold is the calibrated one
    model = load_model(aware_dir)
    expected = model.predict_proba(["rot schuhe"], ["de_DE"])[0]
    for t in types:
        assert t["score"] == pytest.approx(float(expected[model.classes_.index(t["product_type"])]), abs=1e-6)
    assert body["threshold"] == pytest.approx(model.thresholds_["de_DE"])
    # its source is what calibration said: de_DE has too few validation positives for its own
    assert model.manifest["threshold_details"]["de_DE"].startswith("global threshold")
    assert body["threshold_source"] == "global"


def test_a_flat_model_refuses_a_depth_limit(aware):
    """max_depth is for hierarchical models: a flat one says so (422 on the field), not ignore it."""
    for route, body in (("/v1/predict", {"query": "rot schuhe", "locale": "de_DE", "max_depth": 1}),
                        ("/v1/predict/batch", {"queries": [{"query": "rot schuhe", "locale": "de_DE"}], "max_depth": 2})):
        resp = aware.post(route, json=body)
        assert resp.status_code == 422 and resp.json()["field"] == "max_depth", resp.json()
        assert "flat" in resp.json()["detail"]
    resp = aware.post("/v1/predict", json={"query": "rot schuhe", "locale": "de_DE", "backoff": False})
    assert resp.status_code == 422 and resp.json()["field"] == "backoff"
    both = aware.post("/v1/predict", json={"query": "rot schuhe", "locale": "de_DE", "backoff": False, "max_depth": 1})
    assert both.status_code == 422 and "max_depth and backoff false apply" in both.json()["detail"]
    for fine in ({}, {"flat": True}):  # a flat answer is what it gives anyway
        assert aware.post("/v1/predict", json={"query": "rot schuhe", "locale": "de_DE", **fine}).status_code == 200
    # flat with backoff false is refused for every model, as `q2pt predict --flat --no-backoff` is
    resp = aware.post("/v1/predict", json={"query": "rot schuhe", "locale": "de_DE", "flat": True, "backoff": False})
    assert resp.status_code == 422 and "not with flat" in resp.text and resp.json()["field"] == "flat"


def test_predict_default_and_clipped_top_k(aware):
    default = aware.post("/v1/predict", json={"query": "red shoes", "locale": "en_US"}).json()
    assert len(default["product_types"]) == SETTINGS.default_top_k
    everything = aware.post("/v1/predict", json={"query": "red shoes", "locale": "en_US", "top_k": 1000}).json()
    assert len(everything["product_types"]) == 5  # every product type of the model


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_predict_threshold_override(aware, threshold):
    body = aware.post("/v1/predict", json={"query": "blue earbuds", "locale": "en_US", "threshold": threshold,
                                           "top_k": 5}).json()
    assert body["threshold"] == threshold and body["threshold_source"] == "request"
    assert all(t["predicted"] == (t["score"] >= threshold) for t in body["product_types"])
    if threshold == 0.0:
        assert len(body["predicted"]) == 5


def test_unified_model_predicts_unknown_locale_agnostically(aware, aware_dir):
    from q2pt.models import load_model

    body = aware.post("/v1/predict", json={"query": "red shoes", "locale": "xx_XX", "top_k": 5}).json()
    assert body["locale"] == "xx_XX" and body["locale_used"] is None
    assert body["threshold_source"] == "global"
    assert len(body["warnings"]) == 1 and "xx_XX" in body["warnings"][0]
    model = load_model(aware_dir)
    assert body["threshold"] == pytest.approx(model.thresholds_["global"])
    expected = model.predict_proba(["red shoes"], ["xx_XX"])[0]  # no locale token
    got = {t["product_type"]: t["score"] for t in body["product_types"]}
    for i, c in enumerate(model.classes_):
        assert got[c] == pytest.approx(float(expected[i]), abs=1e-6)


def test_agnostic_model_uses_locale_only_for_the_threshold(agnostic_dir):
    with TestClient(create_app(load_runtime(agnostic_dir), SETTINGS)) as client:
        known = client.post("/v1/predict", json={"query": "coque téléphone", "locale": "fr_FR"}).json()
        unknown = client.post("/v1/predict", json={"query": "coque téléphone", "locale": "be_FR"}).json()
    from q2pt.models import load_model

    assert load_model(agnostic_dir).manifest["threshold_details"]["fr_FR"].startswith("global threshold")
    assert known["locale_used"] == "fr_FR" and known["threshold_source"] == "global"
    assert unknown["locale_used"] is None and unknown["warnings"]
    assert [t["score"] for t in known["product_types"]] == [t["score"] for t in unknown["product_types"]]
    assert known["product_types"][0]["product_type"] == "phone case"


def test_nonunified_unknown_locale_is_422(nonunified):
    body = assert_problem(nonunified.post("/v1/predict", json={"query": "shoes", "locale": "it_IT"}),
                          422, "unknown-locale", "locale")
    assert "it_IT" in body["detail"] and "--fallback-locale" in body["detail"]


def test_nonunified_lists_only_its_networks_types(nonunified):
    de = nonunified.post("/v1/predict", json={"query": "schuhe", "locale": "de_DE", "top_k": 10}).json()
    us = nonunified.post("/v1/predict", json={"query": "gift card", "locale": "en_US", "top_k": 10}).json()
    assert {t["product_type"] for t in de["product_types"]} == {"shoes", "headphones", "phone case", "toy bricks"}
    assert len(us["product_types"]) == 5 and us["product_types"][0]["product_type"] == "gift card"


def test_the_threshold_source_is_the_calibrations(nonunified, nonunified_dir):
    """A locale with a threshold of its own says "locale" (here every locale of the per-locale
    model; the unified model's de_DE, on the global one, is tested above), as the manifest's
    details say."""
    from q2pt.metrics import own_thresholds
    from q2pt.models import load_model

    details = load_model(nonunified_dir).manifest["threshold_details"]
    assert own_thresholds(details) == ["de_DE", "en_US", "fr_FR"], details
    for loc in ("de_DE", "en_US", "fr_FR"):
        body = nonunified.post("/v1/predict", json={"query": "schuhe", "locale": loc}).json()
        assert body["threshold_source"] == "locale", (loc, body)


def test_nonunified_fallback_locale(nonunified_dir):
    runtime = load_runtime(nonunified_dir, fallback_locale="en_US")
    with TestClient(create_app(runtime, SETTINGS)) as client:
        body = client.post("/v1/predict", json={"query": "gift card", "locale": "en_GB"}).json()
        model = client.get("/v1/model").json()
    assert body["locale_used"] == "en_US" and body["threshold_source"] == "locale"
    assert "fallback" in body["warnings"][0]
    assert body["predicted"][0] == "gift card"
    assert model["fallback_locale"] == "en_US"
    with pytest.raises(UnknownLocaleError, match="not a locale of the model"):
        load_runtime(nonunified_dir, fallback_locale="xx")


# ---------------------------------------------------------------- validation errors
@pytest.mark.parametrize(
    "payload, field",
    [
        ({"query": "", "locale": "de_DE"}, "query"),
        ({"query": "   \t ", "locale": "de_DE"}, "query"),
        ({"query": "x" * 65, "locale": "de_DE"}, "query"),  # over max_query_chars=64
        ({"query": 42, "locale": "de_DE"}, "query"),
        ({"query": None, "locale": "de_DE"}, "query"),
        ({"locale": "de_DE"}, "query"),
        ({"query": "shoes"}, "locale"),
        ({"query": "shoes", "locale": ""}, "locale"),
        ({"query": "shoes", "locale": "de_DE", "top_k": 0}, "top_k"),
        ({"query": "shoes", "locale": "de_DE", "top_k": "many"}, "top_k"),
        ({"query": "shoes", "locale": "de_DE", "threshold": 1.5}, "threshold"),
        ({"query": "shoes", "locale": "de_DE", "threshold": -0.1}, "threshold"),
        ({"query": "shoes", "locale": "de_DE", "threshold": "0.5"}, "threshold"),  # JSON's own types only
        ({"query": "shoes", "locale": "de_DE", "top_k": "5"}, "top_k"),
        ({"query": "shoes", "locale": "de_DE", "backoff": "false"}, "backoff"),
        ({"query": "shoes", "locale": "de_DE", "topk": 3}, "topk"),  # unknown field
    ],
)
def test_predict_rejects_bad_fields(aware, payload, field):
    body = assert_problem(aware.post("/v1/predict", json=payload), 422, "invalid-request", field)
    assert body["instance"] == "/v1/predict"
    assert body["errors"][0]["field"] == field


@pytest.mark.parametrize(
    "raw, content_type, status, slug, detail",
    [
        (b'{"query": "shoes", ', "application/json", 400, "malformed-json", "invalid JSON"),
        (b"\xff\xfe", "application/json", 400, "malformed-json", "invalid JSON"),
        (b"[" * 3000, "application/json", 400, "malformed-json", "parsing the body"),  # nested too deep
        (b'{"query": "sh\xff\xfeoes", "locale": "de_DE"}', "application/json", 400, "malformed-json",
         "not JSON text"),  # bytes that are not UTF-8
        (b'["shoes", "de_DE"]', "application/json", 422, "invalid-request", "JSON object"),
        (b'{"query": "shoes", "locale": "de_DE"}', "text/plain", 415, "unsupported-media-type", "Content-Type"),
        (b'{"query": "shoes", "locale": "de_DE"}', "application/x-www-form-urlencoded", 415,
         "unsupported-media-type", "application/x-www-form-urlencoded"),
        (b'{"query": "shoes", "locale": "de_DE"}', None, 422, "invalid-request", "Content-Type"),
        (b"", "application/json", 422, "invalid-request", "body is required"),
        (b'{"query": "x", "locale": "de_DE", "threshold": NaN}', "application/json", 422, "invalid-request", "finite"),
        (b'{"query": "\\ud800 shoes", "locale": "de_DE"}', "application/json", 422, "invalid-request", "Unicode"),
        # a key given twice: JSON readers keep the last ("tv" was answered for "red shoes")
        (b'{"query": "red shoes", "locale": "de_DE", "query": "tv"}', "application/json", 422, "invalid-request",
         "gives 'query' twice in one object"),
    ],
)
def test_predict_rejects_bad_bodies(aware, raw, content_type, status, slug, detail):
    headers = {"content-type": content_type} if content_type else {}
    body = assert_problem(aware.post("/v1/predict", content=raw, headers=headers), status, slug)
    assert detail in body["detail"]


def test_oversized_bodies_get_413(aware):
    big = json.dumps({"query": "x" * 5000, "locale": "de_DE"}).encode()
    assert_problem(aware.post("/v1/predict", content=big, headers={"content-type": "application/json"}),
                   413, "payload-too-large", None)

    def chunks():  # no Content-Length: counted while reading
        yield b'{"query": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'", "locale": "de_DE"}'

    assert_problem(aware.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"}),
                   413, "payload-too-large", None)


# ---------------------------------------------------------------- /v1/predict/batch
def test_batch_matches_single_requests(aware):
    items = [{"query": "rot schuhe", "locale": "de_DE"}, {"query": "gift card", "locale": "en_US"},
             {"query": "casque audio", "locale": "fr_FR"}, {"query": "red shoes", "locale": "zz"}]
    resp = aware.post("/v1/predict/batch", json={"queries": items, "top_k": 2})
    assert resp.status_code == 200
    body = resp.json()
    assert [r["query"] for r in body["results"]] == [i["query"] for i in items]
    for item, result in zip(items, body["results"]):
        single = aware.post("/v1/predict", json={**item, "top_k": 2}).json()
        assert [t["product_type"] for t in result["product_types"]] == [t["product_type"] for t in single["product_types"]]
        np.testing.assert_allclose([t["score"] for t in result["product_types"]],
                                   [t["score"] for t in single["product_types"]], atol=1e-6)
    assert body["results"][1]["predicted"][0] == "gift card"
    assert len(body["warnings"]) == 1 and "zz" in body["warnings"][0]


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"queries": [{"query": "a", "locale": "de_DE"}] * 5}, "queries"),  # over max_batch=4
        ({"queries": []}, "queries"),
        ({"queries": "shoes"}, "queries"),
        ({}, "queries"),
        ({"queries": [{"query": "a", "locale": "de_DE"}, {"query": " ", "locale": "de_DE"}]}, "queries[1].query"),
        ({"queries": [{"query": "a", "locale": "de_DE"}, {"query": "b"}]}, "queries[1].locale"),
        ({"queries": [{"query": "a", "locale": "de_DE"}], "top_k": -1}, "top_k"),
    ],
)
def test_batch_rejects_bad_requests(aware, payload, field):
    assert_problem(aware.post("/v1/predict/batch", json=payload), 422, "invalid-request", field)


def test_batch_reports_every_bad_query(aware):
    items = [{"query": "", "locale": "de_DE"}, {"query": "ok", "locale": "de_DE"}, {"query": "y" * 100, "locale": "de_DE"}]
    body = assert_problem(aware.post("/v1/predict/batch", json={"queries": items}), 422, "invalid-request",
                          "queries[0].query")
    assert [e["field"] for e in body["errors"]] == ["queries[0].query", "queries[2].query"]


def test_batch_unknown_locale_names_the_item(nonunified):
    items = [{"query": "schuhe", "locale": "de_DE"}, {"query": "scarpe", "locale": "it_IT"}]
    assert_problem(nonunified.post("/v1/predict/batch", json={"queries": items}), 422, "unknown-locale",
                   "queries[1].locale")


# ---------------------------------------------------------------- other routes
def test_model_summary(aware, aware_dir):
    body = aware.get("/v1/model").json()
    manifest = json.loads((aware_dir / "manifest.json").read_text())
    assert body["variant"] == "unified-aware" and body["unified"] is True
    assert body["encoder"] == "ngram" and body["runtime"] == "torch"
    assert body["locales"] == list(LOCALES)
    assert body["product_types"] == manifest["labels"] and body["n_product_types"] == 5
    assert body["thresholds"] == pytest.approx(manifest["thresholds"])
    assert body["tree"] is None and body["level_thresholds"] is None  # a flat model
    assert body["data"]["source"] == "handmade-serving-test-data" and body["data"]["simulated"] is False
    assert body["limits"]["max_batch"] == 4 and body["precision_target"] == 0.8
    assert "r_at_p" in body["metrics"]["validation_global"]


def test_health_ready_docs_and_problem_types(aware):
    assert aware.get("/healthz").json() == {"status": "ok"}
    assert aware.get("/readyz").json() == {"status": "ready"}
    docs = aware.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    # the docs page works offline: Swagger UI comes from the server, not a CDN
    assert "cdn." not in docs.text and "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert aware.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    spec = aware.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model", "/healthz", "/readyz"} <= set(spec["paths"])
    info = aware.get("/problems/unknown-locale").json()
    assert info["status"] == 422 and info["type"] == "/problems/unknown-locale"
    assert_problem(aware.get("/problems/nope"), 404, "not-found")


def test_unknown_route_and_method_are_problems(aware):
    assert_problem(aware.get("/v2/predict"), 404, "not-found", None)
    resp = aware.get("/v1/predict")
    assert_problem(resp, 405, "method-not-allowed", None)
    assert "POST" in resp.headers["allow"]


def test_not_ready_before_startup(aware_dir):
    client = TestClient(create_app(load_runtime(aware_dir), SETTINGS))  # lifespan not run
    assert client.get("/healthz").status_code == 200
    assert_problem(client.get("/readyz"), 503, "not-ready")
    assert_problem(client.post("/v1/predict", json={"query": "shoes", "locale": "en_US"}), 503, "not-ready")


def test_unexpected_errors_are_500_problems_without_details(aware_dir, monkeypatch):
    runtime = load_runtime(aware_dir)
    with TestClient(create_app(runtime, SETTINGS), raise_server_exceptions=False) as client:
        def boom(*args, **kwargs):
            raise RuntimeError("secret internals")

        monkeypatch.setattr(runtime, "predict", boom)
        for path, payload in [("/v1/predict", {"query": "shoes", "locale": "en_US"}),
                              ("/v1/predict/batch", {"queries": [{"query": "shoes", "locale": "en_US"}]})]:
            body = assert_problem(client.post(path, json=payload), 500, "internal-error", None)
            assert "secret" not in json.dumps(body)


def test_micro_batching_without_and_with_batcher_agree(aware_dir):
    no_batch = ServeSettings(micro_batch=False)
    with TestClient(create_app(load_runtime(aware_dir), no_batch)) as client:
        a = client.post("/v1/predict", json={"query": "kinder kopfhörer", "locale": "de_DE"}).json()
    with TestClient(create_app(load_runtime(aware_dir))) as client:
        b = client.post("/v1/predict", json={"query": "kinder kopfhörer", "locale": "de_DE"}).json()
    assert a == b


# ---------------------------------------------------------------- micro-batcher
def test_micro_batcher_gathers_concurrent_items_and_propagates_errors():
    calls: list[list[int]] = []

    def square(items):
        calls.append(list(items))
        time.sleep(0.01)  # while this runs, the other requests queue up
        if -1 in items:
            raise ValueError("bad item")
        return [x * x for x in items]

    async def scenario():
        executor = InferenceExecutor()
        batcher = MicroBatcher(square, executor, max_batch=8)
        batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
            with pytest.raises(ValueError, match="bad item"):
                await batcher.submit(-1)
            return results
        finally:
            await batcher.stop()
            executor.shutdown()

    results = asyncio.run(scenario())
    assert results == [i * i for i in range(20)]
    batches = calls[:-1]
    assert sorted(x for b in batches for x in b) == list(range(20))
    assert len(batches) < 20 and max(len(b) for b in batches) <= 8


def test_serve_settings_are_checked():
    with pytest.raises(ConfigError, match="max_batch"):
        ServeSettings(max_batch=0)
    with pytest.raises(ConfigError, match="micro_batch_wait_ms"):
        ServeSettings(micro_batch_wait_ms=-1)


# ---------------------------------------------------------------- q2pt serve start-up
def test_load_runtime_refuses_missing_and_corrupt_models(aware_dir, tmp_path):
    import shutil

    with pytest.raises(ModelLoadError, match="does not exist"):
        load_runtime(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(aware_dir, broken, ignore=shutil.ignore_patterns("checkpoints"))
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        load_runtime(broken)
    with pytest.raises(ConfigError, match="runtime"):
        load_runtime(aware_dir, runtime="tensorflow")


def test_serve_cli_errors_are_clean(aware_dir, tmp_path, capsys):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{not json")
    cases = [
        (["serve", "--model", str(tmp_path / "nope")], 3, "does not exist"),
        (["serve", "--model", str(corrupt)], 3, "manifest.json is corrupt"),
        (["serve", "--model", str(aware_dir), "--workers", "0"], 2, "--workers"),
        (["serve", "--model", str(aware_dir), "--max-batch", "0"], 2, "max_batch"),
        (["serve", "--model", str(aware_dir), "--quantize", "int8"], 2, "--runtime onnx"),
        (["serve", "--model", str(aware_dir), "--port", "70000"], 2, "--port"),
        (["serve", "--model", str(aware_dir), "--onnx", str(tmp_path / "m.onnx")], 2, "--runtime onnx"),
    ]
    for argv, code, message in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_serve_refuses_a_port_in_use(aware_dir, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        assert main(["serve", "--model", str(aware_dir), "--port", str(port)]) == 2
    assert "already in use" in capsys.readouterr().err


def test_serve_with_workers_gives_them_time_to_load_and_its_logging(aware_dir, monkeypatch, capsys):
    """uvicorn restarts a worker on SIGHUP and gives up on it after 5 s by default: a worker that
    must load (and export to ONNX) a replaced model takes longer, so q2pt gives it
    --worker-start-timeout; the workers log q2pt's lines as one process does."""
    import logging

    import uvicorn

    import q2pt.serving.app as app_module

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: seen.update(kw, target=target))
    monkeypatch.delenv(app_module.ENV_OPTIONS, raising=False)
    assert main(["serve", "--model", str(aware_dir), "--port", str(_free_port()), "--workers", "2"]) == 0
    assert seen["timeout_worker_healthcheck"] == 300 and seen["workers"] == 2
    options = json.loads(os.environ[app_module.ENV_OPTIONS])
    assert options["log_level"] == logging.INFO
    q2pt_log = logging.getLogger("q2pt")
    monkeypatch.setattr(q2pt_log, "handlers", [])
    app_module.app_from_env()  # what each worker runs: q2pt's handler on stderr
    assert any(getattr(h, "_q2pt_cli", False) for h in q2pt_log.handlers)
    assert main(["serve", "--model", str(aware_dir), "--workers", "2", "--worker-start-timeout", "0"]) == 2
    assert "--worker-start-timeout" in capsys.readouterr().err


def test_a_sighup_while_the_model_loads_does_not_end_the_server(aware_dir, monkeypatch, capsys):
    import signal

    import q2pt.serving.runtime as runtime_module

    def load_and_get_hangup(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGHUP)  # a deploy's `kill -HUP` just after a start
        raise ConfigError("stop here")

    monkeypatch.setattr(runtime_module, "load_runtime", load_and_get_hangup)
    before = signal.getsignal(signal.SIGHUP)
    assert main(["serve", "--model", str(aware_dir), "--port", str(_free_port())]) == 2  # alive, not killed
    assert "stop here" in capsys.readouterr().err and signal.getsignal(signal.SIGHUP) == before


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_subprocess_missing_model_exits_nonzero_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "q2pt", "serve", "--model", str(tmp_path / "nonexistent")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "q2pt: model folder" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def _start_server(model_dir, *flags: str) -> tuple[subprocess.Popen, str, int]:
    """``q2pt serve`` in a subprocess, once it answers /readyz: (process, base URL, port)."""
    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "q2pt", "serve", "--model", str(model_dir), "--port", str(port), "--log-level", "warning",
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 45
    while True:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1])
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url, port
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("server did not become ready")
        time.sleep(0.2)


@pytest.mark.integration
def test_serve_subprocess_serves_and_stops(aware_dir):
    import httpx

    proc, url, _ = _start_server(aware_dir)
    try:
        resp = httpx.post(f"{url}/v1/predict", json={"query": "rouge baskets", "locale": "fr_FR"})
        assert resp.status_code == 200 and resp.json()["predicted"][0] == "shoes"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_app_from_env_for_multi_worker_serving(aware_dir, monkeypatch):
    from q2pt.serving.app import ENV_OPTIONS, app_from_env

    monkeypatch.delenv(ENV_OPTIONS, raising=False)
    with pytest.raises(ConfigError, match=ENV_OPTIONS):
        app_from_env()
    options = {"runtime": {"model_dir": str(aware_dir), "runtime": "torch"}, "settings": {"max_batch": 2}}
    monkeypatch.setenv(ENV_OPTIONS, json.dumps(options))
    with TestClient(app_from_env()) as client:
        assert client.get("/v1/model").json()["limits"]["max_batch"] == 2
        assert client.post("/v1/predict", json={"query": "boots", "locale": "en_US"}).status_code == 200


# ------------------------------------------------- one inference core: library == serving
def test_library_and_server_select_the_same_types(nonunified_dir, aware_dir):
    """The same queries through q2pt.predict (the library) and the HTTP API give the same
    types, scores, served locale and note; a label the de_DE network never saw is listed by
    neither, even at threshold 0."""
    from q2pt.models import load_model
    from q2pt.predict import predict_rows

    cases = [(nonunified_dir, ["schuhe", "gift card"], ["de_DE", "en_GB"], "en_US"),
             (aware_dir, ["schuhe", "coque téléphone"], ["de_DE", "xx_XX"], None)]
    for folder, queries, locales, fallback in cases:
        model = load_model(folder)
        for threshold in (None, 0.0):
            preds = predict_rows(model, queries, locales, threshold=threshold, top_k=10, fallback_locale=fallback)
            rows, notes = preds.pairs, preds.notes
            settings = ServeSettings(max_batch=4, max_query_chars=64, max_body_bytes=4096, default_top_k=10)
            with TestClient(create_app(load_runtime(folder, fallback_locale=fallback), settings)) as client:
                for q, loc, row, note in zip(queries, locales, rows, notes):
                    body = client.post("/v1/predict", json={"query": q, "locale": loc, "threshold": threshold}).json()
                    assert body["predicted"] == [t for t, _ in row]
                    scores = {t["product_type"]: t["score"] for t in body["product_types"] if t["predicted"]}
                    assert scores == pytest.approx(dict(row))
                    assert body["warnings"] == ([note] if note else [])
                    assert body["locale_used"] == model.infer([q], [loc], fallback_locale=fallback).resolutions[0].locale_used
    model = load_model(nonunified_dir)
    unseen_in_de = sorted(set(model.classes_) - set(model.labels_of("de_DE")))
    assert unseen_in_de
    rows = predict_rows(model, ["schuhe"], ["de_DE"], threshold=0.0).pairs
    assert not set(unseen_in_de) & {t for t, _ in rows[0]}


def test_offline_docs_security_headers_and_head(aware):
    """No page loads from a CDN (ReDoc is off, Swagger UI and its favicon are local); every
    response says nosniff; the demo page carries a restrictive CSP; HEAD works where GET does."""
    assert aware.get("/redoc").status_code == 404
    docs = aware.get("/docs")
    assert "https://" not in docs.text and "/static/swagger/favicon-32x32.png" in docs.text
    assert aware.get("/static/swagger/favicon-32x32.png").status_code == 200
    for resp in (aware.get("/healthz"), aware.get("/v1/model"), aware.post("/v1/predict", json={"query": ""}), docs):
        assert resp.headers["x-content-type-options"] == "nosniff"
    page = aware.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/", "/healthz", "/v1/model", "/static/app.js"):
        head, get = aware.head(path), aware.get(path)
        assert head.status_code == get.status_code == 200 and head.content == b""
        assert head.headers.get("content-type") == get.headers.get("content-type")
    assert aware.head("/v1/nothing").status_code == 404


@pytest.mark.integration
def test_slow_clients_are_closed_and_excess_connections_get_503(aware_dir):
    """A connection whose headers never finish (or that never speaks) is closed after the
    header timeout; beyond max_connections a request gets 503 + Retry-After; normal requests
    succeed throughout."""
    import httpx

    proc, url, port = _start_server(aware_dir, "--header-timeout", "1", "--keep-alive", "1", "--max-connections", "4")
    try:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        time.sleep(0.3)
        busy = httpx.get(f"{url}/healthz", timeout=5)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["type"] == "/problems/busy"
        time.sleep(1.5)  # past the header timeout: the slow and silent connections are closed
        for sock in [slow, *silent]:
            sock.settimeout(5)
            assert sock.recv(1024) == b""
            sock.close()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        with httpx.Client() as client:  # keep-alive requests still work
            assert [client.get(f"{url}/healthz").status_code for _ in range(3)] == [200, 200, 200]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
