"""The one inference core: locale resolution, network dispatch, scoring and type selection.

Every prediction path goes through :class:`InferenceCore`: the library
(:meth:`q2pt.models.Q2PTModel.predict_details`, hence ``q2pt predict``, streaming and Ray),
both serving runtimes (:mod:`q2pt.serving.runtime`: PyTorch, or an ONNX session injected as
the forward pass) and the experiment's baselines. It owns four decisions, written once:

* **Locale resolution** (:meth:`InferenceCore.resolve`): which network, locale token and
  threshold a query's locale gets. A unified model serves a locale it never saw
  locale-agnostically (no locale token, the global threshold) and says so; a non-unified
  model uses the fallback locale's network and threshold, or raises
  :class:`~q2pt.errors.UnknownLocaleError` (or, with ``unseen="skip"``, scores nothing:
  the per-locale baselines).
* **Network dispatch**: one network under :data:`UNIFIED`, or one per locale; queries are
  grouped by network and tokenized by that network's tokenizer.
* **Scoring**: the injected ``forward(key, batch) -> (n, n_labels)`` probabilities, mapped
  onto the model's label columns. A label a query's network does not score is ``NaN``
  ("not scored") in :meth:`InferenceCore.scores`.
* **Type selection** (:func:`select_types`): the types whose score reaches the threshold
  (the locale's calibrated one unless the caller gives one), best first, at most ``top_k``;
  a label that was not scored is never selected.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Literal, Mapping, Sequence

import numpy as np

from q2pt.errors import ConfigError, ModelLoadError, UnknownLocaleError

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.data.tree import LabelTree

__all__ = [
    "UNIFIED",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_THRESHOLD",
    "Inference",
    "InferenceCore",
    "Resolution",
    "TreeColumns",
    "check_flat_model_options",
    "check_threshold",
    "flat_model_refusal",
    "select_types",
    "threshold_of",
    "tree_columns",
]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _fallback_ignored(fallback_locale: str, variant: str) -> None:
    """Say once a process (a file is predicted in chunks) that a unified model has no use for
    a fallback locale."""
    logger.warning("a fallback locale (%s) is for a non-unified model: this %s model predicts unseen "
                   "locales locale-agnostically; ignored", fallback_locale, variant)

#: the network key of a unified model (its one network); non-unified keys are the locales
UNIFIED = "*"
#: the threshold of a model without calibrated thresholds
DEFAULT_THRESHOLD = 0.5
#: queries per forward pass when predicting (library, CLI, streaming, Ray, ONNX checks)
DEFAULT_BATCH_SIZE = 512

Forward = Callable[[str, Any], np.ndarray]
Tokenizer = Callable[[list[str], "list[str | None] | None"], Any]


@dataclass(frozen=True)
class Resolution:
    """How one query's locale is served.

    ``locale``: the locale asked for; ``locale_used``: the locale whose network, locale token
    and threshold are used (None: locale-agnostic, the global threshold); ``key``: the
    network key (:data:`UNIFIED` for unified models; None: no network scores it);
    ``token_locale``: the locale token given to the tokenizer (None: none); ``warning``: a
    message for the user when the locale was not served as asked ("" otherwise).
    """

    locale: str
    locale_used: str | None
    key: str | None
    token_locale: str | None
    warning: str = ""


def flat_model_refusal(hierarchical: bool, max_depth: int | None, backoff: bool, flat: bool) -> str | None:
    """Why the options that only shape a hierarchical answer (a depth limit, no back-off) are
    refused rather than ignored: with a flat answer asked for (``flat``), or by a flat model.
    Prediction, streaming, Ray and serving say it alike. None: nothing to refuse."""
    given = [name for name, on in (("max_depth", max_depth is not None), ("backoff false", not backoff)) if on]
    if not given or (hierarchical and not flat):
        return None
    what = f"{' and '.join(given)} {'applies' if len(given) == 1 else 'apply'} to hierarchical"
    if flat:
        return f"{what} predictions (not with flat)"
    return (f"{what} models: "
            "this model is flat (one output per type, no tree of levels: its labels have one level, or it was "
            "trained with model.hierarchy flat)")


def check_flat_model_options(hierarchical: bool, max_depth: int | None, backoff: bool, flat: bool) -> None:
    """ConfigError with :func:`flat_model_refusal`'s reason, if any (the HTTP layer uses the
    reason itself, to answer 422 on the field)."""
    refused = flat_model_refusal(hierarchical, max_depth, backoff, flat)
    if refused:
        raise ConfigError(refused)


def threshold_of(thresholds: Mapping[str, float], locale_used: str | None,
                 own: Collection[str] | None = None) -> tuple[float, str]:
    """A locale's calibrated threshold and where it comes from: "locale" (its own) or
    "global" (the global one; 0.5 for a model without thresholds). Calibration writes every
    locale's entry, the global value for a locale without a threshold of its own (too few
    positives, or its own never reached the target): ``own``, the locales calibration gave
    their own (:func:`q2pt.metrics.own_thresholds` of the manifest's details), says which;
    without it (a model saved without details) an entry equal to the global one is "global"."""
    glob = float(thresholds.get("global", DEFAULT_THRESHOLD))
    if locale_used is not None and locale_used in thresholds:
        value = float(thresholds[locale_used])
        mine = locale_used in own if own is not None else value != glob
        return value, "locale" if mine else "global"
    return glob, "global"


def check_threshold(threshold: float | None) -> None:
    """A caller's threshold must be a number in [0, 1] (None: the calibrated ones)."""
    if threshold is not None and (math.isnan(threshold) or not 0.0 <= threshold <= 1.0):
        raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")


def check_top_k(top_k: Any) -> None:
    """``top_k`` is None or a whole number of at least 1 (ConfigError)."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ConfigError(f"top_k must be a whole number of at least 1, got {top_k!r}")


def select_types(
    scores: np.ndarray, classes: Sequence[str], thresholds: Sequence[float] | np.ndarray | float, top_k: int | None = None
) -> list[list[tuple[str, float]]]:
    """Per row, the ``(type, score)`` pairs with ``score >= threshold``, best first (ties in
    label order), at most ``top_k``. ``thresholds``: one for all, one per row, or one per row
    and type ``(n, n_labels)``. NaN scores (labels not scored) are never selected."""
    check_top_k(top_k)
    n = scores.shape[0]
    cut = np.asarray(thresholds, dtype=np.float64)
    cut = np.broadcast_to(cut if cut.ndim == 2 else np.broadcast_to(cut, (n,))[:, None], scores.shape)
    out: list[list[tuple[str, float]]] = []
    for i in range(n):
        row = scores[i]
        with np.errstate(invalid="ignore"):
            cols = np.flatnonzero(row >= cut[i])  # NaN >= t is False (cut[i]: the row's per-type cuts)
        cols = cols[np.argsort(-row[cols], kind="stable")]
        if top_k is not None:
            cols = cols[:top_k]
        out.append([(classes[int(c)], float(row[c])) for c in cols])
    return out


class InferenceCore:
    """Locale resolution, dispatch, scoring and selection for one trained model.

    Args:
        variant: "non-unified", "unified-agnostic" or "unified-aware".
        classes: the model's labels (the columns of every score matrix).
        locales: the training locales.
        thresholds: calibrated thresholds, ``{"global": t, LOCALE: t}`` (missing: 0.5).
        tokenizers: per network key, ``tokenize(queries, token_locales) -> batch``.
        forward: ``forward(key, batch) -> (n, n_labels)`` probabilities of network ``key``.
        network_labels: per network key, the labels it scores in its output order (None or
            missing: ``classes``).
        fallback_locale: non-unified: the locale whose network serves unseen locales.
        unseen: non-unified without a fallback: "error" (raise UnknownLocaleError) or "skip"
            (the query gets no scores: every label NaN).
        type_thresholds: ``{locale: {type: t}}``: per-(locale, type) thresholds that replace
            the locale's for those types (``train.type_thresholds``).
        tree: the product-type tree of a hierarchical model (``model.hierarchy``): its classes
            are the tree's nodes, and :meth:`select_paths` picks the deepest confident ones.
        consistent: with a tree, a parent's score is at least its most confident child's
            (``model.tree_scores``); applied in :meth:`scores`.
        level_thresholds: ``{"global": {level: t}, LOCALE: {level: t}}``: a hierarchical
            model's thresholds per level (and per locale and level); a type's own threshold
            comes first, then its locale's level threshold, the level's, the locale's. A
            locale's ``None`` at a level: its own pairs there never reached the target; it is
            cut at the level's threshold, which does not count as reached (:meth:`reached`).
        thresholds_reached: per key of ``thresholds``, whether it reached the precision
            target on validation (None: all did); see :meth:`reached`.
        own_thresholds: the locales calibration gave a threshold of their own (None: not
            known; see :func:`threshold_of`).
    """

    def __init__(
        self,
        *,
        variant: str,
        classes: Sequence[str],
        locales: Sequence[str],
        thresholds: Mapping[str, float] | None,
        tokenizers: Mapping[str, Tokenizer],
        forward: Forward,
        network_labels: Mapping[str, Sequence[str] | None] | None = None,
        fallback_locale: str | None = None,
        unseen: Literal["error", "skip"] = "error",
        type_thresholds: Mapping[str, Mapping[str, float]] | None = None,
        tree: "LabelTree | None" = None,
        level_thresholds: Mapping[str, Mapping[str, float | None]] | None = None,
        consistent: bool = True,
        thresholds_reached: Mapping[str, bool] | None = None,
        own_thresholds: Collection[str] | None = None,
    ) -> None:
        if variant not in ("non-unified", "unified-agnostic", "unified-aware"):
            raise ModelLoadError(f"unknown variant {variant!r}")
        self.variant = variant
        self.unified = variant != "non-unified"
        self.classes = list(classes)
        self.locales = list(locales)
        self.thresholds = {str(k): float(v) for k, v in (thresholds or {}).items()}
        self.thresholds_reached = None if thresholds_reached is None else {
            str(k): bool(v) for k, v in thresholds_reached.items()}
        self.own_thresholds = None if own_thresholds is None else frozenset(str(k) for k in own_thresholds)
        index = {c: i for i, c in enumerate(self.classes)}
        self.column_of = index  #: a label's column
        self.tree = tree
        self._level_cuts: dict[str, np.ndarray] = {}
        #: per locale: the columns at levels whose own pairs never reached the target there
        self._level_unreached: dict[str, np.ndarray] = {}
        if tree is not None:
            cols = tree_columns(tree, self.classes)
            self.node_level = cols.level
            self.children_cols = cols.children
            self.leaf_col = cols.leaf
            self.ancestor_cols = cols.ancestors
            # (child columns, parent columns) per level, deepest first: a consistent model's parent
            # scores at least its most confident child (model.tree_scores)
            self._up: tuple[tuple[np.ndarray, np.ndarray], ...] = cols.lift  # every tree's, for confident()
            self._lift = self._up if consistent else ()
            by_key = {str(k): {int(lv): None if t is None else float(t) for lv, t in v.items()}
                      for k, v in (level_thresholds or {}).items()}
            glob = {lv: t for lv, t in by_key.get("global", {}).items() if t is not None}
            present, at = np.unique(self.node_level, return_inverse=True)  # a column's level, as an index
            for key, levels in by_key.items():
                merged = {**glob, **{lv: t for lv, t in levels.items() if t is not None}}
                self._level_cuts[key] = np.asarray([merged.get(int(lv), np.nan) for lv in present])[at]
                unreached = [lv for lv, t in levels.items() if t is None]
                if unreached and key != "global":
                    self._level_unreached[key] = np.isin(self.node_level, unreached)
        #: per served locale: (columns, thresholds) replacing the locale's threshold there
        self.type_cuts = {
            str(loc): (np.asarray([index[t] for t in types if t in index], dtype=np.int64),
                       np.asarray([float(v) for t, v in types.items() if t in index], dtype=np.float64))
            for loc, types in (type_thresholds or {}).items() if types
        }
        self.tokenizers = dict(tokenizers)
        self.forward = forward
        keys = set(self.tokenizers)
        if self.unified and keys != {UNIFIED}:
            raise ModelLoadError(f"a unified model holds exactly one network {UNIFIED!r}, got {sorted(keys)}")
        if not self.unified and UNIFIED in keys:
            raise ModelLoadError(f"a non-unified model holds one network per locale, not a unified {UNIFIED!r} one")
        labels = dict(network_labels or {})
        self.columns = {key: _label_columns(self.classes, labels.get(key)) for key in self.tokenizers}
        self._known = set(self.locales)
        # locale ids compare without case ("US" is the model's "us"); the data layer refuses
        # datasets that spell one id two ways, so this map is one-to-one
        self._by_case = {loc.casefold(): loc for loc in self.locales}
        if fallback_locale is not None and self.unified:
            _fallback_ignored(fallback_locale, self.variant)
            fallback_locale = None
        if fallback_locale is not None:
            fallback_locale = fallback_locale.strip()  # as a query's locale is read
            if fallback_locale.casefold() not in self._by_case:
                raise UnknownLocaleError(
                    f"fallback locale {fallback_locale!r} is not a locale of the model "
                    f"(model locales: {', '.join(self.locales)})"
                )
            fallback_locale = self._by_case[fallback_locale.casefold()]
        self.fallback_locale = fallback_locale
        self.unseen = unseen

    # --------------------------------------------------------------- resolution
    def resolve(self, locale: str) -> Resolution:
        """How ``locale`` is served (see :class:`Resolution`); a locale that is a model locale
        up to case and surrounding spaces (a locale id has none) is that locale."""
        if locale not in self._known and locale.strip().casefold() in self._by_case:
            resolved = self.resolve(self._by_case[locale.strip().casefold()])
            return Resolution(locale, resolved.locale_used, resolved.key, resolved.token_locale, resolved.warning)
        known = locale in self._known
        if self.unified:
            if not known:
                cut = "the global threshold" if self.tree is None else "the global threshold of each level"
                return Resolution(locale, None, UNIFIED, None,
                                  f"unseen locale {locale}: predicted locale-agnostically with {cut}")
            return Resolution(locale, locale, UNIFIED, locale if self.variant == "unified-aware" else None)
        if known:
            return Resolution(locale, locale, locale, None)
        if self.fallback_locale is not None:
            fb = self.fallback_locale
            return Resolution(locale, fb, fb, None,
                              f"unseen locale {locale}: used the fallback locale {fb}'s network and threshold")
        if self.unseen == "skip":
            return Resolution(locale, None, None, None, f"unseen locale {locale}: no model for it, nothing predicted")
        raise UnknownLocaleError(self._unknown_message([locale]))

    def resolve_all(self, locales: Sequence[str]) -> list[Resolution]:
        """:meth:`resolve` for each locale; an error names every unknown locale at once, and
        one warning per unseen locale is logged."""
        if not self.unified and self.fallback_locale is None and self.unseen == "error":
            unknown = sorted({loc for loc in locales if loc.strip().casefold() not in self._by_case})
            if unknown:
                raise UnknownLocaleError(self._unknown_message(unknown))
        cache: dict[str, Resolution] = {}
        out = []
        for loc in locales:
            res = cache.get(loc)
            if res is None:
                res = cache[loc] = self.resolve(loc)
                if res.warning:
                    logger.warning("%s", res.warning)
            out.append(res)
        return out

    def _unknown_message(self, unknown: Sequence[str]) -> str:
        return (
            f"locale(s) {', '.join(unknown)} not seen in training; this non-unified model has one network per "
            f"training locale ({', '.join(self.locales)}): give a fallback locale (--fallback-locale LOCALE) "
            "to serve others with its network"
        )

    def threshold_for(self, locale_used: str | None) -> tuple[float, str]:
        """The calibrated threshold of a served locale and where it comes from (see
        :func:`threshold_of`)."""
        return threshold_of(self.thresholds, locale_used, self.own_thresholds)

    def cuts(self, resolutions: Sequence[Resolution], threshold: float | None = None) -> np.ndarray:
        """Per query and type ``(n, len(classes))``: ``threshold``, or its served locale's
        calibrated threshold (the locale's per-type thresholds where it has them)."""
        n = len(resolutions)
        if threshold is not None:
            return np.full((n, len(self.classes)), float(threshold))
        rows = np.asarray([self.threshold_for(r.locale_used)[0] for r in resolutions], dtype=np.float64)
        out = np.repeat(rows[:, None], len(self.classes), axis=1)
        if self._level_cuts:
            for i, r in enumerate(resolutions):
                levels = self._level_cuts.get(r.locale_used or "global", self._level_cuts.get("global"))
                if levels is not None:
                    out[i] = np.where(np.isnan(levels), out[i], levels)
        if self.type_cuts:
            for i, r in enumerate(resolutions):
                special = self.type_cuts.get(r.locale_used) if r.locale_used is not None else None
                if special is not None:
                    out[i, special[0]] = special[1]
        return out

    def reached(self, resolutions: Sequence[Resolution]) -> np.ndarray:
        """Per query and type ``(n, len(classes))``: whether the type's cut (:meth:`cuts`) is a
        threshold that reached the precision target on validation, so that an answer there is
        an answer at that precision (what ``coverage`` counts). A type's own threshold and a
        level's are only calibrated where they reach it; a hierarchical model's types at a level
        without a threshold of its own do not count (the locale's threshold was calibrated over
        every level at once), nor does a level where the locale's own pairs never reached it; a
        flat model's count where its locale's threshold (or the global one it uses) reached the
        target."""
        n = len(resolutions)
        if self.tree is not None:
            out = np.zeros((n, len(self.classes)), dtype=bool)
            for i, r in enumerate(resolutions):
                for key in {r.locale_used or "global", "global"}:
                    levels = self._level_cuts.get(key)
                    if levels is not None:
                        out[i] |= ~np.isnan(levels)
                unreached = self._level_unreached.get(r.locale_used or "global")
                if unreached is not None:
                    out[i] &= ~unreached
        else:
            known = self.thresholds_reached
            rows = [True if known is None else known.get(r.locale_used if r.locale_used in self.thresholds
                                                         else "global", known.get("global", False))
                    for r in resolutions]
            out = np.repeat(np.asarray(rows, dtype=bool)[:, None], len(self.classes), axis=1)
        for i, r in enumerate(resolutions):
            special = self.type_cuts.get(r.locale_used) if r.locale_used is not None else None
            if special is not None:
                out[i, special[0]] = True
        return out

    # ---------------------------------------------------------------- inference
    def scores(self, queries: Sequence[str], resolutions: Sequence[Resolution], batch_size: int | None = None) -> np.ndarray:
        """Probabilities ``(n, len(classes))`` in ``classes`` order; NaN: a label the query's
        network does not score (or no network scores the query). ``batch_size``: at most
        this many queries per forward pass (None: one pass per network)."""
        n = len(queries)
        if len(resolutions) != n:
            raise ValueError(f"got {n} queries but {len(resolutions)} resolutions")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        out = np.full((n, len(self.classes)), np.nan, dtype=np.float32)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(resolutions):
            if r.key is not None:
                groups.setdefault(r.key, []).append(i)
        aware = self.variant == "unified-aware"
        for key, rows in groups.items():
            step = batch_size or len(rows)
            cols = self.columns[key]
            for start in range(0, len(rows), step):
                part = rows[start:start + step]
                qs = [str(queries[i]) for i in part]
                locs = [resolutions[i].token_locale for i in part] if aware else None
                probs = np.asarray(self.forward(key, self.tokenizers[key](qs, locs)), dtype=np.float32)
                idx = np.asarray(part)
                if cols is None:
                    out[idx] = probs
                else:
                    out[np.ix_(idx, cols)] = probs
        if self.tree is not None:
            lifted = out.T  # a view: rows are labels
            for children, parents in self._lift:  # deepest level first: lifts climb the whole path
                np.fmax.at(lifted, parents, lifted[children])  # NaN (not scored) is ignored
        return out

    def confident(self, scores: np.ndarray, cut: np.ndarray) -> np.ndarray:
        """Per query and type: the score is at or above its cut (NaN: never) or, in a tree, a
        descendant's is. A confident type's ancestors are answers as well ("pans" means
        "kitchen"): a tree's level thresholds need not fall with depth (a deeper level may be
        cut lower than its parents'), and an answer must not change with ``max_depth``."""
        with np.errstate(invalid="ignore"):
            ok = np.asarray(scores >= cut)
        if self.tree is not None:
            up = ok.T  # a view: rows are labels
            for children, parents in self._up:  # deepest level first: climbs the whole path
                np.logical_or.at(up, parents, up[children])
            ok &= ~np.isnan(scores)  # a type the query's network does not score is no answer
        return ok

    def select(
        self,
        scores: np.ndarray,
        resolutions: Sequence[Resolution],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
    ) -> list[list[tuple[str, float]]]:
        """The predicted ``(type, score)`` lists of scored queries (see :func:`select_types`;
        in a tree, a confident type's ancestors too: :meth:`confident`)."""
        check_threshold(threshold)
        return self.pick(scores, self.confident(scores, self.cuts(resolutions, threshold)), top_k)

    def pick(self, scores: np.ndarray, sure: np.ndarray, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Per query the ``(type, score)`` pairs of its confident types (``sure``:
        :meth:`confident`), best first, at most ``top_k``."""
        return select_types(scores, self.classes, np.where(sure, -np.inf, np.inf), top_k)

    def select_paths(
        self,
        scores: np.ndarray,
        resolutions: Sequence[Resolution],
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        max_depth: int | None = None,
        backoff: bool = True,
    ) -> list[list[dict[str, Any]]]:
        """A hierarchical model's predictions: per query the **deepest** confident types (score
        at or above their threshold, see :meth:`cuts`, or a descendant's: :meth:`confident`; none of
        their children confident), best
        first, at most ``top_k``, each as ``{"product_type", "score", "level", "ancestors":
        [{"product_type", "score"}, ...]}`` (top level first). ``max_depth``: nothing below
        that level. ``backoff`` (default): a confident parent whose children are all unsure is
        an answer ("kitchen > cookware" when unsure which pot); off: only types at the bottom
        (a type none of whose children the query's network scores, or ``max_depth``). A flat model's types
        are all at level 1."""
        check_threshold(threshold)
        check_top_k(top_k)
        if max_depth is not None and max_depth < 1:
            raise ConfigError(f"max_depth must be >= 1, got {max_depth}")
        sure = self.confident(scores, self.cuts(resolutions, threshold))
        n_cols = len(self.classes)
        level = self.node_level if self.tree is not None else np.ones(n_cols, dtype=np.int64)
        out: list[list[dict[str, Any]]] = []
        for i in range(scores.shape[0]):
            row = scores[i]
            ok = sure[i].copy()
            if max_depth is not None:
                ok &= level <= max_depth
            cols = np.flatnonzero(ok)
            confident = set(cols.tolist())
            if self.tree is not None:
                keep = [c for c in cols.tolist() if not (self.children_cols[c] & confident)]
                if not backoff:  # the bottom: no child this query's network scores (a leaf; or a per-locale
                    scored = ~np.isnan(row)  # network may lack some of the model's columns), or max_depth
                    keep = [c for c in keep if (max_depth is not None and level[c] == max_depth)
                            or not any(scored[k] for k in self.children_cols[c])]
                ancestors = self.ancestor_cols
            else:
                keep, ancestors = cols.tolist(), [[] for _ in range(n_cols)]
            keep.sort(key=lambda c: (-float(row[c]), c))
            if top_k is not None:
                keep = keep[:top_k]
            out.append([{"product_type": self.classes[c], "score": float(row[c]), "level": int(level[c]),
                         "ancestors": [{"product_type": self.classes[a], "score": float(row[a])} for a in ancestors[c]]}
                        for c in keep])
        return out

    def warmup(self) -> None:
        """One prediction through every network (first-call allocations, lazy init)."""
        if self.unified:
            locales = self.locales[:1] or [""]
        else:
            locales = list(self.tokenizers)
        res = [self.resolve(loc) for loc in locales]
        self.scores(["warm up"] * len(res), res)


@dataclass
class Inference:
    """One batch of queries through an :class:`InferenceCore`: their resolutions and scores
    (NaN: not scored)."""

    core: InferenceCore
    resolutions: list[Resolution]
    scores: np.ndarray

    def probabilities(self) -> np.ndarray:
        """The scores with labels not scored at 0.0 (a probability they never reach)."""
        return np.nan_to_num(self.scores, nan=0.0)

    @property
    def notes(self) -> list[str]:
        """Per query, how an unseen locale was handled ("" when it was served as asked)."""
        return [r.warning for r in self.resolutions]

    @property
    def threshold_locales(self) -> list[str | None]:
        """Per query, the locale whose calibrated threshold applies (None: the global one)."""
        return [r.locale_used for r in self.resolutions]

    def select(self, *, threshold: float | None = None, top_k: int | None = None, max_depth: int | None = None,
               backoff: bool = True, flat: bool = False) -> list[list[tuple[str, float]]]:
        """The predicted ``(type, score)`` lists: a hierarchical model's deepest confident types
        (:meth:`InferenceCore.select_paths`; ``flat``: every type at or above its threshold,
        ancestors included, as a flat model's), a flat model's types (:meth:`InferenceCore.select`)."""
        if self.core.tree is None or flat:
            check_flat_model_options(self.core.tree is not None, max_depth, backoff, flat)
            return self.core.select(self.scores, self.resolutions, threshold=threshold, top_k=top_k)
        paths = self.paths(threshold=threshold, top_k=top_k, max_depth=max_depth, backoff=backoff)
        return [[(p["product_type"], p["score"]) for p in row] for row in paths]

    def paths(self, *, threshold: float | None = None, top_k: int | None = None, max_depth: int | None = None,
              backoff: bool = True) -> list[list[dict[str, Any]]]:
        """The deepest confident types with their levels and ancestors
        (:meth:`InferenceCore.select_paths`)."""
        return self.core.select_paths(self.scores, self.resolutions, threshold=threshold, top_k=top_k,
                                      max_depth=max_depth, backoff=backoff)


@dataclass(frozen=True)
class TreeColumns:
    """A tree's structure over a model's columns: each column's level, child columns, whether
    it is a leaf, ancestor columns (top level first), and the (child columns, parent columns)
    pairs of each level, deepest first."""

    level: np.ndarray
    children: list[set[int]]
    leaf: np.ndarray
    ancestors: list[list[int]]
    lift: tuple[tuple[np.ndarray, np.ndarray], ...]


def tree_columns(tree: "LabelTree", classes: Sequence[str]) -> TreeColumns:
    """:class:`TreeColumns` of ``tree`` over ``classes``, computed once per tree and label list
    (a tree is not changed once built): a model builds an :class:`InferenceCore` on every
    ``predict`` call, and these Python loops over every node cost more than one query's
    forward pass."""
    classes = tuple(classes)
    cache = tree.__dict__.setdefault("_columns_cache", {})
    found = cache.get(classes)
    if found is not None:
        return found
    index = {c: i for i, c in enumerate(classes)}
    level = np.asarray([tree.level.get(c, 1) for c in classes], dtype=np.int64)
    children = [{index[k] for k in tree.children.get(c, []) if k in index} for c in classes]
    lift = []
    for lv in sorted(set(level.tolist()), reverse=True):
        pairs = [(i, index[p]) for i, c in enumerate(classes) if level[i] == lv
                 and (p := tree.parent.get(c)) is not None and p in index]
        if pairs:
            lift.append((np.asarray([a for a, _ in pairs]), np.asarray([b for _, b in pairs])))
    found = TreeColumns(
        level=level,
        children=children,
        # the bottom of what the model scores: a type whose children (a taxonomy file's, say) are
        # none of its columns is a leaf for back-off
        leaf=np.asarray([not kids for kids in children], dtype=bool),
        ancestors=[[index[a] for a in tree.ancestors(c) if a in index] for c in classes],
        lift=tuple(lift),
    )
    for array in (found.level, found.leaf, *(a for pair in found.lift for a in pair)):
        array.setflags(write=False)  # shared by every core of the model
    cache[classes] = found
    return found


def _label_columns(classes: list[str], labels: Sequence[str] | None) -> np.ndarray | None:
    """The columns of a network's labels among ``classes`` (None: the same labels)."""
    if labels is None or list(labels) == classes:
        return None
    index = {c: i for i, c in enumerate(classes)}
    missing = [x for x in labels if x not in index]
    if missing:
        raise ModelLoadError(f"network labels not in the model's labels: {missing[:5]}")
    return np.asarray([index[x] for x in labels], dtype=np.int64)


def torch_forward(networks: Mapping[str, Any]) -> Forward:
    """The forward pass of PyTorch networks: ``net.scores(batch)`` in evaluation mode under
    ``torch.inference_mode`` (a network in training mode is put back after)."""
    import torch

    def forward(key: str, batch: Any) -> np.ndarray:
        net = networks[key]
        was_training = net.training
        if was_training:  # (eval() and train() walk every module: not on each request of a served model)
            net.eval()
        try:
            with torch.inference_mode():
                return net.scores(batch).float().numpy()
        finally:
            if was_training:
                net.train(True)

    return forward


def encoder_tokenizers(networks: Mapping[str, Any]) -> dict[str, Tokenizer]:
    """Each network's encoder's ``tokenize``."""
    return {key: net.encoder.tokenize for key, net in networks.items()}
