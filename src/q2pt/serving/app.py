"""The q2pt HTTP API (FastAPI) and its demo page.

Routes (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

``POST /v1/predict``        one query -> product types with scores and ``predicted`` flags
``POST /v1/predict/batch``  up to ``max_batch`` queries
``POST /v1/explain``        each word's (and the locale token's) contribution to a type's score
``GET  /v1/model``          summary of the served model's manifest (fingerprint, path, loaded at)
``GET  /v1/model/card``     the served model's card (MODEL_CARD.md, markdown)
``POST /v1/admin/reload``   serve another model folder (only with an admin token; see below)
``GET  /healthz``           liveness (the process answers)
``GET  /readyz``            readiness (model loaded and warmed up; 503 before)
``GET  /``                  the demo page (``static/index.html``; ``?query=...&locale=...``)
``GET  /problems/{slug}``   what an error ``type`` means

Every error is an RFC 9457 problem document (:mod:`q2pt.serving.problems`): the exception
handlers below are the one place where q2pt's exceptions and request-validation errors
become HTTP statuses. User input never reaches a 500: inputs are validated (types and
ranges by the pydantic schemas, limits and locales by the routes) before the model runs.

A locale the model never saw: unified models predict locale-agnostically and say so
(``locale_used: null`` and a warning); non-unified models answer 422 ``unknown-locale``
unless the runtime was given a fallback locale.

Single-query requests are micro-batched (:class:`~q2pt.serving.batching.MicroBatcher`);
all inference runs on one worker thread.

Swapping models without downtime (:meth:`_Service.reload`): the new folder is loaded and
warmed up beside the serving model (on another thread), then swapped in by one assignment.
Each request takes the runtime serving when it starts and uses it to the end, so requests in
flight finish on the old model and none fails; a folder that cannot be loaded is refused
(``reload-refused``, logged) and the old model keeps serving. A reload comes from SIGHUP
(``ServeSettings.reload_on_sighup``: the folder the server was started with, re-read, which a
deploy replaces atomically) or from ``POST /v1/admin/reload {"model": PATH}``, which exists only
when the server's admin token variable (``ServeSettings.admin_token_env``) is set: a request
without ``Authorization: Bearer <token>`` gets 401, a wrong token 403. A server of several
worker processes (``ServeSettings.workers``) cannot swap its workers from one request: there the
route checks the start folder and has uvicorn's supervisor restart every worker
(:meth:`_Service.restart_workers`, 202).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import signal
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import numpy as np

from q2pt import __version__
from q2pt.data.schema import query_problem
from q2pt.errors import ConfigError, DependencyError, ModelLoadError, Q2PTError, UnknownLocaleError, require
from q2pt.inference import Resolution, flat_model_refusal, select_types
from q2pt.model_card import render_model_card
from q2pt.serving.batching import InferenceExecutor, MicroBatcher
from q2pt.serving.problems import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_TYPES,
    FieldProblem,
    ProblemDoc,
    RequestError,
    describe,
    validation_problems,
)
from q2pt.serving.runtime import Runtime, load_runtime
from q2pt.serving.schemas import (
    BatchRequest,
    BatchResponse,
    ExplainRequest,
    Explanation,
    Health,
    ModelInfo,
    Prediction,
    PredictRequest,
    ReloadRequest,
    ReloadResult,
)
from q2pt.serving.settings import ENV_OPTIONS, ServeSettings

require("fastapi", "serve")

from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

logger = logging.getLogger("q2pt.serving")

STATIC_DIR = Path(__file__).parent / "static"


# ------------------------------------------------------------------ problem responses
def problem_response(doc: ProblemDoc, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(doc.to_dict(), status_code=doc.status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


_HTTP_SLUGS = {400: "malformed-json", 404: "not-found", 405: "method-not-allowed", 413: "payload-too-large", 503: "not-ready"}


def _install_exception_handlers(app: FastAPI) -> None:
    """The one place where exceptions become HTTP statuses (problem+json)."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media and media != "application/json" and not media.endswith("+json"):
            return problem_response(ProblemDoc(
                "unsupported-media-type", 415, f"the body is {media}: send JSON with 'Content-Type: application/json'",
                instance=request.url.path))
        slug, problems = validation_problems(exc.errors())
        status = PROBLEM_TYPES[slug].status
        return problem_response(ProblemDoc(
            slug, status, describe(problems), instance=request.url.path,
            field=problems[0].field if problems else None, errors=problems,
        ))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _HTTP_SLUGS.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        elif exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's: bad bytes, deep
            detail = "error parsing the body: not JSON text (UTF-8, UTF-16 or UTF-32), or nested too deep"
        title = None if slug != "http-error" else f"HTTP {exc.status_code}"
        return problem_response(
            ProblemDoc(slug, exc.status_code, detail, instance=request.url.path, title=title),
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(Q2PTError)
    async def _q2pt(request: Request, exc: Q2PTError) -> JSONResponse:
        if isinstance(exc, RequestError):
            doc = ProblemDoc(exc.slug, exc.http_status, exc.detail, instance=request.url.path,
                             field=exc.field, errors=exc.errors)
            return problem_response(doc, headers=exc.headers)
        else:
            if isinstance(exc, UnknownLocaleError):
                slug = "unknown-locale"
            elif isinstance(exc, (ModelLoadError, DependencyError)) or exc.http_status >= 500:
                slug = "model-error"
                logger.error("model error on %s: %s", request.url.path, exc)
            else:
                slug = "invalid-request"
            doc = ProblemDoc(slug, exc.http_status, str(exc), instance=request.url.path,
                             field=getattr(exc, "field", None))
        return problem_response(doc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return problem_response(ProblemDoc(
            "internal-error", 500, "an unexpected error occurred; the server log has the details",
            instance=request.url.path,
        ))


async def _one_value_per_key(request: Request) -> None:
    """A JSON body that gives a key twice in one object is refused (422, the key named): JSON
    readers keep the last value, so ``{"query": "red shoes", ..., "query": "tv"}`` answered for
    "tv" without a word (the JSONL reader refuses it too). A body that is not JSON is left to
    the route's own parsing (400 malformed-json)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    body = await request.body()  # (kept by Starlette: the route reads the same bytes)
    if b'"' not in body:
        return

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise RequestError(f"the body gives {key!r} twice in one object: give each field once",
                                   field=key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return


class _BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with a 413 problem, by their
    Content-Length up front, or while reading a body sent without one."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = None
                if size is not None and size > limit:
                    response = problem_response(ProblemDoc(
                        "payload-too-large", 413,
                        f"request body has {size} bytes; at most {limit} are accepted",
                        instance=scope.get("path"),
                    ))
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPExceptions from reading the body: the handler
                    # below turns it into the 413 problem
                    raise StarletteHTTPException(413, f"request body is larger than {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


# ------------------------------------------------------------------ the app
def _shown_dir(runtime: Runtime) -> str:
    """A served folder for the log, with the folder its symlink pointed to when it was loaded."""
    path, real = str(runtime.model_dir), runtime.real_dir
    return path if not real or real == os.path.abspath(path) else f"{path} (-> {real})"


class _Service:
    """The state behind the routes: the serving runtime (swapped by :meth:`reload`),
    settings, executor, micro-batcher."""

    def __init__(self, runtime: Runtime, settings: ServeSettings, load_options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.supervisor_pid = os.getppid()  # a multi-worker server's uvicorn supervisor (restart_workers)
        # how a reload loads a folder (load_runtime's options but the folder): the server's own
        self.load_options = dict(load_options) if load_options is not None else {"runtime": runtime.name}
        self.start_dir = runtime.model_dir
        self.executor: InferenceExecutor | None = None
        self.batcher: MicroBatcher | None = None
        self.ready = False
        self.reloads = 0
        self._reload_lock = asyncio.Lock()
        self._set_runtime(runtime)

    def _set_runtime(self, runtime: Runtime) -> None:
        """Serve ``runtime`` from now on: one assignment, so a request sees the old or the new."""
        runtime.loaded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.runtime = runtime

    async def start(self) -> None:
        self.executor = InferenceExecutor()
        await self.executor.run(self.runtime.warmup)
        if self.settings.micro_batch:
            self.batcher = MicroBatcher(
                self._predict_items, self.executor,
                max_batch=self.settings.micro_batch_max,
                max_wait_s=self.settings.micro_batch_wait_ms / 1000.0,
            )
            self.batcher.start()
        self.ready = True
        logger.info("q2pt model ready (%s runtime, %d product types, %d locales)",
                    self.runtime.name, len(self.runtime.classes), len(self.runtime.locales))

    async def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        if self.executor is not None:
            self.executor.shutdown()

    @staticmethod
    def _predict_items(items: Sequence[tuple[Runtime, str, Resolution]]) -> list[np.ndarray]:
        """Rows of a micro-batch; each item is scored by the runtime its request started with
        (a batch gathered across a reload holds both)."""
        out: list[np.ndarray | None] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (rt, _, _) in enumerate(items):
            groups.setdefault(id(rt), []).append(i)
        for rows in groups.values():
            rt = items[rows[0]][0]
            probs = rt.predict([items[i][1] for i in rows], [items[i][2] for i in rows])
            for i, row in zip(rows, probs):
                out[i] = row
        return out  # type: ignore[return-value]

    # --------------------------------------------------------------- reload
    def _load(self, folder: str) -> Runtime:
        runtime = load_runtime(folder, **self.load_options)
        runtime.warmup()
        return runtime

    async def _load_or_refuse(self, target: str) -> Runtime:
        """``target`` loaded and warmed up on another thread; any failure is a refusal
        (RequestError ``reload-refused``, logged) and the serving model stays."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self._load, target)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, Q2PTError) else f"{type(exc).__name__}: {exc}"
            logger.error("reload of %s refused, still serving %s: %s", target, self.runtime.model_dir, reason)
            raise RequestError(f"cannot serve {target}: {reason}; still serving {self.runtime.model_dir}",
                               field="model", slug="reload-refused") from None

    async def reload(self, folder: str | None = None) -> dict[str, Any]:
        """Load ``folder`` (default: the folder the server was started with), warm it up and
        serve it; one reload at a time. A folder that cannot be served raises RequestError
        ``reload-refused`` and the serving model stays."""
        async with self._reload_lock:
            # a relative folder is the server's working directory's, and shown as such from now on
            target = os.path.abspath(folder) if folder else self.start_dir
            if not target:
                raise RequestError("no model folder to reload: give one ({\"model\": PATH})", field="model",
                                   slug="reload-refused")
            old = self.runtime
            started = time.perf_counter()
            new = await self._load_or_refuse(str(target))
            self._set_runtime(new)
            self.reloads += 1
            seconds = time.perf_counter() - started
            logger.info("reloaded: now serving %s (fingerprint %s, %.1f s to load), was %s (fingerprint %s)",
                        _shown_dir(new), (new.fingerprint or "?")[:12], seconds, _shown_dir(old),
                        (old.fingerprint or "?")[:12])
            return {"status": "reloaded", "model": _identity(new), "previous": _identity(old),
                    "seconds": round(seconds, 3)}

    async def restart_workers(self, folder: str | None = None) -> dict[str, Any]:
        """A multi-worker server's reload: load and warm up the start folder here (a folder
        that cannot be served is refused and nothing restarts), then SIGHUP the supervisor,
        which restarts the workers one at a time, each re-reading the folder. Another folder
        than the start one is refused (``reload-one-folder``): it would reach this worker only."""
        start = str(self.start_dir or "")
        if folder and os.path.abspath(folder) != os.path.abspath(start):
            raise RequestError(f"this server runs {self.settings.workers} workers serving {start}; a reload to "
                               f"{folder} would reach one of them only: switch {start} (e.g. a symlink) and "
                               "reload without a model, or send SIGHUP to the server",
                               field="model", slug="reload-one-folder")
        async with self._reload_lock:
            started = time.perf_counter()
            checked = await self._load_or_refuse(start)  # refused: no worker restarts
            if os.getppid() != self.supervisor_pid:  # the supervisor is gone: nobody to restart the workers
                raise RequestError(f"the server's supervisor (pid {self.supervisor_pid}) is gone: nothing restarts",
                                   field="model", slug="reload-refused")
            os.kill(self.supervisor_pid, signal.SIGHUP)
            logger.info("reload: %s checked (fingerprint %s); the supervisor restarts the %d workers",
                        start, (checked.fingerprint or "?")[:12], self.settings.workers)
            return {"status": "restarting", "workers": self.settings.workers, "model": _identity(checked),
                    "previous": _identity(self.runtime), "seconds": round(time.perf_counter() - started, 3)}

    async def reload_logged(self) -> None:
        """SIGHUP: reload the start folder; a refusal is logged (nobody to answer)."""
        serving = self.runtime.model_dir
        if self.start_dir and os.path.abspath(str(serving)) != os.path.abspath(str(self.start_dir)):
            logger.warning("SIGHUP reloads the start folder %s, which replaces %s (served since POST /v1/admin/reload "
                           "named it)", self.start_dir, serving)
        try:
            await self.reload(None)
        except RequestError:
            pass  # logged by reload

    def require_ready(self) -> None:
        if not self.ready or self.executor is None:
            raise RequestError("the model is not ready yet; retry shortly", slug="not-ready")

    # --------------------------------------------------------------- validation
    def check_query(self, query: str, field: str, problems: list[FieldProblem]) -> str:
        """The one rule of every way in (:func:`q2pt.data.schema.query_problem`); the query trimmed."""
        issue = query_problem(query, self.settings.max_query_chars)
        if issue is not None:
            problems.append(FieldProblem(field, issue[1]))
        return query.strip()

    @staticmethod
    def resolve(rt: Runtime, locale: str, field: str) -> Resolution:
        try:
            return rt.resolve(locale)
        except UnknownLocaleError as exc:
            raise RequestError(str(exc), field=field, slug="unknown-locale") from None

    @staticmethod
    def check_flat_model(rt: Runtime, req: Any) -> None:
        """A depth limit and no back-off are for a hierarchical model: a flat one refuses them
        rather than ignore them."""
        max_depth, backoff = getattr(req, "max_depth", None), getattr(req, "backoff", True)
        refused = flat_model_refusal(rt.core.tree is not None, max_depth, backoff, getattr(req, "flat", False))
        if refused:
            raise RequestError(refused, field="max_depth" if max_depth is not None else "backoff")

    def top_k(self, rt: Runtime, top_k: int | None) -> int:
        return min(top_k if top_k is not None else self.settings.default_top_k, len(rt.classes))

    # --------------------------------------------------------------- responses
    @staticmethod
    def result(rt: Runtime, query: str, res: Resolution, row: np.ndarray, top_k: int,
               threshold: float | None, req: Any = None) -> dict[str, Any]:
        if threshold is not None:
            t, source = float(threshold), "request"
        else:
            t, source = rt.threshold_for(res.locale_used)
        cut = rt.core.cuts([res], threshold)[0]  # per type: the locale's per-type thresholds where it has them
        sure = rt.core.confident(row[None, :], cut[None, :])[0]  # a tree: a confident type's ancestors too
        ranked = select_types(row[None, :], rt.classes, -math.inf, top_k)[0]
        column = rt.core.column_of
        types = [{"product_type": name, "score": score, "predicted": bool(sure[column[name]]),
                  "threshold": float(cut[column[name]])} for name, score in ranked]
        # the best top_k confident types (not the confident ones among the top_k scores: a type over
        # its own higher threshold may rank above them), as q2pt predict, streaming and Ray answer
        predicted = [name for name, _ in rt.core.pick(row[None, :], sure[None, :], top_k)[0]]
        paths = None
        if rt.core.tree is not None and not getattr(req, "flat", False):
            paths = rt.core.select_paths(row[None, :], [res], threshold=threshold, top_k=top_k,
                                         max_depth=getattr(req, "max_depth", None),
                                         backoff=getattr(req, "backoff", True))[0]
            predicted = [p["product_type"] for p in paths]
        return {
            "query": query,
            "locale": res.locale,
            "locale_used": res.locale_used,
            "threshold": t,
            "threshold_source": source,
            "product_types": types,
            "predicted": predicted,
            "paths": paths,
            "warnings": [res.warning] if res.warning else [],
        }

    def model_info(self) -> dict[str, Any]:
        rt = self.runtime
        m = rt.manifest
        metrics = m.get("metrics") or {}
        glob = metrics.get("global") if isinstance(metrics, dict) else None
        summary = {}
        if isinstance(glob, dict):
            summary = {"validation_global": {k: glob.get(k) for k in ("r_at_p", "threshold", "pr_auc", "n_queries") if k in glob}}
        precision = (((m.get("config") or {}).get("train") or {}).get("precision_target"))
        info = ModelInfo(
            variant=rt.variant,
            unified=rt.unified,
            encoder=rt.encoder_spec,
            runtime=rt.name,
            runtime_detail=rt.describe(),
            locales=rt.locales,
            n_product_types=len(rt.classes),
            product_types=rt.classes,
            thresholds=rt.thresholds,
            level_thresholds=m.get("level_thresholds") if rt.core.tree is not None else None,
            tree={"depth": rt.core.tree.depth, "nodes": len(rt.classes)} if rt.core.tree is not None else None,
            precision_target=precision,
            fallback_locale=rt.fallback_locale,
            data=dict(m.get("data") or {}),
            metrics=summary,
            versions={"format_version": m.get("format_version"), "trained_with_q2pt": m.get("q2pt_version"),
                      "created": m.get("created"), "server_q2pt": __version__},
            limits={"max_batch": self.settings.max_batch, "max_query_chars": self.settings.max_query_chars,
                    "max_body_bytes": self.settings.max_body_bytes, "default_top_k": self.settings.default_top_k},
            model_dir=rt.model_dir,
            fingerprint=rt.fingerprint,
            loaded_at=rt.loaded_at,
            reloads=self.reloads,
            model_card="/v1/model/card",
        )
        return info.model_dump(mode="json")


def _identity(rt: Runtime) -> dict[str, Any]:
    """Which model a runtime serves."""
    return {"path": rt.model_dir, "fingerprint": rt.fingerprint, "loaded_at": rt.loaded_at,
            "variant": rt.variant, "encoder": rt.encoder_spec}


_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": PROBLEM_TYPES[slug].title + " (application/problem+json)",
             "content": {PROBLEM_CONTENT_TYPE: {"schema": {"type": "object"}}}}
    for status, slug in ((400, "malformed-json"), (413, "payload-too-large"), (415, "unsupported-media-type"),
                         (422, "invalid-request"), (503, "not-ready"))
}


def _install_docs(app: FastAPI) -> None:
    """OpenAPI docs at ``/docs`` with Swagger UI (script, style and favicon) served from the
    ``swagger-ui-bundle`` package: nothing is loaded from a CDN, so the page works offline and
    contacts no third party. Without that package there is no ``/docs`` (the OpenAPI document
    stays at ``/openapi.json``); ReDoc, which needs a CDN, is off."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        import swagger_ui_bundle
    except ImportError:  # pragma: no cover - depends on the environment
        logger.warning("swagger-ui-bundle is not installed: no /docs page (the API is described at /openapi.json)")
        return
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="q2pt API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js", swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )


#: the demo page's Content-Security-Policy: its own script, style and API only
DEMO_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class _Headers:
    """ASGI middleware: ``X-Content-Type-Options: nosniff`` on every response, and HEAD
    answered wherever GET is (the GET response's status and headers, no body)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-content-type-options"]
                message = {**message, "headers": [*headers, (b"x-content-type-options", b"nosniff")]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b"", "more_body": message.get("more_body", False)}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(runtime: Runtime, settings: ServeSettings | None = None, *,
               load_options: dict[str, Any] | None = None) -> FastAPI:
    """The FastAPI app serving ``runtime``. The model is warmed up and the micro-batcher
    started in the app's lifespan (``/readyz`` answers 503 until then). ``load_options``:
    how a reload loads a model folder (:func:`~q2pt.serving.runtime.load_runtime`'s keyword
    options; default: the same runtime kind)."""
    settings = settings or ServeSettings()
    service = _Service(runtime, settings, load_options)
    admin_token = os.environ.get(settings.admin_token_env) if settings.admin_token_env else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        loop = asyncio.get_running_loop()
        if settings.reload_on_sighup:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(service.reload_logged()))
            logger.info("SIGHUP reloads %s", service.start_dir)
        if admin_token:
            logger.info("admin routes on (POST /v1/admin/reload; token from $%s)", settings.admin_token_env)
        try:
            yield
        finally:
            if settings.reload_on_sighup:
                loop.remove_signal_handler(signal.SIGHUP)
            await service.stop()

    app = FastAPI(
        title="q2pt",
        version=__version__,
        description="Predict the product types a shopper means by a search query, in every locale. "
        "Errors are RFC 9457 problem documents (application/problem+json).",
        lifespan=lifespan,
        docs_url=None,  # served below from local assets: the docs page must work offline
        redoc_url=None,  # ReDoc loads its script from a CDN
        dependencies=[Depends(_one_value_per_key)],
    )
    _install_docs(app)
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(_Headers)
    app.state.service = service
    _install_exception_handlers(app)

    @app.post("/v1/predict", response_model=Prediction, responses=_PROBLEM_RESPONSES, tags=["predict"])
    async def predict(req: PredictRequest) -> JSONResponse:
        """Product types of one query, best first, with scores and ``predicted`` flags
        (score >= the locale's calibrated threshold, or the request's ``threshold``)."""
        service.require_ready()
        rt = service.runtime  # this request's model, to its end (a reload swaps service.runtime)
        problems: list[FieldProblem] = []
        query = service.check_query(req.query, "query", problems)
        if problems:
            raise RequestError(describe(problems), field=problems[0].field, errors=problems)
        service.check_flat_model(rt, req)
        res = service.resolve(rt, req.locale, "locale")
        if service.batcher is not None:
            row = await service.batcher.submit((rt, query, res))
        else:
            assert service.executor is not None
            row = (await service.executor.run(rt.predict, [query], [res]))[0]
        return JSONResponse(service.result(rt, req.query, res, row, service.top_k(rt, req.top_k), req.threshold, req))

    @app.post("/v1/predict/batch", response_model=BatchResponse, responses=_PROBLEM_RESPONSES, tags=["predict"])
    async def predict_batch(req: BatchRequest) -> JSONResponse:
        """Product types of up to ``max_batch`` queries (see ``GET /v1/model`` for the limit)."""
        service.require_ready()
        rt = service.runtime
        if len(req.queries) > settings.max_batch:
            raise RequestError(
                f"batch has {len(req.queries)} queries; at most {settings.max_batch} are accepted per request",
                field="queries",
            )
        problems: list[FieldProblem] = []
        queries = [service.check_query(item.query, f"queries[{i}].query", problems) for i, item in enumerate(req.queries)]
        if problems:
            raise RequestError(describe(problems), field=problems[0].field, errors=problems)
        service.check_flat_model(rt, req)
        resolutions = [service.resolve(rt, item.locale, f"queries[{i}].locale") for i, item in enumerate(req.queries)]
        assert service.executor is not None
        probs = await service.executor.run(rt.predict, queries, resolutions)
        k = service.top_k(rt, req.top_k)
        results = [service.result(rt, item.query, res, probs[i], k, req.threshold, req)
                   for i, (item, res) in enumerate(zip(req.queries, resolutions))]
        warnings = sorted({w for r in results for w in r["warnings"]})
        return JSONResponse({"results": results, "warnings": warnings})

    @app.post("/v1/explain", response_model=Explanation, responses=_PROBLEM_RESPONSES, tags=["predict"])
    async def explain_route(req: ExplainRequest) -> JSONResponse:
        """Why the query got a product type (default: its best-scored one): each word's and
        the locale token's contribution to the score, by occlusion (score minus the score
        without it; :mod:`q2pt.explain`)."""
        from q2pt.explain import explain, unknown_type_message
        from q2pt.model_folder import parent_label_map

        service.require_ready()
        rt = service.runtime
        problems: list[FieldProblem] = []
        query = service.check_query(req.query, "query", problems)
        if problems:
            raise RequestError(describe(problems), field=problems[0].field, errors=problems)
        service.resolve(rt, req.locale, "locale")  # an unknown locale: 422 naming the field
        if req.product_type is not None and req.product_type not in rt.classes:
            raise RequestError(unknown_type_message(req.product_type, rt.core, parent_label_map(rt.manifest)),
                               field="product_type")
        assert service.executor is not None
        try:
            result = await service.executor.run(explain, rt.core, query, req.locale, req.product_type)
        except ConfigError as exc:  # e.g. a type a non-unified locale's network does not score
            raise RequestError(str(exc), field="product_type") from None
        return JSONResponse(result)

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"])
    async def model_info() -> JSONResponse:
        """Summary of the served model: variant, encoder, locales, product types, thresholds,
        data source (simulated or not), validation metrics, runtime, limits."""
        return JSONResponse(service.model_info())

    @app.get("/v1/model/card", response_class=PlainTextResponse, tags=["model"])
    async def model_card() -> PlainTextResponse:
        """The served model's card (``MODEL_CARD.md``: data, metrics per locale with CIs,
        thresholds, parent model, intended use, known limits), as markdown."""
        rt = service.runtime  # its card was read with its model: a folder switched since is not served yet
        text = rt.card or render_model_card(rt.manifest)
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")

    if admin_token:
        @app.post("/v1/admin/reload", response_model=ReloadResult, tags=["admin"],
                  responses={401: {"description": "no bearer token"}, 403: {"description": "wrong token"},
                             202: {"description": "several workers: the folder was checked and the workers "
                                                  "restart one at a time"},
                             409: {"description": "several workers: a reload to another folder"},
                             422: {"description": "the new model was refused; the old one keeps serving"}},
                  openapi_extra={"requestBody": {"required": False, "content": {
                      "application/json": {"schema": ReloadRequest.model_json_schema()}}}})
        async def admin_reload(request: Request) -> JSONResponse:
            """Serve another model folder (default: re-read the one the server started with),
            without dropping a request. Needs ``Authorization: Bearer <admin token>``, checked
            before the body is read (a caller without it learns nothing of the route)."""
            _check_admin(request, admin_token)
            req = await _reload_request(request)
            folder = req.model if req is not None else None
            if service.settings.workers > 1:  # 202: the workers restart after this answer
                return JSONResponse(await service.restart_workers(folder), status_code=202)
            return JSONResponse(await service.reload(folder))

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the server process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses={503: _PROBLEM_RESPONSES[503]}, tags=["health"])
    async def readyz() -> dict[str, str]:
        """Readiness: the model is loaded and warmed up (503 problem before)."""
        service.require_ready()
        return {"status": "ready"}

    @app.get("/problems/{slug}", tags=["errors"])
    async def problem_type(slug: str) -> dict[str, Any]:
        """What a problem ``type`` means."""
        p = PROBLEM_TYPES.get(slug)
        if p is None:
            raise StarletteHTTPException(404, f"no problem type {slug!r}")
        return asdict(p) | {"type": p.uri}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": DEMO_PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _reload_request(request: Request) -> ReloadRequest | None:
    """The admin reload's body, read once its caller is known: none (or empty) is None; a
    body that is not a JSON ReloadRequest is the same problem+json as any route's."""
    body = await request.body()
    if not body.strip():
        return None
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):  # the handler answers 415 (or 422 without one)
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "input": None,
                                       "msg": "send the body as JSON with 'Content-Type: application/json'"}])
    try:
        data = json.loads(body)  # UTF-8, -16 or -32, as every route reads a body
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if isinstance(exc, json.JSONDecodeError):
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "input": {},
                                           "msg": "JSON decode error", "ctx": {"error": exc.msg}}]) from None
        raise StarletteHTTPException(400, "There was an error parsing the body") from None
    if data is None:  # null: no folder given, as no body
        return None
    try:
        return ReloadRequest.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _check_admin(request: Request, token: str) -> None:
    """401 without a bearer token, 403 with a wrong one (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise RequestError("this admin route needs 'Authorization: Bearer <token>'", slug="unauthorized",
                           headers={"WWW-Authenticate": 'Bearer realm="q2pt-admin"'})
    if not hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8")):
        raise RequestError("wrong admin token", slug="forbidden")


# ------------------------------------------------------------------ multi-worker entry
def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` (multi-worker serving): reads the options that
    ``q2pt serve`` put in ``$Q2PT_SERVE_OPTIONS`` (JSON: ``runtime`` for
    :func:`~q2pt.serving.runtime.load_runtime`, ``settings`` for :class:`ServeSettings`)."""
    raw = os.environ.get(ENV_OPTIONS)
    if not raw:
        raise ConfigError(f"${ENV_OPTIONS} is not set (app_from_env is started by 'q2pt serve --workers N')")
    options = json.loads(raw)
    from q2pt.logs import setup_logging

    setup_logging(int(options.get("log_level", logging.INFO)), timestamps=True)  # a worker's lines, as one process's
    runtime = load_runtime(**options["runtime"])
    return create_app(runtime, ServeSettings(**options.get("settings", {})), load_options=options.get("reload"))
