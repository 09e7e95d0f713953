"""Batch prediction with a trained model: which product types each query means.

A query's predicted types are those whose score reaches its locale's calibrated threshold
(from the model's manifest: recall at the target precision on validation data), or a
threshold given by the caller, best first, optionally cut to the ``top_k`` best. A
hierarchical model (``model.tree_``) predicts each query's deepest types that clear their
thresholds, backing off to the parent when no child is confident
(:meth:`q2pt.inference.Inference.paths`).

:func:`predict_frame` adds ``predicted_types``, ``predicted_scores`` and ``note`` columns to
a table of ``query``/``locale`` rows; a hierarchical model (unless ``flat``) adds
``predicted_levels`` (list of int: each type's level, 1 = top) and ``predicted_ancestors``
(list of lists of str: each type's ancestors, top level first), in the order of
``predicted_types``. :func:`predict_file` does it for a Parquet, JSONL, CSV or TSV file (in
chunks) and writes the result atomically. :class:`Predictions` holds these columns for every
prediction path (``q2pt predict``, :mod:`q2pt.streaming`, :mod:`q2pt.ray_predict`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from q2pt.data.schema import DEFAULT_MAX_QUERY_CHARS, row_problems
from q2pt.errors import DataError
from q2pt.inference import DEFAULT_BATCH_SIZE, check_threshold

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa

    from q2pt.models import Q2PTModel

logger = logging.getLogger(__name__)

TYPES = "predicted_types"
SCORES = "predicted_scores"
LEVELS = "predicted_levels"
ANCESTORS = "predicted_ancestors"
NOTE = "note"
#: the columns of a hierarchical prediction (not of a flat one)
PATH_COLUMNS = (LEVELS, ANCESTORS)
#: every column a prediction writes: an input's own columns of these names are replaced
PREDICTION_COLUMNS = (TYPES, SCORES, *PATH_COLUMNS, NOTE)


def path_columns(
    paths: Sequence[Sequence[dict[str, Any]]],
) -> tuple[list[list[str]], list[list[float]], list[list[int]], list[list[list[str]]]]:
    """Per query, the types, scores, levels and ancestors (names, top level first) of
    :meth:`q2pt.inference.Inference.paths`' answers, in their order."""
    return ([[p["product_type"] for p in row] for row in paths],
            [[float(p["score"]) for p in row] for row in paths],
            [[int(p["level"]) for p in row] for row in paths],
            [[[a["product_type"] for a in p["ancestors"]] for p in row] for row in paths])


def arrow_fields(paths: bool) -> "list[pa.Field]":
    """The Arrow fields of the prediction columns (:meth:`Predictions.arrow_arrays`), with the
    path columns when ``paths`` (a hierarchical prediction)."""
    import pyarrow as pa

    fields = [pa.field(TYPES, pa.list_(pa.string())), pa.field(SCORES, pa.list_(pa.float64()))]
    if paths:
        fields += [pa.field(LEVELS, pa.list_(pa.int32())), pa.field(ANCESTORS, pa.list_(pa.list_(pa.string())))]
    return [*fields, pa.field(NOTE, pa.string())]


@dataclass
class Predictions:
    """The predictions of a batch of queries: per query the predicted ``types``, their
    ``scores`` (same order) and a ``note`` ("" unless the locale was unseen in training); a
    hierarchical prediction also has each type's ``levels`` and ``ancestors`` (None for a
    flat model or a ``flat`` prediction)."""

    types: list[list[str]]
    scores: list[list[float]]
    notes: list[str]
    levels: list[list[int]] | None = None
    ancestors: list[list[list[str]]] | None = None

    @property
    def paths(self) -> bool:
        """Whether the predictions carry levels and ancestors (a hierarchical prediction)."""
        return self.levels is not None

    @property
    def pairs(self) -> list[list[tuple[str, float]]]:
        """Per query, the ``(type, score)`` pairs."""
        return [list(zip(t, s)) for t, s in zip(self.types, self.scores)]

    def columns(self) -> dict[str, list[Any]]:
        """The output columns, in order: ``predicted_types``, ``predicted_scores`` (rounded to 6
        decimals), ``predicted_levels`` and ``predicted_ancestors`` (hierarchical only), ``note``."""
        out: dict[str, list[Any]] = {TYPES: self.types, SCORES: [[round(s, 6) for s in row] for row in self.scores]}
        if self.levels is not None and self.ancestors is not None:
            out[LEVELS] = self.levels
            out[ANCESTORS] = self.ancestors
        out[NOTE] = self.notes
        return out

    def arrow_arrays(self) -> "list[pa.Array]":
        """:meth:`columns` as Arrow arrays typed as :func:`arrow_fields`."""
        import pyarrow as pa

        return [pa.array(values, type=field.type)
                for values, field in zip(self.columns().values(), arrow_fields(self.paths))]


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
) -> Predictions:
    """The :class:`Predictions` of queries with their locales.

    ``threshold`` None: each query's locale's calibrated threshold (the global one for a
    locale the model has no threshold for). A hierarchical model gives each query's deepest
    confident types with their levels and ancestors (``max_depth``, ``backoff``; see
    :meth:`q2pt.inference.InferenceCore.select_paths`); ``flat``: every confident type,
    ancestors included, without levels or ancestors (a flat model's answer).
    """
    check_threshold(threshold)
    result = model.infer(list(queries), list(locales), fallback_locale=fallback_locale, batch_size=batch_size)
    if result.core.tree is None or flat:
        preds = result.select(threshold=threshold, top_k=top_k, max_depth=max_depth, backoff=backoff, flat=flat)
        return Predictions([[t for t, _ in p] for p in preds], [[s for _, s in p] for p in preds], result.notes)
    types, scores, levels, ancestors = path_columns(
        result.paths(threshold=threshold, top_k=top_k, max_depth=max_depth, backoff=backoff))
    return Predictions(types, scores, result.notes, levels, ancestors)


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
    str), ``predicted_scores`` (list of float, same order), for a hierarchical model (unless
    ``flat``) ``predicted_levels`` (list of int) and ``predicted_ancestors`` (list of lists of
    str, top level first), and ``note`` ("" unless the locale was unseen in training)."""
    check_input(frame, source, max_query_chars=max_query_chars)
    preds = predict_rows(
        model, frame["query"].tolist(), frame["locale"].tolist(),
        threshold=threshold, top_k=top_k, fallback_locale=fallback_locale, batch_size=batch_size,
        max_depth=max_depth, backoff=backoff, flat=flat,
    )
    # an input's own prediction columns are replaced (path columns too: a flat answer has none)
    out = frame.drop(columns=[c for c in PREDICTION_COLUMNS if c in frame.columns])
    for name, values in preds.columns().items():
        out[name] = values
    return out


def check_output_is_not_input(input_path: str | Path, output_path: str | Path) -> None:
    """ConfigError when the predictions would be written over the file they are read from
    (``--overwrite`` or not: the input is the user's data)."""
    from q2pt.errors import ConfigError

    if Path(output_path).resolve() == Path(input_path).resolve():
        raise ConfigError(f"{output_path} is the input file: write the predictions to another path")


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
    overwrite: bool = False,
) -> int:
    """Predict every row of a Parquet/JSONL/CSV/TSV file (``query``, ``locale`` columns; other
    columns kept) and write them with the predictions (:func:`predict_frame`'s columns) to
    ``output_path`` (format from its extension; in CSV/TSV the lists are joined with ``|``,
    and ``predicted_ancestors`` is JSON text; an existing file is replaced only with
    ``overwrite``, the input file never). Returns the number of rows."""
    import pandas as pd
    from tqdm.auto import tqdm

    from q2pt.data.io import MISSING, check_target, detect_format, extra_column, read_table, write_table
    from q2pt.data.schema import any_bad_text, has_bad_text, replace_bad_text

    check_output_is_not_input(input_path, output_path)
    check_target(Path(output_path), overwrite, directory=False)
    out_fmt = detect_format(output_path)  # fail early on a bad output extension
    table = read_table(input_path)
    errors = [p for p in table.problems if p.severity == "error"]
    if errors:
        raise DataError(f"{input_path}: cannot read every row", errors)
    skipped = Counter(p.kind for p in table.problems)  # warnings: blank lines, which hold no row
    if skipped:
        logger.warning("%s: %s skipped (no query in them)", input_path,
                       ", ".join(f"{n} {kind.replace('_', ' ')}{'s' if n > 1 else ''}" for kind, n in sorted(skipped.items())))
    frame = table.frame
    check_input(frame, str(input_path), table.rows, max_query_chars)
    replaced = [c for c in frame.columns if c in PREDICTION_COLUMNS]
    if replaced:
        logger.warning("%s: input column(s) %s are replaced by the prediction columns", input_path, ", ".join(replaced))
    for col in frame.columns:  # a field a JSONL row does not have stays missing (not "<missing>")
        if col not in ("query", "locale") and frame[col].dtype == object:
            values = [None if v is MISSING else v for v in frame[col].tolist()]
            bad = [i for i, v in enumerate(values) if isinstance(v, str) and has_bad_text(v)] if any_bad_text(values) else []
            if bad:  # the extra columns are passed through: not refused, but not silently either
                logger.warning("%s: %d value(s) of column %r have bytes that are not UTF-8 (first at row %d): "
                               "written with U+FFFD in their place", input_path, len(bad), col, int(table.rows[bad[0]]))
                values = [replace_bad_text(v) if isinstance(v, str) else v for v in values]
            frame[col] = extra_column(values, index=frame.index)
    parts = []
    import sys

    options: dict[str, Any] = {"threshold": threshold, "top_k": top_k, "fallback_locale": fallback_locale,
                               "batch_size": batch_size, "source": str(input_path), "max_query_chars": max_query_chars,
                               "max_depth": max_depth, "backoff": backoff, "flat": flat}
    show = progress and sys.stderr.isatty()
    for start in tqdm(range(0, len(frame), chunk_size), disable=not show, desc="predicting", unit="chunk"):
        parts.append(predict_frame(model, frame.iloc[start : start + chunk_size], **options))
    result = pd.concat(parts, ignore_index=True) if parts else predict_frame(model, frame, **options)
    empty = sum(1 for v in result[TYPES] if len(v) == 0)
    if empty:
        logger.info("%s: %d of %d rows got no product type (none above its threshold)", input_path, empty, len(result))
    if out_fmt in ("csv", "tsv"):
        result[TYPES] = ["|".join(v) for v in result[TYPES]]
        result[SCORES] = ["|".join(f"{s:.6g}" for s in v) for v in result[SCORES]]
        if LEVELS in result.columns:
            result[LEVELS] = ["|".join(str(lv) for lv in v) for v in result[LEVELS]]
            result[ANCESTORS] = [json.dumps(v, ensure_ascii=False) for v in result[ANCESTORS]]
    write_table(result, output_path, out_fmt)
    return len(result)


def format_predictions(queries: Sequence[str], preds: Predictions) -> str:
    """Human-readable lines: ``query<TAB>type (score), type (score)<TAB>[note]``; a
    hierarchical prediction's types (full paths) with their levels: ``type (score, level N)``.
    A query's line breaks, tabs and other control characters are shown escaped (``\\n``), so
    that each query stays one line of three columns."""
    import unicodedata

    lines = []
    for i, (q, note) in enumerate(zip(queries, preds.notes)):
        if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in q):  # (a backslash is escaped too then)
            q = "".join(c.encode("unicode_escape").decode("ascii") if c == "\\" or unicodedata.category(c) in
                        ("Cc", "Zl", "Zp") else c for c in q)
        levels = preds.levels[i] if preds.levels is not None else None
        types = ", ".join(f"{t} ({s:.3f})" if levels is None else f"{t} ({s:.3f}, level {levels[j]})"
                          for j, (t, s) in enumerate(zip(preds.types[i], preds.scores[i])))
        lines.append(f"{q}\t{types or '(no type above the threshold)'}" + (f"\t[{note}]" if note else ""))
    return "\n".join(lines)


def as_records(queries: Sequence[str], locales: Sequence[str], preds: Predictions) -> list[dict[str, Any]]:
    """JSON-ready records of predictions: query, locale and :meth:`Predictions.columns`."""
    columns = preds.columns()
    return [{"query": q, "locale": loc, **{name: values[i] for name, values in columns.items()}}
            for i, (q, loc) in enumerate(zip(queries, locales))]
