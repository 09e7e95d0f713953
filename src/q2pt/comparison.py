"""Comparing two trained models on the same labelled rows: the release gate of a retrain.

:func:`compare_models` scores both models on every row and reports, globally and per locale:

* each model's R@P (pooled: one threshold over the rows' pairs, chosen on these rows, as
  ``q2pt evaluate`` reports it) and the difference ``B - A`` with a **paired** bootstrap CI
  (:func:`q2pt.metrics.paired_bootstrap_difference`: both models on the same resampled rows);
* each model's recall and precision *as deployed* (every row cut at its locale's calibrated
  threshold, as ``q2pt predict`` does);
* how often their predicted sets agree (exactly, and the mean Jaccard overlap; two empty
  sets agree);
* the product types whose recall changed most (among types with at least ``min_support``
  test queries; then by the change of their precision; unchanged types are left out), and
  each threshold's change.

:func:`gate_failures` turns a result into a release decision: B fails when its R@P is lower
than A's by more than the given points, globally or in any locale with at least
``min_positives`` positive pairs (smaller locales are listed as not gated).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from q2pt.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import os

    import pandas as pd

    from q2pt.models import Q2PTModel

__all__ = ["compare_folders", "compare_models", "gate_failures", "format_comparison", "renamed_columns",
           "lineage_renames", "renames_from_parent"]

logger = logging.getLogger(__name__)


@dataclass
class _Side:
    """One model's scores and predictions on the compared rows."""

    truth: list[set[str]]  # the rows' true types as this model is judged (a tree: with ancestors)
    y: np.ndarray  # (n, its labels) 0/1
    missing: np.ndarray  # per row, true types outside its labels
    scores: np.ndarray
    predicted: list[set[str]]  # every type at or above its threshold (a tree's ancestors too)
    thresholds: dict[str, float]
    deployed: dict[str, Any]  # q2pt.metrics.set_precision_recall of predicted against truth


def renamed_columns(classes: Sequence[str], scores: np.ndarray,
                    renames: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
    """A model's columns under the names of a label map (old -> new): a renamed type takes its
    new name, and types merged into one give it the highest of their scores."""
    names = [renames.get(c, c) for c in classes]
    unique = list(dict.fromkeys(names))
    if len(unique) == len(names):
        return names, scores
    column = {n: i for i, n in enumerate(unique)}
    out = np.zeros((scores.shape[0], len(unique)), dtype=scores.dtype)
    for j, name in enumerate(names):
        np.maximum(out[:, column[name]], scores[:, j], out=out[:, column[name]])
    return unique, out


def renames_from_parent(model_a: "Q2PTModel", model_b: "Q2PTModel", max_hops: int = 20) -> dict[str, str]:
    """The renames under which A is judged fairly on B's rows: the label map B was warm-started
    from A with, or, where B descends from A through other warm starts (B's parent's parent ...
    is A), their label maps composed; {} when A is not among B's ancestors (see
    :func:`lineage_renames`)."""
    if not model_a.fingerprint:
        return {}
    return lineage_renames(model_a.fingerprint, model_b.manifest, max_hops=max_hops) or {}


def lineage_renames(ancestor: str, manifest: Mapping[str, Any], max_hops: int = 20) -> dict[str, str] | None:
    """The renames (old -> new) from the model of fingerprint ``ancestor`` to the model of
    ``manifest``, up its chain of parents: each parent's folder is read where the manifest
    recorded it and taken only while its manifest still has the recorded fingerprint. None when
    the chain does not reach ``ancestor`` (a parent gone, replaced, or none)."""
    import json

    from q2pt.io import sha256_of_file
    from q2pt.model_folder import MANIFEST, parent_label_map

    maps: list[dict[str, str]] = []  # the child's own first
    current: Mapping[str, Any] = manifest
    for _ in range(max_hops):
        parent = current.get("parent")
        if not isinstance(parent, Mapping) or not parent.get("fingerprint"):
            return None
        maps.append(parent_label_map(dict(current)))
        if parent["fingerprint"] == ancestor:
            composed: dict[str, str] = {}
            for step in reversed(maps):  # from the ancestor down: each map renames what the one before gave
                composed = {old: step.get(new, new) for old, new in composed.items()} | {
                    old: new for old, new in step.items() if old not in composed}
            return {old: new for old, new in composed.items() if old != new}
        if not parent.get("path"):
            return None
        file = Path(str(parent["path"])) / MANIFEST
        try:
            if not file.is_file() or sha256_of_file(file) != parent["fingerprint"]:
                return None
            current = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(current, Mapping):
            return None
    return None


def _score(model: "Q2PTModel", queries: list[str], locales: list[str], labels: list[list[str]],
           fallback_locale: str | None, batch_size: int, precision: float,
           renames: Mapping[str, str] | None = None) -> _Side:
    """A hierarchical model is judged as ``q2pt evaluate`` judges it: on every node, the true
    types with their ancestors. ``renames``: its types judged under these new names."""
    from q2pt.data.labels import multi_hot
    from q2pt.metrics import set_precision_recall

    inference = model.infer(queries, locales, fallback_locale=fallback_locale, batch_size=batch_size)
    if model.tree_ is not None:
        labels = [model.tree_.close(t) for t in labels]
    truth = [set(t) for t in labels]
    classes, scores = renamed_columns(model.classes_, inference.probabilities(), renames or {})
    y, missing = multi_hot(labels, classes)
    predicted = [{(renames or {}).get(t, t) for t, _ in row} for row in inference.select(flat=True)]
    thresholds = dict(model.thresholds_)  # a tree's level thresholds too: they cut most of its answers
    thresholds.update({f"{key} level {lv}": t for key, levels in (model.level_thresholds_ or {}).items()
                       for lv, t in levels.items() if t is not None})
    return _Side(truth, y.toarray(), missing, scores, predicted, thresholds,
                 set_precision_recall(truth, predicted, locales, precision))


def _agreement(a: list[set[str]], b: list[set[str]], rows: np.ndarray) -> dict[str, Any]:
    if rows.size == 0:
        return {"exact": None, "jaccard": None}
    exact = [a[i] == b[i] for i in rows]
    jac = [1.0 if not (a[i] | b[i]) else len(a[i] & b[i]) / len(a[i] | b[i]) for i in rows]
    return {"exact": float(np.mean(exact)), "jaccard": float(np.mean(jac))}


def _deployed(side: _Side, scope: str | None) -> dict[str, Any]:
    entry = side.deployed["global"] if scope is None else side.deployed["locales"][scope]
    return {"recall": entry["recall"], "precision": entry["precision"]}


def _entry(a: _Side, b: _Side, rows: np.ndarray, scope: str | None, precision: float,
           bootstrap: int, seed: Any, min_positives: int) -> dict[str, Any]:
    from q2pt.metrics import paired_bootstrap_difference, recall_at_precision

    def rap(side: _Side) -> float | None:
        r = recall_at_precision(side.y[rows], side.scores[rows], precision, n_missing=int(side.missing[rows].sum()))
        return None if math.isnan(r.recall) else float(r.recall)

    ra, rb = rap(a), rap(b)
    # the pairs each R@P counts (a tree's: every node's, as q2pt evaluate counts them): the gate's too
    n_a, n_b = (int(sum(len(side.truth[i]) for i in rows)) for side in (a, b))
    n_pos = min(n_a, n_b)
    entry: dict[str, Any] = {
        "n_queries": int(rows.size), "n_positives": n_pos,
        "a": ra, "b": rb, "difference": None if ra is None or rb is None else rb - ra,
        "deployed": {"a": _deployed(a, scope), "b": _deployed(b, scope)},
        "agreement": _agreement(a.predicted, b.predicted, rows),
        "gated": n_pos >= min_positives,
    }
    if n_a != n_b:  # a tree against a flat model: each judged on its own pairs
        entry["n_positives_a"], entry["n_positives_b"] = n_a, n_b
    if bootstrap > 0 and rows.size:
        lo, hi = paired_bootstrap_difference(
            (a.y[rows], a.scores[rows], a.missing[rows]), (b.y[rows], b.scores[rows], b.missing[rows]),
            precision, n_boot=bootstrap, seed=seed)
        entry["difference_ci"] = [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi]
    return entry


def _type_changes(a: _Side, b: _Side, min_support: int, top: int) -> list[dict[str, Any]]:
    from q2pt.diagnostics import type_metrics

    ta = {e["type"]: e for e in type_metrics(a.truth, a.predicted)}
    tb = {e["type"]: e for e in type_metrics(b.truth, b.predicted)}
    out = []
    for t, ea in ta.items():
        eb = tb.get(t)  # None: a tree's inner node, which a flat model is not judged on
        if ea["support"] < min_support or eb is None:
            continue
        change = (eb["recall"] or 0.0) - (ea["recall"] or 0.0)
        precision_change = (eb["precision"] or 0.0) - (ea["precision"] or 0.0)
        if change == 0 and precision_change == 0:
            continue
        out.append({"type": t, "support": ea["support"], "recall_a": ea["recall"], "recall_b": eb["recall"],
                    "change": change, "precision_a": ea["precision"], "precision_b": eb["precision"],
                    "precision_change": precision_change})
    out.sort(key=lambda e: (-abs(e["change"]), -abs(e["precision_change"]), -e["support"], e["type"]))
    return out[:top]


def _threshold_changes(a: dict[str, float], b: dict[str, float]) -> list[dict[str, Any]]:
    """Per threshold of either model (``global``, a locale, ``KEY level N`` of a tree): A's, B's,
    the change; the global ones first."""
    rest = (set(a) | set(b)) - {"global"}
    keys = ["global"] + sorted(k for k in rest if k.startswith("global ")) + sorted(
        k for k in rest if not k.startswith("global "))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        out.append({"key": k, "a": va, "b": vb, "change": None if va is None or vb is None else vb - va})
    return out


def compare_models(
    model_a: "Q2PTModel",
    model_b: "Q2PTModel",
    frame: "pd.DataFrame",
    *,
    precision: float = 0.8,
    bootstrap: int = 1000,
    seed: int = 0,
    min_positives: int = 20,
    min_support: int = 5,
    top_types: int = 10,
    fallback_locale: str | None = None,
    batch_size: int = 512,
    renames_a: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Both models on the rows of ``frame`` (query, locale, product_types); see the module doc.
    ``renames_a``: a label map (old -> new) under which model A's types are judged (B was
    warm-started from A with it: A's "earphones" answers B's "headphones" rows).

    Returns a JSON-ready dict: ``config``, ``global`` and ``locales`` entries (``a``, ``b``,
    ``difference``, ``difference_ci``, ``deployed``, ``agreement``, ``gated``, counts),
    ``types`` (largest recall changes) and ``thresholds`` (per key: a, b, change).
    """
    from q2pt.data.labels import label_lists
    from q2pt.metrics import locale_seed, to_jsonable

    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0, got {bootstrap}")
    if len(frame) == 0:
        raise ConfigError("no rows to compare the models on")
    queries = frame["query"].astype(str).tolist()
    locales = frame["locale"].astype(str).tolist()
    a, b = (_score(model, queries, locales, label_lists(model.labels_as_trained(frame)["product_types"]),
                   fallback_locale, batch_size, precision, renames)
            for model, renames in ((model_a, renames_a), (model_b, None)))
    locs = np.asarray(locales, dtype=object)
    result: dict[str, Any] = {
        "config": {"precision": precision, "bootstrap": bootstrap, "seed": seed, "min_positives": min_positives,
                   "min_support": min_support, "top_types": top_types, "ci_level": 0.95 if bootstrap else None,
                   "difference": "B - A", "r_at_p": "pooled over the rows' pairs (as q2pt evaluate)",
                   "deployed": "each row cut at its locale's calibrated threshold (as q2pt predict)"},
        "global": _entry(a, b, np.arange(len(queries)), None, precision, bootstrap, seed, min_positives),
        "locales": {},
    }
    result["global"]["gated"] = True
    for loc in sorted(set(locales)):
        rows = np.flatnonzero(locs == loc)
        result["locales"][loc] = _entry(a, b, rows, loc, precision, bootstrap, locale_seed(seed, loc), min_positives)
    result["types"] = _type_changes(a, b, min_support, top_types)
    result["thresholds"] = _threshold_changes(a.thresholds, b.thresholds)
    return to_jsonable(result)


def _label_cut(model: "Q2PTModel") -> tuple[int | None, str]:
    return model.config.data.label_depth, model.config.data.label_separator


def compare_folders(
    path_a: "str | os.PathLike[str]",
    path_b: "str | os.PathLike[str]",
    data: "str | os.PathLike[str]",
    *,
    split: str = "test",
    fail_if_worse: float | None = None,
    precision: float = 0.8,
    bootstrap: int = 1000,
    seed: int = 0,
    min_positives: int = 20,
    min_support: int = 5,
    top_types: int = 10,
    fallback_locale: str | None = None,
    batch_size: int = 512,
) -> dict[str, Any]:
    """The release gate of a retrain (``q2pt compare``): model folders A (the one in service)
    and B (the candidate) on the labelled rows of ``data`` (a dataset's ``split``, or every row
    of a labelled file without a split column), cut as the models' training labels were (refused when the two models
    cut them differently).

    The result is :func:`compare_models`'s, judging A under the label map B was warm-started
    from A with (``models.a.renamed_as_b``), plus ``models`` (path, variant, encoder,
    fingerprint, ``name``), ``data`` (source, queries, the rows either model trained or
    validated on: ``training_overlap_a`` / ``_b``), ``notes`` (warnings about those rows) and,
    with ``fail_if_worse`` (R@P points), ``gate`` (:func:`gate_failures`).
    """
    from q2pt.data import load_labelled
    from q2pt.data.labels import label_lists
    from q2pt.models import load_model
    from q2pt.overlap import overlap_note, training_overlap

    if fail_if_worse is not None and not fail_if_worse >= 0:  # before the models load and score
        raise ConfigError(f"fail_if_worse takes R@P points (0 or more), got {fail_if_worse}")
    model_a, model_b = load_model(path_a), load_model(path_b)
    if _label_cut(model_a) != _label_cut(model_b):
        raise ConfigError(
            f"the models cut product type paths differently (data.label_depth / label_separator: "
            f"{_label_cut(model_a)} vs {_label_cut(model_b)}): their labels are not comparable")
    depth, sep = _label_cut(model_a)
    frame, description = load_labelled(data, label_depth=depth, label_separator=sep, split=split)
    if len(frame) == 0:
        raise DataError(f"{description}: no rows to compare on")
    renames = renames_from_parent(model_a, model_b)
    if renames:
        logger.info("model B was warm-started from model A (or from a model warm-started from it) with a label "
                    "map: A's types are judged under B's names (%d renamed or merged)",
                    len(set(renames) & set(model_a.classes_)))
    result = compare_models(
        model_a, model_b, frame, precision=precision, bootstrap=bootstrap, seed=seed, min_positives=min_positives,
        min_support=min_support, top_types=top_types, fallback_locale=fallback_locale, batch_size=batch_size,
        renames_a=renames,
    )
    result["models"] = {side: {"path": str(path), "name": f"{path} ({m.variant} / {m.encoder})", "variant": m.variant,
                               "encoder": m.encoder, "fingerprint": m.fingerprint}
                        for side, path, m in (("a", path_a, model_a), ("b", path_b, model_b))}
    result["models"]["a"]["renamed_as_b"] = renames
    result["data"] = {"source": description, "n_queries": int(len(frame))}
    # rows either model was trained on favour it: the gate would judge memory, not quality
    result["notes"] = []
    if model_a.fingerprint is not None and model_a.fingerprint == model_b.fingerprint:
        result["notes"].append(f"models A and B are the same model (fingerprint {model_a.fingerprint[:12]}): the "
                               "comparison says nothing of a retrain")
    pairs = [t for row in label_lists(model_b.labels_as_trained(frame)["product_types"]) for t in row]
    for side, m, known in (("a", model_a, {renames.get(c, c) for c in model_a.classes_}), ("b", model_b, None)):
        known = known if known is not None else set(m.classes_)
        share = sum(t in known for t in pairs) / max(len(pairs), 1)
        result["data"][f"pairs_known_{side}"] = round(share, 4)
        if share < 0.5:
            result["notes"].append(f"model {side.upper()} knows the product types of {share:.0%} of the data's pairs: "
                                   "its labels do not match the data's (another taxonomy, label depth or naming?)")
    types_a, types_b = set(model_a.classes_), set(model_b.classes_)
    old_names = {old for old in renames if old in types_a and old not in types_b}
    n_old = sum(t in old_names for t in pairs)
    result["data"]["pairs_with_renamed_names"] = n_old
    if n_old:  # A's right answers, renamed, miss rows that still use its names (and B never learnt them)
        shown = ", ".join(repr(n) for n in sorted({t for t in pairs if t in old_names})[:3])
        result["notes"].append(f"{n_old} of the rows' {len(pairs)} pairs use names that the label map renamed "
                               f"({shown}): A is judged under B's names, so these count as misses for both; "
                               "compare on rows labelled with B's names")
    for side, m in (("a", model_a), ("b", model_b)):
        overlap = result["data"][f"training_overlap_{side}"] = training_overlap(m, frame)
        if note := overlap_note(overlap, f"model {side.upper()}'s"):
            result["notes"].append(note)
    if fail_if_worse is not None:
        failures = gate_failures(result, fail_if_worse)
        result["gate"] = {"points": fail_if_worse, "failures": failures, "passed": not failures}
    return result


def gate_failures(result: dict[str, Any], points: float) -> list[str]:
    """Why B fails the release gate: its R@P is below A's by more than ``points`` (R@P points,
    0-100) globally or in a gated locale. Empty: B passes."""
    if points < 0 or math.isnan(points):
        raise ConfigError(f"--fail-if-worse takes points of R@P (0 or more), got {points}")
    out = []
    scopes = [("global", result["global"])] + [(f"locale {k}", v) for k, v in result["locales"].items()]
    for name, entry in scopes:
        diff = entry.get("difference")
        if entry.get("gated") and diff is not None and diff * 100 < -points - 1e-9:
            out.append(f"{name}: R@P {entry['b']:.4f} vs {entry['a']:.4f} ({diff * 100:+.2f} points, "
                       f"allowed -{points:g})")
    return out


def _f(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _pts(x: Any) -> str:
    return "-" if x is None else f"{x * 100:+.2f}"


def format_comparison(result: dict[str, Any], names: Sequence[str] | None = None) -> str:
    """The comparison as markdown: scores, agreement, type changes, threshold changes, the gate
    and (a result of :func:`compare_folders`) the rows and their warnings. ``names``: what A and
    B are called (default: the result's ``models`` names, or "A" and "B")."""
    models = result.get("models") or {}
    na, nb = names or (models.get("a", {}).get("name", "A"), models.get("b", {}).get("name", "B"))
    p = result["config"]["precision"]
    rap = f"R@P{p * 100:g}"
    lines = [f"A = {na}", f"B = {nb}", "",
             f"| scope | queries | positives | {rap} A | {rap} B | B - A (points) | 95% CI | "
             "deployed recall A / B | deployed precision A / B | agreement (exact / Jaccard) |",
             "|---|---:|---:|---:|---:|---:|---|---|---|---|"]

    def row(name: str, e: dict[str, Any]) -> str:
        ci = e.get("difference_ci")
        ci_s = "-" if not ci or ci[0] is None else f"[{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]"
        dep = e["deployed"]
        ag = e["agreement"]
        label = name if e.get("gated") else f"{name} (not gated)"
        return (f"| {label} | {e['n_queries']} | {e['n_positives']} | {_f(e['a'])} | {_f(e['b'])} | "
                f"{_pts(e['difference'])} | {ci_s} | {_f(dep['a']['recall'], '.3f')} / {_f(dep['b']['recall'], '.3f')}"
                f" | {_f(dep['a']['precision'], '.3f')} / {_f(dep['b']['precision'], '.3f')}"
                f" | {_f(ag['exact'], '.3f')} / {_f(ag['jaccard'], '.3f')} |")

    lines.append(row("**global**", result["global"]))
    for loc, e in result["locales"].items():
        lines.append(row(loc, e))
    lines += ["", f"{rap}: pooled over the rows' pairs; deployed: each row at its locale's calibrated threshold. "
              f"Locales with fewer than {result['config']['min_positives']} positive pairs are not gated.", ""]
    if result["types"]:
        lines += [f"Product types whose recall changed most (support >= {result['config']['min_support']}):", "",
                  "| type | support | recall A | recall B | change | precision A | precision B |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for t in result["types"]:
            lines.append(f"| {t['type']} | {t['support']} | {_f(t['recall_a'], '.3f')} | {_f(t['recall_b'], '.3f')} | "
                         f"{_pts(t['change'])} | {_f(t['precision_a'], '.3f')} | {_f(t['precision_b'], '.3f')} |")
        lines.append("")
    elif result["config"].get("top_types", 1):
        lines += [f"Product types whose recall changed: none among the types with at least "
                  f"{result['config']['min_support']} positive pairs here (`--min-support`).", ""]
    lines += ["Thresholds:", "", "| key | A | B | change |", "|---|---:|---:|---:|"]
    for t in result["thresholds"]:
        lines.append(f"| {t['key']} | {_f(t['a'])} | {_f(t['b'])} | {_f(t['change'], '+.4f')} |")
    gate = result.get("gate")
    if gate is not None:
        lines.append("")
        if gate["failures"]:
            lines.append(f"**Gate failed** (B may be at most {gate['points']:g} points worse):")
            lines += [f"- {x}" for x in gate["failures"]]
        else:
            gated = [k for k, e in result["locales"].items() if e.get("gated")]
            rest = len(result["locales"]) - len(gated)
            lines.append(f"Gate passed: B is nowhere worse than A by more than {gate['points']:g} points, globally "
                         f"and in the {len(gated)} of {len(result['locales'])} locales gated"
                         + (f" ({rest} with fewer than {result['config']['min_positives']} positive pairs are not "
                            "judged)." if rest else "."))
    data = result.get("data")
    if data and data.get("source"):
        lines += ["", f"Rows: {data['source']}, {data['n_queries']} queries."]
    lines += [f"\n**Warning:** {note}." for note in result.get("notes") or ()]
    return "\n".join(lines)
