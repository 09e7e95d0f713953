"""Leak-free, per-locale train/valid/test splits and K-fold cross-validation folds of a
labelled file: what ``q2pt data split`` does, as functions a script can call.

Groups
    Rows are grouped by (locale, normalized query) -- :func:`q2pt.data.schema.normalize_query`,
    the form the validator compares queries in. The rows of one group are merged into one
    row (:func:`merge_duplicates`): the first row's query text and extra columns, the union
    of the rows' product types (in order of first appearance) and the **largest** of their
    weights (a repeated query is one query, not a heavier one; with no weight column every
    row weighs 1 and so does the merged row). A group is never divided between splits, so
    the output has no leakage and no duplicate rows.

Split (:func:`split_frame`)
    Each locale's groups are split on their own: sorted by normalized query, shuffled with
    a generator seeded by (``seed``, locale), then the first ``round(n * test)`` go to test,
    the next ``round(n * valid)`` to valid and the rest to train (halves round up). A locale
    with at least 3 groups gets at least one group in each split whose fraction is above 0
    (2 groups: train and test; 1 group: train), and train always keeps one. The same seed
    gives the same split whatever the order of the rows.

Folds (:func:`fold_frames`)
    Each locale's groups, shuffled as above, are cut into ``k`` near-equal parts; fold ``i``
    tests on part ``i`` of every locale, takes ``valid`` **of the remaining groups** (shuffled
    with a generator seeded by (seed, locale, i)) as valid and trains on the rest. Every
    group is in exactly one fold's test part (with ``train_per_locale`` the train groups moved
    to test come on top, so the folds' test splits then overlap). There is no ``test``
    fraction: it is ``1/k``.

Small stores (``train_per_locale=N``)
    After splitting, each locale's train keeps ``N`` of its groups (a seeded random choice)
    and the train groups it drops *move to that split's test* (nothing is lost; the report
    counts them); valid is unchanged. A locale with ``N`` train groups or fewer keeps all.

Every function returns plain DataFrames with the input's columns and a JSON-ready report
(counts per split and locale, duplicates merged, rows moved, the parameters).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from q2pt.errors import ConfigError, DataError, check_seed

from . import schema as S

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_VALID",
    "DEFAULT_TEST",
    "REPORT_FILE",
    "WEIGHT_MERGE",
    "check_fractions",
    "merge_duplicates",
    "split_frame",
    "fold_frames",
    "read_labelled_rows",
    "write_splits",
    "write_folds",
    "split_file",
    "format_report",
]

DEFAULT_VALID = 0.1
DEFAULT_TEST = 0.1
REPORT_FILE = "split.json"
WEIGHT_MERGE = "max"  # how the weights of merged duplicate rows combine (see the module doc)

_Splits = dict[str, pd.DataFrame]


# --------------------------------------------------------------------------- parameters
def check_fractions(valid: float, test: float = 0.0) -> None:
    """ConfigError unless both fractions are in [0, 1) and their sum is below 1."""
    bad = []
    for name, f in (("valid", valid), ("test", test)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and 0.0 <= f < 1.0):
            bad.append(f"--{name} must be a fraction in [0, 1), got {f!r}")
    if not bad and valid + test >= 1.0:
        bad.append(f"--valid + --test must be below 1 (train needs rows), got {valid} + {test} = {valid + test:g}")
    if bad:
        raise ConfigError("; ".join(bad))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def _check_seed(seed: Any) -> int:
    return check_seed(seed, "--seed")


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in S.REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise DataError(f"the frame to split has no {', '.join(missing)} column (found: {found})")
    if S.SPLIT in frame.columns:
        raise DataError("the frame to split already has a 'split' column; drop it first")


def _rng(seed: int, locale: str, *salt: int) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256(locale.encode("utf-8", errors="surrogatepass")).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest, *salt])


_SALT_VALID = 1  # the valid share of a fold's remaining groups
_SALT_KEEP = 2  # train_per_locale's choice


def _round(x: float) -> int:
    """Round half up (``round`` rounds 0.5 to 0)."""
    return int(math.floor(x + 0.5))


def _allocate(n: int, valid: float, test: float) -> tuple[int, int]:
    """(n_valid, n_test) for a locale with ``n`` groups (see the module doc)."""
    if n <= 1:
        return 0, 0
    n_test = _round(n * test)
    n_valid = _round(n * valid)
    if test > 0:
        n_test = max(n_test, 1)
    if valid > 0 and n >= 3:
        n_valid = max(n_valid, 1)
    while n_test + n_valid > n - 1:  # train keeps at least one group
        if n_valid >= n_test and n_valid > 0:
            n_valid -= 1
        else:
            n_test -= 1
    return n_valid, n_test


def _valid_of_rest(n: int, valid: float) -> int:
    """Folds: valid groups out of the ``n`` outside the test part (at least one when
    ``valid > 0`` and ``n >= 2``; train keeps at least one)."""
    if n <= 1:
        return 0
    n_valid = _round(n * valid)
    if valid > 0:
        n_valid = max(n_valid, 1)
    return min(n_valid, n - 1)


# --------------------------------------------------------------------------- duplicates
def merge_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per (locale, normalized query): see the module doc.

    Returns (merged frame with a fresh RangeIndex, in order of each group's first row;
    counts ``rows_in``, ``rows_out``, ``duplicates_merged`` (rows folded into another),
    ``groups_merged`` (groups that had more than one row) and ``label_conflicts`` (of those,
    groups whose rows had different product types, now unioned))."""
    _check_frame(frame)
    n = len(frame)
    if n == 0:
        return frame.reset_index(drop=True).copy(), {
            "rows_in": 0, "rows_out": 0, "duplicates_merged": 0, "groups_merged": 0, "label_conflicts": 0,
        }
    codes, _ = pd.factorize(S.query_keys(frame).to_numpy(dtype=object))  # codes in order of first appearance
    _, first = np.unique(codes, return_index=True)
    merged = frame.iloc[first].reset_index(drop=True).copy()
    labels = [list(v) for v in merged[S.LABELS].tolist()]
    counts = np.bincount(codes)
    conflicts = 0
    if (counts > 1).any():
        is_first = np.zeros(n, dtype=bool)
        is_first[first] = True
        source = frame[S.LABELS].tolist()
        conflicted = np.zeros(len(first), dtype=bool)
        for pos in np.flatnonzero(~is_first):
            c = codes[pos]
            extra = list(source[pos])
            if set(extra) != set(source[first[c]]):
                conflicted[c] = True
            have = labels[c]
            have.extend(lab for lab in dict.fromkeys(extra) if lab not in have)
        conflicts = int(conflicted.sum())
        if S.WEIGHT in frame.columns:
            w = frame[S.WEIGHT].to_numpy(dtype=np.float64)
            best = w[first].copy()
            np.maximum.at(best, codes, w)
            merged[S.WEIGHT] = best
    merged[S.LABELS] = pd.Series(labels, dtype=object)
    return merged, {
        "rows_in": n,
        "rows_out": len(merged),
        "duplicates_merged": n - len(merged),
        "groups_merged": int((counts > 1).sum()),
        "label_conflicts": conflicts,
    }


def _locale_groups(merged: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """locale -> its row positions in ``merged`` (one row per group), shuffled by (seed, locale)
    from the order of their normalized queries (so input order does not matter)."""
    nq = S.normalize_queries(pd.Series(merged[S.QUERY].tolist(), dtype="str")).to_numpy()
    loc = np.asarray(merged[S.LOCALE].astype(str).tolist(), dtype=object)
    out: dict[str, np.ndarray] = {}
    for locale in sorted(set(loc.tolist())):
        idx = np.flatnonzero(loc == locale)
        idx = idx[np.argsort(nq[idx], kind="stable")]
        out[locale] = idx[_rng(seed, locale).permutation(len(idx))]
    return out


# --------------------------------------------------------------------------- splitting
def _keep_train(
    assign: dict[str, dict[str, np.ndarray]], n_keep: int | None, seed: int, fold: int
) -> dict[str, int]:
    """train_per_locale: keep ``n_keep`` train groups per locale, move the rest to test
    (in place); returns rows moved per locale."""
    moved: dict[str, int] = {}
    if n_keep is None:
        return moved
    for locale, parts in assign.items():
        train = parts["train"]
        if len(train) <= n_keep:
            moved[locale] = 0
            continue
        order = _rng(seed, locale, _SALT_KEEP, fold).permutation(len(train))
        parts["test"] = np.concatenate([parts["test"], train[order[n_keep:]]])
        parts["train"] = train[order[:n_keep]]
        moved[locale] = len(train) - n_keep
    return moved


def _materialise(
    merged: pd.DataFrame, assign: dict[str, dict[str, np.ndarray]], moved: Mapping[str, int]
) -> tuple[_Splits, dict[str, Any]]:
    splits: _Splits = {}
    for split in S.SPLITS:
        parts = [p[split] for p in assign.values()]
        idx = np.sort(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)
        splits[split] = merged.iloc[idx.astype(np.int64)].reset_index(drop=True)
    locales = {
        locale: {
            "groups": int(sum(len(p[s]) for s in S.SPLITS)),
            **{s: int(len(p[s])) for s in S.SPLITS},
            **({"moved_to_test": int(moved.get(locale, 0))} if moved else {}),
        }
        for locale, p in assign.items()
    }
    missing = {s: [loc for loc, c in locales.items() if c[s] == 0] for s in S.SPLITS}
    info = {
        "splits": {s: int(len(df)) for s, df in splits.items()},
        "locales": locales,
        "locales_missing": {s: v for s, v in missing.items() if v},
    }
    if moved:
        info["moved_to_test"] = int(sum(moved.values()))
    return splits, info


def split_frame(
    frame: pd.DataFrame,
    valid: float = DEFAULT_VALID,
    test: float = DEFAULT_TEST,
    seed: int = 0,
    train_per_locale: int | None = None,
    seen: "np.ndarray | None" = None,
) -> tuple[_Splits, dict[str, Any]]:
    """Split a labelled frame (``query``, ``locale``, ``product_types``[, ``weight``, extras];
    e.g. a loaded dataset's pooled splits) into leak-free per-locale train/valid/test.

    Duplicates are merged first (:func:`merge_duplicates`). Returns
    ``({"train": df, "valid": df, "test": df}, report)``; the report has ``splits`` (rows
    per split), ``locales`` ({locale: {groups, train, valid, test[, moved_to_test]}}),
    ``locales_missing`` (split -> locales with no rows there), ``duplicates_merged`` and the
    other merge counts, ``moved_to_test`` (with ``train_per_locale``) and the parameters.

    ``seen``: hashes (:func:`q2pt.seen.key_hashes`) of the queries earlier models learnt
    (:func:`q2pt.overlap.learnt_hashes`): they go to train, and valid and test are drawn from the
    others (as many as the fractions ask of all the locale's queries; when there are fewer new
    ones, shared between valid and test in proportion), so that this week's figures and
    thresholds are on queries no model has learnt; ``seen_to_train`` counts them. Not with
    ``train_per_locale`` (it would move seen queries to test). Raises ConfigError for bad
    parameters."""
    check_fractions(valid, test)
    seed = _check_seed(seed)
    if train_per_locale is not None:
        train_per_locale = _check_int("--train-per-locale", train_per_locale, 1)
    if seen is not None and train_per_locale is not None:
        raise ConfigError("--seen-by and --train-per-locale exclude each other (the train queries dropped would "
                          "move seen queries to test)")
    merged, merge_info = merge_duplicates(frame)
    from q2pt.seen import seen_in

    known = np.zeros(len(merged), dtype=bool) if seen is None else seen_in(merged, seen)
    assign: dict[str, dict[str, np.ndarray]] = {}
    seen_per_locale: dict[str, int] = {}
    for locale, order in _locale_groups(merged, seed).items():
        n_valid, n_test = _allocate(len(order), valid, test)
        fresh = int((~known[order]).sum())
        if seen is not None:
            seen_per_locale[locale] = len(order) - fresh
            order = np.concatenate([order[~known[order]], order[known[order]]])  # seen queries last: train
            if fresh < n_valid + n_test:  # too few new queries: shared in proportion (valid first: it calibrates)
                n_valid = min(fresh, math.ceil(fresh * valid / (valid + test))) if valid + test else 0
                n_test = fresh - n_valid if test else 0
        assign[locale] = {
            "test": order[:n_test],
            "valid": order[n_test : n_test + n_valid],
            "train": order[n_test + n_valid :],
        }
    moved = _keep_train(assign, train_per_locale, seed, 0)
    splits, info = _materialise(merged, assign, moved)
    report = {
        "seed": seed,
        "valid": float(valid),
        "test": float(test),
        "train_per_locale": train_per_locale,
        **merge_info,
        "weight_merge": WEIGHT_MERGE,
        **info,
    }
    if seen is not None:
        report["seen_to_train"] = int(known.sum())
        report["seen_per_locale"] = seen_per_locale
    return splits, report


def fold_frames(
    frame: pd.DataFrame,
    k: int,
    valid: float = DEFAULT_VALID,
    seed: int = 0,
    train_per_locale: int | None = None,
) -> list[tuple[_Splits, dict[str, Any]]]:
    """K-fold cross-validation per locale: ``k`` (splits, report) pairs, fold ``i`` first.

    In fold ``i`` the test split is the ``i``-th of ``k`` near-equal parts of every locale's
    groups, valid is the ``valid`` fraction *of the other groups* and train the rest (see
    the module doc); every group is in exactly one fold's test part (``train_per_locale``
    moves train groups into test on top of it). Each report is as in
    :func:`split_frame` plus ``fold`` and ``folds``. Raises ConfigError for ``k < 2`` or
    bad parameters."""
    k = _check_int("--folds", k, 2)
    check_fractions(valid, 0.0)
    seed = _check_seed(seed)
    if train_per_locale is not None:
        train_per_locale = _check_int("--train-per-locale", train_per_locale, 1)
    merged, merge_info = merge_duplicates(frame)
    groups = _locale_groups(merged, seed)
    largest = max((len(order) for order in groups.values()), default=0)
    if k > largest:  # folds largest .. k-1 would test on nothing at all
        raise ConfigError(f"--folds {k}: the largest locale has {largest} queries, so {k - largest} fold(s) would "
                          f"test on no query at all; choose at most {largest} folds")
    parts = {locale: np.array_split(order, k) for locale, order in groups.items()}
    out = []
    for i in range(k):
        assign: dict[str, dict[str, np.ndarray]] = {}
        for locale, chunks in parts.items():
            rest = np.concatenate([c for j, c in enumerate(chunks) if j != i])
            rest = rest[_rng(seed, locale, _SALT_VALID, i).permutation(len(rest))]
            n_valid = _valid_of_rest(len(rest), valid)
            assign[locale] = {"test": chunks[i], "valid": rest[:n_valid], "train": rest[n_valid:]}
        moved = _keep_train(assign, train_per_locale, seed, i)
        splits, info = _materialise(merged, assign, moved)
        report = {
            "fold": i,
            "folds": k,
            "seed": seed,
            "valid": float(valid),
            "valid_of": "the groups outside the fold's test part",
            "test": 1.0 / k,
            "train_per_locale": train_per_locale,
            **merge_info,
            "weight_merge": WEIGHT_MERGE,
            **info,
        }
        out.append((splits, report))
    return out


# --------------------------------------------------------------------------- files
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    return h.hexdigest()


def read_labelled_rows(
    path: str | Path, *, max_query_chars: int = S.DEFAULT_MAX_QUERY_CHARS
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every row of a labelled file (Parquet/JSONL/CSV/TSV without a ``split`` column), or
    of a whole dataset (a directory, or a file with a ``split`` column: its splits pooled,
    the old split ignored), after the data layer's row checks.

    Returns (frame, info with ``source``, ``layout``, ``files`` {name: sha256}). Bad rows
    raise a DataError naming every problem's file, row and field."""
    from .io import is_absent, one_table_dataset, read_raw_dataset, read_table
    from .validate import check_raw_dataset

    if max_query_chars < 1:
        raise ConfigError(f"--max-query-chars must be at least 1, got {max_query_chars}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        raw = read_raw_dataset(path)
        layout = "directory (its train/valid/test pooled and split again)"
    else:
        table = read_table(path)
        layout = "file"
        if S.SPLIT in table.frame.columns:  # its old split is ignored: not checked, so a row without one is fine
            given = sum(1 for v in table.frame[S.SPLIT].tolist() if not is_absent(v))
            table.frame = table.frame.drop(columns=[S.SPLIT])
            layout = (f"file with a split column (given in {given} of {len(table.frame)} rows; "
                      "ignored: the rows are split again)")
        raw = one_table_dataset(table, str(path))
    n_rows = sum(len(t.frame) for t in raw.tables.values())
    if n_rows and len(raw.tables["train"].frame) == 0:
        # the splits are pooled: put a non-empty table first so that an empty train split
        # (an error for a dataset, not for rows to split) does not stop the checks' frames
        other = next(s for s in ("valid", "test") if len(raw.tables[s].frame))
        raw.tables["train"], raw.tables[other] = raw.tables[other], raw.tables["train"]
    report, frames = check_raw_dataset(raw, max_query_chars=max_query_chars, cross_checks=False)
    errors = [p for p in report.errors if p.kind != "empty_split"]
    if errors:
        raise DataError(f"{path}: invalid data ({report.counts_line()}); nothing written", errors)
    if n_rows == 0:
        raise DataError(f"{path}: no rows to split")
    assert frames is not None
    had_weight = any(S.WEIGHT in t.frame.columns for t in raw.tables.values())
    frame = pd.concat([frames[s] for s in S.SPLITS if len(frames[s])], ignore_index=True)
    if not had_weight:
        frame = frame.drop(columns=[S.WEIGHT])
    files = sorted(set(raw.files.values()))
    info: dict[str, Any] = {
        "source": str(path),
        "layout": layout,
        "files": {f: _sha256(Path(f)) for f in files},
        "warnings": {k: v for k, v in report.counts()["warning"].items() if k != "empty_split"},
    }
    if not path.is_dir():
        info["sha256"] = info["files"].get(str(path)) or _sha256(path)
    return frame, info


def _check_out(out: Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> None:
    """ConfigError if ``out`` exists (and not ``overwrite``; or holds more than a dataset, or one
    of the ``inputs``: :func:`q2pt.data.io.check_target`) or cannot be created."""
    import os

    from .io import check_target

    check_target(out, overwrite, inputs=inputs, data=True)
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {out}: no permission to write in {parent}")


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Turn OS errors while writing ``out`` into one clean ConfigError."""
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None


def write_splits(
    splits: Mapping[str, pd.DataFrame],
    out: str | Path,
    fmt: str = "parquet",
    *,
    report: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one dataset directory ``out/{train,valid,test}.<ext>`` (+ ``out/split.json``
    when ``report`` is given) atomically. An existing non-empty ``out`` is only replaced
    with ``overwrite=True``. Returns ``out``."""
    from q2pt.io import atomic_path, write_json

    from .io import write_dataset

    out = Path(out)
    _check_format(fmt)
    _check_out(out, overwrite)
    with _writing(out), atomic_path(out) as tmp:
        write_dataset({s: splits[s] for s in S.SPLITS}, tmp, fmt)
        if report is not None:
            write_json(tmp / REPORT_FILE, dict(report))
    return out


def write_folds(
    folds: Sequence[tuple[Mapping[str, pd.DataFrame], Mapping[str, Any]]],
    out: str | Path,
    fmt: str = "parquet",
    *,
    report: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out/fold-0`` ... ``out/fold-{k-1}``, each a dataset directory with its own
    ``split.json``, and ``out/split.json`` (``report``, if given) -- all atomically."""
    from q2pt.io import atomic_path, write_json

    from .io import write_dataset

    out = Path(out)
    _check_format(fmt)
    _check_out(out, overwrite)
    with _writing(out), atomic_path(out) as tmp:
        tmp.mkdir()
        for i, (splits, fold_report) in enumerate(folds):
            folder = tmp / f"fold-{i}"
            write_dataset({s: splits[s] for s in S.SPLITS}, folder, fmt)
            write_json(folder / REPORT_FILE, dict(fold_report))
        if report is not None:
            write_json(tmp / REPORT_FILE, dict(report))
    return out


def _check_format(fmt: str) -> None:
    if fmt not in S.FORMAT_EXT:
        raise ConfigError(f"unknown format {fmt!r}; use parquet, jsonl, csv or tsv")


def _validate_output(splits: Mapping[str, pd.DataFrame], what: str, max_query_chars: int) -> dict[str, Any]:
    from .validate import validate_frames

    check = validate_frames(splits, source=what, max_query_chars=max_query_chars)
    if not check.ok:
        raise DataError(
            f"{what} would be invalid ({check.counts_line()}); nothing written. "
            "Give more rows, fewer folds or smaller fractions.",
            check.errors,
        )
    return {"warnings": check.counts()["warning"], "unseen_label_pairs": check.summary.get("unseen_label_pairs", {})}


def split_file(
    path: str | Path,
    out: str | Path,
    *,
    valid: float = DEFAULT_VALID,
    test: float = DEFAULT_TEST,
    seed: int = 0,
    folds: int | None = None,
    train_per_locale: int | None = None,
    fmt: str = "parquet",
    overwrite: bool = False,
    max_query_chars: int = S.DEFAULT_MAX_QUERY_CHARS,
    seen_by: "Sequence[str | Path]" = (),
) -> dict[str, Any]:
    """Read ``path`` (:func:`read_labelled_rows`), split it (:func:`split_frame`, or
    :func:`fold_frames` when ``folds`` is given; ``test`` is then unused) and write ``out``
    (:func:`write_splits` / :func:`write_folds`). Every output dataset is validated first
    (no errors, or nothing is written). Returns the report written to ``out/split.json``.
    ``seen_by``: model folders whose training and validation queries (and those of the models
    they were warm-started from) stay out of valid and test (``seen`` of :func:`split_frame`)."""
    out = Path(out)
    _check_format(fmt)
    # parameters and target first: fail before reading a large file
    if folds is None:
        check_fractions(valid, test)
    else:
        _check_int("--folds", folds, 2)
        check_fractions(valid, 0.0)
    _check_seed(seed)
    if train_per_locale is not None:
        _check_int("--train-per-locale", train_per_locale, 1)
    if seen_by and folds is not None:
        raise ConfigError("--seen-by makes one split (this week's valid and test on new queries), not --folds")
    if seen_by and train_per_locale is not None:
        raise ConfigError("--seen-by and --train-per-locale exclude each other (the train queries dropped would "
                          "move seen queries to test)")
    _check_out(out, overwrite, inputs=[path, *(seen_by or [])])
    seen, unchecked = None, []
    if seen_by:
        from q2pt.overlap import learnt_hashes

        parts = []
        for model_dir in seen_by:
            hashes, missed = learnt_hashes(model_dir)
            parts.append(hashes)
            unchecked += missed
        seen = np.unique(np.concatenate(parts))
        for reason in unchecked:
            log.warning("--seen-by: not all the queries learnt are known, a model warm-started from: %s", reason)
    frame, info = read_labelled_rows(path, max_query_chars=max_query_chars)
    source = {"source": info["source"], "source_layout": info["layout"], "source_files": info["files"]}
    if "sha256" in info:
        source["source_sha256"] = info["sha256"]
    if info["warnings"]:
        source["source_warnings"] = info["warnings"]
    if folds is None:
        splits, rep = split_frame(frame, valid=valid, test=test, seed=seed, train_per_locale=train_per_locale,
                                  seen=seen)
        rep = {**source, **rep, "format": fmt}
        if seen is not None:
            rep["seen_by"] = [str(m) for m in seen_by]
            if unchecked:
                rep["seen_unchecked"] = unchecked
        rep["validation"] = _validate_output(splits, f"the split of {path}", max_query_chars)
        write_splits(splits, out, fmt, report=rep, overwrite=overwrite)
        return rep
    results = fold_frames(frame, folds, valid=valid, seed=seed, train_per_locale=train_per_locale)
    fold_reports = []
    for splits, rep in results:
        rep.update({"format": fmt})
        rep["validation"] = _validate_output(splits, f"fold {rep['fold']} of {path}", max_query_chars)
        fold_reports.append(rep)
    first = fold_reports[0]
    summary = {
        **source,
        "folds": folds,
        "seed": first["seed"],
        "valid": first["valid"],
        "valid_of": first["valid_of"],
        "test": first["test"],
        "train_per_locale": train_per_locale,
        **{key: first[key] for key in ("rows_in", "rows_out", "duplicates_merged", "groups_merged", "label_conflicts")},
        "weight_merge": WEIGHT_MERGE,
        "format": fmt,
        "fold_dirs": [f"fold-{i}" for i in range(folds)],
        "per_fold": [
            {key: r[key] for key in ("fold", "splits", "locales", "locales_missing", "moved_to_test") if key in r}
            for r in fold_reports
        ],
    }
    write_folds([(s, {**source, **r}) for (s, _), r in zip(results, fold_reports)], out, fmt, report=summary,
                overwrite=overwrite)
    return summary


# --------------------------------------------------------------------------- text report
def _locale_table(locales: Mapping[str, Mapping[str, int]], moved: bool) -> list[str]:
    cols = ["groups", "train", "valid", "test"] + (["moved_to_test"] if moved else [])
    heads = ["locale", "queries", "train", "valid", "test"] + (["moved to test"] if moved else [])
    rows = [[loc] + [str(c.get(k, 0)) for k in cols] for loc, c in locales.items()]
    rows.append(["total"] + [str(sum(c.get(k, 0) for c in locales.values())) for k in cols])
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    def fmt(r: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))

    return [fmt(heads), *(fmt(r) for r in rows)]


def format_report(report: Mapping[str, Any]) -> str:
    """Human-readable summary of a :func:`split_file` report."""
    lines = [f"source: {report.get('source')} ({report.get('source_layout', 'file')})"]
    if report.get("source_sha256"):
        lines.append(f"sha256: {report['source_sha256']}")
    merged = (
        f"{report['duplicates_merged']} duplicate rows (same locale and normalized query) merged away: "
        f"{report['groups_merged']} queries had more than one row ({report['label_conflicts']} with different "
        f"product types, unioned; weights: {report['weight_merge']})"
        if report["duplicates_merged"] else "0 duplicate rows merged"
    )
    lines.append(f"rows: {report['rows_in']} read, {report['rows_out']} queries to split; {merged}")
    if report.get("source_warnings"):
        lines.append("warnings in the source: " + ", ".join(f"{kind} {n}" for kind, n in
                                                          sorted(report["source_warnings"].items())))
    tpl = report.get("train_per_locale")
    if "folds" in report and "per_fold" in report:
        lines.append(
            f"{report['folds']}-fold cross-validation per locale (seed {report['seed']}): each fold tests on 1/"
            f"{report['folds']} of every locale's queries; valid is {report['valid']:g} of the rest"
            + (f"; train keeps {tpl} queries per locale, the others move to test" if tpl else "")
        )
        for fold in report["per_fold"]:
            s = fold["splits"]
            moved = f", {fold['moved_to_test']} moved from train to test" if "moved_to_test" in fold else ""
            lines.append(f"  fold-{fold['fold']}: train {s['train']}, valid {s['valid']}, test {s['test']}{moved}")
            for split, locs in fold.get("locales_missing", {}).items():
                lines.append(f"    no {split} rows for: {', '.join(locs)}")
        lines.append("fold-0 per locale:")
        fold0 = report["per_fold"][0]
        lines.extend("  " + line for line in _locale_table(fold0["locales"], "moved_to_test" in fold0))
    else:
        lines.append(
            f"split per locale (seed {report['seed']}): valid {report['valid']:g}, test {report['test']:g}"
            + (f"; train keeps {tpl} queries per locale, {report.get('moved_to_test', 0)} moved to test" if tpl else "")
        )
        if "seen_to_train" in report:
            lines.append(f"{report['seen_to_train']} queries learnt by {', '.join(report.get('seen_by') or ['the models'])}"
                         " (or the models they were warm-started from) went to train: valid and test hold new queries "
                         "only (--seen-by)")
            lines += [f"  not known (a parent that cannot be read): {r}" for r in report.get("seen_unchecked") or ()]
        lines.extend(_locale_table(report["locales"], "moved_to_test" in report))
        for split, locs in report.get("locales_missing", {}).items():
            why = f"--{split} 0" if not report.get(split) else "too few queries"
            if report.get(split) and any((report.get("seen_per_locale") or {}).get(loc) for loc in locs):
                why = "too few queries, or too few new ones (--seen-by)"
            lines.append(f"no {split} rows for ({why}): {', '.join(locs)}")
    return "\n".join(lines)
