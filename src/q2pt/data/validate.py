"""Dataset validation: every problem, with its file, row and field.

Errors (the dataset cannot be used until they are fixed):

==================  =============================================================
``missing_column``  a required column (query, locale, product_types) is absent
``malformed_row``   a CSV/TSV row with the wrong number of fields, a JSONL line that
                    is not a JSON object, or that gives one key twice
``non_utf8``        bytes that are not UTF-8 (or lone surrogates) in a value
``missing_value``   a row without a query, locale or product_types value
``wrong_type``      e.g. a number as query, a string where a label list is expected
``empty_query``     an empty query, or one of only whitespace, control or invisible
                    characters (zero-width spaces, NULs)
``query_too_long``  a query longer than the limit (default 200 characters)
``bad_locale``      an empty locale id, or one with whitespace in it
``empty_labels``    an empty product_types list
``bad_label``       a product type that is not a non-empty string, or contains ``|``
``bad_weight``      a weight that is not a positive finite number
``bad_split``       a ``split`` value other than train/valid/test
``leakage``         the same (normalized query, locale) in two splits
``empty_split``     no train rows (a file of rows to split: no rows)
``bad_locales_file`` the folder's ``locales.json`` (store -> languages) is malformed
==================  =============================================================

Warnings (the dataset loads; the report says what that means):

=====================  ==========================================================
``blank_line``         a blank line, ignored
``duplicate_row``      the same (normalized query, locale) twice in one split with
                       the same product types (both rows are kept and both count)
``conflicting_labels`` the same (normalized query, locale) twice in one split with
                       different product types (both rows are kept)
``duplicate_label``    a product type listed twice in one row (counted once)
``empty_level``        a path with an empty level (``a >  > b``, `` > b``, ``a > b > ``),
                       read without it
``label_spaces``       a product type with spaces (tabs, line breaks) around it in a
                       JSONL or Parquet list, read without them (in CSV/TSV the spaces
                       around ``|`` are the format's)
``missing_weight``     a row without a weight (no value, null, NaN, an empty cell, or in
                       CSV/TSV a cell spelled NA, nan, null...) where others have one:
                       weight 1, the default of a file without the column
``unseen_label``       a product type in valid/test that never appears in train: those
                       (query, product type) pairs can never be predicted (counted)
``unseen_locale``      a locale in valid/test without train rows
``empty_split``        no valid or test rows
=====================  ==========================================================

Row numbers are 1-based data rows (the CSV/TSV header is not counted; for JSONL the row
is the line number; for Parquet the row index + 1).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from q2pt.errors import DataError

from . import schema as S
from .io import (
    CSV_NA_SPELLINGS,
    LOCALE_LANGUAGES_FILE,
    MISSING,
    RawDataset,
    RawTable,
    extra_column,
    is_absent,
    is_missing,
    read_locale_languages,
    read_raw_dataset,
)
from .labels import has_empty_level, split_path
from .schema import DataProblem, problem
from .tree import LabelTree

ROW_NOTE = "Row numbers are 1-based data rows (CSV/TSV header not counted; JSONL: line number)."


@dataclass
class ValidationReport:
    """The outcome of validating a dataset: every problem and a summary."""

    source: str
    problems: list[DataProblem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[DataProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[DataProblem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"error": {kind: n}, "warning": {kind: n}}``, most frequent first."""
        out: dict[str, Counter] = {"error": Counter(), "warning": Counter()}
        for p in self.problems:
            out["error" if p.severity == "error" else "warning"][p.kind] += 1
        return {sev: dict(c.most_common()) for sev, c in out.items()}

    def counts_line(self) -> str:
        parts = []
        for sev, kinds in self.counts().items():
            n = sum(kinds.values())
            detail = ", ".join(f"{k} {v}" for k, v in kinds.items())
            parts.append(f"{n} {sev}{'' if n == 1 else 's'}" + (f" ({detail})" if detail else ""))
        return "; ".join(parts)

    def format(self, max_problems: int = 50) -> str:
        """Human-readable report: summary, counts by kind, the first problems."""
        s = self.summary
        lines = [f"Dataset {self.source}"]
        if s.get("layout") == "rows":
            lines.append("a labelled file without a split column: its rows checked as rows to split (q2pt data "
                         "split merges the duplicates and splits without leakage)")
        if s.get("files"):
            lines.append("files: " + ", ".join(f"{k}={v}" for k, v in s["files"].items()))
        if s.get("rows"):
            lines.append(
                "rows: "
                + ", ".join(f"{k} {v}" for k, v in s["rows"].items())
                + f" | locales: {s.get('n_locales', 0)} | product types"
                + (" in train" if s.get("layout") != "rows" else "") + f": {s.get('n_product_types', 0)}"
            )
        tree = s.get("tree")
        if tree:
            per_level = ", ".join(
                f"level {lv['level']}: {lv['nodes']} types"
                + (f" (branching mean {lv['branching_mean']:.1f}, max {lv['branching_max']})"
                   if lv.get("branching_mean") is not None else "")
                for lv in tree["levels"])
            lines.append(f"product type tree: depth {tree['depth']}, {tree['nodes']} nodes, {tree['leaves']} leaves; "
                         f"{per_level}; names under several parents: {tree['names_under_several_parents']}")
            per_loc = LabelTree.per_locale_text(tree)
            if per_loc:
                lines.append(f"product types per level per locale: {per_loc}")
        for split, n in s.get("unseen_label_pairs", {}).items():
            total = s.get("label_pairs", {}).get(split, 0)
            if n:
                lines.append(
                    f"{split}: {n} of {total} (query, product type) pairs have a product type never seen "
                    "in train and can never be predicted"
                )
        lines.append(("OK: " if self.ok else "INVALID: ") + self.counts_line())
        if self.problems:
            lines.append(ROW_NOTE)
            shown = self.problems[: max(max_problems, 0)]
            lines.extend(f"  {p}" for p in shown)
            rest = len(self.problems) - len(shown)
            if rest > 0:
                lines.append(f"  ... and {rest} more problems (see the counts above; --max-problems N shows more)")
        return "\n".join(lines)

    def to_dict(self, max_problems: int | None = None) -> dict[str, Any]:
        probs = self.problems if max_problems is None else self.problems[:max_problems]
        return {
            "source": self.source,
            "ok": self.ok,
            "summary": self.summary,
            "counts": self.counts(),
            "problems": [p.to_dict() for p in probs],
            "problems_shown": len(probs),
            "problems_total": len(self.problems),
        }

    def raise_for_errors(self) -> None:
        """Raise a DataError (errors first, then warnings) if there is any error."""
        if self.ok:
            return
        raise DataError(f"invalid dataset {self.source}: {self.counts_line()}. {ROW_NOTE}", self.problems)


# --------------------------------------------------------------------------- row checks
def _type_name(v: Any) -> str:
    return "a string" if isinstance(v, str) else f"{type(v).__name__} {v!r}"[:60]


@dataclass
class _Checked:
    """A table after row checks: problems, cleaned columns, per-row validity."""

    problems: list[DataProblem]
    frame: pd.DataFrame | None  # typed frame; None when the table has row errors
    keys: pd.Series  # "normalized query \x1f locale" for rows with a valid query and locale
    labels: list[list[str] | None]  # cleaned labels (None where invalid)


def _label_problem(item: Any, cell: Any, delimited: bool) -> tuple[str, str] | None:
    """(kind, message) if ``item`` is not a usable product type, else None."""
    if not isinstance(item, str):
        return "bad_label", f"product type must be a string, got {_type_name(item)}"
    if S.has_bad_text(item):
        return "non_utf8", "product type has bytes that are not valid UTF-8"
    if not item.strip():
        return "bad_label", "empty product type" + (f" in {cell!r}" if delimited else "")
    if S.LABEL_SEP in item:
        return "bad_label", f"product type {item!r} contains '|' (reserved as the CSV/TSV separator)"
    return None


def _check_table(table: RawTable, max_query_chars: int) -> _Checked:
    frame, rows, file = table.frame, table.rows, table.file
    n = len(frame)
    probs: list[DataProblem] = []
    row_error = np.zeros(n, dtype=bool)

    def add(kind: str, i: int, col: str | None, msg: str, severity: str = "error") -> None:
        probs.append(problem(kind, file, int(rows[i]), col, msg, severity))
        if severity == "error":
            row_error[i] = True

    cols = list(frame.columns)
    if table.columns_known:
        for col in S.REQUIRED_COLUMNS:
            if col not in cols:
                found = ", ".join(cols) or "none"
                probs.append(problem("missing_column", file, None, col, f"missing column '{col}' (found: {found})"))

    # --- query
    q_ok = np.zeros(n, dtype=bool)
    queries: list[Any] = frame[S.QUERY].tolist() if S.QUERY in cols else [None] * n
    if S.QUERY in cols:
        bad_text = S.has_bad_text if S.any_bad_text(queries) else (lambda v: False)
        for i, v in enumerate(queries):
            if type(v) is str and len(v) <= max_query_chars and not bad_text(v) and S.has_visible_text(v):
                q_ok[i] = True  # the fast path of S.query_problem
            elif is_missing(v):
                add("missing_value", i, S.QUERY, "no query")
            elif not isinstance(v, str):
                add("wrong_type", i, S.QUERY, f"query must be a string, got {_type_name(v)}")
            else:
                kind, message = S.query_problem(v, max_query_chars) or ("wrong_type", "invalid query")
                add(kind, i, S.QUERY, message)

    # --- locale (few distinct values: each is judged once)
    l_ok = np.zeros(n, dtype=bool)
    locales: list[Any] = frame[S.LOCALE].tolist() if S.LOCALE in cols else [None] * n
    if S.LOCALE in cols:
        verdict: dict[str, tuple[str, str] | None] = {}
        for i, v in enumerate(locales):
            if type(v) is str:
                if v not in verdict:
                    if S.has_bad_text(v):
                        verdict[v] = ("non_utf8", "locale has bytes that are not valid UTF-8")
                    elif not v.strip():
                        verdict[v] = ("bad_locale", "empty locale")
                    elif len(v.split()) != 1 or v.strip() != v:
                        verdict[v] = ("bad_locale", f"locale id {v!r} contains whitespace")
                    else:
                        verdict[v] = None
                bad = verdict[v]
                if bad is None:
                    l_ok[i] = True
                else:
                    add(bad[0], i, S.LOCALE, bad[1])
            elif is_missing(v):
                add("missing_value", i, S.LOCALE, "no locale")
            else:
                add("wrong_type", i, S.LOCALE, f"locale must be a string id, got {_type_name(v)}")

    # --- product types
    labels: list[list[str] | None] = [None] * n
    if S.LABELS in cols:
        delimited = table.fmt in ("csv", "tsv")
        good: set[str] = set()  # labels already seen to be clean (and stripped)
        split_labels = S.split_labels
        for i, v in enumerate(frame[S.LABELS].tolist()):
            if delimited and type(v) is str:
                items: list[Any] = split_labels(v)
            elif type(v) is list:
                items = v
            elif isinstance(v, (list, tuple, np.ndarray)):
                items = list(v)
            elif is_missing(v):
                add("missing_value", i, S.LABELS, "no product_types")
                continue
            else:
                expected = "labels joined with '|'" if delimited else "a list of strings"
                add("wrong_type", i, S.LABELS, f"product_types must be {expected}, got {_type_name(v)}")
                continue
            if not items:
                add("empty_labels", i, S.LABELS, "empty product_types list")
                continue
            # fast path: every item known clean, no repeats
            if all(type(x) is str and x in good for x in items) and len(set(items)) == len(items):
                labels[i] = list(items)
                continue
            clean: list[str] = []
            said: set[tuple[str, str]] = set()  # each problem once a row ('a||' has two empty types)
            spaced: list[str] = []
            for item in items:
                issue = _label_problem(item, v, delimited)
                if issue is not None:
                    if issue not in said:
                        add(issue[0], i, S.LABELS, issue[1])
                        said.add(issue)
                    continue
                stripped = item.strip()
                if stripped == item:
                    good.add(item)
                else:  # (in CSV/TSV the cells are split on '|' and stripped already: the format's spacing)
                    spaced.append(item)
                clean.append(stripped)
            if said:
                continue
            if spaced:
                add("label_spaces", i, S.LABELS, f"product type(s) with spaces around them, read without: "
                    f"{', '.join(map(repr, spaced))}"[:160], "warning")
            unique = list(dict.fromkeys(clean))
            if len(unique) != len(clean):
                dupes = sorted(k for k, c in Counter(clean).items() if c > 1)
                add("duplicate_label", i, S.LABELS, f"product type(s) listed twice, counted once: {', '.join(dupes)}", "warning")
            labels[i] = unique

    # --- weight
    weights = np.ones(n, dtype=np.float64)
    if S.WEIGHT in cols:
        values = frame[S.WEIGHT].tolist()
        types = set(map(type, values))
        if types <= {float, int, np.float64, np.float32, np.int64, np.int32}:
            parsed = np.asarray(values, dtype=np.float64)
        elif table.fmt in ("csv", "tsv"):
            parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        else:
            parsed = np.array(
                [float(v) if isinstance(v, (int, float, np.integer, np.floating, Decimal)) and not isinstance(v, bool)
                 else np.nan
                 for v in values],
                dtype=np.float64,
            )
        # a row without a value where other rows have one gets the default of a file without the column
        absent = np.array([is_absent(v) for v in values], dtype=bool)
        if table.fmt in ("csv", "tsv"):  # NA, nan, null...: how tables written by pandas or R say "no value"
            absent |= np.array([isinstance(v, str) and v.strip().lower() in CSV_NA_SPELLINGS for v in values], dtype=bool)
        for row in np.flatnonzero(absent):
            nan = " (NaN, read as no value)" if isinstance(values[row], (float, np.floating)) else ""
            add("missing_weight", int(row), S.WEIGHT, f"no weight{nan}: weight 1 (the default)", "warning")
        parsed = np.where(absent, 1.0, parsed)
        with np.errstate(invalid="ignore"):
            bad_w = ~(np.isfinite(parsed) & (parsed > 0))
        for row in np.flatnonzero(bad_w):
            v = values[row]
            shown = repr(v)
            add("bad_weight", int(row), S.WEIGHT, f"weight must be a positive number, got {shown}"[:120])
        weights = np.where(bad_w, 1.0, parsed)

    # --- extra columns: only check that text is valid UTF-8
    extras = [c for c in cols if c not in S.CORE_COLUMNS]
    for col in extras:
        values = frame[col].tolist()
        if S.any_bad_text(values):
            for i, v in enumerate(values):
                if isinstance(v, str) and S.has_bad_text(v):
                    add("non_utf8", i, col, f"{col} has bytes that are not valid UTF-8")

    ok_rows = q_ok & l_ok
    idx = np.flatnonzero(ok_rows)
    if len(idx):
        nq = S.normalize_queries(pd.Series([queries[i] for i in idx], dtype="str"))
        keys = pd.Series((nq + "\x1f" + pd.Series([locales[i] for i in idx], dtype="str")).to_numpy(), index=idx)
    else:
        keys = pd.Series([], dtype="str")

    clean_frame = None
    if not row_error.any() and not any(p.kind == "missing_column" for p in probs):
        data: dict[str, Any] = {
            S.QUERY: pd.Series(queries, dtype="str"),
            S.LOCALE: pd.Series(locales, dtype="str"),
            S.LABELS: pd.Series(labels, dtype=object),
            S.WEIGHT: pd.Series(weights, dtype="float64"),
        }
        for col in extras:
            data[col] = extra_column([None if v is MISSING else v for v in frame[col].tolist()])
        clean_frame = pd.DataFrame(data, index=pd.RangeIndex(n))
    return _Checked(probs, clean_frame, keys, labels)


# --------------------------------------------------------------------------- cross checks
def _first_rows(keys: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """(codes per row, position of the first row per code, unique keys)."""
    codes, uniques = pd.factorize(keys.to_numpy())
    _, first = np.unique(codes, return_index=True)
    return codes, first, pd.Index(uniques)


def _cross_checks(raw: RawDataset, checked: dict[str, _Checked], summary: dict[str, Any]) -> list[DataProblem]:
    probs: list[DataProblem] = []
    firsts: dict[str, tuple[pd.Index, np.ndarray]] = {}  # split -> (unique keys, source row of first)
    for split in S.SPLITS:
        if split not in checked:
            continue
        table, ch = raw.tables[split], checked[split]
        keys = ch.keys
        if len(keys) == 0:
            firsts[split] = (pd.Index([]), np.array([], dtype=np.int64))
            continue
        pos = keys.index.to_numpy()
        codes, first, uniques = _first_rows(keys)
        first_pos = pos[first]  # frame position of the first row of each key
        first_src = table.rows[first_pos]
        # duplicates within the split
        dup = np.flatnonzero(pos != first_pos[codes])
        for j in dup:
            i, f = pos[j], first_pos[codes[j]]
            a, b = ch.labels[i], ch.labels[f]
            same = a is not None and b is not None and sorted(a) == sorted(b)
            kind = "duplicate_row" if same else "conflicting_labels"
            msg = (
                f"same normalized query and locale as row {table.rows[f]} with the same product types"
                if same
                else f"same normalized query and locale as row {table.rows[f]} with different product types "
                f"({S.join_labels(b or [])} vs {S.join_labels(a or [])})"
            )
            if raw.layout == "rows":  # rows to split: data split merges them
                msg += "; data split merges them into one row (the union of the product types)"
            else:
                msg += " (both rows count)" if same else "; both rows are kept"
            probs.append(problem(kind, table.file, int(table.rows[i]), S.QUERY, msg, "warning"))
        # leakage: a key already present in an earlier split
        reported = np.zeros(len(keys), dtype=bool)
        for earlier in S.SPLITS[: S.SPLITS.index(split)]:
            if earlier not in firsts:
                continue
            e_uniques, e_src = firsts[earlier]
            hit = e_uniques.get_indexer(keys.to_numpy())
            for j in np.flatnonzero((hit >= 0) & ~reported):
                probs.append(
                    problem(
                        "leakage", table.file, int(table.rows[pos[j]]), S.QUERY,
                        f"same normalized query and locale as {earlier} row {int(e_src[hit[j]])}"
                        + ("" if raw.tables[earlier].file == table.file else f" ({raw.tables[earlier].file})"),
                    )
                )
            reported |= hit >= 0
        firsts[split] = (uniques, first_src)

    # product types and locales that never appear in train
    train = checked.get("train")
    if train is None:
        return probs
    train_labels = {lab for labs in train.labels if labs for lab in labs}
    train_frame = raw.tables["train"].frame
    # a locale that is not a string (a list, an object) is the row's own error: not a locale here
    train_locales = ({v for v in train_frame[S.LOCALE].tolist() if isinstance(v, str)}
                     if S.LOCALE in train_frame else set())
    unseen_pairs, pairs = {}, {}
    for split in ("valid", "test"):
        if split not in checked:
            continue
        table, ch = raw.tables[split], checked[split]
        first_row: dict[str, int] = {}
        count: Counter = Counter()
        n_pairs = 0
        for i, labs in enumerate(ch.labels):
            if not labs:
                continue
            n_pairs += len(labs)
            for lab in labs:
                if lab not in train_labels:
                    count[lab] += 1
                    first_row.setdefault(lab, int(table.rows[i]))
        for lab, c in sorted(count.items(), key=lambda kv: (-kv[1], kv[0])):
            probs.append(
                problem(
                    "unseen_label", table.file, first_row[lab], S.LABELS,
                    f"product type {lab!r} never appears in train: {c} {split} row(s) have it "
                    "and those pairs can never be predicted",
                    "warning",
                )
            )
        unseen_pairs[split] = sum(count.values())
        pairs[split] = n_pairs
        if S.LOCALE in table.frame.columns:
            loc_first: dict[str, int] = {}
            loc_count: Counter = Counter()
            for i, loc in enumerate(table.frame[S.LOCALE].tolist()):
                if isinstance(loc, str) and loc and loc not in train_locales:
                    loc_count[loc] += 1
                    loc_first.setdefault(loc, int(table.rows[i]))
            for loc, c in sorted(loc_count.items()):
                probs.append(
                    problem(
                        "unseen_locale", table.file, loc_first[loc], S.LOCALE,
                        f"locale {loc!r} has no train rows ({c} {split} rows)", "warning",
                    )
                )
    summary["unseen_label_pairs"] = unseen_pairs
    summary["label_pairs"] = pairs
    return probs


# --------------------------------------------------------------------------- entry points
def check_raw_dataset(
    raw: RawDataset,
    *,
    max_query_chars: int = S.DEFAULT_MAX_QUERY_CHARS,
    cross_checks: bool = True,
    label_separator: str = " > ",
    taxonomy: str | Path | None = None,
) -> tuple[ValidationReport, dict[str, pd.DataFrame] | None]:
    """Validate a :class:`RawDataset`; return the report and, when there are no errors,
    the typed split frames (``query``, ``locale``, ``product_types``, ``weight``, extras).

    ``cross_checks=False`` skips the checks between rows (duplicates, leakage, labels
    or locales missing from train) -- the row checks always run."""
    if max_query_chars < 1:
        raise ValueError("max_query_chars must be at least 1")
    problems: list[DataProblem] = list(raw.problems)
    checked: dict[str, _Checked] = {}
    rows: dict[str, int] = {}
    for split in S.SPLITS:
        table = raw.tables.get(split)
        if table is None:
            continue
        ch = _check_table(table, max_query_chars)
        checked[split] = ch
        problems.extend(ch.problems)
        rows[split] = len(table.frame)
        if rows[split] == 0 and raw.layout == "rows":  # rows to split have no splits to miss, but need rows
            if split == "train":
                problems.append(problem("empty_split", table.file, None, None, "no rows to split"))
        elif rows[split] == 0:
            sev = "error" if split == "train" else "warning"
            what = "training is impossible" if split == "train" else (
                "early stopping and threshold calibration need valid rows" if split == "valid" else "nothing to evaluate on"
            )
            problems.append(problem("empty_split", table.file, None, None, f"the {split} split has no rows: {what}", sev))
    train_labels = {lab for labs in checked["train"].labels if labs for lab in labs} if "train" in checked else set()
    all_locales: set[str] = set()
    for ch in checked.values():
        all_locales.update(k.split("\x1f", 1)[1] for k in ch.keys.unique())
    # one rule for locale case (data, prediction, serving): ids that differ only in case are one
    # store to q2pt (prediction maps "US" to a model's "us"), so data may not hold both spellings
    spellings: dict[str, list[str]] = {}
    for loc in sorted(all_locales):
        spellings.setdefault(loc.casefold(), []).append(loc)
    first_file = next(iter(raw.tables.values())).file if raw.tables else raw.source
    for same in (v for v in spellings.values() if len(v) > 1):
        # where each spelling is: its row count and first row, so the odd ones out can be found
        where: dict[str, tuple[int, str, int]] = {}
        for split in checked:
            table = raw.tables[split]
            values = table.frame[S.LOCALE].tolist() if S.LOCALE in table.frame.columns else []
            for i, v in enumerate(values):
                if isinstance(v, str) and v.strip() in same:
                    n, f, r = where.get(v.strip(), (0, table.file, int(table.rows[i])))
                    where[v.strip()] = (n + 1, f, r)
        rare, message = S.locale_case_clash({loc: where.get(loc, (0,))[0] for loc in same})
        _, file_rare, row_rare = where.get(rare, (0, first_file, None))
        problems.append(problem(
            "locale_case", file_rare, row_rare, S.LOCALE,
            f"{message}; write them one way ({rare!r} first at this row)",
        ))
    rows_to_split = raw.layout == "rows"
    summary: dict[str, Any] = {
        "layout": raw.layout,
        "files": {"rows": raw.source} if rows_to_split else raw.files,
        "rows": {"rows to split": rows.get("train", 0)} if rows_to_split else rows,
        "n_locales": len(all_locales),
        "n_product_types": len(train_labels),
        "max_query_chars": max_query_chars,
    }
    problems.extend(_empty_level_checks(raw, checked, label_separator))
    tree_summary, tree_problems = _tree_checks(checked, label_separator, first_file, taxonomy)
    if tree_summary is not None:
        summary["tree"] = tree_summary
    problems.extend(tree_problems)
    if cross_checks:
        problems.extend(_cross_checks(raw, checked, summary))
    file_order = {f: i for i, f in enumerate(dict.fromkeys(t.file for t in raw.tables.values()))}
    problems.sort(
        key=lambda p: (p.severity != "error", file_order.get(p.file, -1), -1 if p.row is None else p.row)
    )
    report = ValidationReport(raw.source, problems, summary)
    summary["errors"] = len(report.errors)
    summary["warnings"] = len(report.warnings)
    frames = None
    if report.ok:
        frames = {split: checked[split].frame for split in S.SPLITS}
    return report, frames


def _empty_level_checks(raw: RawDataset, checked: Mapping[str, "_Checked"], sep: str) -> list[DataProblem]:
    """A warning per row with a path that has an empty level (``"a >  > b"``, ``" > b"``,
    ``"a > b > "``): the path is read without it, so say where and as what."""
    out = []
    for split, ch in checked.items():
        table = raw.tables[split]
        for i, labs in enumerate(ch.labels):
            for lab in labs or ():
                if has_empty_level(lab, sep):
                    read = sep.join(split_path(lab, sep)) or lab.strip()
                    message = f"product type {lab!r} has an empty level: a tree or data.label_depth reads it as {read!r}"
                    out.append(problem("empty_level", table.file, int(table.rows[i]), S.LABELS, message[:200], "warning"))
    return out


def _tree_checks(checked: Mapping[str, Any], sep: str, file: str,
                 taxonomy: str | Path | None = None) -> tuple[dict[str, Any] | None, list[DataProblem]]:
    """The product-type tree of the labels and the taxonomy file's paths (when they are paths of
    more than one level): its shape, and a warning per name found under two parents (a path
    whose own prefix is never a label is fine)."""

    labels = [labs for ch in checked.values() for labs in ch.labels if labs]
    from .tree import read_taxonomy

    tree = LabelTree.from_labels({lab for labs in labels for lab in labs}, sep,
                                 read_taxonomy(taxonomy, sep) if taxonomy else ())
    if not tree.is_hierarchical:
        return None, []
    lists: list[list[str]] = []
    locales: list[str] = []
    complete = all(ch.frame is not None and len(ch.frame) == len(ch.labels) for ch in checked.values())
    if complete:  # (a table with row errors has no typed frame: then no per-locale counts)
        for ch in checked.values():
            for labs, loc in zip(ch.labels, ch.frame[S.LOCALE].astype(str).tolist()):
                if labs:
                    lists.append(labs)
                    locales.append(loc)
    stats = tree.stats(lists, locales) if complete else tree.stats()
    shared = stats.pop("shared_names")
    stats["names_under_several_parents"] = len(shared)
    problems = []
    for name, nodes in shared.items():  # one each: the counts by kind are complete (the report lists the first)
        problems.append(problem(
            "tree_shared_name", file, None, S.LABELS,
            f"the name {name!r} is under {len(nodes)} parents ({'; '.join(nodes[:3])}"
            f"{' ...' if len(nodes) > 3 else ''}): they are different product types to q2pt; "
            "if they are one type, spell its path one way", "warning"))
    return stats, problems


def validate_dataset(path: str | Path, *, max_query_chars: int = S.DEFAULT_MAX_QUERY_CHARS,
                     label_separator: str = " > ", taxonomy: str | Path | None = None) -> ValidationReport:
    """Validate a dataset directory or single file (its product-type tree with the paths of a
    ``taxonomy`` file, one path a line, when given); a labelled file without a split column is
    checked as rows to split (row checks, duplicates). Raises DataError only when the dataset
    (or the taxonomy) cannot be read at all (missing, unreadable, wrong layout)."""
    report, _ = check_raw_dataset(read_raw_dataset(path, rows_ok=True), max_query_chars=max_query_chars,
                                  label_separator=label_separator, taxonomy=taxonomy)
    try:  # the folder's store -> languages map, which training reads too
        read_locale_languages(Path(path))
    except DataError as exc:
        file = str(Path(path) / LOCALE_LANGUAGES_FILE)
        report.problems.append(problem("bad_locales_file", file, None, None, str(exc).removeprefix(f"{file}: ")))
    return report


def frames_to_raw(splits: Mapping[str, pd.DataFrame], source: str = "<memory>") -> RawDataset:
    """Wrap in-memory split frames (e.g. simulator output) so they can be validated."""
    tables = {}
    for split in S.SPLITS:
        if split not in splits:
            raise DataError(f"{source}: no {split} split")
        df = splits[split]
        frame = pd.DataFrame({c: pd.Series(df[c].tolist(), dtype=object) for c in df.columns}, columns=list(df.columns))
        tables[split] = RawTable(f"{source}[{split}]", "memory", frame, np.arange(1, len(df) + 1, dtype=np.int64))
    return RawDataset(source, "memory", tables)


def validate_frames(
    splits: Mapping[str, pd.DataFrame],
    *,
    source: str = "<memory>",
    max_query_chars: int = S.DEFAULT_MAX_QUERY_CHARS,
) -> ValidationReport:
    """Validate in-memory split frames with the same checks as files."""
    report, _ = check_raw_dataset(frames_to_raw(splits, source), max_query_chars=max_query_chars)
    return report
