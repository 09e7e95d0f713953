"""Request and response bodies of the q2pt HTTP API (pydantic models, shown at ``/docs``).

Static constraints live here (types, ranges, unknown fields refused); the limits chosen at
server start (longest query, largest batch) and the model's locales are checked by the
routes (:mod:`q2pt.serving.app`), which answer with the same problem documents.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: requests take JSON's own types: "0.5" is not a threshold, "5" not a top_k, "false" not a bool
#: (a client sending strings has a bug that a lax parse would hide); no unknown fields
_STRICT = ConfigDict(extra="forbid", strict=True)


def _no_depth_when_flat(flat: bool, info: ValidationInfo) -> bool:
    """``max_depth`` and ``backoff: false`` shape a hierarchical answer: with ``flat`` they would
    be ignored, so they are refused (as ``q2pt predict`` refuses them) rather than accepted
    silently; the problem names the field ``flat`` (checked after them: they are declared first)."""
    if flat and info.data.get("max_depth") is not None:
        raise ValueError("max_depth applies to hierarchical predictions (not with flat)")
    if flat and info.data.get("backoff") is False:
        raise ValueError("backoff false applies to hierarchical predictions (not with flat)")
    return flat


class PredictRequest(BaseModel):
    """One query to classify."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"query": "red running shoes", "locale": "us", "top_k": 5}]},
    )

    query: str = Field(..., description="The search query as typed (at most max_query_chars characters; not empty).")
    locale: str = Field(..., min_length=1, max_length=64,
                        description="Store locale id as the model's training data spells it, e.g. 'de'.")
    top_k: int | None = Field(None, ge=1, le=10_000, description=(
        "Return the k highest-scoring product types (default: the server's default_top_k; capped at the number of types); "
        "'predicted' (and a hierarchical model's 'paths') holds at most k types too."))
    threshold: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                                    description="Override the calibrated decision threshold for the 'predicted' flag.")
    max_depth: int | None = Field(None, ge=1, le=100, description=(
        "Hierarchical models: predict no type deeper than this level (a flat model answers 422)."))
    backoff: bool = Field(True, description=(
        "Hierarchical models: answer a confident parent when none of its children is confident (default); "
        "false: only bottom types (no child among the model's types, or max_depth; a flat model answers 422)."))
    flat: bool = Field(False, description=(
        "Hierarchical models: 'predicted' lists every type over its threshold, ancestors included."))

    _tree_options = field_validator("flat")(_no_depth_when_flat)


class BatchItem(BaseModel):
    """One query of a batch."""

    model_config = _STRICT

    query: str
    locale: str = Field(..., min_length=1, max_length=64)


class BatchRequest(BaseModel):
    """Several queries; ``top_k`` and ``threshold`` apply to all of them."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"queries": [{"query": "red running shoes", "locale": "us"},
                                      {"query": "rote laufschuhe", "locale": "de"}], "top_k": 3}]
        },
    )

    queries: list[BatchItem] = Field(..., min_length=1, description="1 to max_batch queries.")
    top_k: int | None = Field(None, ge=1, le=10_000)
    threshold: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    max_depth: int | None = Field(None, ge=1, le=100)
    backoff: bool = True
    flat: bool = False

    _tree_options = field_validator("flat")(_no_depth_when_flat)


class ProductTypeScore(BaseModel):
    product_type: str
    score: float = Field(..., description="Model probability that the query means this type.")
    predicted: bool = Field(..., description="score >= threshold (a hierarchical model's type: or one of its "
                            "descendants' is; a confident type's ancestors are answers too). The flat rule: "
                            "max_depth and backoff shape 'predicted' and 'paths', not these flags.")
    threshold: float = Field(..., description="This type's threshold: the query's, or its locale's own "
                             "threshold for this type (a model trained with train.type_thresholds).")


class PathAncestor(BaseModel):
    product_type: str
    score: float


class PathPrediction(BaseModel):
    """A hierarchical model's answer: a deepest confident type, its level and its ancestors."""

    product_type: str
    score: float
    level: int
    ancestors: list[PathAncestor] = Field(..., description="From the top level down.")


class Prediction(BaseModel):
    """The product types of one query, best first."""

    query: str
    locale: str = Field(..., description="The locale as requested.")
    locale_used: str | None = Field(
        ..., description="The locale the model used (its network/locale token and threshold); "
        "null: predicted locale-agnostically (a locale the unified model never saw).")
    threshold: float = Field(..., description="The locale's threshold for the 'predicted' flags; types "
                             "with a threshold of their own (per type, or a hierarchical model's per level) "
                             "give it in product_types.")
    threshold_source: Literal["request", "locale", "global"]
    product_types: list[ProductTypeScore]
    predicted: list[str] = Field(..., description=(
        "The predicted product types: the best top_k types at or above their thresholds (product_types "
        "lists the best-scored ones, confident or not); for a hierarchical model the deepest confident "
        "types (see paths), or with flat every confident type, ancestors included."))
    paths: list[PathPrediction] | None = Field(None, description=(
        "Hierarchical models: each predicted type with its level and ancestors, best first (null: a flat model)."))
    warnings: list[str] = Field(default_factory=list)


class BatchResponse(BaseModel):
    results: list[Prediction]
    warnings: list[str] = Field(default_factory=list, description="Distinct warnings of all results.")


class ModelInfo(BaseModel):
    """Summary of the served model's manifest."""

    variant: str
    unified: bool
    encoder: str
    runtime: str
    runtime_detail: dict[str, Any] = Field(default_factory=dict)
    locales: list[str]
    n_product_types: int
    product_types: list[str]
    thresholds: dict[str, float]
    level_thresholds: dict[str, dict[str, float | None]] | None = None
    """Hierarchical models: the thresholds per locale (and "global") and level that decide
    "predicted" (a level absent for a locale: the global one; null: never reached the target)."""
    tree: dict[str, int] | None = None
    """Hierarchical models: the product type tree's ``depth`` and ``nodes`` (null: a flat model)."""
    precision_target: float | None = None
    fallback_locale: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, int] = Field(default_factory=dict)
    model_dir: str | None = None
    fingerprint: str | None = None
    """sha256 of the served folder's manifest.json (which holds the sha256 of every other file)."""
    loaded_at: str | None = None
    """When this model started serving (UTC, ISO 8601): the server's start or the last reload."""
    reloads: int = 0
    """Models loaded by reloads since the server started."""
    model_card: str | None = None
    """Where the model card is served (``/v1/model/card``, markdown)."""


class ExplainRequest(BaseModel):
    """A query whose product type score to explain."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"query": "red running shoes", "locale": "us"}]},
    )

    query: str = Field(..., description="The search query (as for /v1/predict).")
    locale: str = Field(..., min_length=1, max_length=64)
    product_type: str | None = Field(None, min_length=1, max_length=1000,
                                     description="The type to explain (default: the query's best-scored type; for a "
                                                 "hierarchical model, the type it predicts).")


class WordContribution(BaseModel):
    word: str
    start: int
    end: int
    score_without: float
    contribution: float


class LocaleContribution(BaseModel):
    token: str
    score_without: float
    contribution: float


class Explanation(BaseModel):
    """Each word's (and the locale token's) contribution to a product type's score, by
    occlusion (``method``)."""

    query: str
    locale: str
    locale_used: str | None
    product_type: str
    score: float
    threshold: float
    predicted: bool
    words: list[WordContribution]
    locale_token: LocaleContribution | None
    method: str
    warnings: list[str]


class ReloadRequest(BaseModel):
    """``POST /v1/admin/reload``: the model folder to serve next (default: the folder the
    server was started with, re-read)."""

    model_config = _STRICT

    model: str | None = Field(None, min_length=1, max_length=4096)


class ReloadResult(BaseModel):
    status: str
    model: dict[str, Any]
    previous: dict[str, Any]
    seconds: float


class Health(BaseModel):
    status: str
