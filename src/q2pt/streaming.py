"""Streaming batch prediction over large Parquet files, with bounded memory and resume.

:func:`stream_predict` predicts every row of a Parquet file with ``query`` and ``locale``
columns (any other columns are carried through) in *parts* of ``chunk_size`` rows:

* part ``k`` holds input rows ``[k * chunk_size, (k + 1) * chunk_size)``, read with
  ``pyarrow.parquet.ParquetFile.iter_batches`` from the row groups that hold them, so a
  process holds one part (plus at most one row group's pages) whatever the file's size;
* each part is written atomically (temporary file + rename) as
  ``OUT/part-000000.parquet`` with the input columns, ``input_row`` (the row's 0-based
  position in the input: a row id) and the predictions (``predicted_types``,
  ``predicted_scores``, for a hierarchical model unless ``flat`` ``predicted_levels``
  (list<int32>) and ``predicted_ancestors`` (list<list<string>>), and ``note``, as in
  :func:`q2pt.predict.predict_frame`). A part file exists only complete, so a run killed at
  any moment loses at most the parts in flight;
* ``OUT/_manifest.json`` says what the run is (input fingerprint, model, options,
  ``chunk_size``) and ``OUT/_progress.json`` lists the finished parts; ``resume=True``
  checks the manifest and skips every part whose file is there and complete, so every
  input row is predicted exactly once over any number of interruptions;
* with ``workers=N`` (N >= 1) the parts are shared out, as they finish, among N worker
  processes (``python -m q2pt.streaming --worker``), each holding one copy of the model
  and running torch with one thread; ``workers=0`` predicts in this process with torch's
  intra-op threads. Parts are handed out over the workers' stdin/stdout as text lines
  (no pickling). ``docs/scale.md`` has the measured comparison on this project's 2-core
  machine;
* a tqdm bar counts rows (on a terminal).

The output is the folder of parts (``pandas.read_parquet(OUT)`` and
``pyarrow.dataset`` read it, skipping the ``_``-prefixed files), or, when ``output`` ends
in ``.parquet``, one file merged from the parts of the working folder ``OUTPUT.parts``
(streamed part by part; the folder is removed once the merged file is in place).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import math
import os
import selectors
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from q2pt.data.schema import DEFAULT_MAX_QUERY_CHARS, row_problems
from q2pt.errors import ConfigError, DataError, ModelLoadError, Problem, Q2PTError
from q2pt.inference import DEFAULT_BATCH_SIZE, check_flat_model_options, check_threshold, check_top_k
from q2pt.io import atomic_path, sha256_of_file, write_json
from q2pt.predict import (
    NOTE,
    PATH_COLUMNS,
    SCORES,
    TYPES,
    arrow_fields,
    check_output_is_not_input,
    predict_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from q2pt.models import Q2PTModel

logger = logging.getLogger(__name__)

__all__ = ["StreamResult", "stream_predict", "parts_folder", "read_output", "DEFAULT_CHUNK_SIZE"]

FORMAT = 1
MANIFEST = "_manifest.json"
PROGRESS = "_progress.json"
ROW_ID = "input_row"
#: the output columns of a flat prediction; a hierarchical one adds ``PATH_COLUMNS``
OUTPUT_COLUMNS = (ROW_ID, TYPES, SCORES, NOTE)
DEFAULT_CHUNK_SIZE = 100_000
#: below this many rows to predict, ``workers=None`` predicts in-process (starting a
#: worker -- importing torch and loading the model -- costs seconds)
AUTO_WORKERS_MIN_ROWS = 200_000


def part_name(k: int) -> str:
    return f"part-{k:06d}.parquet"


def parts_folder(output: str | Path) -> Path:
    """Where the parts go: ``output`` itself, or ``OUTPUT.parts`` for a ``.parquet`` output."""
    output = Path(output)
    return output.with_name(output.name + ".parts") if output.suffix.lower() == ".parquet" else output


@dataclass
class StreamResult:
    """What a :func:`stream_predict` run did."""

    output: Path  # the folder of parts, or the merged file
    rows: int  # rows in the input (= rows in the output)
    parts: int
    parts_done_before: int  # parts found finished (resume) and skipped
    rows_predicted: int  # rows predicted by this run
    workers: int
    seconds: float
    merged: bool

    @property
    def rows_per_second(self) -> float:
        return self.rows_predicted / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class _Options:
    """Everything a worker needs (sent to it as one JSON line)."""

    model: str | None
    input: str
    parts_dir: str
    chunk_size: int
    columns: list[str]
    threshold: float | None = None
    top_k: int | None = None
    fallback_locale: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = 1
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    max_depth: int | None = None
    backoff: bool = True
    flat: bool = False
    paths: bool = False  # a hierarchical prediction: the output has PATH_COLUMNS

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ----------------------------------------------------------------------------- input


@dataclass
class _Input:
    path: Path
    num_rows: int
    columns: list[str]
    schema: "pa.Schema"
    row_group_starts: list[int]  # first row of each non-empty row group
    row_groups: list[int]  # their indexes
    fingerprint: str


def _open_input(path: str | Path) -> _Input:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    if path.suffix.lower() in (".jsonl", ".csv", ".tsv"):
        raise DataError(f"{path}: streaming prediction reads Parquet files (row groups); "
                        "predict a JSONL/CSV/TSV file without --stream, or convert it to Parquet")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types
        raise DataError(f"{path}: cannot read Parquet file: {exc}") from None
    meta = pf.metadata
    schema = pf.schema_arrow
    names = list(schema.names)
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate column name(s): {', '.join(dupes)}")
    missing = [c for c in ("query", "locale") if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (need query and locale)")
    for col in ("query", "locale"):
        typ = schema.field(col).type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)):
            raise DataError(f"{path}: column {col!r} must hold strings, it holds {typ}")
    starts, groups = [], []
    pos = 0
    sizes = []
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        sizes.append(n)
        if n > 0:
            starts.append(pos)
            groups.append(i)
        pos += n
    h = hashlib.sha256()
    # the file's bytes, not only its shape: an input rewritten between a kill and the resume with
    # the same size and row groups (uncompressed, fixed-width values) was resumed into, mixing rows
    h.update(json.dumps({"rows": meta.num_rows, "groups": sizes, "schema": str(schema.remove_metadata()),
                         "sha256": sha256_of_file(path)}).encode())
    return _Input(path, int(meta.num_rows), names, schema, starts, groups, h.hexdigest()[:32])


def _read_rows(pf: Any, info: _Input, start: int, stop: int, columns: Sequence[str]) -> "pa.Table":
    """Rows ``[start, stop)`` of the file: ``iter_batches`` over the row groups holding them."""
    import pyarrow as pa

    schema = pa.schema([info.schema.field(c) for c in columns])
    if stop <= start:
        return schema.empty_table()
    first = bisect.bisect_right(info.row_group_starts, start) - 1
    last = bisect.bisect_left(info.row_group_starts, stop) - 1
    groups = info.row_groups[first : last + 1]
    pos = info.row_group_starts[first]
    pieces = []
    batch_rows = max(1, min(stop - start, 1 << 16))
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=list(columns), use_threads=False):
        b_start, pos = pos, pos + batch.num_rows
        if pos <= start:
            continue
        lo = max(start - b_start, 0)
        hi = min(stop, pos) - b_start
        pieces.append(batch.slice(lo, hi - lo))
        if pos >= stop:
            break
    table = pa.Table.from_batches(pieces, schema=schema) if pieces else schema.empty_table()
    if table.num_rows != stop - start:  # pragma: no cover - a file changed under us
        raise DataError(f"{info.path}: expected rows {start}..{stop - 1}, read {table.num_rows}; did the file change?")
    return table


def _strings(column: Any) -> list[Any]:
    return column.to_pylist()


def _check_every_row(info: _Input, max_query_chars: int) -> None:
    """DataError naming every row of the input that cannot be predicted, before any part is
    predicted (a part's own check stopped at the first bad part, and a fresh run's finished parts
    went with it: each bad row cost a rerun). Reads the query and locale columns alone."""
    import pyarrow.parquet as pq

    problems: list[Any] = []
    start = 0
    for batch in pq.ParquetFile(info.path).iter_batches(batch_size=65_536, columns=["query", "locale"]):
        problems += row_problems(batch.column(0).to_pylist(), batch.column(1).to_pylist(), str(info.path),
                                 first_row=start + 1, max_query_chars=max_query_chars)
        start += batch.num_rows
    if problems:
        raise DataError(f"{info.path}: {len(problems)} problem(s) in rows that cannot be predicted "
                        "(nothing was predicted)", problems)


def _check_rows(file: str, start: int, queries: list[Any], locales: list[Any],
                max_query_chars: int = DEFAULT_MAX_QUERY_CHARS) -> None:
    """DataError naming every row (1-based, like the rest of q2pt) that cannot be predicted."""
    problems = row_problems(queries, locales, file, first_row=start + 1, max_query_chars=max_query_chars)
    if problems:
        raise DataError(f"{file}: {len(problems)} problem(s) in rows that cannot be predicted", problems)


# ----------------------------------------------------------------------------- one part


def output_schema(info: _Input, columns: Sequence[str], paths: bool = False) -> "pa.Schema":
    """Input columns (``columns``) + input_row + predictions (with the levels and ancestors of
    a hierarchical prediction when ``paths``: :func:`q2pt.predict.arrow_fields`)."""
    import pyarrow as pa

    return pa.schema([*(info.schema.field(c) for c in columns), pa.field(ROW_ID, pa.int64()), *arrow_fields(paths)])


def _predicts_paths(model: "Q2PTModel | str | Path", flat: bool) -> bool:
    """Whether ``model`` predicts hierarchically (a tree, not ``flat``): its output has the path
    columns. A model folder's manifest says whether it has a tree."""
    if flat:
        return False
    if isinstance(model, (str, Path)):
        from q2pt.model_folder import read_manifest

        return bool(read_manifest(Path(model)).get("tree"))
    return model.tree_ is not None


def _predict_part(model: "Q2PTModel", pf: Any, info: _Input, opts: _Options, k: int, schema: "pa.Schema") -> int:
    """Predict part ``k`` and write its file atomically; returns its number of rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = k * opts.chunk_size
    stop = min(start + opts.chunk_size, info.num_rows)
    read_cols = list(dict.fromkeys([*opts.columns, "query", "locale"]))
    table = _read_rows(pf, info, start, stop, read_cols)
    queries = _strings(table.column("query"))
    locales = _strings(table.column("locale"))
    _check_rows(str(info.path), start, queries, locales, opts.max_query_chars)
    preds = predict_rows(
        model, queries, locales, threshold=opts.threshold, top_k=opts.top_k,
        fallback_locale=opts.fallback_locale, batch_size=opts.batch_size,
        max_depth=opts.max_depth, backoff=opts.backoff, flat=opts.flat,
    )
    if preds.paths != opts.paths:  # pragma: no cover - the model changed under the run
        raise ModelLoadError("the model's predictions do not match the run's columns (did the model folder change?)")
    arrays = [table.column(c) for c in opts.columns]
    arrays += [pa.array(np.arange(start, stop, dtype=np.int64)), *preds.arrow_arrays()]
    out = pa.Table.from_arrays(arrays, schema=schema)
    with atomic_path(Path(opts.parts_dir) / part_name(k)) as tmp:
        pq.write_table(out, tmp)
    return out.num_rows


def _part_complete(path: Path, expected_rows: int) -> bool:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows == expected_rows
    except Exception:  # unreadable: redo it
        return False


# ----------------------------------------------------------------------------- the run


def _model_fingerprint(model: "Q2PTModel | str | Path") -> str:
    if isinstance(model, (str, Path)):
        path = Path(model) / "manifest.json"
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()[:32]
        except OSError as exc:
            raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = json.dumps(getattr(model, "manifest", {}), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class _OnceFilter(logging.Filter):
    """Lets each distinct log message through once (chunks repeat the same warnings)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


@contextlib.contextmanager
def _each_message_once() -> Iterator[None]:
    """Within the block, each distinct message of q2pt's models reaches each handler once; the
    filter comes off after it (a worker run in a process that goes on, as the protocol test does,
    hid that process's later warnings)."""
    once = _OnceFilter()
    handlers = _handlers(logging.getLogger("q2pt.models"))
    for handler in handlers:
        handler.addFilter(once)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(once)


def _handlers(log: logging.Logger | None) -> list[logging.Handler]:
    """The handlers a record of ``log`` reaches (its own and its ancestors')."""
    found: list[logging.Handler] = []
    while log is not None:
        found.extend(log.handlers)
        log = log.parent if log.propagate else None
    return found


def _check_identity(saved: Mapping[str, Any] | None, identity: Mapping[str, Any], where: Path) -> None:
    """ConfigError unless the run recorded at ``where`` (``saved``) is the one asked for."""
    if saved is None:
        raise ConfigError(f"cannot resume into {where}: it does not record its run (written by an earlier q2pt), so "
                          "it cannot be told to be this one; pass overwrite (--overwrite) to predict again")
    for key, value in identity.items():
        if saved.get(key) != value:
            raise ConfigError(f"cannot resume into {where}: its run had a different {key} "
                              f"({saved.get(key)!r}, now {value!r}); use the same settings, or overwrite")


#: the key of a merged output's Parquet metadata that records its run (the parts' manifest)
RUN_METADATA_KEY = b"q2pt.stream_run"


def _recorded_chunk_size(output: str | Path) -> int | None:
    """The chunk size of the run recorded at ``output`` (its parts' manifest, or a merged file's
    metadata), or None."""
    manifest = parts_folder(output) / MANIFEST
    try:
        if manifest.is_file():
            size = json.loads(manifest.read_text(encoding="utf-8")).get("chunk_size")
        elif Path(output).is_file():
            size = (_merged_identity(Path(output)) or {}).get("chunk_size")
        else:
            return None
    except (OSError, ValueError, ConfigError):
        return None  # (the resume itself says what is wrong with it)
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _merged_identity(output: Path) -> dict[str, Any] | None:
    """The run a merged ``.parquet`` output records (:func:`merge_parts`), or None."""
    import pyarrow.parquet as pq

    try:
        raw = (pq.read_schema(output).metadata or {}).get(RUN_METADATA_KEY)
        return json.loads(raw) if raw else None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot resume into {output}: it cannot be read as Parquet ({exc})") from None


def _prepare_folder(parts_dir: Path, identity: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Create, check (resume) or clear (overwrite) the parts folder."""
    manifest_path = parts_dir / MANIFEST
    if parts_dir.exists() and not parts_dir.is_dir():
        raise ConfigError(f"{parts_dir} exists and is not a folder")
    if parts_dir.is_dir() and any(parts_dir.iterdir()):
        if not manifest_path.is_file():
            raise ConfigError(
                f"refusing to write predictions into {parts_dir}: it is not empty and holds no {MANIFEST} "
                "(not a q2pt streaming output); choose a new folder"
            )
        if overwrite:
            shutil.rmtree(parts_dir)
        elif not resume:
            raise ConfigError(
                f"{parts_dir} holds a streaming prediction run already: pass resume (--resume) to finish it, "
                "or overwrite (--overwrite) to start again"
            )
        else:
            try:
                saved = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{manifest_path} is unreadable ({exc}); start again with overwrite") from None
            _check_identity(saved, identity, parts_dir)
            for tmp in parts_dir.glob(".*.tmp"):  # parts that were being written when killed
                shutil.rmtree(tmp, ignore_errors=True)
            return
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_json(manifest_path, {**identity, "complete": False})


def stream_predict(
    model: "Q2PTModel | str | Path",
    input_path: str | Path,
    output: str | Path,
    *,
    chunk_size: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    threshold: float | None = None,
    top_k: int | None = None,
    fallback_locale: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    columns: Sequence[str] | None = None,
    progress: bool = True,
    keep_parts: bool = False,
    on_part: Callable[[int, int], None] | None = None,
    max_depth: int | None = None,
    backoff: bool = True,
    flat: bool = False,
) -> StreamResult:
    """Predict every row of a Parquet file in parts; see the module docstring.

    Args:
        model: a model folder (needed for ``workers >= 1``) or a loaded model.
        input_path: a Parquet file with ``query`` and ``locale`` columns.
        output: a folder for the parts, or a ``.parquet`` file to merge them into.
        chunk_size: rows per part (the memory bound and the unit of resume); None: the run's
            when resuming one, else ``DEFAULT_CHUNK_SIZE``.
        workers: worker processes, each with its own model copy and one torch thread;
            0: predict in this process; None: one per CPU core when there are at least
            ``AUTO_WORKERS_MIN_ROWS`` rows to predict and a model folder, else 0.
        threads: torch intra-op threads for ``workers=0`` (None: leave torch's setting).
        resume: finish an interrupted run into the same ``output`` (same input, model,
            options and chunk size), skipping its finished parts.
        overwrite: discard a previous run in ``output`` and start again.
        threshold, top_k, fallback_locale, batch_size, max_depth, backoff, flat: as in
            :func:`q2pt.predict.predict_rows`.
        columns: input columns to carry into the output (default: all).
        progress: a tqdm bar of rows (on a terminal).
        keep_parts: with a ``.parquet`` output, keep the parts folder after merging.
        on_part: called in this process as ``on_part(part, rows)`` after each part is
            written (e.g. progress reporting).

    Returns:
        a :class:`StreamResult`. Raises DataError for unreadable input or rows that cannot
        be predicted (with their 1-based row numbers), ConfigError for bad options or an
        output folder that belongs to another run.
    """

    t0 = time.perf_counter()
    if chunk_size is None:
        chunk_size = (_recorded_chunk_size(output) if resume else None) or DEFAULT_CHUNK_SIZE
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    check_top_k(top_k)
    if workers is not None and workers < 0:
        raise ConfigError(f"workers must be 0 or more, got {workers}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other")
    check_threshold(threshold)
    output = Path(output)
    check_output_is_not_input(input_path, output)
    if output.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        raise ConfigError(f"streaming prediction writes Parquet: give --out a .parquet file or a folder for its parts, "
                          f"not {output} (or predict without --stream to write {output.suffix})")
    merged_out = output.suffix.lower() == ".parquet"
    parts_dir = parts_folder(output)
    model_dir = None if not isinstance(model, (str, Path)) else str(Path(model).resolve())

    info = _open_input(input_path)
    cols = list(info.columns if columns is None else columns)
    unknown = [c for c in cols if c not in info.columns]
    if unknown:
        raise ConfigError(f"{info.path} has no column(s) {', '.join(unknown)}")
    paths = _predicts_paths(model, flat)
    check_flat_model_options(paths, max_depth, backoff, flat)  # before any part is written
    outputs = OUTPUT_COLUMNS + PATH_COLUMNS  # (a flat answer drops an input's path columns too)
    clash = [c for c in cols if c in outputs]
    if clash:
        logger.warning("%s: input column(s) %s are replaced by the prediction columns", info.path, ", ".join(clash))
        cols = [c for c in cols if c not in outputs]
    n_parts = math.ceil(info.num_rows / chunk_size)

    if merged_out and output.exists() and not (resume or overwrite):
        raise ConfigError(f"{output} exists; pass overwrite (--overwrite) to replace it, or choose another path")
    if merged_out and output.is_dir():
        raise ConfigError(f"{output} is a folder; a .parquet output is one file (give a folder path without .parquet)")

    identity = {
        "format": FORMAT,
        "input": {"path": str(info.path.resolve()), "rows": info.num_rows, "fingerprint": info.fingerprint},
        "model": _model_fingerprint(model),
        "chunk_size": chunk_size,
        "columns": cols,
        "options": {"threshold": threshold, "top_k": top_k, "fallback_locale": fallback_locale,
                    # hierarchical choices only when not the defaults (earlier runs' identities stay)
                    **({"max_depth": max_depth} if max_depth is not None else {}),
                    **({"backoff": False} if not backoff else {}), **({"flat": True} if flat else {})},
        # a hierarchical run's parts hold the path columns (runs without them are not resumed into)
        **({"path_columns": list(PATH_COLUMNS)} if paths else {}),
    }
    if merged_out and resume and output.is_file() and not parts_dir.exists():
        _check_identity(_merged_identity(output), identity, output)  # (it was resumed into whatever its run)
        logger.info("%s is complete already (merged from a finished run)", output)
        return StreamResult(output, info.num_rows, n_parts, n_parts, 0, 0, time.perf_counter() - t0, True)
    if not resume or not parts_dir.is_dir():
        _check_every_row(info, max_query_chars)  # (a run resumed was checked when it started)
    made_here = not parts_dir.exists()  # (a folder the caller made is emptied, never removed)
    _prepare_folder(parts_dir, identity, resume, overwrite)

    def rows_of(k: int) -> int:
        return min(chunk_size, info.num_rows - k * chunk_size)

    done: dict[int, int] = {}
    for k in range(n_parts):
        path = parts_dir / part_name(k)
        if path.is_file():
            if _part_complete(path, rows_of(k)):
                done[k] = rows_of(k)
            else:
                path.unlink()
    todo = [k for k in range(n_parts) if k not in done]
    before = len(done)
    rows_todo = sum(rows_of(k) for k in todo)
    if done:
        logger.info("resuming: %d of %d parts done already, %d rows to go", before, n_parts, rows_todo)

    if workers is None:
        cores = os.cpu_count() or 1
        workers = cores if (model_dir is not None and cores > 1 and rows_todo >= AUTO_WORKERS_MIN_ROWS) else 0
    workers = min(workers, len(todo))
    if workers >= 1 and model_dir is None:
        raise ConfigError("worker processes load the model from its folder: pass the model folder path, or workers=0")

    opts = _Options(
        model=model_dir, input=str(info.path), parts_dir=str(parts_dir), chunk_size=chunk_size, columns=cols,
        threshold=threshold, top_k=top_k, fallback_locale=fallback_locale, batch_size=batch_size,
        threads=1, max_query_chars=max_query_chars, max_depth=max_depth, backoff=backoff, flat=flat, paths=paths,
    )
    last_write = [0.0]

    def record(k: int, rows: int) -> None:
        done[k] = rows
        bar.update(rows)
        now = time.monotonic()
        if now - last_write[0] > 2.0 or len(done) == n_parts:
            _write_progress(parts_dir, done, n_parts, info.num_rows)
            last_write[0] = now
        if on_part is not None:
            on_part(k, rows)

    from tqdm.auto import tqdm

    show = progress and sys.stderr.isatty()
    bar = tqdm(total=info.num_rows, initial=info.num_rows - rows_todo, disable=not show, unit="row",
               unit_scale=True, desc="predicting", smoothing=0.1)
    try:
        with _each_message_once():  # each chunk would repeat the same warnings (e.g. unseen locales)
            if todo and workers == 0:
                _run_in_process(model, info, opts, todo, record, threads)
            elif todo:
                _run_workers(opts, todo, workers, record)
    except DataError:
        if not before:  # rows that cannot be predicted: the input must change, and no part of this run can be kept
            if made_here:
                shutil.rmtree(parts_dir, ignore_errors=True)
            else:
                for item in parts_dir.iterdir():
                    shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    _write_progress(parts_dir, done, n_parts, info.num_rows)
    write_json(parts_dir / MANIFEST, {**identity, "complete": True, "parts": n_parts, "rows": info.num_rows})
    result_path = parts_dir
    if merged_out:
        schema = output_schema(info, cols, paths)
        merge_parts(parts_dir, output, n_parts, schema.with_metadata(
            {**(schema.metadata or {}), RUN_METADATA_KEY: json.dumps(identity).encode()}))
        if not keep_parts:
            shutil.rmtree(parts_dir, ignore_errors=True)
        result_path = output
    return StreamResult(result_path, info.num_rows, n_parts, before, rows_todo, workers,
                        time.perf_counter() - t0, merged_out)


def _write_progress(parts_dir: Path, done: dict[int, int], n_parts: int, rows: int) -> None:
    write_json(parts_dir / PROGRESS, {
        "parts_total": n_parts,
        "parts_done": len(done),
        "rows_total": rows,
        "rows_done": int(sum(done.values())),
        "done": sorted(done),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def merge_parts(parts_dir: Path, output: Path, n_parts: int, schema: "pa.Schema") -> None:
    """Concatenate the parts, in order and one at a time, into one Parquet file (atomic)."""
    import pyarrow.parquet as pq

    with atomic_path(output) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for k in range(n_parts):
                pf = pq.ParquetFile(parts_dir / part_name(k))
                for i in range(pf.metadata.num_row_groups):
                    writer.write_table(pf.read_row_group(i).cast(schema))


def read_output(path: str | Path) -> "pa.Table":
    """The predictions of a finished run (a merged file or a folder of parts), in input order."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_file():
        return pq.read_table(path)
    files = sorted(path.glob("part-*.parquet"))
    if not files:
        raise DataError(f"{path}: no part files")
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f) for f in files])


# ----------------------------------------------------------------------------- in process


def _run_in_process(
    model: "Q2PTModel | str | Path", info: _Input, opts: _Options, todo: Sequence[int],
    record: Callable[[int, int], None], threads: int | None,
) -> None:
    import pyarrow.parquet as pq

    from q2pt.errors import require

    torch = require("torch", "torch")
    if isinstance(model, (str, Path)):
        from q2pt.models import load_model

        model = load_model(model)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        pf = pq.ParquetFile(info.path)
        schema = output_schema(info, opts.columns, opts.paths)
        for k in todo:
            record(k, _predict_part(model, pf, info, opts, k, schema))
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- workers


@dataclass
class _Worker:
    proc: subprocess.Popen
    index: int
    part: int | None = None  # the part it is working on
    ready: bool = False
    buffer: bytes = b""


def _error_to_json(exc: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, DataError):
        out["message"] = Exception.__str__(exc)
        out["problems"] = [p.__dict__ for p in exc.problems]
    return out


def _error_from_json(data: dict[str, Any]) -> Q2PTError:
    import q2pt.errors as errors

    cls = getattr(errors, str(data.get("type")), None)
    message = str(data.get("message", "worker failed"))
    if cls is DataError:
        return DataError(message, [Problem(**p) for p in data.get("problems", [])])
    if isinstance(cls, type) and issubclass(cls, Q2PTError):
        return cls(message)
    return Q2PTError(f"a prediction worker failed: {data.get('type')}: {message}")


def _run_workers(opts: _Options, todo: Sequence[int], n_workers: int, record: Callable[[int, int], None]) -> None:
    """Share ``todo`` among worker processes; parts are handed out as workers free up."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(opts.threads), "MKL_NUM_THREADS": str(opts.threads),
                "TOKENIZERS_PARALLELISM": "false"})
    spec = json.dumps(opts.to_json())
    sel = selectors.DefaultSelector()
    workers: list[_Worker] = []
    queue = list(todo)
    queue.reverse()  # pop() from the end: lowest part first
    failure: Q2PTError | None = None
    try:
        for i in range(n_workers):
            proc = subprocess.Popen(
                [sys.executable, "-m", "q2pt.streaming", "--worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(spec.encode() + b"\n")
            proc.stdin.flush()
            w = _Worker(proc, i)
            workers.append(w)
            sel.register(proc.stdout.fileno(), selectors.EVENT_READ, w)

        def give(w: _Worker) -> None:
            assert w.proc.stdin is not None
            if queue and failure is None:
                w.part = queue.pop()
                w.proc.stdin.write(f"part {w.part}\n".encode())
            else:
                w.part = None
                w.proc.stdin.write(b"exit\n")
            w.proc.stdin.flush()

        busy = len(workers)
        while busy:
            for key, _ in sel.select(timeout=1.0):
                w = key.data
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:  # EOF: the worker exited
                    sel.unregister(key.fd)
                    busy -= 1
                    code = w.proc.wait()
                    if failure is None and (w.part is not None or not w.ready or code != 0):
                        failure = Q2PTError(
                            f"prediction worker {w.index} exited unexpectedly (exit code {code})"
                            + (f" while predicting part {w.part}" if w.part is not None else "")
                        )
                    continue
                w.buffer += chunk
                *lines, w.buffer = w.buffer.split(b"\n")
                for raw in lines:
                    kind, _, rest = raw.decode("utf-8", "replace").partition(" ")
                    if kind == "ready":
                        w.ready = True
                        give(w)
                    elif kind == "done":
                        k, rows = (int(x) for x in rest.split())
                        record(k, rows)
                        give(w)
                    elif kind == "error":
                        if failure is None:
                            failure = _error_from_json(json.loads(rest))
                        w.part = None
                        give(w)
            if failure is not None:  # stop handing out work; let the busy ones finish
                queue.clear()
    finally:
        for w in workers:
            if w.proc.poll() is None:
                try:
                    if w.proc.stdin:
                        w.proc.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + 30
        for w in workers:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        sel.close()
    if failure is not None:
        raise failure


def _worker_main(stdin: Iterable[str] = sys.stdin, stdout: Any = sys.stdout) -> int:
    """A worker: load the model once, then predict the parts named on stdin.

    Protocol (text lines): in ``SPEC_JSON`` then ``part K`` ... ``exit`` (or EOF, e.g.
    when the coordinator dies); out ``ready``, ``done K ROWS`` per part, or
    ``error ERROR_JSON``.
    """
    logging.basicConfig(level=logging.WARNING, format="q2pt worker: %(message)s")
    with _each_message_once():  # each part would repeat the same warnings
        return _worker_loop(stdin, stdout)


def _worker_loop(stdin: Iterable[str], stdout: Any) -> int:
    lines = iter(stdin)
    try:
        opts = _Options(**json.loads(next(lines)))
    except (StopIteration, ValueError, TypeError) as exc:
        print(f"q2pt: bad worker spec: {exc}", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    try:
        import pyarrow.parquet as pq

        from q2pt.errors import require
        from q2pt.models import load_model

        torch = require("torch", "torch")
        torch.set_num_threads(opts.threads)
        assert opts.model is not None  # workers are started with a model folder
        model = load_model(opts.model)
        info = _open_input(opts.input)
        pf = pq.ParquetFile(info.path)
        schema = output_schema(info, opts.columns, opts.paths)
    except Q2PTError as exc:
        say("error " + json.dumps(_error_to_json(exc)))
        return exc.exit_code
    say("ready")
    for line in lines:
        cmd, _, arg = line.strip().partition(" ")
        if cmd != "part":
            break
        k = int(arg)
        try:
            rows = _predict_part(model, pf, info, opts, k, schema)
        except Q2PTError as exc:
            say("error " + json.dumps(_error_to_json(exc)))
            continue
        say(f"done {k} {rows}")
    return 0


def _worker_process() -> int:
    """A worker process's exit status: a Ctrl-C (the coordinator's terminal sends it to the whole
    group) or a coordinator gone (a broken pipe) ends it quietly; the coordinator says what
    happened and ``--resume`` continues."""
    try:
        return _worker_main()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush of the closed pipe at exit
        except OSError:
            pass
        return 1


if __name__ == "__main__":  # pragma: no cover - run as a worker process
    if sys.argv[1:] == ["--worker"]:
        sys.exit(_worker_process())
    print("usage: python -m q2pt.streaming --worker  (started by q2pt.streaming.stream_predict)", file=sys.stderr)
    sys.exit(2)
