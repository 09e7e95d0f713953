"""Batch prediction with a trained model: which product types each query means.

A query's predicted types are those whose score reaches its locale's calibrated threshold
(from the model's manifest: recall at the target precision on validation data), or a
threshold given by the caller, best first, optionally cut to the ``top_k`` best.

:func:`predict_frame` adds ``predicted_types``, ``predicted_scores`` and ``note`` columns to
a table of ``query``/``locale`` rows; :func:`predict_file` does it for a Parquet, JSONL, CSV
or TSV file (in chunks) and writes the result atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from q2pt.data.schema import DEFAULT_MAX_QUERY_CHARS, has_bad_text, query_problem
from q2pt.errors import DataError, Problem
from q2pt.inference import DEFAULT_BATCH_SIZE, check_threshold

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.models import Q2PTModel

TYPES = "predicted_types"
SCORES = "predicted_scores"
NOTE = "note"


def predict_rows(
    model: "Q2PTModel",
    queries: Sequence[str],
    locales: Sequence[str],
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    fallback_locale: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_depth: int | None = None,
    backoff: bool = True,
    flat: bool = False,
) -> tuple[list[list[tuple[str, float]]], list[str]]:
    """Predicted ``(type, score)`` lists and notes for queries with their locales.

    ``threshold`` None: each query's locale's calibrated threshold (the global one for a
    locale the model has no threshold for). A hierarchical model gives each query's deepest
    confident types (``max_depth``, ``backoff``; ``flat``: every confident type, ancestors
    included; see :meth:`q2pt.inference.InferenceCore.select_paths`).
    """
    check_threshold(threshold)
    result = model.infer(list(queries), list(locales), fallback_locale=fallback_locale, batch_size=batch_size)
    return result.select(threshold=threshold, top_k=top_k, max_depth=max_depth, backoff=backoff,
                         flat=flat), result.notes


def check_input(frame: "pd.DataFrame", file: str, rows: "Sequence[int] | Any | None" = None,
                max_query_chars: int = DEFAULT_MAX_QUERY_CHARS) -> None:
    """Prediction input is checked like training input (:func:`q2pt.data.schema.query_problem`:
    no empty, over-long or non-UTF-8 queries; non-empty locales): DataError naming every row
    (1-based, or ``rows``' numbers) that cannot be predicted; nothing is predicted then."""
    missing = [c for c in ("query", "locale") if c not in frame.columns]
    if missing:
        raise DataError(f"{file}: missing column(s) {', '.join(missing)} (need query and locale)")
    numbers = [int(r) for r in rows] if rows is not None else None
    problems = row_problems(frame["query"].tolist(), frame["locale"].tolist(), file, rows=numbers,
                            max_query_chars=max_query_chars)
    if problems:
        raise DataError(f"{file}: {len(problems)} problem(s) in rows that cannot be predicted (nothing was predicted)",
                        problems)


def row_problems(
    queries: Sequence[Any], locales: Sequence[Any], file: str, *, first_row: int | None = 1,
    rows: Sequence[int] | None = None, max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
) -> list[Problem]:
    """The problems of prediction rows (the checks of :func:`check_input`): row numbers from
    ``rows``, else counted from ``first_row`` (None: unknown)."""
    problems = []
    for i, (q, loc) in enumerate(zip(queries, locales)):
        row = rows[i] if rows is not None else (None if first_row is None else first_row + i)
        issue = query_problem(q, max_query_chars)
        if issue is not None:
            problems.append(Problem(file, row, "query", issue[1] if row is not None else f"{issue[1]} ({_shown(q)})"))
        if not isinstance(loc, str) or not loc.strip() or has_bad_text(loc):
            problems.append(Problem(file, row, "locale", f"expected a non-empty locale id, got {_shown(loc)}"))
    return problems


def _shown(value: Any) -> str:
    return "nothing" if value is None or type(value).__name__ == "_Missing" else repr(value)[:60]


def predict_frame(
    model: "Q2PTModel",
    frame: "pd.DataFrame",
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    fallback_locale: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    source: str = "input",
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    max_depth: int | None = None,
    backoff: bool = True,
    flat: bool = False,
) -> "pd.DataFrame":
    """``frame`` (with ``query`` and ``locale`` columns) plus ``predicted_types`` (list of
    str), ``predicted_scores`` (list of float, same order) and ``note`` ("" unless the
    locale was unseen in training)."""
    check_input(frame, source, max_query_chars=max_query_chars)
    preds, notes = predict_rows(
        model, frame["query"].tolist(), frame["locale"].tolist(),
        threshold=threshold, top_k=top_k, fallback_locale=fallback_locale, batch_size=batch_size,
        max_depth=max_depth, backoff=backoff, flat=flat,
    )
    out = frame.copy()
    out[TYPES] = [[t for t, _ in p] for p in preds]
    out[SCORES] = [[round(s, 6) for _, s in p] for p in preds]
    out[NOTE] = notes
    return out


def predict_file(
    model: "Q2PTModel",
    input_path: str | Path,
    output_path: str | Path,
    *,
    threshold: float | None = None,
    top_k: int | None = None,
    fallback_locale: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = 50_000,
    progress: bool = False,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    max_depth: int | None = None,
    backoff: bool = True,
    flat: bool = False,
) -> int:
    """Predict every row of a Parquet/JSONL/CSV/TSV file (``query``, ``locale`` columns; other
    columns kept) and write them with the predictions to ``output_path`` (format from its
    extension; in CSV/TSV the lists are joined with ``|``). Returns the number of rows."""
    import pandas as pd
    from tqdm.auto import tqdm

    from q2pt.data.io import MISSING, detect_format, read_table, write_table

    out_fmt = detect_format(output_path)  # fail early on a bad output extension
    table = read_table(input_path)
    if table.problems:
        raise DataError(f"{input_path}: cannot read every row", list(table.problems))
    frame = table.frame
    check_input(frame, str(input_path), table.rows, max_query_chars)
    for col in frame.columns:  # a field a JSONL row does not have stays missing (not "<missing>")
        if frame[col].dtype == object:
            frame[col] = [None if v is MISSING else v for v in frame[col].tolist()]
    parts = []
    import sys

    show = progress and sys.stderr.isatty()
    for start in tqdm(range(0, len(frame), chunk_size), disable=not show, desc="predicting", unit="chunk"):
        parts.append(
            predict_frame(
                model, frame.iloc[start : start + chunk_size], threshold=threshold, top_k=top_k,
                fallback_locale=fallback_locale, batch_size=batch_size, source=str(input_path),
                max_query_chars=max_query_chars, max_depth=max_depth, backoff=backoff, flat=flat,
            )
        )
    result = pd.concat(parts, ignore_index=True) if parts else predict_frame(model, frame, source=str(input_path))
    if out_fmt in ("csv", "tsv"):
        result[TYPES] = ["|".join(v) for v in result[TYPES]]
        result[SCORES] = ["|".join(f"{s:.6g}" for s in v) for v in result[SCORES]]
    write_table(result, output_path, out_fmt)
    return len(result)


def format_predictions(
    queries: Sequence[str], preds: Sequence[Sequence[tuple[str, float]]], notes: Sequence[str]
) -> str:
    """Human-readable lines: ``query<TAB>type (score), type (score)  [note]``."""
    lines = []
    for q, p, note in zip(queries, preds, notes):
        types = ", ".join(f"{t} ({s:.3f})" for t, s in p) or "(no type above the threshold)"
        lines.append(f"{q}\t{types}" + (f"\t[{note}]" if note else ""))
    return "\n".join(lines)


def as_records(
    queries: Sequence[str], locales: Sequence[str], preds: Sequence[Sequence[tuple[str, float]]], notes: Sequence[str]
) -> list[dict[str, Any]]:
    """JSON-ready records of predictions."""
    return [
        {"query": q, "locale": loc, TYPES: [t for t, _ in p], SCORES: [round(s, 6) for _, s in p], NOTE: note}
        for q, loc, p, note in zip(queries, locales, preds, notes)
    ]
