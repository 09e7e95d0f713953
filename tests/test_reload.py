"""Swapping the served model without downtime: the admin route (token checks, refusal of a
broken folder while the old model keeps serving), SIGHUP, and reloads under concurrent load."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest

from support import need

need("torch")
need("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from q2pt.serving.app import create_app  # noqa: E402
from q2pt.serving.runtime import load_runtime  # noqa: E402
from q2pt.serving.settings import ServeSettings  # noqa: E402

TOKEN = "s3cret-token"
ADMIN = ServeSettings(admin_token_env="Q2PT_TEST_ADMIN_TOKEN")
QUERY = {"query": "kinder kopfhörer", "locale": "de_DE"}


@pytest.fixture()
def admin_client(aware_dir, monkeypatch):
    monkeypatch.setenv("Q2PT_TEST_ADMIN_TOKEN", TOKEN)
    with TestClient(create_app(load_runtime(aware_dir), ADMIN)) as client:
        yield client


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_admin_route_is_off_without_a_token(aware_dir, monkeypatch):
    monkeypatch.delenv("Q2PT_TEST_ADMIN_TOKEN", raising=False)
    with TestClient(create_app(load_runtime(aware_dir), ADMIN)) as client:
        resp = client.post("/v1/admin/reload", json={}, headers=_auth())
        assert resp.status_code == 404


def test_admin_route_needs_the_right_bearer_token(admin_client):
    resp = admin_client.post("/v1/admin/reload", json={})
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["type"] == "/problems/unauthorized"
    resp = admin_client.post("/v1/admin/reload", json={}, headers={"Authorization": "Basic abc"})
    assert resp.status_code == 401
    resp = admin_client.post("/v1/admin/reload", json={}, headers=_auth("wrong"))
    assert resp.status_code == 403 and resp.json()["type"] == "/problems/forbidden"
    # the token is checked before the body: a caller without it learns nothing of the route
    for body in (b"{", b'{"model": 5}', b'{"foo": 1}'):
        resp = admin_client.post("/v1/admin/reload", content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 401, (body, resp.text)
    assert admin_client.get("/v1/model").json()["reloads"] == 0
    # with it, a bad body is the usual problem+json
    json_ = {"Content-Type": "application/json", **_auth()}
    resp = admin_client.post("/v1/admin/reload", content=b"{", headers=json_)
    assert resp.status_code == 400 and resp.json()["type"] == "/problems/malformed-json"
    resp = admin_client.post("/v1/admin/reload", content=b'{"foo": 1}', headers=json_)
    assert resp.status_code == 422 and resp.json()["field"] == "foo", resp.text
    resp = admin_client.post("/v1/admin/reload", content=b'{"model": "x"}', headers={"Content-Type": "text/plain", **_auth()})
    assert resp.status_code == 415
    resp = admin_client.post("/v1/admin/reload", content=b'{"model": "\xff"}', headers=json_)
    assert resp.status_code == 400 and resp.json()["type"] == "/problems/malformed-json"
    assert admin_client.get("/v1/model").json()["reloads"] == 0


def test_a_broken_folder_is_refused_and_the_old_model_keeps_serving(admin_client, aware_dir, tmp_path):
    before = admin_client.get("/v1/model").json()
    answer = admin_client.post("/v1/predict", json=QUERY).json()
    broken = tmp_path / "broken"
    shutil.copytree(aware_dir, broken, ignore=shutil.ignore_patterns("checkpoints"))
    (broken / "model.safetensors").write_bytes(b"not weights")
    for target in (broken, tmp_path / "missing"):
        resp = admin_client.post("/v1/admin/reload", json={"model": str(target)}, headers=_auth())
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["type"] == "/problems/reload-refused" and str(target) in body["detail"]
        assert "still serving" in body["detail"]
    after = admin_client.get("/v1/model").json()
    assert after["fingerprint"] == before["fingerprint"] and after["reloads"] == 0
    assert admin_client.post("/v1/predict", json=QUERY).json() == answer


def test_reload_serves_the_new_model_and_says_which(admin_client, aware_dir, agnostic_dir):
    before = admin_client.get("/v1/model").json()
    assert before["fingerprint"] and before["loaded_at"] and before["model_card"] == "/v1/model/card"
    resp = admin_client.post("/v1/admin/reload", json={"model": str(agnostic_dir)}, headers=_auth())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "reloaded" and body["previous"]["fingerprint"] == before["fingerprint"]
    info = admin_client.get("/v1/model").json()
    assert info["variant"] == "unified-agnostic" and info["model_dir"] == str(agnostic_dir)
    assert info["fingerprint"] == body["model"]["fingerprint"] != before["fingerprint"] and info["reloads"] == 1
    assert "unified-agnostic" in admin_client.get("/v1/model/card").text
    # no body (or null): the folder the server was started with, re-read
    resp = admin_client.post("/v1/admin/reload", headers=_auth())
    assert resp.status_code == 200 and resp.json()["model"]["fingerprint"] == before["fingerprint"]
    resp = admin_client.post("/v1/admin/reload", json=None, content=b"null",
                             headers={"Content-Type": "application/json", **_auth()})
    assert resp.status_code == 200 and resp.json()["model"]["fingerprint"] == before["fingerprint"]
    assert admin_client.get("/v1/model").json()["variant"] == "unified-aware"


def test_several_workers_restart_through_the_supervisor_and_refuse_another_folder(aware_dir, agnostic_dir,
                                                                                tmp_path, monkeypatch):
    """With --workers N one request reaches one worker: the route checks the start folder, then
    SIGHUPs uvicorn's supervisor (every worker restarts and re-reads it); another folder is 409."""
    import q2pt.serving.app as app_module

    start = tmp_path / "serving"
    shutil.copytree(aware_dir, start, ignore=shutil.ignore_patterns("checkpoints"))
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(app_module.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setenv("Q2PT_TEST_ADMIN_TOKEN", TOKEN)
    settings = ServeSettings(admin_token_env="Q2PT_TEST_ADMIN_TOKEN", workers=2)
    with TestClient(create_app(load_runtime(start), settings)) as client:
        resp = client.post("/v1/admin/reload", json={"model": str(agnostic_dir)}, headers=_auth())
        assert resp.status_code == 409 and resp.json()["type"] == "/problems/reload-one-folder", resp.text
        assert "2 workers" in resp.json()["detail"] and kills == []
        resp = client.post("/v1/admin/reload", headers=_auth())
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "restarting" and resp.json()["workers"] == 2
        assert kills == [(os.getppid(), signal.SIGHUP)]
        # a broken deploy, written beside and renamed in
        (start / "broken.tmp").write_bytes(b"not weights")
        os.replace(start / "broken.tmp", start / "model.safetensors")
        resp = client.post("/v1/admin/reload", json={"model": str(start)}, headers=_auth())
        assert resp.status_code == 422 and resp.json()["type"] == "/problems/reload-refused"
        assert len(kills) == 1 and client.post("/v1/predict", json=QUERY).status_code == 200
        shutil.copy(aware_dir / "model.safetensors", start / "good.tmp")
        os.replace(start / "good.tmp", start / "model.safetensors")
        monkeypatch.setattr(app_module.os, "getppid", lambda: 1)  # the supervisor died: the worker was re-parented
        resp = client.post("/v1/admin/reload", headers=_auth())
        assert resp.status_code == 422 and "supervisor" in resp.json()["detail"] and len(kills) == 1


def test_the_card_is_the_served_models_and_a_swapped_out_model_is_freed(aware_dir, agnostic_dir, tmp_path,
                                                                        monkeypatch):
    """GET /v1/model/card describes the model in memory (not the folder switched under it), and a
    reload frees the old model by reference counting (no cycle waits for the collector)."""
    import gc
    import weakref

    start = tmp_path / "serving"
    start.symlink_to(aware_dir)
    monkeypatch.setenv("Q2PT_TEST_ADMIN_TOKEN", TOKEN)
    first = load_runtime(start)
    old = weakref.ref(first)
    with TestClient(create_app(first, ADMIN)) as client:
        del first
        start.unlink()
        start.symlink_to(agnostic_dir)  # a deploy switched the folder; no reload yet
        assert "unified-aware" in client.get("/v1/model/card").text
        gc.disable()
        try:
            assert client.post("/v1/admin/reload", headers=_auth()).status_code == 200
            assert "unified-agnostic" in client.get("/v1/model/card").text
            assert old() is None, "the swapped-out runtime is still in memory"
        finally:
            gc.enable()


@pytest.mark.integration
def test_reloads_under_concurrent_requests_fail_no_request(aware_dir, agnostic_dir, tmp_path):
    """A real server under load: admin reloads between two models, a refused broken folder
    and a SIGHUP after the start folder was replaced; every request gets 200."""
    import httpx

    from test_serving import _start_server

    served = tmp_path / "served"  # a symlink to the version served: a deploy switches it
    shutil.copytree(aware_dir, tmp_path / "v1", ignore=shutil.ignore_patterns("checkpoints"))
    served.symlink_to("v1")
    os.environ["Q2PT_ADMIN_TOKEN"] = TOKEN
    try:
        proc, url, _ = _start_server(served)
    finally:
        del os.environ["Q2PT_ADMIN_TOKEN"]
    statuses: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{url}/v1/predict", json=QUERY)
                    statuses.append(r.status_code)
                    r = client.post(f"{url}/v1/predict/batch", json={"queries": [QUERY, QUERY]})
                    statuses.append(r.status_code)
                except httpx.HTTPError as exc:  # a dropped connection is a failed request
                    errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        with httpx.Client(timeout=60, headers=_auth()) as admin:
            for target in (agnostic_dir, served, agnostic_dir):
                r = admin.post(f"{url}/v1/admin/reload", json={"model": str(target)})
                assert r.status_code == 200, r.text
                time.sleep(0.3)
            r = admin.post(f"{url}/v1/admin/reload", json={"model": str(tmp_path / "nope")})
            assert r.status_code == 422
            # a deploy switches the symlink atomically (rename of a new link over it), then SIGHUP re-reads it
            shutil.copytree(agnostic_dir, tmp_path / "v2", ignore=shutil.ignore_patterns("checkpoints"))
            (tmp_path / "served.next").symlink_to("v2")
            os.replace(tmp_path / "served.next", served)
            before = admin.get(f"{url}/v1/model").json()["reloads"]
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while admin.get(f"{url}/v1/model").json()["reloads"] == before:
                assert time.monotonic() < deadline, "SIGHUP did not reload"
                time.sleep(0.1)
            info = admin.get(f"{url}/v1/model").json()
            assert info["variant"] == "unified-agnostic" and info["model_dir"] == os.path.abspath(served)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert not errors, errors[:3]
    assert len(statuses) > 20 and set(statuses) == {200}
    assert "Traceback" not in err
    assert "reload of" in err and "refused" in err  # the refusal is logged


def test_a_given_onnx_file_serves_on_while_the_folder_holds_its_model(aware_dir, agnostic_dir, tmp_path):
    """--onnx FILE (say, int8): a reload of the same model keeps the file; a folder that now holds
    another model is exported anew (the file would answer for the old one), quantized as FILE was."""
    need("onnxruntime")
    import argparse

    from q2pt.cli.serve import reload_options
    from q2pt.models import load_model
    from q2pt.serving.onnx_export import export_onnx
    from q2pt.serving.runtime import load_runtime

    folder = tmp_path / "served"
    shutil.copytree(aware_dir, folder)
    path = export_onnx(load_model(folder), tmp_path / "m.onnx", quantize="int8").path
    first = load_runtime(folder, runtime="onnx", onnx_path=path)
    assert first.quantize == "int8"
    args = argparse.Namespace(runtime="onnx", fallback_locale=None, threads=0, quantize=None, onnx=str(path))
    options = reload_options(args, first.fingerprint, first.quantize)  # what q2pt serve gives its reloads
    assert options["onnx_path"] == str(path.resolve()) and options["onnx_fingerprint"] == first.fingerprint
    assert "onnx_path" not in reload_options(args, None)  # several workers: their own start options
    again = load_runtime(folder, **options)
    assert str(again.path) == str(path)  # no new export
    shutil.rmtree(folder)
    shutil.copytree(agnostic_dir, folder)
    other = load_runtime(folder, **options)
    assert str(other.path) != str(path) and other.fingerprint != first.fingerprint
    assert other.quantize == "int8"  # served as the file was, not in float32
