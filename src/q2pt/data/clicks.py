"""Click logs to labelled splits, the way the paper's labels are made.

A click log has rows ``(query, locale, product_type, clicks[, purchases])`` (Parquet,
JSONL, CSV or TSV). For each (query, locale) -- queries compared in normalized form, see
:func:`q2pt.data.schema.normalize_query` -- the engagement with each product type is

    engagement = clicks + purchase_weight * purchases

A product type becomes a label of the query when its engagement is at least
``min_clicks`` **and** its share of the query's total engagement is at least
``min_share``. Queries left without a label are dropped. The labelled queries are split
into train/valid/test by normalized query within each locale, with a seed.

Nothing is dropped silently: :class:`ClickReport` counts the rows, (query, product type)
pairs and queries that were dropped, by reason.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from q2pt.errors import ConfigError, DataError, check_seed

from . import schema as S
from .io import MISSING, RawTable, check_target, is_absent, is_missing, read_table, write_dataset
from .schema import problem

DEFAULT_MIN_SHARE = 0.1
DEFAULT_MIN_CLICKS = 2.0
DEFAULT_PURCHASE_WEIGHT = 0.0
DEFAULT_VALID_FRAC = 0.1
DEFAULT_TEST_FRAC = 0.1


@dataclass
class ClickReport:
    """What happened to a click log on its way to labelled splits."""

    source: str
    params: dict[str, Any]
    rows_read: int = 0
    rows_used: int = 0
    rows_dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one example (file, row)
    query_variants_merged: int = 0  # raw spellings folded into another by normalization
    purchases_missing: int = 0  # rows of a log with a purchases column that leave it empty: 0 purchases
    types_stripped: int = 0  # product type values with spaces around them (stripped)
    types_case_apart: list[str] = field(default_factory=list)  # types that differ only in case (kept apart)
    queries_total: int = 0
    queries_labelled: int = 0
    queries_dropped: dict[str, int] = field(default_factory=dict)
    pairs_total: int = 0
    pairs_kept: int = 0
    pairs_dropped: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    locales: dict[str, dict[str, int]] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        p = self.params
        lines = [
            f"Labels from click log {self.source}",
            f"thresholds: share >= {p['min_share']}, engagement >= {p['min_clicks']} "
            f"(engagement = clicks + {p['purchase_weight']} x purchases)",
            f"rows: {self.rows_read} read, {self.rows_used} used, {sum(self.rows_dropped.values())} dropped",
        ]
        for reason, n in self.rows_dropped.items():
            if not n:
                continue
            ex = self.examples.get(reason)
            lines.append(f"  dropped {n} rows: {reason}" + (f" (e.g. {ex})" if ex else ""))
        if self.types_stripped:
            lines.append(f"  {self.types_stripped} product type values had spaces around them: stripped")
        if self.types_case_apart:
            lines.append(f"  {len(self.types_case_apart)} product types differ from another only in case, kept as "
                         f"different types: {', '.join(repr(t) for t in self.types_case_apart[:6])}"
                         + (" ..." if len(self.types_case_apart) > 6 else ""))
        if self.purchases_missing:
            lines.append(f"  {self.purchases_missing} rows without a purchases value: counted as 0 purchases")
        if self.query_variants_merged:
            lines.append(
                f"  {self.query_variants_merged} raw query spellings merged into another spelling of the "
                "same normalized query (their clicks were added up)"
            )
        lines.append(
            f"(query, product type) pairs: {self.pairs_total}, kept as labels {self.pairs_kept}, "
            f"dropped {sum(self.pairs_dropped.values())}"
        )
        for reason, n in self.pairs_dropped.items():
            if not n:
                continue
            lines.append(f"  dropped {n} pairs: {reason}")
        lines.append(
            f"queries: {self.queries_total}, labelled {self.queries_labelled}, "
            f"dropped {sum(self.queries_dropped.values())}"
        )
        for reason, n in self.queries_dropped.items():
            if not n:
                continue
            lines.append(f"  dropped {n} queries: {reason}")
        lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        lines.append(f"locales: {len(self.locales)}")
        v = self.validation
        if v.get("unseen_label_pairs"):
            for split, n in v["unseen_label_pairs"].items():
                if n:
                    lines.append(
                        f"note: {n} of {v['label_pairs'].get(split, 0)} {split} (query, product type) pairs "
                        "have a product type that is not in train (they can never be predicted)"
                    )
        return "\n".join(lines)


def _check_params(min_share: float, min_clicks: float, purchase_weight: float, valid_frac: float, test_frac: float) -> None:
    bad = []
    if not 0.0 <= min_share <= 1.0:
        bad.append(f"--min-share must be in [0, 1], got {min_share}")
    if not (math.isfinite(min_clicks) and min_clicks >= 0):
        bad.append(f"--min-clicks must be >= 0, got {min_clicks}")
    if not (math.isfinite(purchase_weight) and purchase_weight >= 0):
        bad.append(f"--purchase-weight must be >= 0, got {purchase_weight}")
    for name, f in (("--valid", valid_frac), ("--test", test_frac)):
        if not 0.0 <= f < 1.0:
            bad.append(f"{name} must be in [0, 1), got {f}")
    if valid_frac + test_frac >= 1.0:
        bad.append(f"--valid + --test must be below 1, got {valid_frac + test_frac}")
    if bad:
        raise ConfigError("; ".join(bad))


def _as_table(log: str | Path | pd.DataFrame) -> RawTable:
    if isinstance(log, pd.DataFrame):
        frame = pd.DataFrame({c: pd.Series(log[c].tolist(), dtype=object) for c in log.columns})
        return RawTable("<memory>", "memory", frame, np.arange(1, len(log) + 1, dtype=np.int64))
    return read_table(log)


#: the largest count taken: above it a float no longer holds every whole number, and a log's sums
#: could overflow (two counts of 1e308 summed to inf, judged "below --min-share")
MAX_COUNT = 2.0**53


def _numbers(values: list[Any], fmt: str) -> np.ndarray:
    """Click/purchase counts as floats; NaN where a value is not a non-negative number of at most
    :data:`MAX_COUNT`."""
    if fmt in ("csv", "tsv"):
        out = np.array(pd.to_numeric(pd.Series(values, dtype=object), errors="coerce"), dtype=np.float64)
    else:
        out = np.array(
            [float(v) if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else np.nan
             for v in values],
            dtype=np.float64,
        )
    with np.errstate(invalid="ignore"):
        out[~(np.isfinite(out) & (out >= 0) & (out <= MAX_COUNT))] = np.nan
    return out


def _locale_seed(seed: int, locale: str) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256(locale.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


def assign_splits(
    norm_queries: pd.Series, locales: pd.Series, *, valid_frac: float, test_frac: float, seed: int
) -> np.ndarray:
    """Split label per row: within each locale the distinct normalized queries are put in
    a seeded random order; the first ``round(n*test_frac)`` go to test, the next
    ``round(n*valid_frac)`` to valid, the rest to train. Rows with the same (normalized
    query, locale) always land in the same split; the order of the input does not matter."""
    out = np.empty(len(norm_queries), dtype=object)
    nq = norm_queries.to_numpy()
    loc = locales.to_numpy()
    for locale in sorted(set(loc.tolist())):
        idx = np.flatnonzero(loc == locale)
        uniq = np.array(sorted(set(nq[idx].tolist())), dtype=object)
        order = _locale_seed(seed, locale).permutation(len(uniq))
        n = len(uniq)
        n_test = int(round(n * test_frac))
        n_valid = int(round(n * valid_frac))
        split_of = np.empty(n, dtype=object)
        split_of[order[:n_test]] = "test"
        split_of[order[n_test : n_test + n_valid]] = "valid"
        split_of[order[n_test + n_valid :]] = "train"
        mapping = dict(zip(uniq.tolist(), split_of.tolist()))
        out[idx] = [mapping[q] for q in nq[idx].tolist()]
    return out


def labels_from_clicks(
    log: str | Path | pd.DataFrame,
    *,
    min_share: float = DEFAULT_MIN_SHARE,
    min_clicks: float = DEFAULT_MIN_CLICKS,
    purchase_weight: float = DEFAULT_PURCHASE_WEIGHT,
    valid_frac: float = DEFAULT_VALID_FRAC,
    test_frac: float = DEFAULT_TEST_FRAC,
    seed: int = 0,
    max_query_chars: int = S.DEFAULT_MAX_QUERY_CHARS,
) -> tuple[dict[str, pd.DataFrame], ClickReport]:
    """Turn a click log into train/valid/test frames (see the module doc) and a report.

    Rows that cannot be used (empty query, missing or negative clicks, bytes that are
    not UTF-8, ...) are dropped and counted by reason; a log without the required
    columns raises a DataError. Each output row is one (query, locale): the query text
    is the raw spelling with the most engagement (whitespace tidied), the product types
    are ordered by engagement, weight is 1.0."""
    _check_params(min_share, min_clicks, purchase_weight, valid_frac, test_frac)
    seed = check_seed(seed, "--seed")
    table = _as_table(log)
    params = {
        "min_share": min_share, "min_clicks": min_clicks, "purchase_weight": purchase_weight,
        "valid_frac": valid_frac, "test_frac": test_frac, "seed": seed, "max_query_chars": max_query_chars,
    }
    report = ClickReport(table.file, params)
    frame = table.frame
    cols = list(frame.columns)
    if table.columns_known:
        missing = [c for c in S.CLICK_COLUMNS if c not in cols]
        if missing:
            raise DataError(
                f"{table.file}: not a click log",
                [problem("missing_column", table.file, None, c,
                         f"missing column '{c}' (found: {', '.join(cols) or 'none'}); a click log has "
                         "query, locale, product_type, clicks[, purchases]") for c in missing],
            )
    n = len(frame)
    reason = np.full(n, None, dtype=object)

    def drop(mask: np.ndarray, why: str) -> None:
        m = mask & (reason == None)  # noqa: E711 - elementwise on an object array
        reason[m] = why

    # rows the reader could not parse are dropped too (and counted)
    read_dropped: dict[str, int] = {}
    for p in table.problems:
        why = {"blank_line": "blank line", "non_utf8": "bytes that are not UTF-8"}.get(p.kind, "malformed row")
        read_dropped[why] = read_dropped.get(why, 0) + 1
        report.examples.setdefault(why, f"{p.file}, row {p.row}")
    report.rows_read = n + sum(read_dropped.values())

    def text(col: str) -> list[Any]:
        return frame[col].tolist() if col in cols else [MISSING] * n

    queries, locales, ptypes = text(S.QUERY), text(S.LOCALE), text(S.PRODUCT_TYPE)
    is_str = lambda vals: np.array([type(v) is str for v in vals], dtype=bool)  # noqa: E731
    q_str, l_str, p_str = is_str(queries), is_str(locales), is_str(ptypes)
    bad_text = np.array(
        [any(type(v) is str and S.has_bad_text(v) for v in vals) for vals in zip(queries, locales, ptypes)],
        dtype=bool,
    ) if n else np.zeros(0, dtype=bool)
    drop(bad_text, "bytes that are not UTF-8")
    for col, vals, strs in ((S.QUERY, queries, q_str), (S.LOCALE, locales, l_str), (S.PRODUCT_TYPE, ptypes, p_str)):
        given = np.array([not is_missing(v) for v in vals], dtype=bool)
        drop(given & ~strs, f"{col} not text (a number, list or object)")
    drop(~q_str | np.array([not (type(v) is str and v.strip() and S.has_visible_text(v)) for v in queries], dtype=bool),
         "empty or missing query")  # (only whitespace, control or invisible characters: empty)
    drop(np.array([len(v) > max_query_chars if type(v) is str else False for v in queries], dtype=bool),
         f"query longer than {max_query_chars} characters")
    drop(~l_str | np.array([not (type(v) is str and v.strip() and len(v.split()) == 1 and v.strip() == v)
                            for v in locales], dtype=bool), "empty, missing or malformed locale")
    drop(~p_str | np.array([not (type(v) is str and v.strip()) for v in ptypes], dtype=bool),
         "empty or missing product type")
    drop(np.array([type(v) is str and S.LABEL_SEP in v for v in ptypes], dtype=bool),
         "product type contains '|' (reserved as the CSV/TSV separator)")
    clicks = _numbers(text(S.CLICKS), table.fmt)
    drop(np.isnan(clicks), "clicks missing or not a non-negative number (at most 2^53)")
    purchases = np.zeros(n, dtype=np.float64)
    if S.PURCHASES in cols and purchase_weight > 0:  # (weight 0: purchases are not used, nor checked)
        raw_purchases = text(S.PURCHASES)
        absent = np.array([is_absent(v) for v in raw_purchases], dtype=bool)
        purchases = _numbers(raw_purchases, table.fmt)
        purchases[absent] = 0.0  # an optional count left empty: none
        report.purchases_missing = int((absent & (reason == None)).sum())  # noqa: E711 (of rows not dropped)
        drop(np.isnan(purchases), "purchases not a non-negative number (at most 2^53)")

    dropped_rows = reason != None  # noqa: E711
    row_counts = pd.Series(reason[dropped_rows], dtype=object).value_counts()
    report.rows_dropped = {**read_dropped, **{str(k): int(v) for k, v in row_counts.items()}}
    for why in row_counts.index:
        first = int(np.flatnonzero(reason == why)[0])
        report.examples.setdefault(str(why), f"{table.file}, row {int(table.rows[first])}")
    keep = ~dropped_rows
    report.rows_used = int(keep.sum())

    empty = {s: pd.DataFrame({S.QUERY: pd.Series([], dtype="str"), S.LOCALE: pd.Series([], dtype="str"),
                              S.LABELS: pd.Series([], dtype=object), S.WEIGHT: pd.Series([], dtype="float64")})
             for s in S.SPLITS}
    if not keep.any():
        report.splits = {s: 0 for s in S.SPLITS}
        return empty, report

    kept = np.flatnonzero(keep)
    # locale ids that differ only in case are one store to q2pt (and refused in a dataset): name the log's rows
    spellings: dict[str, dict[str, list[int]]] = {}
    for i in kept.tolist():
        spellings.setdefault(locales[i].casefold(), {}).setdefault(locales[i], []).append(i)
    clashes = {k: v for k, v in spellings.items() if len(v) > 1}
    if clashes:
        found = next(iter(clashes.values()))
        rare, message = S.locale_case_clash({loc: len(rows) for loc, rows in found.items()})
        raise DataError(f"{table.file}, row {int(table.rows[found[rare][0]])}, field {S.LOCALE}: {message} "
                        f"({len(clashes)} such store(s)); write each one way in the log")
    given_types = [ptypes[i] for i in kept.tolist()]
    report.types_stripped = sum(t != t.strip() for t in given_types)
    by_fold: dict[str, set[str]] = {}
    for t in {t.strip() for t in given_types}:
        by_fold.setdefault(t.casefold(), set()).add(t)
    report.types_case_apart = sorted(t for group in by_fold.values() if len(group) > 1 for t in group)
    df = pd.DataFrame({
        "raw": pd.Series([queries[i] for i in np.flatnonzero(keep)], dtype="str"),
        S.LOCALE: pd.Series([locales[i] for i in np.flatnonzero(keep)], dtype="str"),
        S.PRODUCT_TYPE: pd.Series([ptypes[i].strip() for i in np.flatnonzero(keep)], dtype="str"),
        "eng": clicks[keep] + purchase_weight * purchases[keep],
    })
    df["raw"] = df["raw"].map(S.clean_query_text).astype("str")
    df["nq"] = S.normalize_queries(df["raw"])

    # the displayed spelling of each (normalized query, locale): most engagement, then alphabetical
    spell = df.groupby(["nq", S.LOCALE, "raw"], sort=True, observed=True)["eng"].sum().reset_index()
    n_spellings = spell.groupby(["nq", S.LOCALE], observed=True).size()
    report.query_variants_merged = int((n_spellings - 1).sum())
    spell = spell.sort_values(["nq", S.LOCALE, "eng", "raw"], ascending=[True, True, False, True], kind="stable")
    best = spell.drop_duplicates(["nq", S.LOCALE]).set_index(["nq", S.LOCALE])["raw"]

    pairs = df.groupby(["nq", S.LOCALE, S.PRODUCT_TYPE], sort=True, observed=True)["eng"].sum().reset_index()
    totals = pairs.groupby(["nq", S.LOCALE], observed=True)["eng"].transform("sum")
    report.queries_total = int(len(best))
    report.pairs_total = int(len(pairs))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, pairs["eng"] / totals, 0.0)
    low_count = (pairs["eng"] < min_clicks).to_numpy()
    low_share = ~low_count & (share < min_share)
    kept = ~low_count & ~low_share
    report.pairs_dropped = {
        f"engagement below --min-clicks {min_clicks}": int(low_count.sum()),
        f"share of the query's engagement below --min-share {min_share}": int(low_share.sum()),
    }
    report.pairs_kept = int(kept.sum())

    q_total = pairs.groupby(["nq", S.LOCALE], observed=True)["eng"].sum()
    lab = pairs[kept].sort_values(["nq", S.LOCALE, "eng", S.PRODUCT_TYPE], ascending=[True, True, False, True], kind="stable")
    labelled = lab.groupby(["nq", S.LOCALE], sort=True, observed=True)[S.PRODUCT_TYPE].agg(list)
    unlabelled = q_total.drop(labelled.index)
    no_eng = int((unlabelled <= 0).sum())
    report.queries_dropped = {
        "no clicks (or weighted purchases) at all": no_eng,
        "no product type passed the thresholds": int(len(unlabelled) - no_eng),
    }
    report.queries_labelled = int(len(labelled))

    out = labelled.reset_index()
    out[S.QUERY] = best.reindex(pd.MultiIndex.from_frame(out[["nq", S.LOCALE]])).to_numpy()
    out["split"] = assign_splits(out["nq"], out[S.LOCALE], valid_frac=valid_frac, test_frac=test_frac, seed=seed)
    splits: dict[str, pd.DataFrame] = {}
    for s in S.SPLITS:
        part = out[out["split"] == s]
        splits[s] = pd.DataFrame({
            S.QUERY: pd.Series(part[S.QUERY].tolist(), dtype="str"),
            S.LOCALE: pd.Series(part[S.LOCALE].tolist(), dtype="str"),
            S.LABELS: pd.Series(part[S.PRODUCT_TYPE].tolist(), dtype=object),
            S.WEIGHT: np.ones(len(part), dtype=np.float64),
        })
    report.splits = {s: len(splits[s]) for s in S.SPLITS}
    counts = out.groupby([S.LOCALE, "split"], observed=True).size()
    report.locales = {
        loc: {s: int(counts.get((loc, s), 0)) for s in S.SPLITS} for loc in sorted(out[S.LOCALE].unique().tolist())
    }

    from .validate import validate_frames

    check = validate_frames(splits, source=table.file, max_query_chars=max_query_chars)
    report.validation = {
        "errors": check.counts()["error"],  # only an empty train split is possible (tiny logs, big fractions)
        "warnings": check.counts()["warning"],
        "unseen_label_pairs": check.summary.get("unseen_label_pairs", {}),
        "label_pairs": check.summary.get("label_pairs", {}),
    }
    return splits, report


def from_clicks(
    log: str | Path | pd.DataFrame,
    out: str | Path,
    *,
    fmt: str = "parquet",
    overwrite: bool = False,
    **options: Any,
) -> ClickReport:
    """:func:`labels_from_clicks`, then write the dataset directory ``out`` (atomically) with
    its report as ``out/clicks_report.json``."""
    from q2pt.io import atomic_path, write_json

    out = Path(out)
    check_target(out, overwrite, inputs=[] if isinstance(log, pd.DataFrame) else [log], data=True)
    splits, report = labels_from_clicks(log, **options)
    if report.queries_labelled == 0:
        raise DataError(
            f"{report.source}: no query got a label ({report.rows_used} of {report.rows_read} rows usable); "
            "nothing written. Check the thresholds (--min-share, --min-clicks).\n" + report.format()
        )
    from .validate import validate_frames

    check = validate_frames(splits, source=f"labels from {report.source}", max_query_chars=report.params["max_query_chars"])
    if not check.ok:
        raise DataError(
            f"the labelled dataset would be invalid ({check.counts_line()}); nothing written. "
            "Lower --valid/--test or give a bigger log.",
            check.errors,
        )
    with atomic_path(out) as tmp:
        write_dataset(splits, tmp, fmt)
        write_json(tmp / "clicks_report.json", report.to_dict())
    return report
