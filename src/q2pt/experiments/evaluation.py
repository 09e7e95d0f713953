"""Turning a model's test scores into the experiment's numbers.

* :func:`evaluate_scores`: R@P (with bootstrap CIs), PR-AUC, counts per locale and
  globally (:func:`q2pt.metrics.evaluate`), plus down-sampled PR curves for the figures.
  Product types outside the model's label space count as missed positives.
* :func:`calibrate_on_valid` / :func:`evaluate_deployed`: the *as deployed* figures: test
  scores cut at each locale's threshold calibrated on the validation split
  (:func:`q2pt.metrics.calibrate_thresholds`, :func:`q2pt.metrics.recall_as_deployed`).
* :func:`conflict_mask` / :func:`top1_accuracy`: the locale-conflict queries (queries whose
  product type differs between stores) and how often a model's top-1 type is the store's own.
* :func:`gains_table`, :func:`small_stores`: the paper's table of the unified variants'
  gains over the non-unified one, per locale ordered by training size.
* :func:`aggregate_folds`, :func:`fold_stats`: the main comparison over K folds (mean,
  standard deviation, min and max of every model's figures).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from q2pt.data.schema import normalize_queries
from q2pt.metrics import evaluate, to_jsonable

__all__ = [
    "label_matrix",
    "evaluate_scores",
    "calibrate_on_valid",
    "evaluate_deployed",
    "pr_curve",
    "conflict_mask",
    "conflict_truth",
    "top1_accuracy",
    "small_stores",
    "gains_table",
    "train_sizes",
    "fold_stats",
    "aggregate_folds",
]


def _label_lists(column: Any) -> list[list[str]]:
    return [[v] if isinstance(v, str) else [str(x) for x in v] for v in column]


def label_matrix(frame: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """0/1 matrix ``(n, len(classes))`` of a frame's product types and, per row, the number
    of its product types outside ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(frame), len(classes)), dtype=np.int8)
    missing = np.zeros(len(frame), dtype=np.int64)
    for r, row in enumerate(_label_lists(frame["product_types"])):
        labs = set(row)
        cols = [index[x] for x in labs if x in index]
        y[r, cols] = 1
        missing[r] = len(labs) - len(cols)
    return y, missing


def pr_curve(y: np.ndarray, scores: np.ndarray, n_missing: int = 0, max_points: int = 120) -> dict[str, list[float]]:
    """The precision-recall curve over all (query, type) pairs, down-sampled to at most
    ``max_points`` points evenly spaced in recall (recall counts missing positives)."""
    from sklearn.metrics import precision_recall_curve

    yt = np.asarray(y).ravel()
    n_pos = int(yt.sum())
    if n_pos == 0:
        return {"recall": [], "precision": []}
    prec, rec, _ = precision_recall_curve(yt, np.asarray(scores).ravel())
    rec = rec * n_pos / (n_pos + int(n_missing))
    order = np.argsort(rec, kind="stable")
    rec, prec = rec[order], prec[order]
    if rec.size > max_points:
        targets = np.linspace(rec[0], rec[-1], max_points)
        idx = np.unique(np.searchsorted(rec, targets, side="left").clip(0, rec.size - 1))
        rec, prec = rec[idx], prec[idx]
    return {"recall": [round(float(x), 5) for x in rec], "precision": [round(float(x), 5) for x in prec]}


def evaluate_scores(
    frame: pd.DataFrame,
    scores: np.ndarray,
    classes: Sequence[str],
    *,
    precision: float = 0.8,
    bootstrap: int = 0,
    seed: int = 0,
    curves: bool = True,
) -> dict[str, Any]:
    """:func:`q2pt.metrics.evaluate` of ``scores`` against ``frame``'s product types, plus
    ``pr_curves`` ({"global": curve, LOC: curve}) when ``curves``."""
    y, missing = label_matrix(frame, classes)
    locales = frame["locale"].astype(str).tolist()
    result = evaluate(y, scores, locales, precision=precision, bootstrap=bootstrap, seed=seed, n_missing=missing)
    if curves:
        locs = np.asarray(locales, dtype=object)
        result["pr_curves"] = {"global": pr_curve(y, scores, int(missing.sum()))}
        for loc in result["locales"]:
            rows = locs == loc
            result["pr_curves"][loc] = pr_curve(y[rows], scores[rows], int(missing[rows].sum()), max_points=60)
    return to_jsonable(result)


# --------------------------------------------------------------------------- as deployed


def calibrate_on_valid(
    frame: pd.DataFrame, scores: np.ndarray, classes: Sequence[str], *, precision: float = 0.8,
    min_positives: int = 20,
) -> tuple[dict[str, float], dict[str, str]]:
    """Per-locale thresholds (and how each was chosen) calibrated on validation rows with
    :func:`q2pt.metrics.calibrate_thresholds` -- the function q2pt's training calls
    (:func:`q2pt.calibration.calibrate_thresholds`): a locale with fewer than ``min_positives``
    positives (the runner passes training's rule, :func:`q2pt.calibration.locale_min_positives`),
    or that never reaches ``precision``, gets the global threshold; without any validation
    positive every threshold is 0.5."""
    from q2pt.metrics import thresholds_or_default

    if len(frame) == 0:
        return thresholds_or_default(np.zeros((0, len(classes))), scores, [], precision)
    y, missing = label_matrix(frame, classes)
    return thresholds_or_default(y, scores, frame["locale"].astype(str).tolist(), precision,
                                 min_positives=min_positives, n_missing=missing)


def evaluate_deployed(
    frame: pd.DataFrame,
    scores: np.ndarray,
    classes: Sequence[str],
    thresholds: Mapping[str, float],
    *,
    threshold_locales: Sequence[str] | None = None,
    precision: float = 0.8,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`q2pt.metrics.recall_as_deployed` of ``scores`` against ``frame``'s product types
    (types outside ``classes`` count as missed), grouped by the rows' own locales; each row is
    cut at the threshold of ``threshold_locales[r]`` (default its own locale: the locale id the
    model was given)."""
    from q2pt.metrics import recall_as_deployed

    y, missing = label_matrix(frame, classes)
    locales = frame["locale"].astype(str).tolist()
    return recall_as_deployed(y, scores, locales, thresholds, precision, threshold_locales=threshold_locales,
                              n_missing=missing, bootstrap=bootstrap, seed=seed)


def deployed_types(
    frame: pd.DataFrame,
    scores: np.ndarray,
    classes: Sequence[str],
    thresholds: Mapping[str, float],
    *,
    threshold_locales: Sequence[str] | None = None,
    top: int = 10,
) -> dict[str, Any]:
    """Per-product-type precision, recall and support of ``scores`` cut as deployed (each row
    at its locale's threshold, the global one for a locale without its own), and the types
    that fail most per locale (:func:`q2pt.diagnostics.per_type_report`)."""
    from q2pt.diagnostics import per_type_report
    from q2pt.metrics import to_jsonable

    locales = frame["locale"].astype(str).tolist()
    tlocs = list(threshold_locales) if threshold_locales is not None else locales
    cut = np.asarray([thresholds.get(t, thresholds["global"]) for t in tlocs], dtype=np.float64)
    names = np.asarray(classes, dtype=object)
    predicted = [names[np.flatnonzero(scores[i] >= cut[i])].tolist() for i in range(len(frame))]
    return to_jsonable(per_type_report(_label_lists(frame["product_types"]), predicted, locales, top=top))


# --------------------------------------------------------------------------- conflicts


def conflict_mask(test: pd.DataFrame, all_splits: Mapping[str, pd.DataFrame] | None = None) -> np.ndarray:
    """Which test rows are locale-conflict queries.

    Simulated data: rows with a non-empty ``sim_conflict_word`` (a word whose product type
    depends on the store: ``pants``, ``chips`` ...). Other data: rows whose normalised query
    also occurs (in any split) in another locale whose label set for it is disjoint from this
    locale's.
    """
    if "sim_conflict_word" in test.columns:
        col = test["sim_conflict_word"]
        return (col.notna() & (col.astype(str).str.len() > 0)).to_numpy()
    frames = list((all_splits or {"test": test}).values())
    rows = []
    for df in frames:
        rows.append(pd.DataFrame({
            "norm": normalize_queries(df["query"].astype(str)).to_numpy(),
            "locale": df["locale"].astype(str).to_numpy(),
            "labels": _label_lists(df["product_types"]),
        }))
    allrows = pd.concat(rows, ignore_index=True)
    sets: dict[str, dict[str, set[str]]] = {}
    for norm, loc, labs in zip(allrows["norm"], allrows["locale"], allrows["labels"]):
        sets.setdefault(norm, {}).setdefault(loc, set()).update(labs)
    conflicted: set[tuple[str, str]] = set()
    for norm, by_loc in sets.items():
        if len(by_loc) < 2:
            continue
        items = list(by_loc.items())
        for i, (loc_a, la) in enumerate(items):
            for loc_b, lb in items[i + 1 :]:
                if la.isdisjoint(lb):
                    conflicted.add((norm, loc_a))
                    conflicted.add((norm, loc_b))
    norm_test = normalize_queries(test["query"].astype(str)).to_numpy()
    locs = test["locale"].astype(str).to_numpy()
    return np.fromiter(((n, loc) in conflicted for n, loc in zip(norm_test, locs)), dtype=bool, count=len(test))


def conflict_truth(frame: pd.DataFrame) -> tuple[list[set[str]], str]:
    """The store's own type(s) of each row and what they are: the simulator's clean
    ``intent`` when present, else the row's product types."""
    if "intent" in frame.columns:
        return [{str(x)} for x in frame["intent"]], "intent"
    return [set(labs) for labs in _label_lists(frame["product_types"])], "labels"


def top1_accuracy(
    frame: pd.DataFrame, scores: np.ndarray, classes: Sequence[str], mask: np.ndarray
) -> dict[str, Any]:
    """Share of the masked rows whose highest-scoring type is the store's own type (see
    :func:`conflict_truth`), globally and per locale, with the counts."""
    rows = np.flatnonzero(mask)
    truth, kind = conflict_truth(frame)
    out: dict[str, Any] = {"n": int(rows.size), "truth": kind, "accuracy": None, "locales": {}, "examples": []}
    if rows.size == 0:
        return out
    top = np.asarray(scores)[rows].argmax(axis=1)
    correct = np.asarray([classes[t] in truth[r] for t, r in zip(top, rows)], dtype=bool)
    out["accuracy"] = float(correct.mean())
    locs = frame["locale"].astype(str).to_numpy()[rows]
    for loc in sorted(set(locs.tolist())):
        sel = locs == loc
        out["locales"][loc] = {"n": int(sel.sum()), "accuracy": float(correct[sel].mean())}
    queries = frame["query"].astype(str).to_numpy()[rows]
    for i in range(min(12, rows.size)):
        out["examples"].append({
            "query": str(queries[i]), "locale": str(locs[i]), "predicted": classes[top[i]],
            "expected": sorted(truth[rows[i]]), "correct": bool(correct[i]),
        })
    return out


# --------------------------------------------------------------------------- gains


def train_sizes(train: pd.DataFrame) -> dict[str, int]:
    """Training queries per locale, largest first."""
    counts = train["locale"].astype(str).value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def small_stores(sizes: Mapping[str, int], ratio: float = 1 / 3) -> list[str]:
    """Locales whose training size is below ``ratio`` times the median locale's."""
    if not sizes:
        return []
    median = float(np.median(list(sizes.values())))
    return sorted(loc for loc, n in sizes.items() if n < ratio * median)


def _rap(entry: Mapping[str, Any] | None) -> float | None:
    if not entry:
        return None
    value = entry.get("r_at_p")
    return None if value is None else float(value)


def gains_table(
    metrics: Mapping[str, Mapping[str, Any]],
    sizes: Mapping[str, int],
    *,
    base: str = "non-unified",
    small: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Rows of the paper's table: per locale (ordered by training size, largest first, then
    the global row) the base variant's R@P and each other variant's gain over it.

    ``metrics`` maps a variant name to its :func:`evaluate_scores` result. A gain is the
    difference of the two R@P values (None when either is undefined).
    """
    others = [v for v in metrics if v != base]
    rows: list[dict[str, Any]] = []
    keys = [*sizes.keys(), "global"]
    for loc in keys:
        def entry(v: str, loc: str = loc) -> Mapping[str, Any] | None:
            m = metrics[v]
            return m.get("global") if loc == "global" else m.get("locales", {}).get(loc)

        b = _rap(entry(base)) if base in metrics else None
        row: dict[str, Any] = {
            "locale": loc,
            "n_train": int(sum(sizes.values())) if loc == "global" else int(sizes[loc]),
            "small": loc in small,
            "base": b,
            "values": {},
            "gains": {},
        }
        for v in others:
            val = _rap(entry(v))
            row["values"][v] = val
            row["gains"][v] = None if (val is None or b is None) else val - b
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- folds


def fold_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """``values`` (one per fold, None where undefined) and their ``n``, ``mean``, ``std`` (the
    sample standard deviation, ddof 1; None with fewer than 2 values), ``min`` and ``max`` over
    the defined ones."""
    vals = [None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v) for v in values]
    ok = np.asarray([v for v in vals if v is not None], dtype=np.float64)
    return {
        "values": vals,
        "n": int(ok.size),
        "mean": float(ok.mean()) if ok.size else None,
        "std": float(ok.std(ddof=1)) if ok.size > 1 else None,
        "min": float(ok.min()) if ok.size else None,
        "max": float(ok.max()) if ok.size else None,
    }


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def aggregate_folds(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The main comparison of each fold's ``results.json`` (``folds[i]``), aggregated per model.

    Returns ``{"models": {NAME: {...}}, "locales": [...], "train_sizes": {LOC: stats}}`` where
    each model (a run ``main/NAME`` of some fold's main comparison, in the first fold's order)
    has ``key``, ``kind``, ``label``, ``folds`` (how many folds ran it) and :func:`fold_stats` of
    ``global_r_at_p`` (pooled), ``global_pr_auc``, ``global_deployed_recall``,
    ``global_deployed_precision``, ``train_seconds`` and per locale (``locales[LOC]``)
    ``r_at_p``, ``deployed_recall``, ``deployed_precision``; a hierarchical model also ``tree``:
    the stats of its R@P per level (``levels[LEVEL]``) and at the leaves, and of its hierarchical
    ``precision``, ``recall`` and ``coverage``. Each ``values`` list has one entry
    per fold (None where the fold lacks the model or the figure). Locales are ordered by their
    mean training size, largest first.
    """
    k = len(folds)
    order: dict[str, dict[str, Any]] = {}
    per_fold: list[dict[str, Mapping[str, Any]]] = []
    sizes: dict[str, list[float | None]] = {}
    for i, res in enumerate(folds):
        sec = _get(res, "sections", "main") or {}
        runs = res.get("runs") or {}
        recs = {}
        for key in sec.get("runs") or []:
            rec = runs.get(key)
            if not rec:
                continue
            recs[rec["name"]] = rec
            order.setdefault(rec["name"], {"key": key, "kind": rec.get("kind"), "label": rec.get("label", rec["name"])})
        per_fold.append(recs)
        for loc, n in (sec.get("train_sizes") or {}).items():
            sizes.setdefault(loc, [None] * k)[i] = n
    size_stats = {loc: fold_stats(v) for loc, v in sizes.items()}
    locales = sorted(size_stats, key=lambda loc: (-(size_stats[loc]["mean"] or 0), loc))
    models: dict[str, Any] = {}
    for name, meta in order.items():
        evs = [(recs.get(name) or {}).get("evals", {}).get("test") for recs in per_fold]
        infra = [(recs.get(name) or {}).get("infra") for recs in per_fold]

        def col(*path: str, evs: list[Any] = evs) -> dict[str, Any]:
            return fold_stats([_get(ev, *path) for ev in evs])

        models[name] = {
            **meta,
            "folds": sum(1 for ev in evs if ev),
            "global_r_at_p": col("global", "r_at_p"),
            "global_pr_auc": col("global", "pr_auc"),
            "global_deployed_recall": col("deployed", "global", "recall"),
            "global_deployed_precision": col("deployed", "global", "precision"),
            "train_seconds": fold_stats([_get(x, "train_seconds") for x in infra]),
            "locales": {
                loc: {
                    "r_at_p": col("locales", loc, "r_at_p"),
                    "deployed_recall": col("deployed", "locales", loc, "recall"),
                    "deployed_precision": col("deployed", "locales", loc, "precision"),
                }
                for loc in locales
            },
        }
        levels = sorted({str(lv) for ev in evs for lv in (_get(ev, "tree", "levels") or {})}, key=int)
        if levels:  # a hierarchical model: its figures per level of the tree
            models[name]["tree"] = {
                "levels": {lv: col("tree", "levels", lv, "global", "r_at_p") for lv in levels},
                "leaf": col("tree", "leaf", "global", "r_at_p"),
                **{key: col("tree", "hierarchical", "global", key) for key in ("precision", "recall", "coverage")},
            }
    return to_jsonable({"models": models, "locales": locales, "train_sizes": size_stats})
