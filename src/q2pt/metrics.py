"""Evaluation metrics for multi-label query -> product type prediction.

Everything here is computed over **(query, product type) pairs**: a score matrix
``y_score`` of shape ``(n_queries, n_labels)`` and a 0/1 matrix ``y_true`` of the
same shape are flattened into ``n_queries * n_labels`` binary decisions (1-D inputs
are accepted and treated the same way). The metrics are built on scikit-learn's
curves (:func:`sklearn.metrics.precision_recall_curve`,
:func:`sklearn.metrics.average_precision_score`,
:func:`sklearn.metrics.precision_recall_fscore_support`).

Definitions
-----------
*Decision rule.* A pair is predicted positive when ``score >= threshold``. All pairs
with the same score are therefore on the same side of any threshold (ties are never
split; scikit-learn's curve has one point per distinct score).

*Recall at precision p* (R@P, ``p = 0.8`` by default)::

    R@P = max { recall(t) : precision(t) >= p }     over the distinct scores t

and the reported threshold is the **highest** threshold reaching that recall (among
thresholds with the same recall, the highest one has the fewest false positives,
hence the best precision). Precision is compared with a tolerance of ``1e-12`` so that
e.g. 4/5 counts as reaching 0.8. If no threshold reaches ``p``, R@P is ``0.0``,
``reached`` is ``False`` and the threshold is ``None``. If there is no positive pair at
all, R@P is undefined: ``nan`` (``None`` in :func:`evaluate`'s JSON), with a note.

*Missing positives.* A query's true product types that are outside the model's label
space cannot be scored. Pass their number as ``n_missing``: they are never
predicted, so they do not change precision but they count in the recall denominator
(``recall = TP / (positive pairs + n_missing)``).

*PR-AUC* is scikit-learn's average precision (step-wise area, no interpolation) on the
flattened pairs, multiplied by ``P / (P + n_missing)`` when positives are missing
(missing positives are never retrieved, which scales every recall step).

*Bootstrap confidence intervals* resample **queries** (rows) with replacement and take
the percentile interval of the recomputed statistic; R@P has an exact vectorised
path (see :func:`bootstrap_ci`).

*Pooled vs as deployed.* The global R@P of :func:`evaluate` pools every locale's pairs under
**one** threshold chosen on the evaluated data itself. A model is served differently: each
locale's scores are cut at that locale's threshold calibrated on the *validation* split
(:func:`calibrate_thresholds`). :func:`recall_as_deployed` measures exactly that rule on test
data: the recall over all test pairs (missing positives count as misses) and the precision
actually reached, globally and per locale; :func:`evaluate_as_deployed` calibrates on
validation data and applies the thresholds to test data in one call. A model whose
per-locale networks score on different scales is penalised by the pooled figure, not by the
deployed one.
"""

from __future__ import annotations

import functools
import logging
import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from q2pt.errors import ConfigError, DataError

__all__ = [
    "RAtP",
    "Thresholds",
    "recall_at_precision",
    "precision_recall_at",
    "pr_auc",
    "bootstrap_ci",
    "paired_bootstrap_difference",
    "evaluate",
    "evaluate_levels",
    "calibrate_thresholds",
    "calibrate_type_thresholds",
    "calibrate_level_thresholds",
    "set_precision_recall",
    "recall_as_deployed",
    "evaluate_as_deployed",
    "thresholds_reached",
    "own_thresholds",
    "format_table",
    "format_levels",
    "to_jsonable",
]

logger = logging.getLogger(__name__)

#: Tolerance when comparing an achieved precision with the target precision.
PRECISION_TOL = 1e-12


@dataclass(frozen=True)
class RAtP:
    """Result of :func:`recall_at_precision`.

    Attributes:
        recall: the best recall among thresholds whose precision reaches the target;
            ``0.0`` if the target is never reached; ``nan`` if there are no positives.
        threshold: the score threshold achieving it (predict positive when
            ``score >= threshold``); ``None`` when not reached.
        precision: the precision actually achieved at ``threshold`` (>= target);
            ``None`` when not reached.
        reached: whether some threshold reaches the target precision.
        note: why the result is degenerate (never reached, no positives), else ``None``.
        best_precision: the highest precision any threshold achieves (``None`` when
            there is nothing to score); useful when the target is not reached.
    """

    recall: float
    threshold: float | None
    precision: float | None
    reached: bool
    note: str | None = None
    best_precision: float | None = None


# --------------------------------------------------------------------------- inputs


def _check_precision(precision: float) -> float:
    p = float(precision)
    if not (0.0 < p <= 1.0) or math.isnan(p):
        raise ConfigError(f"target precision must be in (0, 1], got {precision!r}")
    return p


def _as_arrays(y_true: Any, y_score: Any, *, two_d: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels/scores; return them as arrays (2-D if ``two_d``; 1-D becomes a column)."""
    yt = np.asarray(y_true)
    ys = np.asarray(y_score)
    if yt.shape != ys.shape:
        raise DataError(f"y_true and y_score have different shapes: {yt.shape} vs {ys.shape}")
    if yt.ndim not in (1, 2):
        raise DataError(f"y_true/y_score must be 1-D or 2-D (queries x labels), got {yt.ndim}-D")
    if yt.dtype != bool:
        if yt.size and not np.isin(yt, (0, 1)).all():
            raise DataError("y_true must contain only 0/1 (or booleans)")
        yt = yt.astype(np.int8, copy=False)
    else:
        yt = yt.astype(np.int8)
    if not np.issubdtype(ys.dtype, np.number) or np.issubdtype(ys.dtype, np.complexfloating):
        raise DataError(f"y_score must be numeric, got dtype {ys.dtype}")
    if ys.size and not np.isfinite(ys).all():
        raise DataError("y_score contains NaN or infinite values")
    if two_d and yt.ndim == 1:
        yt, ys = yt.reshape(-1, 1), ys.reshape(-1, 1)
    return yt, ys


def _as_missing(n_missing: Any, n_rows: int) -> np.ndarray | None:
    """Per-row missing-positive counts as an int64 array (or None)."""
    if n_missing is None:
        return None
    arr = np.asarray(n_missing)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise DataError(f"n_missing must have one count per query ({n_rows}), got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) and not np.all(arr == np.round(arr))):
        raise DataError("n_missing must contain whole numbers")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise DataError("n_missing must not be negative")
    return arr


def _check_missing_scalar(n_missing: Any) -> int:
    m = int(n_missing)
    if m != n_missing or m < 0:
        raise DataError(f"n_missing must be a non-negative integer, got {n_missing!r}")
    return m


# --------------------------------------------------------------------------- R@P


def _curve(yt: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's precision/recall curve without the final (P=1, R=0) point.

    Returns (precision, recall_among_scored, thresholds), thresholds ascending; entry i
    describes predicting ``score >= thresholds[i]``.
    """
    from sklearn.metrics import precision_recall_curve

    prec, rec, thr = precision_recall_curve(yt.ravel(), ys.ravel())
    return prec[:-1], rec[:-1], thr


def recall_at_precision(
    y_true: Any, y_score: Any, precision: float = 0.8, n_missing: int = 0
) -> RAtP:
    """Recall at precision ``precision`` over all (query, product type) pairs.

    Args:
        y_true: 0/1 array ``(n, L)`` (or flat) of true pairs.
        y_score: scores of the same shape.
        precision: target precision ``p`` in (0, 1].
        n_missing: positive pairs the model cannot score (labels outside its label
            space); they count in the recall denominator.

    Returns:
        :class:`RAtP`. See the module docstring for the exact definition, ties and
        the degenerate cases (no positives -> ``nan``; never reached -> ``0.0``).
    """
    p = _check_precision(precision)
    m = _check_missing_scalar(n_missing)
    yt, ys = _as_arrays(y_true, y_score)
    n_pos = int(yt.sum())
    if n_pos == 0:
        if m == 0:
            return RAtP(math.nan, None, None, False, "no positives")
        best = 0.0 if yt.size else None
        return RAtP(0.0, None, None, False,
                    f"no scoreable positives ({m} outside the label space): recall 0", best)
    prec, rec, thr = _curve(yt, ys)
    best = float(prec.max())
    ok = np.flatnonzero(prec >= p - PRECISION_TOL)
    if ok.size == 0:
        return RAtP(0.0, None, None, False,
                    f"precision {p:g} never reached: recall 0 (best precision {best:.3g})", best)
    # recall is non-increasing along the ascending thresholds: the first qualifying
    # index has the maximal recall; take the last index with that same recall.
    i0 = ok[0]
    i1 = int(np.flatnonzero(rec == rec[i0])[-1])
    recall = float(rec[i1]) * n_pos / (n_pos + m)
    return RAtP(recall, float(thr[i1]), float(prec[i1]), True, None, best)


def precision_recall_at(
    y_true: Any, y_score: Any, threshold: float, n_missing: int = 0
) -> tuple[float, float, float]:
    """Precision, recall and F1 of the rule ``score >= threshold`` over all pairs.

    Computed with :func:`sklearn.metrics.precision_recall_fscore_support`; the
    ``n_missing`` unscoreable positives are added as positive pairs that are never
    predicted. Undefined values (no prediction -> precision; no positive -> recall)
    are ``nan``.
    """
    from sklearn.metrics import precision_recall_fscore_support

    m = _check_missing_scalar(n_missing)
    yt, ys = _as_arrays(y_true, y_score)
    t = yt.ravel()
    pred = (ys.ravel() >= threshold).astype(np.int8)
    if m:
        t = np.concatenate([t, np.ones(m, np.int8)])
        pred = np.concatenate([pred, np.zeros(m, np.int8)])
    if t.size == 0:
        return math.nan, math.nan, math.nan
    p, r, f, _ = precision_recall_fscore_support(
        t, pred, average="binary", pos_label=1, labels=[0, 1], zero_division=np.nan
    )
    return float(p), float(r), float(f)


def pr_auc(y_true: Any, y_score: Any, n_missing: int = 0) -> float:
    """Area under the precision-recall curve over all pairs.

    scikit-learn's :func:`~sklearn.metrics.average_precision_score` on the flattened
    pairs (``sum_k (R_k - R_{k-1}) P_k``, no interpolation), scaled by
    ``P / (P + n_missing)``. ``nan`` when there is no positive pair.
    """
    from sklearn.metrics import average_precision_score

    m = _check_missing_scalar(n_missing)
    yt, ys = _as_arrays(y_true, y_score)
    n_pos = int(yt.sum())
    if n_pos == 0:
        return 0.0 if m else math.nan
    ap = float(average_precision_score(yt.ravel(), ys.ravel()))
    return ap * n_pos / (n_pos + m)


def _best_f1_threshold(yt: np.ndarray, ys: np.ndarray, n_missing: int) -> tuple[float, float, float, float]:
    """(threshold, f1, precision, recall) of the threshold with the best F1 (highest on ties)."""
    prec, rec, thr = _curve(yt, ys)
    n_pos = int(yt.sum())
    rec = rec * n_pos / (n_pos + n_missing)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    i = int(np.flatnonzero(f1 == f1.max())[-1])
    return float(thr[i]), float(f1[i]), float(prec[i]), float(rec[i])


# --------------------------------------------------------------------------- bootstrap


def _fast_rap_target(fn: Callable) -> float | None:
    """The target precision if ``fn`` is recall_at_precision (or a partial fixing only
    ``precision``), else None."""
    if fn is recall_at_precision:
        return 0.8
    if isinstance(fn, functools.partial) and fn.func is recall_at_precision:
        if fn.args or set(fn.keywords) - {"precision"}:
            return None
        return _check_precision(fn.keywords.get("precision", 0.8))
    return None


class _RAtPResampler:
    """Exact R@P of query-bootstrap resamples without materialising them.

    A resample is a vector ``w`` of row multiplicities; every pair of row r then weighs
    ``w[r]``. The pairs are sorted by score once; per resample the weighted true- and
    false-positive counts are cumulative sums over that order, read at the end of each
    group of equal scores (so ties stay together), which is exactly the precision/recall
    curve of the materialised resample.

    Speed-up (exact): only the *head* of the order (scores >= a cut) is summed. A
    threshold below the cut keeps at least ``FP_b(cut)`` false positives and at most all
    ``P_b`` scored positives, so its precision is at most ``P_b / (P_b + FP_b(cut))``; when
    that bound is below the target, no threshold under the cut can qualify and the head
    gives the exact answer. Otherwise the resample is recomputed on all pairs scored at or
    above the lowest positive score (lower thresholds add only false positives).
    """

    def __init__(self, yt: np.ndarray, ys: np.ndarray, precision: float, missing: np.ndarray | None):
        self.p = precision
        n, L = yt.shape
        self.n = n
        self.pos_per_row = yt.sum(axis=1).astype(np.int64)
        self.missing = missing
        flat_y = yt.ravel()
        flat_s = ys.ravel()
        self.any_pos = bool(flat_y.any())
        if not self.any_pos:
            return
        min_pos = flat_s[flat_y == 1].min()
        keep = np.flatnonzero(flat_s >= min_pos)
        order = keep[np.argsort(-flat_s[keep], kind="stable")]
        s_sorted = flat_s[order]
        self.rows = (order // L).astype(np.int64)
        self.y = flat_y[order].astype(np.int64)
        self.ends = np.append(np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1)
        # head: enough false positives that the bound usually excludes the rest
        need = 2.0 * flat_y.sum() * (1.0 - precision) / precision
        fp_cum = np.cumsum(1 - self.y)[self.ends]
        j = int(np.searchsorted(fp_cum, need, side="left"))
        if j >= self.ends.size - 1:
            self.head = self.ends.size  # the head is everything
        else:
            self.head = j + 1
        self.head_len = int(self.ends[self.head - 1]) + 1

    def _recall(self, w: np.ndarray, n_groups: int, length: int, denom: int) -> tuple[float, int]:
        pw = w[self.rows[:length]]
        tpw = pw * self.y[:length]
        tp = np.cumsum(tpw)[self.ends[:n_groups]]
        fp = np.cumsum(pw - tpw)[self.ends[:n_groups]]
        predicted = tp + fp
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = (predicted > 0) & (tp >= (self.p - PRECISION_TOL) * predicted)
        best_tp = int(tp[ok].max()) if ok.any() else 0
        return best_tp / denom, int(fp[-1]) if fp.size else 0

    def __call__(self, idx: np.ndarray) -> float:
        w = np.bincount(idx, minlength=self.n).astype(np.int64)
        p_b = int(w @ self.pos_per_row)
        m_b = int(w @ self.missing) if self.missing is not None else 0
        if p_b == 0:
            return 0.0 if m_b else math.nan
        denom = p_b + m_b
        rec, fp_cut = self._recall(w, self.head, self.head_len, denom)
        if self.head == self.ends.size:
            return rec
        if p_b < (self.p - PRECISION_TOL) * (p_b + fp_cut):
            return rec  # bound: nothing below the cut reaches the target precision
        rec, _ = self._recall(w, self.ends.size, self.rows.size, denom)
        return rec


def bootstrap_ci(
    fn: Callable[..., Any],
    y_true: Any,
    y_score: Any,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    n_missing: Any = None,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` confidence interval of ``fn`` over queries.

    Rows (queries) are resampled with replacement ``n_boot`` times with
    ``numpy.random.default_rng(seed)`` (resample b draws ``rng.integers(0, n, n)``), the
    statistic is recomputed on each resample and ``(lo, hi)`` are its ``alpha/2`` and
    ``1 - alpha/2`` quantiles. Resamples where the statistic is ``nan`` (e.g. no
    positives) are ignored; if all are, ``(nan, nan)``.

    Args:
        fn: ``fn(y_true, y_score) -> float`` (an :class:`RAtP` result is read as its
            recall). When ``fn`` is :func:`recall_at_precision` or
            ``functools.partial(recall_at_precision, precision=p)``, an exact vectorised
            path is used (same resamples, same values, far faster).
        y_true, y_score: ``(n, L)`` arrays; 1-D arrays are n queries with one label.
        n_missing: optional per-query counts of unscoreable positives (resampled with the
            queries and passed to ``fn`` as ``n_missing=<total>``).
    """
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    yt, ys = _as_arrays(y_true, y_score, two_d=True)
    missing = _as_missing(n_missing, yt.shape[0])
    n = yt.shape[0]
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot, dtype=np.float64)
    target = _fast_rap_target(fn)
    if target is not None:
        resampler = _RAtPResampler(yt, ys, target, missing)
        if not resampler.any_pos:
            for b in range(n_boot):
                idx = rng.integers(0, n, n)
                stats[b] = 0.0 if missing is not None and missing[idx].sum() else math.nan
        else:
            for b in range(n_boot):
                stats[b] = resampler(np.asarray(rng.integers(0, n, n)))
    else:
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            if missing is None:
                value = fn(yt[idx], ys[idx])
            else:
                value = fn(yt[idx], ys[idx], n_missing=int(missing[idx].sum()))
            stats[b] = value.recall if isinstance(value, RAtP) else float(value)
    finite = stats[~np.isnan(stats)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_bootstrap_difference(
    a: tuple[Any, Any, Any],
    b: tuple[Any, Any, Any],
    precision: float = 0.8,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` interval of ``R@P(b) - R@P(a)`` on the same queries.

    ``a`` and ``b`` are ``(y_true, y_score, n_missing)`` of two models on the same ``n`` rows
    (their label spaces may differ: each has its own ``y_true`` columns and per-row missing
    counts, or None). Every resample draws one set of rows (``rng.integers(0, n, n)`` with
    ``numpy.random.default_rng(seed)``) and computes both models' R@P on it, so the interval
    is of the paired difference: the rows' own difficulty cancels. Resamples where either
    R@P is undefined are ignored; if all are, ``(nan, nan)``.
    """
    p = _check_precision(precision)
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    sides = []
    for y_true, y_score, n_missing in (a, b):
        yt, ys = _as_arrays(y_true, y_score, two_d=True)
        sides.append((yt, _RAtPResampler(yt, ys, p, _as_missing(n_missing, yt.shape[0]))))
    n = sides[0][0].shape[0]
    if sides[1][0].shape[0] != n:
        raise DataError(f"paired bootstrap needs the same rows: got {n} and {sides[1][0].shape[0]}")
    if n == 0:
        return math.nan, math.nan

    def value(resampler: _RAtPResampler, idx: np.ndarray) -> float:
        if resampler.any_pos:
            return resampler(idx)
        missing = resampler.missing
        return 0.0 if missing is not None and missing[idx].sum() else math.nan

    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot, dtype=np.float64)
    for i in range(n_boot):
        idx = np.asarray(rng.integers(0, n, n))
        stats[i] = value(sides[1][1], idx) - value(sides[0][1], idx)
    finite = stats[~np.isnan(stats)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- evaluate


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays into Python types and NaN/inf into None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite_or_none(obj)
    return obj


def locale_seed(seed: int, locale: str) -> list[int]:
    """Seed for one locale's bootstrap: depends on the seed and the locale name only."""
    return [int(seed), zlib.crc32(locale.encode("utf-8"))]


def _entry(
    yt: np.ndarray,
    ys: np.ndarray,
    missing: np.ndarray | None,
    p: float,
    bootstrap: int,
    seed: Any,
) -> dict[str, Any]:
    m = int(missing.sum()) if missing is not None else 0
    r = recall_at_precision(yt, ys, p, n_missing=m)
    n_pos = int(yt.sum())
    entry: dict[str, Any] = {
        "r_at_p": r.recall,
        "threshold": r.threshold,
        "reached": r.reached,
        "precision_at_threshold": r.precision,
        "pr_auc": pr_auc(yt, ys, n_missing=m),
        "n_queries": int(yt.shape[0]),
        "n_positives": n_pos + m,
        "n_missing": m,
    }
    if bootstrap > 0:
        lo, hi = bootstrap_ci(
            functools.partial(recall_at_precision, precision=p), yt, ys,
            n_boot=bootstrap, seed=seed, n_missing=missing,
        )
        entry["r_at_p_ci"] = [lo, hi]
    entry["note"] = r.note
    return to_jsonable(entry)


def evaluate(
    y_true: Any,
    y_score: Any,
    locales: Sequence[str],
    precision: float = 0.8,
    bootstrap: int = 0,
    seed: int = 0,
    n_missing: Any = None,
) -> dict[str, Any]:
    """R@P, PR-AUC and counts pooled over all locales and per locale.

    Args:
        y_true: 0/1 array ``(n, L)``; y_score: scores ``(n, L)``.
        locales: the locale of each query (length n).
        precision: target precision.
        bootstrap: number of query resamples for 95% CIs of R@P (0 = none). Global CIs
            resample all queries (seed ``seed``); each locale resamples its own queries
            with a seed derived from ``seed`` and the locale name.
        n_missing: optional per-query counts of positives outside the label space.

    Returns:
        JSON-serialisable ``{"global": entry, "locales": {LOC: entry}, "config": {...}}``.
        Each entry has ``r_at_p``, ``threshold``, ``reached``, ``precision_at_threshold``,
        ``pr_auc``, ``n_queries``, ``n_positives`` (including missing), ``n_missing``,
        ``note`` and, with bootstrap, ``r_at_p_ci`` ``[lo, hi]``. Undefined values are
        ``None``. The global R@P pools all pairs: it is *not* the mean of the locales'.
    """
    p = _check_precision(precision)
    if int(bootstrap) < 0:
        raise ConfigError(f"bootstrap must be >= 0, got {bootstrap}")
    yt, ys = _as_arrays(y_true, y_score, two_d=True)
    locs = np.asarray([str(x) for x in locales], dtype=object)
    if locs.shape[0] != yt.shape[0]:
        raise DataError(f"got {locs.shape[0]} locales for {yt.shape[0]} queries")
    missing = _as_missing(n_missing, yt.shape[0])
    result: dict[str, Any] = {
        "global": _entry(yt, ys, missing, p, int(bootstrap), int(seed)),
        "locales": {},
        "config": {"precision": p, "bootstrap": int(bootstrap), "seed": int(seed),
                   "ci_level": 0.95 if bootstrap else None},
    }
    for loc in sorted(set(locs.tolist())):
        rows = locs == loc
        result["locales"][loc] = _entry(
            yt[rows], ys[rows], missing[rows] if missing is not None else None,
            p, int(bootstrap), locale_seed(seed, loc),
        )
    return result


def evaluate_levels(
    y_true: Any,
    y_score: Any,
    locales: Sequence[str],
    levels: Sequence[int] | np.ndarray,
    precision: float = 0.8,
    bootstrap: int = 0,
    seed: int = 0,
    n_missing: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` of each level of a hierarchical model over its own labels:
    ``{level: result}``; ``levels[j]`` is label ``j``'s level, ``n_missing[level]`` the per-row
    counts of that level's positives outside the label space."""
    lv = np.asarray(levels, dtype=np.int64)
    yt, ys = _as_arrays(y_true, y_score, two_d=True)
    return {str(level): evaluate(yt[:, lv == level], ys[:, lv == level], locales, precision=precision,
                                 bootstrap=bootstrap, seed=seed, n_missing=(n_missing or {}).get(level))
            for level in sorted(set(lv.tolist()))}


# --------------------------------------------------------------------------- thresholds


class Thresholds(dict):
    """``{"global": t, LOC: t}`` (a plain dict for JSON) plus ``details``: for each key,
    how its threshold was chosen; ``global_fallback`` is True when the global target
    precision was never reached and the best-F1 threshold was used instead."""

    details: dict[str, str]
    global_fallback: bool


def calibrate_thresholds(
    y_true: Any,
    y_score: Any,
    locales: Sequence[str],
    precision: float = 0.8,
    min_positives: int = 20,
    n_missing: Any = None,
) -> Thresholds:
    """Per-locale decision thresholds reaching ``precision`` on validation data.

    * ``"global"``: the R@P threshold over all pairs. If the target precision is never
      reached, the threshold with the best F1 is used instead, ``global_fallback`` is set,
      its ``details`` say so and a warning is logged.
    * each locale: its own R@P threshold when it has at least ``min_positives`` scored
      positive pairs and reaches the target; otherwise the global threshold (the reason
      is in ``details[LOC]``).

    Raises:
        DataError: if there is no positive pair at all (nothing to calibrate on).
    """
    p = _check_precision(precision)
    yt, ys = _as_arrays(y_true, y_score, two_d=True)
    locs = np.asarray([str(x) for x in locales], dtype=object)
    if locs.shape[0] != yt.shape[0]:
        raise DataError(f"got {locs.shape[0]} locales for {yt.shape[0]} queries")
    missing = _as_missing(n_missing, yt.shape[0])
    if int(yt.sum()) == 0:
        raise DataError("no positive (query, product type) pair: cannot calibrate thresholds")
    out = Thresholds()
    out.details = {}
    out.global_fallback = False
    m = int(missing.sum()) if missing is not None else 0
    g = recall_at_precision(yt, ys, p, n_missing=m)
    if g.reached:
        out["global"] = g.threshold
        out.details["global"] = f"precision {g.precision:.3f} >= {p:g}, recall {g.recall:.3f}"
    else:
        t, f1, pr, rc = _best_f1_threshold(yt, ys, m)
        out["global"] = t
        out.global_fallback = True
        out.details["global"] = (
            f"precision {p:g} never reached; best-F1 threshold used "
            f"(F1 {f1:.3f}, precision {pr:.3f}, recall {rc:.3f})"
        )
        logger.warning("global %s", out.details["global"])
    for loc in sorted(set(locs.tolist())):
        rows = locs == loc
        n_pos = int(yt[rows].sum())
        if n_pos < min_positives:
            out[loc] = out["global"]
            # (the pairs it can score: a type never seen in training is not counted here, as it is in n_positives)
            out.details[loc] = f"global threshold: {n_pos} scoreable positives < {min_positives}"
            continue
        lm = int(missing[rows].sum()) if missing is not None else 0
        r = recall_at_precision(yt[rows], ys[rows], p, n_missing=lm)
        if r.reached:
            out[loc] = r.threshold
            out.details[loc] = f"precision {r.precision:.3f} >= {p:g}, recall {r.recall:.3f}"
        else:
            out[loc] = out["global"]
            out.details[loc] = f"global threshold: precision {p:g} never reached"
    return out


# --------------------------------------------------------------------------- as deployed


def _deployed_entry(
    tp: np.ndarray,
    pos: np.ndarray,
    pred: np.ndarray,
    missing: np.ndarray,
    p: float,
    bootstrap: int,
    seed: Any,
) -> dict[str, Any]:
    """Counts, recall and precision of one group of rows from per-row counts (and CIs)."""
    n_tp, n_pos, n_pred, m = int(tp.sum()), int(pos.sum()), int(pred.sum()), int(missing.sum())
    denom = n_pos + m
    recall = n_tp / denom if denom else math.nan
    precision = n_tp / n_pred if n_pred else math.nan
    f1 = (2 * precision * recall / (precision + recall)
          if denom and n_pred and precision + recall > 0 else (0.0 if denom and n_pred else math.nan))
    entry: dict[str, Any] = {
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "reached": bool(n_pred and precision >= p - PRECISION_TOL),
        "n_queries": int(tp.shape[0]),
        "n_positives": denom,
        "n_missing": m,
        "n_predicted": n_pred,
        "n_true_positives": n_tp,
    }
    if bootstrap > 0:
        entry["recall_ci"], entry["precision_ci"] = _deployed_ci(tp, pos + missing, pred, bootstrap, seed)
    if not denom:
        entry["note"] = "no positives"
    elif not n_pred:
        entry["note"] = "nothing predicted at the calibrated threshold: recall 0, precision undefined"
    elif not entry["reached"]:
        entry["note"] = f"precision {precision:.3f} on test is below the target {p:g}"
    else:
        entry["note"] = None
    return entry


def _deployed_ci(tp: np.ndarray, pos: np.ndarray, pred: np.ndarray, n_boot: int,
                 seed: Any) -> tuple[list[float], list[float]]:
    """Percentile 95% CIs of recall and precision over query resamples (the same resamples
    as :func:`bootstrap_ci` with the same seed)."""
    n = tp.shape[0]
    if n == 0:
        return [math.nan, math.nan], [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    rec = np.empty(n_boot)
    prec = np.empty(n_boot)
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n)
        t, d, k = int(w @ tp), int(w @ pos), int(w @ pred)
        rec[b] = t / d if d else math.nan
        prec[b] = t / k if k else math.nan

    def interval(x: np.ndarray) -> list[float]:
        x = x[~np.isnan(x)]
        if x.size == 0:
            return [math.nan, math.nan]
        lo, hi = np.quantile(x, [0.025, 0.975])
        return [float(lo), float(hi)]

    return interval(rec), interval(prec)


def recall_as_deployed(
    y_true: Any,
    y_score: Any,
    locales: Sequence[str],
    thresholds: Mapping[str, float],
    precision: float = 0.8,
    *,
    threshold_locales: Sequence[str] | None = None,
    n_missing: Any = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall and precision of the per-locale thresholds a model is served with.

    Row ``r`` is predicted positive for a label when ``score >= t(r)``, where ``t(r)`` is
    ``thresholds[threshold_locales[r]]`` (default: the row's own locale), or
    ``thresholds["global"]`` for a locale without its own threshold -- the rule of
    :meth:`q2pt.models.Q2PTModel.threshold_for`. The thresholds are *given* (calibrated on
    validation data, see :func:`calibrate_thresholds` / :func:`evaluate_as_deployed`); nothing
    is tuned on the evaluated data.

    Recall is over every (query, label) pair: ``TP / (positive pairs + n_missing)`` (positives
    outside the label space count as misses, as in :func:`recall_at_precision`); precision is
    ``TP / predicted pairs`` (``nan`` when nothing is predicted). ``precision`` is the target
    the thresholds were calibrated for: ``reached`` says whether the test precision meets it.

    Returns:
        JSON-serialisable ``{"global": entry, "locales": {LOC: entry}, "config": {...}}``. Each
        entry has ``recall``, ``precision``, ``f1``, ``reached``, ``n_queries``,
        ``n_positives`` (including missing), ``n_missing``, ``n_predicted``,
        ``n_true_positives``, ``note`` and, with ``bootstrap`` resamples, ``recall_ci`` and
        ``precision_ci`` (95% percentile intervals over queries; global seed ``seed``, each
        locale the seed :func:`evaluate` uses, so the resamples are the pooled CIs'). Locale
        entries also have ``threshold`` (the one applied to its rows; ``None`` if they used
        several). Undefined values are ``None``.
    """
    p = _check_precision(precision)
    if int(bootstrap) < 0:
        raise ConfigError(f"bootstrap must be >= 0, got {bootstrap}")
    yt, ys = _as_arrays(y_true, y_score, two_d=True)
    n = yt.shape[0]
    locs = np.asarray([str(x) for x in locales], dtype=object)
    if locs.shape[0] != n:
        raise DataError(f"got {locs.shape[0]} locales for {n} queries")
    tlocs = locs if threshold_locales is None else np.asarray([str(x) for x in threshold_locales], dtype=object)
    if tlocs.shape[0] != n:
        raise DataError(f"got {tlocs.shape[0]} threshold locales for {n} queries")
    if "global" not in thresholds:
        raise ConfigError("thresholds must have a 'global' entry (the fallback of locales without their own)")
    table = {str(k): float(v) for k, v in thresholds.items()}
    if not all(math.isfinite(v) for v in table.values()):
        raise ConfigError("thresholds must be finite numbers")
    cut = np.asarray([table.get(t, table["global"]) for t in tlocs.tolist()], dtype=np.float64)
    missing = _as_missing(n_missing, n)
    if missing is None:
        missing = np.zeros(n, dtype=np.int64)
    predicted = ys >= cut[:, None] if n else np.zeros(yt.shape, dtype=bool)
    pos = yt.sum(axis=1).astype(np.int64)
    pred = predicted.sum(axis=1).astype(np.int64)
    tp = (predicted & (yt == 1)).sum(axis=1).astype(np.int64)
    b = int(bootstrap)
    result: dict[str, Any] = {
        "global": _deployed_entry(tp, pos, pred, missing, p, b, int(seed)),
        "locales": {},
        "config": {"precision": p, "bootstrap": b, "seed": int(seed), "ci_level": 0.95 if b else None,
                   "rule": "score >= the threshold of the row's locale (global threshold if it has none)"},
    }
    for loc in sorted(set(locs.tolist())):
        rows = locs == loc
        entry = _deployed_entry(tp[rows], pos[rows], pred[rows], missing[rows], p, b, locale_seed(seed, loc))
        used = np.unique(cut[rows])
        entry["threshold"] = float(used[0]) if used.size == 1 else None
        result["locales"][loc] = entry
    return to_jsonable(result)


def calibrate_type_thresholds(
    y_true: Any,
    y_score: Any,
    locales: Sequence[str],
    classes: Sequence[str],
    precision: float = 0.8,
    min_positives: int = 20,
) -> dict[str, dict[str, float]]:
    """Per-(locale, product type) thresholds where the validation data suffices:
    ``{locale: {type: t}}`` for each pair of a locale and a type with at least
    ``min_positives`` positive validation queries whose own R@P threshold (over that type's
    scores in that locale) reaches ``precision``. Every other (locale, type) backs off to its
    locale's threshold (:func:`calibrate_thresholds`), so they are left out."""
    p = _check_precision(precision)
    yt, ys = _as_arrays(y_true, y_score, two_d=True)
    locs = np.asarray([str(x) for x in locales], dtype=object)
    if locs.shape[0] != yt.shape[0]:
        raise DataError(f"got {locs.shape[0]} locales for {yt.shape[0]} queries")
    out: dict[str, dict[str, float]] = {}
    for loc in sorted(set(locs.tolist())):
        rows = np.flatnonzero(locs == loc)
        support = yt[rows].sum(axis=0)
        for col in np.flatnonzero(support >= min_positives):
            r = recall_at_precision(yt[rows, col], ys[rows, col], p)
            if r.reached and r.threshold is not None:
                out.setdefault(loc, {})[str(classes[int(col)])] = float(r.threshold)
    return out


def calibrate_level_thresholds(
    y_true: Any,
    y_score: Any,
    locales: Sequence[str],
    levels: Sequence[int],
    precision: float = 0.8,
    min_positives: int = 20,
) -> dict[str, dict[str, float | None]]:
    """A hierarchical model's thresholds per level of its tree: ``{"global": {level: t},
    LOCALE: {level: t}}``. ``levels[j]`` is label ``j``'s level. Each level's threshold is the
    R@P threshold over that level's pairs (every locale pooled); a locale gets its own for a
    level where it has at least ``min_positives`` positive pairs at that level and reaches
    ``precision``; with fewer it backs off to the level's. A level that never reaches the
    target is left out (its types back off to the locale's threshold); a locale with enough
    positive pairs at a level that never reach it gets ``None`` there: it is cut at the level's
    threshold, but not counted as at the target (as a flat model's locale whose own pairs
    never reach it, :func:`thresholds_reached`)."""
    p = _check_precision(precision)
    yt, ys = _as_arrays(y_true, y_score, two_d=True)
    lv = np.asarray(levels, dtype=np.int64)
    if lv.shape[0] != yt.shape[1]:
        raise DataError(f"got {lv.shape[0]} levels for {yt.shape[1]} labels")
    locs = np.asarray([str(x) for x in locales], dtype=object)
    out: dict[str, dict[str, float | None]] = {"global": {}}
    for level in sorted(set(lv.tolist())):
        cols = np.flatnonzero(lv == level)
        r = recall_at_precision(yt[:, cols], ys[:, cols], p)
        if r.reached and r.threshold is not None:
            out["global"][str(level)] = float(r.threshold)
        for loc in sorted(set(locs.tolist())):
            rows = np.flatnonzero(locs == loc)
            sub_y = yt[np.ix_(rows, cols)]
            if sub_y.sum() < min_positives:
                continue
            r = recall_at_precision(sub_y, ys[np.ix_(rows, cols)], p)
            out.setdefault(loc, {})[str(level)] = (float(r.threshold) if r.reached and r.threshold is not None
                                                   else None)
    return out


def set_precision_recall(
    true_sets: Sequence[set[str]],
    predicted_sets: Sequence[set[str]],
    locales: Sequence[str],
    precision: float = 0.8,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    covered: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Micro precision and recall of predicted label *sets* against true ones, globally and
    per locale, with percentile bootstrap CIs over queries: the hierarchical precision and
    recall of a tree model when both sets hold their ancestors (an answer of the right parent
    scores the levels it got right). Also ``coverage``: the share of queries ``covered`` (given:
    e.g. the queries with an answer at a threshold that reached the precision target), or by
    default the share of queries that got any
    type. Entries as :func:`recall_as_deployed`'s."""
    p = _check_precision(precision)
    n = len(true_sets)
    if len(predicted_sets) != n or len(locales) != n:
        raise DataError(f"got {n} true sets, {len(predicted_sets)} predicted sets and {len(locales)} locales")
    tp = np.asarray([len(t & q) for t, q in zip(true_sets, predicted_sets)], dtype=np.int64)
    pos = np.asarray([len(t) for t in true_sets], dtype=np.int64)
    pred = np.asarray([len(q) for q in predicted_sets], dtype=np.int64)
    zero = np.zeros(n, dtype=np.int64)
    locs = np.asarray([str(x) for x in locales], dtype=object)
    cover = pred > 0 if covered is None else np.asarray(covered, dtype=bool)
    if cover.shape != (n,):
        raise DataError(f"got {cover.shape[0] if cover.ndim else 0} coverage flags for {n} queries")

    def entry(rows: np.ndarray, s: Any) -> dict[str, Any]:
        out = _deployed_entry(tp[rows], pos[rows], pred[rows], zero[rows], p, int(bootstrap), s)
        out["coverage"] = float(cover[rows].mean()) if rows.size else None
        return out

    result: dict[str, Any] = {"global": entry(np.arange(n), int(seed)), "locales": {},
                              "config": {"precision": p, "bootstrap": int(bootstrap), "seed": int(seed)}}
    for loc in sorted(set(locs.tolist())):
        result["locales"][loc] = entry(np.flatnonzero(locs == loc), locale_seed(seed, loc))
    return to_jsonable(result)


#: the threshold every locale gets when there is nothing to calibrate on
DEFAULT_THRESHOLD = 0.5


def stop_metric_label(name: str, precision: float) -> str:
    """How logs and the model card name an early-stopping metric (``train.stop_metric``
    resolved): "PR-AUC" for "pr_auc", else "R@P80" (at ``precision``)."""
    return "PR-AUC" if name == "pr_auc" else f"R@P{precision * 100:g}"


def thresholds_reached(details: Mapping[str, str]) -> dict[str, bool]:
    """Per key of :func:`thresholds_or_default`'s ``details``: whether its threshold reached the
    precision target on the validation data (a locale on the global threshold for lack of
    positives: whether the global one did; a locale whose own pairs never reached it, the
    best-F1 fallback and the default 0.5: not)."""
    def own(text: str) -> bool:
        return text.startswith("precision ") and " >= " in text  # calibrate_thresholds' wording

    def locale(text: str) -> bool:
        if text.startswith("global threshold"):  # too few positives: the global one's result; its own
            return glob and "never reached" not in text  # data never reaching the target: not at the target
        return own(text)

    glob = own(str(details.get("global", "")))
    return {str(k): glob if k == "global" else locale(str(v)) for k, v in details.items()}


def own_thresholds(details: Mapping[str, str]) -> list[str]:
    """The locales of :func:`thresholds_or_default`'s ``details`` that got a threshold of their
    own (the others use the global one: too few positives, or their own never reached the
    target)."""
    return sorted(str(k) for k, v in details.items() if k != "global" and not str(v).startswith("global threshold"))


def thresholds_or_default(
    y_true: Any, y_score: Any, locales: Sequence[str], precision: float = 0.8, *, min_positives: int = 20,
    n_missing: Any = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """:func:`calibrate_thresholds` as ``(thresholds, details)``, or ``{"global": 0.5}`` with
    the reason when there is no row or no positive pair to calibrate on (other bad input still
    raises). What training, the experiment's baselines and the as-deployed measure all use."""
    yt = np.asarray(y_true)
    if yt.size == 0 or len(locales) == 0:
        return {"global": DEFAULT_THRESHOLD}, {"global": "default 0.5: no validation data to calibrate on"}
    if not yt.any():
        return {"global": DEFAULT_THRESHOLD}, {"global": "default 0.5: no positive (query, product type) pair "
                                                         "in the validation data"}
    cal = calibrate_thresholds(yt, y_score, locales, precision=precision, min_positives=min_positives,
                               n_missing=n_missing)
    return {k: float(v) for k, v in cal.items()}, dict(cal.details)


def evaluate_as_deployed(
    valid_true: Any,
    valid_score: Any,
    valid_locales: Sequence[str],
    test_true: Any,
    test_score: Any,
    test_locales: Sequence[str],
    precision: float = 0.8,
    *,
    min_positives: int = 20,
    valid_missing: Any = None,
    test_missing: Any = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Calibrate per-locale thresholds on validation scores, then measure them on test scores.

    :func:`calibrate_thresholds` on the validation split (each locale its own R@P threshold,
    the global one where a locale has fewer than ``min_positives`` positives or never reaches
    the target), then :func:`recall_as_deployed` on the test split. Returns the latter's dict
    plus ``thresholds`` and ``threshold_details``. Without any validation positive the
    thresholds default to 0.5 (as :func:`q2pt.calibration.calibrate_thresholds` does), and the
    details say so.
    """
    thresholds, details = thresholds_or_default(valid_true, valid_score, valid_locales, precision,
                                                min_positives=min_positives, n_missing=valid_missing)
    result = recall_as_deployed(test_true, test_score, test_locales, thresholds, precision,
                                n_missing=test_missing, bootstrap=bootstrap, seed=seed)
    result["thresholds"] = thresholds
    result["threshold_details"] = details
    return result


# --------------------------------------------------------------------------- table


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(result: Mapping[str, Any]) -> str:
    """A plain-text table of an :func:`evaluate` result: one row per locale, then global.
    "threshold" is where these rows reach the precision target (what R@P is read at), not
    the threshold the model serves; where the result has them, the recall and precision at the
    served (calibrated) thresholds follow as "deployed R" / "deployed P"."""
    p = (result.get("config") or {}).get("precision", 0.8)
    rap = f"R@P{p * 100:g}"
    entries = [*result.get("locales", {}).values(), result["global"]]
    deployed = any(isinstance(e.get("calibrated"), Mapping) for e in entries)
    with_ci = any(e.get("r_at_p_ci") for e in entries)  # (bootstrap CIs asked for)
    header = ["locale", "queries", "positives", rap, f"{rap} threshold", "PR-AUC"] + (["95% CI"] if with_ci else [])
    header += ["deployed R", "deployed P"] if deployed else []
    header.append("note")
    rows: list[list[str]] = []

    def row(name: str, e: Mapping[str, Any]) -> list[str]:
        ci = e.get("r_at_p_ci")
        ci_s = "-" if not ci or ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        cells = [name, str(e["n_queries"]), str(e["n_positives"]), _fmt(e["r_at_p"]),
                 _fmt(e["threshold"]), _fmt(e["pr_auc"])] + ([ci_s] if with_ci else [])
        if deployed:
            cal = e.get("calibrated") or {}
            cells += [_fmt(cal.get("recall")), _fmt(cal.get("precision"))]
        return [*cells, e.get("note") or ""]

    for loc, e in result.get("locales", {}).items():
        rows.append(row(loc, e))
    rows.append(row("global", result["global"]))
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header) - 1)]
    lines = []
    for k, r in enumerate([header, *rows]):
        if k == len(rows):  # separator before the global row
            lines.append("-" * (sum(widths) + 2 * len(widths) + 4))
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(widths))]
        lines.append(("  ".join(cells) + "  " + r[-1]).rstrip())
    return "\n".join(lines)


def format_levels(result: Mapping[str, Any]) -> str:
    """A hierarchical model's figures per level (global R@P with its CI), then its
    hierarchical precision / recall and coverage, as plain text."""
    p = (result.get("config") or {}).get("precision", 0.8)
    lines = [f"per level (each over its own types):  level  queries  positives  R@P{p * 100:g}  95% CI"]
    for level, entry in (result.get("levels") or {}).items():
        g = entry["global"]
        ci = g.get("r_at_p_ci")
        ci_s = "-" if not ci or ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        lines.append(f"{'':38}{level:>5}  {g['n_queries']:>7}  {g['n_positives']:>9}  {_fmt(g['r_at_p'])}  {ci_s}")
    leaf = (result.get("leaf") or {}).get("global")
    if leaf:  # the bottom types, at any depth
        ci = leaf.get("r_at_p_ci")
        ci_s = "-" if not ci or ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        lines.append(f"{'':38}{'leaf':>5}  {leaf['n_queries']:>7}  {leaf['n_positives']:>9}  {_fmt(leaf['r_at_p'])}  "
                     f"{ci_s}")
    h = (result.get("hierarchical") or {}).get("global")
    if h:
        def ci(key: str) -> str:
            v = h.get(key)
            return "" if not v or v[0] is None else f" [{v[0]:.3f}, {v[1]:.3f}]"
        lines.append(f"hierarchical precision {_fmt(h['precision'])}{ci('precision_ci')}, recall "
                     f"{_fmt(h['recall'])}{ci('recall_ci')} (answers and true types with their ancestors, "
                     f"at the calibrated thresholds); coverage {_fmt(h['coverage'])} (queries given some type "
                     "at a threshold that reached the target)")
    return "\n".join(lines)
