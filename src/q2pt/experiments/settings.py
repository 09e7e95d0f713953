"""Settings of ``q2pt experiment``: what to compare, how hard to train, the studies' knobs.

The experiment has its own ``experiment`` section beside the training config's ``model``,
``train`` and ``data`` sections. One YAML/JSON file may hold all four; ``--experiment.key
VALUE`` flags override the experiment section like ``--train.key VALUE`` overrides training.

Training budgets
----------------
A *budget* is a set of defaults sized for a dataset: it sets the experiment's own defaults
(bootstrap resamples, baseline epochs) and a ``train`` layer (epochs, patience) that sits
under the user's config file and flags. The simulated presets use the budget of the same
name; user data (``--data``) uses ``full`` unless
``--experiment.budget`` says otherwise.

* ``tiny``: seconds per model, for tests (a few epochs, few resamples).
* ``demo``: ``make demo``: the three variants and six baselines (all but USE + e5 + LR,
  whose e5 embeddings alone take minutes) on the demo simulated store (~20,000 queries),
  sized for 10 minutes on a slow 2-core machine (the measured timings are below).
* ``quick``: the same training budget on the quick store (~40,000 queries), 1,000 resamples.
* ``full``: the full simulated store or user data: up to 20 epochs with early stopping
  (patience 2) at batch 64, and 500 bootstrap resamples (~3 min per model on 50k test
  queries). The paper's batch size and patience: ``--train.batch_size 211
  --train.patience 3``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from q2pt.config import VARIANTS, encoder_kind, iter_overrides, parse_value
from q2pt.errors import ConfigError

__all__ = [
    "BUDGETS",
    "ExperimentSettings",
    "STUDIES",
    "resolve_settings",
    "split_overrides",
    "stable_hash",
]

#: The follow-up studies (``--study NAME``); ``all`` runs the main comparison and every study.
STUDIES: tuple[str, ...] = ("data-size", "cold-start", "pretraining", "label-noise", "head", "locale-conflicts")

BASELINE_NAMES: tuple[str, ...] = (
    "fasttext-per-locale", "fasttext-unified", "tfidf-per-locale", "tfidf-unified",
    # frozen pretrained embeddings + logistic regression (USE; USE + multilingual-e5-small)
    "use-lr-per-locale", "use-lr-unified", "e5-lr-per-locale", "e5-lr-unified",
)

Budget = Literal["tiny", "demo", "quick", "full"]


class ExperimentSettings(BaseModel):
    """Everything ``q2pt experiment`` needs besides the training config (see the module doc)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    budget: Budget | None = None
    """Training budget (see the module doc); None: the preset's, or ``full`` for user data."""
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS))
    """Variants of the main comparison."""
    baselines: list[str] = Field(default_factory=lambda: list(BASELINE_NAMES))
    """Baselines of the main comparison ([] for none)."""
    precision: float = Field(0.8, gt=0.0, le=1.0)
    """Target precision of R@P."""
    bootstrap: int = Field(1000, ge=0)
    """Bootstrap resamples (over queries) for the 95% CIs of the main comparison."""
    study_bootstrap: int = Field(200, ge=0)
    """Bootstrap resamples for the studies' CIs."""
    seed: int = Field(0, ge=0)
    """Seed of the bootstrap and of the studies' subsampling / noise."""
    small_store_ratio: float = Field(1 / 3, gt=0.0, le=1.0)
    """A store is *small* when its training queries are below this share of the median store's."""
    keep_models: bool = False
    """Keep the main comparison's model folders under OUT/models (they are written anyway to
    measure their size, then removed)."""
    fasttext: dict[str, Any] = Field(default_factory=dict)
    """fastText hyper-parameter overrides (see ``baselines.FASTTEXT_DEFAULTS``)."""
    tfidf: dict[str, Any] = Field(default_factory=dict)
    """TF-IDF + logistic regression overrides (see ``baselines.TFIDF_DEFAULTS``)."""
    use_lr: dict[str, Any] = Field(default_factory=dict)
    """Frozen USE + logistic regression overrides (see ``baselines.FROZEN_LR_DEFAULTS``)."""
    e5_lr: dict[str, Any] = Field(default_factory=dict)
    """Frozen USE + e5 + logistic regression overrides (see ``baselines.E5_LR_DEFAULTS``)."""

    # --- studies
    data_size_locale: str | None = None
    """Store of the data-size study; None: ``pl`` if the data has it, else the smallest store."""
    data_size_fractions: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0])
    """Training sizes of the locale relative to the reference size ``1x``, which is its
    training data divided by the largest fraction (the rest is the pool borrowed from)."""
    data_size_variants: list[str] = Field(default_factory=lambda: ["non-unified", "unified-aware"])
    cold_start_locale: str | None = None
    """Store left out by the cold-start study; None: ``se`` if the data has it, else the
    second-smallest store (the smallest is the data-size study's)."""
    cold_start_nearest: str | None = None
    """Locale whose id the aware model is given for the new store; None: the training locale
    whose queries look most like the new store's (character trigram profiles)."""
    pretraining_encoders: list[str] = Field(default_factory=lambda: ["use", "use-scratch", "ngram"])
    """Encoders compared ("use-scratch": the USE architecture without its pre-trained weights);
    ``hf:<hf_model>`` is added when hf_model is set."""
    hf_model: str | None = None
    """Path or name of a Hugging Face encoder for the pretraining study (None: skipped)."""
    pretraining_variant: str = "unified-aware"
    noise_rates: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.4])
    noise_variants: list[str] = Field(default_factory=lambda: list(VARIANTS))
    head_options: list[list[int]] = Field(default_factory=lambda: [[], [256], [256, 256]])
    head_variant: str = "unified-aware"

    @field_validator("variants", "data_size_variants", "noise_variants")
    @classmethod
    def _check_variants(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in VARIANTS]
        if bad:
            raise ValueError(f"unknown variant(s) {', '.join(bad)}; valid: {', '.join(VARIANTS)}")
        if len(set(value)) != len(value):
            raise ValueError("variants are listed twice")
        return value

    @field_validator("pretraining_variant", "head_variant")
    @classmethod
    def _check_variant(cls, value: str) -> str:
        if value not in VARIANTS:
            raise ValueError(f"unknown variant {value!r}; valid: {', '.join(VARIANTS)}")
        return value

    @field_validator("baselines")
    @classmethod
    def _check_baselines(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in BASELINE_NAMES]
        if bad:
            raise ValueError(f"unknown baseline(s) {', '.join(bad)}; valid: {', '.join(BASELINE_NAMES)}")
        return value

    @field_validator("data_size_fractions")
    @classmethod
    def _check_fractions(cls, value: list[float]) -> list[float]:
        if not value or any(f <= 0 for f in value):
            raise ValueError("fractions must be positive numbers")
        return sorted(set(float(f) for f in value))

    @field_validator("noise_rates")
    @classmethod
    def _check_rates(cls, value: list[float]) -> list[float]:
        if not value or any(not 0.0 <= r < 1.0 for r in value):
            raise ValueError("noise rates must be in [0, 1)")
        return sorted(set(float(r) for r in value))

    @field_validator("pretraining_encoders")
    @classmethod
    def _check_encoders(cls, value: list[str]) -> list[str]:
        for spec in value:
            if spec != "use-scratch":
                encoder_kind(spec)  # ValueError for an unknown spec
        return value

    @field_validator("head_options")
    @classmethod
    def _check_heads(cls, value: list[list[int]]) -> list[list[int]]:
        if not value or any(any(w < 1 for w in h) for h in value):
            raise ValueError("head options are lists of positive hidden widths ([] = linear)")
        return value


#: the folder of an experiment's output that holds each main variant's training config
#: (:func:`q2pt.experiments.runner.write_training_configs`)
CONFIGS_DIR = "configs"

#: Per-budget defaults: ``experiment`` settings and a ``train`` layer under the user's config
#: (which sits on the per-encoder defaults of :data:`q2pt.config.ENCODER_OVERRIDES`).
#:
#: demo (``make demo``): sized to the target of <= 10 min for a fresh clone's ``make demo`` on a
#: 2-core machine 2.5x slower than the development machine (there 0.1.0's demo took 23 min, 7 min
#: 52 s here). One epoch capped at 250 steps of 64 queries per network, no step floor, fastText 5
#: epochs, TF-IDF 3 SGD passes, USE + LR with 25 L-BFGS iterations instead of 200 (2026-12-02,
#: `q2pt experiment --preset demo --experiment.variants '[]' --experiment.baselines
#: '["use-lr-per-locale", "use-lr-unified"]' --experiment.use_lr '{"max_iter": N}'`, another job on
#: the other core: per locale 46.1 s -> 25.0 s, R@P80 pooled 0.283 -> 0.279, as deployed 0.310 ->
#: 0.313; unified 0.567 either way: it converges early), no
#: USE + e5 + LR, 300 bootstrap resamples, on the demo store (half the quick store: the
#: non-unified networks, the baselines and the evaluation scale with the store; the unified
#: networks' 250 steps do not). Measured 2026-12-02 (2 cores, AMD EPYC, idle, torch's default
#: threads, `time q2pt experiment --preset demo`, 1,000 resamples): 2 min 54 s including
#: simulating the store, 3 min 40 s on a second run (the machine's speed varies by ~25%); a
#: fresh clone's whole `make demo` (installation from pip's cache) 3 min 54 s and 4 min 30 s: it
#: keeps the paper's effect (global R@P80 pooled unified-aware 0.464 / agnostic 0.469 vs
#: non-unified 0.015; as deployed 0.463 vs 0.051), while TF-IDF + LR and USE + LR unified, at
#: 0.519 and 0.567, beat undertrained unified networks (the ``full`` budget trains them to
#: convergence). On the quick store this budget took 5 min 25 s (2026-12-01).
#: quick: the demo's budget on the quick store (1,000 resamples): unified 0.490 vs non-unified
#: 0.089 (2026-12-01).
#: full (bench/full_study.py, ~400k training queries; user data): the paper's 20 epochs with
#: early stopping (patience 2) at batch 64, so every network -- a small store's too -- trains
#: until its validation R@P stops improving. Measured (README): with ``--train.max_epochs 4``
#: the 7 models took 89.6 min on 2 cores (~5 min per unified epoch), so the whole budget takes
#: several hours there.
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "experiment": {"bootstrap": 100, "study_bootstrap": 50, "fasttext": {"epoch": 10, "thread": 1},
                       "tfidf": {"solver": "liblinear"}},
        "train": {"max_epochs": 3, "patience": 1, "batch_size": 64},
    },
    "demo": {
        "experiment": {"bootstrap": 300, "study_bootstrap": 100, "fasttext": {"epoch": 5}, "tfidf": {"max_iter": 3},
                       "use_lr": {"max_iter": 25},
                       "baselines": [b for b in BASELINE_NAMES if not b.startswith("e5-")]},
        "train": {"max_epochs": 1, "batch_size": 64, "max_steps": 250},
    },
    "quick": {
        "experiment": {"bootstrap": 1000, "study_bootstrap": 200, "fasttext": {"epoch": 5}, "tfidf": {"max_iter": 3},
                       "use_lr": {"max_iter": 25},
                       "baselines": [b for b in BASELINE_NAMES if not b.startswith("e5-")]},
        "train": {"max_epochs": 1, "batch_size": 64, "max_steps": 250},
    },
    "full": {
        "experiment": {"bootstrap": 500, "study_bootstrap": 200},
        "train": {"max_epochs": 20, "patience": 2, "batch_size": 64},
    },
}


def split_overrides(args: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Separate ``--experiment.key VALUE`` flags (returned parsed, as ``{key: value}``) from
    the training ones (returned as given, for :func:`q2pt.config.resolve_config`)."""
    experiment: dict[str, Any] = {}
    rest: list[str] = []
    for key, value, raw in iter_overrides(args):
        if key.startswith("experiment."):
            name = key[len("experiment."):]
            if name not in ExperimentSettings.model_fields:
                raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(_valid_keys())}")
            experiment[name] = parse_value(value)
        else:
            rest.extend(raw)
    return experiment, rest


def _valid_keys() -> list[str]:
    return [f"experiment.{k}" for k in ExperimentSettings.model_fields]


def resolve_settings(
    budget: str,
    file_section: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> ExperimentSettings:
    """Budget defaults < the file's ``experiment`` section < ``--experiment.key`` overrides <
    explicit flags (values that are None are ignored). Unknown keys raise ConfigError."""
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    merged: dict[str, Any] = copy.deepcopy(BUDGETS[budget]["experiment"])
    for layer in (file_section or {}, overrides or {}, {k: v for k, v in (flags or {}).items() if v is not None}):
        if not isinstance(layer, Mapping):
            raise ConfigError("the experiment section must be a mapping of keys")
        for key, value in layer.items():
            if key not in ExperimentSettings.model_fields:
                raise ConfigError(f"unknown key 'experiment.{key}'; valid keys: {', '.join(_valid_keys())}")
            if key in ("fasttext", "tfidf", "use_lr", "e5_lr") and isinstance(value, Mapping) \
                    and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = copy.deepcopy(value)
    merged["budget"] = budget
    try:
        return ExperimentSettings.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"experiment.{loc}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
        raise ConfigError("invalid experiment settings: " + "; ".join(lines)) from None


def stable_hash(obj: Any) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
