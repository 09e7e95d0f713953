"""The demo page at /: self-contained (no CDN), and rendered by a real browser (headless
Chromium) that runs its JavaScript against a live uvicorn server: the rendered DOM shows
the predicted product type, highlighted, with score bars."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from support import need

pytestmark = pytest.mark.integration

need("torch")
need("fastapi")
uvicorn = need("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from q2pt.serving.app import STATIC_DIR, create_app  # noqa: E402
from q2pt.serving.runtime import load_runtime  # noqa: E402
from q2pt.serving.settings import ServeSettings  # noqa: E402

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)


def test_page_and_assets_are_self_contained(aware_dir):
    with TestClient(create_app(load_runtime(aware_dir), ServeSettings())) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'src="/static/app.js"' in page.text and 'href="/static/style.css"' in page.text
        for asset in ("/static/app.js", "/static/style.css"):
            assert client.get(asset).status_code == 200
    for f in STATIC_DIR.iterdir():  # nothing fetched from elsewhere (no CDN, no web fonts)
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), f.name
        assert "@import" not in text and "url(http" not in text
    js = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    assert "innerHTML" not in js  # results are inserted as text, never as markup


@contextlib.contextmanager
def serving(model_dir):
    """uvicorn serving the model on a free loopback port, in a thread of this process: its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(load_runtime(model_dir), ServeSettings()), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_server(aware_dir):
    with serving(aware_dir) as url:
        yield url


def render(url: str, tmp_path: Path) -> str:
    """The DOM after the page's JavaScript ran, as dumped by headless Chromium."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--no-default-browser-check", "--mute-audio",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium): "
                    "the demo page is not rendered in a browser")
def test_browser_renders_predictions(live_server, tmp_path):
    import httpx

    query, locale = "rouge baskets", "fr_FR"
    api = httpx.post(f"{live_server}/v1/predict", json={"query": query, "locale": locale, "top_k": 5}).json()
    expected = api["predicted"]
    assert expected and expected[0] == "shoes"

    dom = render(f"{live_server}/?{urlencode({'query': query, 'locale': locale, 'top_k': 5})}", tmp_path)
    assert 'data-state="done"' in dom, dom[-3000:]
    items = re.findall(r'<li class="result( predicted)?" data-type="([^"]+)" data-predicted="(true|false)">', dom)
    assert [t for _, t, _ in items] == [p["product_type"] for p in api["product_types"]]
    assert [t for cls, t, flag in items if cls and flag == "true"] == expected  # highlighted = predicted
    assert re.search(r'<div class="fill" style="width: [\d.]+%;">', dom)  # score bars
    assert f"Predicted: {', '.join(expected)}" in dom
    # the locale selector lists the model's locales
    assert all(f'<option value="{loc}">' in dom for loc in ("de_DE", "en_US", "fr_FR"))
    # why: the top type's words shaded by their contributions, as /v1/explain gives them
    ex = httpx.post(f"{live_server}/v1/explain", json={"query": query, "locale": locale}).json()
    words = re.findall(r'<span class="word( locale-token)? (up|down)" data-contribution="(-?[\d.]+)"[^>]*>([^<]+)</span>',
                       dom)
    assert [w for _, _, _, w in words] == [w["word"] for w in ex["words"]] + [f"[locale {locale}]"]
    for (_, sign, c, _), w in zip(words, ex["words"]):
        assert float(c) == pytest.approx(w["contribution"], abs=1e-4) and (sign == "up") == (w["contribution"] >= 0)
    assert f"Why <span id=\"why-type\">{ex['product_type']}" in dom
    # the same query in every locale, side by side, the selected one marked
    rows = re.findall(r'<tr( class="current")? data-locale="([^"]+)">', dom)
    assert [loc for _, loc in rows] == ["de_DE", "en_US", "fr_FR"]
    assert [loc for cur, loc in rows if cur] == [locale]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_browser_shows_unseen_locale_warning_and_problem_errors(live_server, tmp_path):
    dom = render(f"{live_server}/?{urlencode({'query': 'red shoes', 'locale': 'xx_XX'})}", tmp_path)
    assert 'data-state="done"' in dom
    assert "xx_XX (not in the model)" in dom and "predicted locale-agnostically" in dom
    assert re.search(r'<ul id="warnings" class="warnings"><li>[^<]*xx_XX', dom)

    long_query = "x" * 600  # over the server's max_query_chars: the problem detail is shown
    dom = render(f"{live_server}/?{urlencode({'query': long_query, 'locale': 'de_DE'})}", tmp_path / "2")
    assert 'data-state="error"' in dom and f"over the limit of {ServeSettings().max_query_chars}" in dom


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_browser_shows_the_path_of_a_hierarchical_answer(tree_model_dir, tmp_path):
    folder, _ = tree_model_dir
    with serving(folder) as url:
        dom = render(f"{url}/?{urlencode({'query': 'kinder kopfhörer', 'locale': 'de_DE'})}", tmp_path)
    assert 'data-state="done"' in dom, dom[-2000:]
    path = re.search(r'<li class="path" data-level="3">(.*?)</li>', dom)
    assert path, dom[-3000:]
    assert re.findall(r'<span class="ancestor">([^<(]+) \(', path.group(1)) == ["electronics", "audio"]
    assert '<strong class="leaf">headphones (' in path.group(1)
