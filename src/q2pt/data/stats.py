"""Per-locale dataset statistics (``q2pt data stats``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import schema as S
from .tree import LabelTree, read_taxonomy

if TYPE_CHECKING:  # pragma: no cover
    from . import Dataset


def _dist(counts: pd.Series) -> dict[str, float]:
    if len(counts) == 0:
        return {"mean": 0.0, "median": 0.0, "max": 0}
    return {
        "mean": round(float(counts.mean()), 4),
        "median": float(counts.median()),
        "max": int(counts.max()),
    }


def dataset_stats(ds: "Dataset", label_separator: str = " > ", taxonomy: "str | Path | None" = None) -> dict[str, Any]:
    """Statistics of a dataset, globally and per locale.

    Per locale: queries (rows) per split and in total, distinct normalized queries,
    labels per query (mean/median/max), the number of product types used in the locale
    (any split), how many of them are shared with at least one other locale and how many
    are the locale's own. Globally: the same counts plus the product types used in every
    locale. Product types that are paths of several levels (``label_separator``) add
    ``tree``: depth, nodes and branching per level, the types in use per level globally and
    per locale, and the names found under several parents (:mod:`q2pt.data.tree`).
    JSON-serialisable.
    """
    frames = []
    for split in S.SPLITS:
        df = ds.splits[split]
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    S.QUERY: df[S.QUERY].astype("str").to_numpy(),
                    S.LOCALE: df[S.LOCALE].astype("str").to_numpy(),
                    S.LABELS: df[S.LABELS].to_numpy(),
                }
            )
        )
    all_rows = pd.concat(frames, ignore_index=True)
    all_rows["n_labels"] = [len(v) for v in all_rows[S.LABELS].tolist()]
    all_rows["nq"] = S.normalize_queries(all_rows[S.QUERY]) if len(all_rows) else pd.Series([], dtype="str")

    pairs = all_rows[[S.LOCALE, S.LABELS]].explode(S.LABELS).dropna().drop_duplicates()
    locales_per_label = pairs.groupby(S.LABELS)[S.LOCALE].nunique()
    pairs = pairs.assign(shared=pairs[S.LABELS].map(locales_per_label).to_numpy() > 1)
    n_locales = int(all_rows[S.LOCALE].nunique())

    per_locale: dict[str, Any] = {}
    for loc, grp in all_rows.groupby(S.LOCALE, sort=True):
        by_split = grp["split"].value_counts()
        lp = pairs[pairs[S.LOCALE] == loc]
        per_locale[str(loc)] = {
            "queries": {**{s: int(by_split.get(s, 0)) for s in S.SPLITS}, "total": int(len(grp))},
            "distinct_queries": int(grp["nq"].nunique()),
            "labels_per_query": _dist(grp["n_labels"]),
            "product_types": int(len(lp)),
            "shared_product_types": int(lp["shared"].sum()),
            "own_product_types": int((~lp["shared"]).sum()),
        }
    train_labels = set(ds.labels)

    label_rows = [list(v) for v in all_rows[S.LABELS].tolist()]
    extra = read_taxonomy(taxonomy, label_separator) if taxonomy else ()  # a taxonomy file's paths too
    tree = LabelTree.from_labels({x for row in label_rows for x in row}, label_separator, extra)
    tree_stats = tree.stats(label_rows, all_rows[S.LOCALE].tolist()) if tree.is_hierarchical else None
    return {
        "tree": tree_stats,
        "source": ds.source,
        "simulated": bool(ds.simulated),
        "fingerprint": ds.fingerprint,
        "queries": {**{s: int(len(ds.splits[s])) for s in S.SPLITS}, "total": int(len(all_rows))},
        "n_locales": n_locales,
        "product_types": int(len(locales_per_label)),
        "product_types_in_train": len(train_labels),
        "product_types_in_all_locales": int((locales_per_label == n_locales).sum()) if n_locales else 0,
        "product_types_shared": int((locales_per_label > 1).sum()),
        "labels_per_query": _dist(all_rows["n_labels"]),
        "locales": per_locale,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table of :func:`dataset_stats` output."""
    q = stats["queries"]
    head = [
        f"Dataset {stats['source']}{' (simulated)' if stats['simulated'] else ''}  fingerprint {stats['fingerprint']}",
        f"queries: train {q['train']}, valid {q['valid']}, test {q['test']} (total {q['total']}) | "
        f"locales: {stats['n_locales']} | product types: {stats['product_types']} "
        f"({stats['product_types_in_train']} in train, {stats['product_types_shared']} in 2+ locales, "
        f"{stats['product_types_in_all_locales']} in all locales) | labels/query: "
        f"mean {stats['labels_per_query']['mean']:.2f}, max {stats['labels_per_query']['max']}",
        "",
    ]
    cols = ["locale", "train", "valid", "test", "distinct", "labels/q", "max", "types", "shared", "own"]
    rows = []
    for loc, s in stats["locales"].items():
        rows.append(
            [
                loc,
                s["queries"]["train"],
                s["queries"]["valid"],
                s["queries"]["test"],
                s["distinct_queries"],
                f"{s['labels_per_query']['mean']:.2f}",
                s["labels_per_query"]["max"],
                s["product_types"],
                s["shared_product_types"],
                s["own_product_types"],
            ]
        )
    table = [cols] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    lines = []
    for j, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    tree = stats.get("tree")
    if tree:
        lines += ["", f"product type tree: depth {tree['depth']}, {tree['nodes']} nodes ({tree['leaves']} leaves)"]
        for lv in tree["levels"]:
            branch = ("-" if lv["branching_mean"] is None
                      else f"mean {lv['branching_mean']:.1f}, max {lv['branching_max']}")
            lines.append(f"  level {lv['level']}: {lv['nodes']} types, {lv['leaves']} leaves; children per parent: "
                         f"{branch}; used in the data: {tree['types_per_level'].get(str(lv['level']), 0)}")
        per_loc = LabelTree.per_locale_text(tree)
        if per_loc:
            lines.append(f"  types per level per locale: {per_loc}")
        shared = tree["shared_names"]
        if shared:
            shown = ", ".join(f"{name!r} ({len(nodes)} parents)" for name, nodes in list(shared.items())[:5])
            lines.append(f"  names under several parents: {len(shared)}: {shown}{' ...' if len(shared) > 5 else ''}")
    notes = [
        "",
        "train/valid/test: queries (rows) per split; distinct: distinct normalized queries; "
        "labels/q, max: product types per query; types: product types used in the locale; "
        "shared: of those, also used in another locale; own: used only in this locale.",
    ]
    return "\n".join(head + lines + notes)


__all__ = ["dataset_stats", "format_stats"]
