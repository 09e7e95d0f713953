"""The q2pt HTTP API (FastAPI) and its demo page.

Routes (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

``POST /v1/predict``        one query -> product types with scores and ``predicted`` flags
``POST /v1/predict/batch``  up to ``max_batch`` queries
``GET  /v1/model``          summary of the served model's manifest
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
"""

from __future__ import annotations

import json
import logging
import math
import os
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import numpy as np

from q2pt import __version__
from q2pt.data.schema import has_bad_text
from q2pt.errors import ConfigError, DependencyError, ModelLoadError, Q2PTError, UnknownLocaleError, require
from q2pt.inference import Resolution, select_types
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
from q2pt.serving.runtime import Runtime
from q2pt.serving.schemas import BatchRequest, BatchResponse, Health, ModelInfo, Prediction, PredictRequest
from q2pt.serving.settings import ENV_OPTIONS, ServeSettings

require("fastapi", "serve")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
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
class _Service:
    """The state behind the routes: runtime, settings, executor, micro-batcher."""

    def __init__(self, runtime: Runtime, settings: ServeSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.executor: InferenceExecutor | None = None
        self.batcher: MicroBatcher | None = None
        self.ready = False
        self.n_classes = len(runtime.classes)
        self.classes = np.asarray(runtime.classes, dtype=object)

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
                    self.runtime.name, self.n_classes, len(self.runtime.locales))

    async def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        if self.executor is not None:
            self.executor.shutdown()

    def _predict_items(self, items: Sequence[tuple[str, Resolution]]) -> list[np.ndarray]:
        return list(self.runtime.predict([q for q, _ in items], [r for _, r in items]))

    def require_ready(self) -> None:
        if not self.ready or self.executor is None:
            raise RequestError("the model is not ready yet; retry shortly", slug="not-ready")

    # --------------------------------------------------------------- validation
    def check_query(self, query: str, field: str, problems: list[FieldProblem]) -> str:
        text = query.strip()
        limit = self.settings.max_query_chars
        if not text:
            problems.append(FieldProblem(field, "query must not be empty"))
        elif len(text) > limit:
            problems.append(FieldProblem(field, f"query has {len(text)} characters; at most {limit} are accepted"))
        elif has_bad_text(text):
            problems.append(FieldProblem(field, "query is not valid Unicode text (lone surrogate code points)"))
        return text

    def resolve(self, locale: str, field: str) -> Resolution:
        try:
            return self.runtime.resolve(locale)
        except UnknownLocaleError as exc:
            raise RequestError(str(exc), field=field, slug="unknown-locale") from None

    def top_k(self, top_k: int | None) -> int:
        return min(top_k if top_k is not None else self.settings.default_top_k, self.n_classes)

    # --------------------------------------------------------------- responses
    def result(self, query: str, res: Resolution, row: np.ndarray, top_k: int, threshold: float | None) -> dict[str, Any]:
        if threshold is not None:
            t, source = float(threshold), "request"
        else:
            t, source = self.runtime.threshold_for(res.locale_used)
        ranked = select_types(row[None, :], self.runtime.classes, -math.inf, top_k)[0]
        types = [{"product_type": name, "score": score, "predicted": score >= t} for name, score in ranked]
        predicted = [name for name, score in ranked if score >= t]
        return {
            "query": query,
            "locale": res.locale,
            "locale_used": res.locale_used,
            "threshold": t,
            "threshold_source": source,
            "product_types": types,
            "predicted": predicted,
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
            precision_target=precision,
            fallback_locale=rt.fallback_locale,
            data=dict(m.get("data") or {}),
            metrics=summary,
            versions={"format_version": m.get("format_version"), "trained_with_q2pt": m.get("q2pt_version"),
                      "created": m.get("created"), "server_q2pt": __version__},
            limits={"max_batch": self.settings.max_batch, "max_query_chars": self.settings.max_query_chars,
                    "max_body_bytes": self.settings.max_body_bytes, "default_top_k": self.settings.default_top_k},
            model_dir=rt.model_dir,
        )
        return info.model_dump(mode="json")


_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": PROBLEM_TYPES[slug].title + " (application/problem+json)",
             "content": {PROBLEM_CONTENT_TYPE: {"schema": {"type": "object"}}}}
    for status, slug in ((400, "malformed-json"), (413, "payload-too-large"), (422, "invalid-request"), (503, "not-ready"))
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


def create_app(runtime: Runtime, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``runtime``. The model is warmed up and the micro-batcher
    started in the app's lifespan (``/readyz`` answers 503 until then)."""
    settings = settings or ServeSettings()
    service = _Service(runtime, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="q2pt",
        version=__version__,
        description="Predict the product types a shopper means by a search query, in every locale. "
        "Errors are RFC 9457 problem documents (application/problem+json).",
        lifespan=lifespan,
        docs_url=None,  # served below from local assets: the docs page must work offline
        redoc_url=None,  # ReDoc loads its script from a CDN
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
        problems: list[FieldProblem] = []
        query = service.check_query(req.query, "query", problems)
        if problems:
            raise RequestError(describe(problems), field=problems[0].field, errors=problems)
        res = service.resolve(req.locale, "locale")
        if service.batcher is not None:
            row = await service.batcher.submit((query, res))
        else:
            assert service.executor is not None
            row = (await service.executor.run(runtime.predict, [query], [res]))[0]
        return JSONResponse(service.result(req.query, res, row, service.top_k(req.top_k), req.threshold))

    @app.post("/v1/predict/batch", response_model=BatchResponse, responses=_PROBLEM_RESPONSES, tags=["predict"])
    async def predict_batch(req: BatchRequest) -> JSONResponse:
        """Product types of up to ``max_batch`` queries (see ``GET /v1/model`` for the limit)."""
        service.require_ready()
        if len(req.queries) > settings.max_batch:
            raise RequestError(
                f"batch has {len(req.queries)} queries; at most {settings.max_batch} are accepted per request",
                field="queries",
            )
        problems: list[FieldProblem] = []
        queries = [service.check_query(item.query, f"queries[{i}].query", problems) for i, item in enumerate(req.queries)]
        if problems:
            raise RequestError(describe(problems), field=problems[0].field, errors=problems)
        resolutions = [service.resolve(item.locale, f"queries[{i}].locale") for i, item in enumerate(req.queries)]
        assert service.executor is not None
        probs = await service.executor.run(runtime.predict, queries, resolutions)
        k = service.top_k(req.top_k)
        results = [service.result(item.query, res, probs[i], k, req.threshold)
                   for i, (item, res) in enumerate(zip(req.queries, resolutions))]
        warnings = sorted({w for r in results for w in r["warnings"]})
        return JSONResponse({"results": results, "warnings": warnings})

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"])
    async def model_info() -> JSONResponse:
        """Summary of the served model: variant, encoder, locales, product types, thresholds,
        data source (simulated or not), validation metrics, runtime, limits."""
        return JSONResponse(service.model_info())

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


# ------------------------------------------------------------------ multi-worker entry
def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` (multi-worker serving): reads the options that
    ``q2pt serve`` put in ``$Q2PT_SERVE_OPTIONS`` (JSON: ``runtime`` for
    :func:`~q2pt.serving.runtime.load_runtime`, ``settings`` for :class:`ServeSettings`)."""
    from q2pt.serving.runtime import load_runtime

    raw = os.environ.get(ENV_OPTIONS)
    if not raw:
        raise ConfigError(f"${ENV_OPTIONS} is not set (app_from_env is started by 'q2pt serve --workers N')")
    options = json.loads(raw)
    runtime = load_runtime(**options["runtime"])
    return create_app(runtime, ServeSettings(**options.get("settings", {})))
