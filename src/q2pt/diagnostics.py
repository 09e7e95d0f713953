"""Per-product-type diagnostics: precision, recall and support of each type at the operating
point a model is served with, and the types that fail most in each locale.

Everything here works on *sets*: each query's true product types and the types a model
predicted for it (at its calibrated per-locale thresholds, as ``q2pt predict`` does). For a
type ``t``: ``support`` = queries whose true types hold ``t``; ``predicted`` = queries it was
predicted for; ``true_positives`` = both; precision = TP / predicted, recall = TP / support
(``None`` when undefined); ``errors`` = misses (support - TP) + false alarms (predicted -
TP), the count the "fail most" ranking sorts by (ties: more support first, then the name).
A true type outside the model's label space is a miss like any other: the model never
predicts it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

__all__ = ["type_metrics", "per_type_report", "format_type_table"]


def _counts(true_sets: Sequence[Iterable[str]], predicted_sets: Sequence[Iterable[str]],
            rows: Iterable[int]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for i in rows:
        truth, pred = set(true_sets[i]), set(predicted_sets[i])
        support.update(truth)
        predicted.update(pred)
        hits.update(truth & pred)
    return support, predicted, hits


def type_metrics(
    true_sets: Sequence[Iterable[str]],
    predicted_sets: Sequence[Iterable[str]],
    rows: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """One entry per product type seen in the truth or the predictions of ``rows`` (default:
    every row): ``type``, ``support``, ``predicted``, ``true_positives``, ``precision``,
    ``recall``, ``f1``, ``errors``; sorted by support (most first), then name."""
    if len(true_sets) != len(predicted_sets):
        raise ValueError(f"got {len(true_sets)} true sets but {len(predicted_sets)} predicted sets")
    support, predicted, hits = _counts(true_sets, predicted_sets, range(len(true_sets)) if rows is None else rows)
    out: list[dict[str, Any]] = []
    for t in set(support) | set(predicted):
        s, k, tp = support[t], predicted[t], hits[t]
        precision = tp / k if k else None
        recall = tp / s if s else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall > 0 else None)
        out.append({"type": t, "support": s, "predicted": k, "true_positives": tp, "precision": precision,
                    "recall": recall, "f1": f1, "errors": (s - tp) + (k - tp)})
    out.sort(key=lambda e: (-int(e["support"]), str(e["type"])))
    return out


def _failing(entries: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    bad = [e for e in entries if e["errors"] > 0]
    bad.sort(key=lambda e: (-int(e["errors"]), -int(e["support"]), str(e["type"])))
    return bad[:top]


def per_type_report(
    true_sets: Sequence[Iterable[str]],
    predicted_sets: Sequence[Iterable[str]],
    locales: Sequence[str],
    *,
    top: int = 10,
) -> dict[str, Any]:
    """Per-type metrics globally (every type) and, per locale, the ``top`` types that fail
    most there (see the module doc), plus the global ``top`` failing types.

    Returns ``{"types": [...], "failing": [...], "locales": {LOC: {"failing": [...],
    "n_types": k}}, "rule": ...}``."""
    if len(locales) != len(true_sets):
        raise ValueError(f"got {len(locales)} locales for {len(true_sets)} rows")
    entries = type_metrics(true_sets, predicted_sets)
    by_locale: dict[str, list[int]] = {}
    for i, loc in enumerate(locales):
        by_locale.setdefault(str(loc), []).append(i)
    report: dict[str, Any] = {
        "rule": "predicted: score >= the calibrated threshold of the query's locale (as q2pt predict)",
        "types": entries,
        "failing": _failing(entries, top),
        "locales": {},
    }
    for loc in sorted(by_locale):
        local = type_metrics(true_sets, predicted_sets, by_locale[loc])
        report["locales"][loc] = {"n_types": len(local), "failing": _failing(local, top)}
    return report


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_type_table(entries: Sequence[dict[str, Any]], *, title: str = "") -> str:
    """A plain-text table of :func:`type_metrics` entries."""
    header = ["type", "support", "predicted", "precision", "recall", "errors"]
    rows = [[str(e["type"]), str(e["support"]), str(e["predicted"]), _fmt(e["precision"]), _fmt(e["recall"]),
             str(e["errors"])] for e in entries]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    lines = [title] if title else []
    for r in [header, *rows]:
        lines.append("  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r))]).rstrip())
    return "\n".join(lines)
