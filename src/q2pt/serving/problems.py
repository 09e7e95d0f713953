"""HTTP problem details (RFC 9457, ``application/problem+json``) for the q2pt server.

Every error response of the server is a problem document::

    {"type": "/problems/invalid-request", "title": "Invalid request", "status": 422,
     "detail": "query must not be empty", "instance": "/v1/predict",
     "field": "query", "errors": [{"field": "query", "message": "..."}]}

``type`` is a URI reference relative to the server (``GET /problems/<slug>`` describes
it); ``field`` names the first offending request field (dotted path, list indices in
brackets: ``queries[3].locale``) or is ``null`` when the problem is not about one field;
``errors`` lists every offending field.

This module has no FastAPI import: :mod:`q2pt.serving.app` turns exceptions into these
documents in its exception handlers (the one place where q2pt errors become statuses).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Sequence

from q2pt.errors import Q2PTError

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    """A documented problem type: its slug (``/problems/<slug>``), title and description."""

    slug: str
    title: str
    status: int
    description: str

    @property
    def uri(self) -> str:
        return f"/problems/{self.slug}"


PROBLEM_TYPES: dict[str, ProblemType] = {
    p.slug: p
    for p in (
        ProblemType("malformed-json", "Malformed JSON", 400,
                    "The request body is not valid JSON."),
        ProblemType("invalid-request", "Invalid request", 422,
                    "A request field is missing, has the wrong type, or is out of range "
                    "(empty or oversized query, bad top_k or threshold, too many queries "
                    "in a batch...). 'field' names it."),
        ProblemType("unknown-locale", "Unknown locale", 422,
                    "The model has no network for this locale (non-unified model) and the "
                    "server was started without --fallback-locale."),
        ProblemType("payload-too-large", "Payload too large", 413,
                    "The request body is larger than the server accepts."),
        ProblemType("unsupported-media-type", "Unsupported media type", 415,
                    "A request body is JSON: send it with 'Content-Type: application/json'."),
        ProblemType("not-found", "Not found", 404, "No such resource."),
        ProblemType("method-not-allowed", "Method not allowed", 405,
                    "The resource does not support this HTTP method."),
        ProblemType("not-ready", "Not ready", 503,
                    "The model is still loading or warming up; retry shortly."),
        ProblemType("busy", "Server busy", 503,
                    "The server has as many open connections as it accepts (--max-connections); "
                    "retry after the Retry-After seconds."),
        ProblemType("unauthorized", "Unauthorized", 401,
                    "An admin route needs 'Authorization: Bearer <token>' (the token the server was "
                    "started with, from its admin token environment variable)."),
        ProblemType("forbidden", "Forbidden", 403, "The admin bearer token is wrong."),
        ProblemType("reload-refused", "Reload refused", 422,
                    "The new model folder could not be loaded (missing, corrupt, or not servable with "
                    "the server's options); the previous model keeps serving. 'detail' says why."),
        ProblemType("reload-one-folder", "Reload to another folder refused", 409,
                    "This server runs several worker processes, which all serve the folder it started "
                    "with: a reload to another folder would reach one of them only. Switch that folder "
                    "(e.g. a symlink) and POST /v1/admin/reload without a model, or send SIGHUP to the server."),
        ProblemType("http-error", "HTTP error", 400, "A generic HTTP error."),
        ProblemType("model-error", "Model error", 500,
                    "The model could not serve this request (see the server log)."),
        ProblemType("internal-error", "Internal server error", 500,
                    "An unexpected error; the server log has the details."),
    )
}


@dataclass(frozen=True)
class FieldProblem:
    """One offending request field."""

    field: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message}


class RequestError(Q2PTError):
    """A request the server refuses (a 4xx): carries the problem type and the fields.

    Raised by the routes' own checks (the ones a static schema cannot express: limits set
    at server start, locales of the loaded model); turned into a problem document by the
    app's exception handler."""

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        slug: str = "invalid-request",
        status: int | None = None,
        errors: Sequence[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.slug = slug
        self.headers = dict(headers) if headers else None
        self.http_status = status if status is not None else PROBLEM_TYPES[slug].status
        self.errors = list(errors) if errors else ([FieldProblem(field, detail)] if field else [])


@dataclass
class ProblemDoc:
    """A problem document being built (see the module docstring for the JSON form)."""

    slug: str
    status: int
    detail: str
    instance: str | None = None
    field: str | None = None
    errors: list[FieldProblem] = dc_field(default_factory=list)
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        ptype = PROBLEM_TYPES.get(self.slug, PROBLEM_TYPES["http-error"])
        body: dict[str, Any] = {
            "type": ptype.uri,
            "title": self.title or ptype.title,
            "status": self.status,
            "detail": self.detail,
            "field": self.field,
        }
        if self.instance is not None:
            body["instance"] = self.instance
        if self.errors:
            body["errors"] = [e.to_dict() for e in self.errors]
        return body


def field_path(loc: Sequence[Any]) -> str | None:
    """Pydantic error location -> dotted field path: ``("body", "queries", 3, "query")`` ->
    ``"queries[3].query"``; ``("body",)`` -> ``None`` (the body as a whole)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or None


def validation_problems(errors: Sequence[dict[str, Any]]) -> tuple[str, list[FieldProblem]]:
    """Pydantic/FastAPI validation errors -> (problem slug, field problems).

    A body that is not valid JSON is ``malformed-json``; everything else ``invalid-request``.
    """
    slug = "invalid-request"
    problems: list[FieldProblem] = []
    for err in errors:
        etype = str(err.get("type", ""))
        if etype == "json_invalid":
            slug = "malformed-json"
            ctx = err.get("ctx") or {}
            reason = ctx.get("error") if isinstance(ctx, dict) else None
            problems.append(FieldProblem(None, f"invalid JSON: {reason}" if reason else "invalid JSON"))
            continue
        path = field_path(err.get("loc", ()))
        msg = str(err.get("msg", "invalid value"))
        if etype == "missing" and path is None:
            msg = "a JSON request body is required"
        elif etype == "model_attributes_type" and path is None:
            msg = "the request body must be a JSON object sent with Content-Type: application/json"
        elif etype == "extra_forbidden":
            msg = "unknown field"
        elif etype == "value_error" and msg.startswith("Value error, "):  # a validator's own message
            msg = msg[len("Value error, "):]
        problems.append(FieldProblem(path, msg))
    return slug, problems


def describe(problems: Sequence[FieldProblem]) -> str:
    """A one-line ``detail`` summarising field problems."""
    if not problems:
        return "invalid request"
    first = problems[0]
    text = f"{first.field}: {first.message}" if first.field else first.message
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return text
