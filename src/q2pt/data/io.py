"""Reading and writing datasets and click logs.

Layouts:

* a directory with ``train``, ``valid`` and ``test`` files (``train.parquet``,
  ``valid.jsonl``, ... -- Parquet, JSONL, CSV or TSV, detected by extension);
* one file with a ``split`` column (values ``train``/``valid``/``test``).

Reading is in two stages. :func:`read_table` turns one file into a :class:`RawTable`:
every value exactly as given (object columns), each row's 1-based source row number,
and the problems met while parsing (bytes that are not UTF-8, malformed rows, blank
lines). Validation (:mod:`q2pt.data.validate`) then checks the values and builds the
typed frames. Whole-file problems (missing, unreadable, unsupported extension, missing
split files) raise :class:`~q2pt.errors.DataError` straight away.

Row numbers are 1-based data rows: for CSV/TSV the header is not counted, for JSONL the
row number is the line number, for Parquet it is the row index + 1.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, cast

import numpy as np
import pandas as pd

from q2pt.errors import ConfigError, DataError
from q2pt.io import atomic_path

from . import schema as S
from .schema import DataProblem, problem

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from . import Dataset


class _Missing:
    """Marks a JSONL field that a row does not have (as opposed to an explicit null)."""

    _instance: "_Missing | None" = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()

#: how a CSV/TSV cell spells "no value" in the tables pandas writes and reads (``to_csv`` of a
#: NaN gives an empty cell; R and others write NA): a numeric cell (a weight) spelled so is absent
CSV_NA_SPELLINGS = frozenset({"na", "n/a", "nan", "null", "none", "<na>", "-nan", "#n/a"})


def is_missing(v: Any) -> bool:
    """A field without a value: not in the row (JSONL), null, or NaN."""
    return v is MISSING or v is None or (isinstance(v, float) and math.isnan(v))


def is_absent(v: Any) -> bool:
    """A cell without a value: missing, null, NaN, or a blank string (an empty CSV cell)."""
    return is_missing(v) or (isinstance(v, str) and not v.strip())


def _mark_bad_bytes(err: UnicodeError) -> tuple[str, int]:
    assert isinstance(err, UnicodeDecodeError)  # registered for decoding only
    return S.BAD_BYTES_MARK, err.end


codecs.register_error("q2pt-mark-bad-bytes", _mark_bad_bytes)


@dataclass
class RawTable:
    """One file's rows as given: ``frame`` has object columns with the raw values,
    ``rows`` the 1-based source row number of each frame row."""

    file: str
    fmt: str
    frame: pd.DataFrame
    rows: np.ndarray
    problems: list[DataProblem] = field(default_factory=list)
    columns_known: bool = True  # False for a JSONL file without rows

    def subset(self, mask: np.ndarray) -> "RawTable":
        return RawTable(
            self.file,
            self.fmt,
            self.frame.loc[mask].reset_index(drop=True),
            self.rows[mask],
            [],
            self.columns_known,
        )


@dataclass
class RawDataset:
    """The raw tables of a dataset, by split, and the problems met while reading."""

    source: str
    layout: str  # "directory" | "file" | "rows" (a labelled file without a split column, as rows to split)
    tables: dict[str, RawTable]
    problems: list[DataProblem] = field(default_factory=list)

    @property
    def files(self) -> dict[str, str]:
        return {split: t.file for split, t in self.tables.items()}


# --------------------------------------------------------------------------- formats
def detect_format(path: str | Path) -> str:
    """The format of ``path`` from its extension, or a DataError naming the supported ones."""
    path = Path(path)
    fmt = S.FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
            "use .parquet, .jsonl, .csv or .tsv"
        )
    return fmt


def _decode(data: bytes) -> str:
    """UTF-8 text; undecodable bytes become :data:`schema.BAD_BYTES_MARK`; BOM removed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="q2pt-mark-bad-bytes")
    return text[1:] if text.startswith("\ufeff") else text


def _object_frame(columns: list[str], values: list[list[Any]]) -> pd.DataFrame:
    """A DataFrame of object columns (so that no value is converted or rejected)."""
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in zip(columns, values)}, columns=columns)


def _read_bytes(path: Path) -> bytes:
    """A text file's bytes; one in UTF-16 or UTF-32 (a byte order mark, or NULs between
    characters: a spreadsheet's "Unicode text" export) is refused with how to fix it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    head = data[:4096]
    wide = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE))
    if wide or (len(head) >= 8 and head.count(b"\x00") * 4 >= len(head)):
        raise DataError(f"{path}: the file is UTF-16 or UTF-32 text (a spreadsheet's \"Unicode text\" export?); "
                        "q2pt reads UTF-8: save it as UTF-8 (CSV UTF-8) or convert it, e.g. iconv -f UTF-16 -t UTF-8")
    return data


def _read_delimited(path: Path, sep: str) -> RawTable:
    name = str(path)
    text = _decode(_read_bytes(path))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(f"{name}: cannot parse the header: {exc}") from None
    if header is None:
        raise DataError(f"{name}: empty file (no header row)")
    header = [h.strip() for h in header]
    unnamed = [i + 1 for i, h in enumerate(header) if not h]
    if unnamed:
        raise DataError(f"{name}: column(s) {', '.join(map(str, unnamed))} of the header have no name (a trailing "
                        f"{'tab' if sep == chr(9) else 'comma'}?): name them, or remove them from every row")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{name}: duplicate column name(s) in the header: {', '.join(dupes)}")
    ncol = len(header)
    problems: list[DataProblem] = []
    good: list[list[str]] = []
    rows: list[int] = []
    row = 0
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(
                problem("malformed_row", name, row + 1, None, f"cannot parse (line {reader.line_num}): {exc}")
            )
            break  # the csv reader cannot resume after an error
        row += 1
        if not rec:
            problems.append(
                problem("blank_line", name, row, None, f"blank line {reader.line_num} ignored", "warning")
            )
        elif len(rec) != ncol:
            kind = "non_utf8" if any(S.BAD_BYTES_MARK in v for v in rec) else "malformed_row"
            problems.append(
                problem(
                    kind,
                    name,
                    row,
                    None,
                    f"expected {ncol} fields, found {len(rec)} (line {reader.line_num})"
                    + ("; the row also has bytes that are not UTF-8" if kind == "non_utf8" else ""),
                )
            )
        else:
            good.append(rec)
            rows.append(row)
    cols = [list(c) for c in zip(*good)] if good else [[] for _ in header]
    fmt = "tsv" if sep == "\t" else "csv"
    return RawTable(name, fmt, _object_frame(header, cols), np.asarray(rows, dtype=np.int64), problems)


class _DuplicateKey(ValueError):
    """A JSON object that gives one key twice (``json`` would keep the last value silently)."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise _DuplicateKey(f"the key(s) {', '.join(map(repr, twice))} given twice in one object (which value is meant?)")
    return out


def _read_jsonl(path: Path) -> RawTable:
    name = str(path)
    text = _decode(_read_bytes(path))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    problems: list[DataProblem] = []
    records: list[dict] = []
    rows: list[int] = []
    loads, strict = json.loads, functools.partial(json.loads, object_pairs_hook=_unique_object)
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            problems.append(problem("blank_line", name, i, None, f"blank line {i} ignored", "warning"))
            continue
        try:
            rec = loads(line)
            # a key given twice leaves fewer keys than '":' in the line: parsed again, keys checked
            # (also a line with nested objects or '":' in a value, or spaced '" :': rare, and only slower)
            if isinstance(rec, dict) and line.count('":') != len(rec):
                rec = strict(line)
        except _DuplicateKey as exc:
            problems.append(problem("malformed_row", name, i, None, str(exc)))
            continue
        except ValueError as exc:
            bad = S.BAD_BYTES_MARK in line
            msg = "bytes that are not UTF-8" if bad else f"invalid JSON: {exc}"
            problems.append(problem("non_utf8" if bad else "malformed_row", name, i, None, msg))
            continue
        if not isinstance(rec, dict):
            problems.append(
                problem("malformed_row", name, i, None, f"expected a JSON object, found {type(rec).__name__}")
            )
            continue
        records.append(rec)
        rows.append(i)
    columns: dict[str, None] = {}
    for rec in records:
        for key in rec:
            if key not in columns:
                columns[key] = None
    cols = list(columns)
    values = [[rec.get(c, MISSING) for rec in records] for c in cols]
    return RawTable(
        name, "jsonl", _object_frame(cols, values), np.asarray(rows, dtype=np.int64), problems, bool(records)
    )


def _read_parquet(path: Path) -> RawTable:
    import pyarrow.parquet as pq

    name = str(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types (ArrowInvalid, OSError...)
        raise DataError(f"{name}: cannot read Parquet file: {exc}") from None
    cols = list(table.column_names)
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise DataError(f"{name}: duplicate column name(s): {', '.join(dupes)}")
    values = [table.column(c).to_pylist() for c in cols]
    return RawTable(name, "parquet", _object_frame(cols, values), np.arange(1, table.num_rows + 1, dtype=np.int64))


def read_table(path: str | Path) -> RawTable:
    """Read one Parquet/JSONL/CSV/TSV file as given (see :class:`RawTable`)."""
    path = Path(path)
    fmt = detect_format(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a {fmt} file")
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "jsonl":
        return _read_jsonl(path)
    return _read_delimited(path, "\t" if fmt == "tsv" else ",")


# --------------------------------------------------------------------------- layouts
def locate_split_files(directory: str | Path) -> dict[str, Path]:
    """``{"train": Path, "valid": Path, "test": Path}`` in a dataset directory.

    Raises a DataError listing every layout problem: no train file, a missing valid or
    test file, two files for one split, a split file with an unsupported extension."""
    directory = Path(directory)
    name = str(directory)
    exts = "/".join(sorted(set(S.FORMAT_EXT.values())))
    found: dict[str, Path] = {}
    problems: list[DataProblem] = []
    for split in S.SPLITS:
        candidates = sorted(p for p in directory.glob(f"{split}.*") if not p.name.startswith("."))
        supported = [p for p in candidates if p.suffix.lower() in S.FORMATS]
        if len(supported) > 1:
            problems.append(
                problem("layout", name, None, None, f"more than one {split} file: {', '.join(p.name for p in supported)}")
            )
        elif supported:
            found[split] = supported[0]
        elif candidates:
            problems.append(
                problem(
                    "layout",
                    name,
                    None,
                    None,
                    f"{candidates[0].name}: unsupported file type; use {split}.parquet, .jsonl, .csv or .tsv",
                )
            )
        else:
            what = "no train file" if split == "train" else f"missing {split} file"
            problems.append(problem("layout", name, None, None, f"{what} ({split}{{{exts}}})"))
    if problems:
        hint = ""
        if (directory / "fold-0").is_dir():  # data split --folds K writes DIR/fold-i, each a dataset
            hint = f"; it holds cross-validation folds: give one, e.g. {directory / 'fold-0'}"
        raise DataError(
            f"{name} is not a dataset directory (expected train, valid and test files){hint}", problems
        )
    return found


def one_table_dataset(table: RawTable, source: str) -> RawDataset:
    """A labelled file without a ``split`` column as a raw dataset (layout "rows"): the table
    stands in for the train split, valid and test are empty; the table's read problems move to
    the dataset (so that each is reported once)."""
    # the empty stand-ins are not files of their own: a missing column is the table's, said once
    empty = RawTable(table.file, table.fmt, table.frame.iloc[:0], table.rows[:0], [], columns_known=False)
    raw = RawDataset(source, "rows", {"train": table, "valid": empty, "test": empty}, list(table.problems))
    table.problems = []
    return raw


def read_raw_dataset(path: str | Path, *, rows_ok: bool = False) -> RawDataset:
    """Read a dataset directory or single file (with a ``split`` column) as given;
    ``rows_ok``: a labelled file without a split column is read as rows to split
    (:func:`one_table_dataset`) instead of refused."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        files = locate_split_files(path)
        tables: dict[str, RawTable] = {}
        problems: list[DataProblem] = []
        unreadable: list[DataProblem] = []
        for split, file in files.items():
            try:
                table = read_table(file)
            except DataError as exc:
                unreadable.append(problem("unreadable", str(file), None, None, str(exc).split(": ", 1)[-1]))
                continue
            problems.extend(table.problems)
            table.problems = []
            if S.SPLIT in table.frame.columns:
                col = table.frame[S.SPLIT]
                # a row without a value is in its file's split; one naming another split is an error
                bad = np.flatnonzero([v != split and not is_absent(v) for v in col.tolist()])
                problems.extend(
                    problem(
                        "bad_split", table.file, int(table.rows[i]), S.SPLIT,
                        f"split {col.iat[i]!r} in the {split} file",
                    )
                    for i in bad
                )
                table.frame = table.frame.drop(columns=[S.SPLIT])
            tables[split] = table
        if unreadable:
            raise DataError(f"cannot read dataset {path}", unreadable)
        return RawDataset(str(path), "directory", tables, problems)

    table = read_table(path)
    problems = list(table.problems)
    table.problems = []
    if S.SPLIT not in table.frame.columns:
        if table.columns_known and rows_ok:
            table.problems = problems  # the read problems: one_table_dataset moves them to the dataset
            return one_table_dataset(table, str(path))
        if table.columns_known:
            raise DataError(
                f"{path}: a single-file dataset needs a '{S.SPLIT}' column (train/valid/test); "
                "or give a directory with train, valid and test files"
            )
        table.frame[S.SPLIT] = pd.Series([], dtype=object)
    col = table.frame[S.SPLIT]
    values = col.tolist()
    ok = np.array([isinstance(v, str) and v in S.SPLITS for v in values], dtype=bool)
    for i in np.flatnonzero(~ok):
        value = col.iat[i]
        msg = "missing split" if value is MISSING or value is None else f"unknown split {value!r}"
        problems.append(problem("bad_split", table.file, int(table.rows[i]), S.SPLIT, f"{msg}; use train, valid or test"))
    tables = {}
    for split in S.SPLITS:
        sub = table.subset(np.array([v == split for v in values], dtype=bool) & ok)
        sub.frame = sub.frame.drop(columns=[S.SPLIT])
        tables[split] = sub
    return RawDataset(str(path), "file", tables, problems)


# --------------------------------------------------------------------------- writing
def _as_splits(data: "Dataset | Mapping[str, pd.DataFrame]") -> dict[str, pd.DataFrame]:
    splits = cast("Mapping[str, pd.DataFrame]", getattr(data, "splits", data))
    missing = [s for s in S.SPLITS if s not in splits]
    if missing:
        raise ValueError(f"dataset has no {', '.join(missing)} split")
    # the cut names are made at load time (data.label_depth) from the paths before the cut: not data
    return {s: splits[s].drop(columns=[S.CUT_NAMES]) if S.CUT_NAMES in splits[s].columns else splits[s]
            for s in S.SPLITS}


def extra_column(values: list[Any], index: Any = None) -> pd.Series:
    """An extra (pass-through) column's values as a Series that changes none of them (None:
    missing): whole numbers stay exact (a nullable Int64, not floats that round past 2**53), a
    column of one kind gets its plain dtype, and anything else stays Python objects."""
    series = pd.Series(values, dtype=object, index=index)
    present = [v for v in values if v is not None]
    if present and all(type(v) is int and -(2**63) <= v < 2**63 for v in present):
        return series.astype("Int64")
    inferred = series.infer_objects()
    if inferred.dtype.kind == "f" and any(type(v) is int and abs(v) > 2**53 for v in present):
        return series  # floats would round these whole numbers
    return inferred


def _py_values(series: pd.Series) -> list[Any]:
    """Plain Python values for JSON (NaN and pd.NA -> None, numpy scalars -> Python)."""
    out = series.astype(object).tolist()
    return [None if v is pd.NA or (isinstance(v, float) and math.isnan(v))
            else (v.tolist() if isinstance(v, np.ndarray) else v) for v in out]


def _write_jsonl(df: pd.DataFrame, target: Path) -> None:
    cols = list(df.columns)
    columns = [_py_values(df[c]) for c in cols]
    dumps = json.dumps
    with open(target, "w", encoding="utf-8", newline="\n") as fh:
        for values in zip(*columns):
            fh.write(dumps(dict(zip(cols, values)), ensure_ascii=False, default=str))
            fh.write("\n")


def _write_parquet(df: pd.DataFrame, target: Path, shown: Path | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays: dict[str, Any] = {}
    for col in df.columns:
        if col in (S.QUERY, S.LOCALE, S.SPLIT):
            arrays[col] = pa.array(df[col].astype(object).tolist(), type=pa.string())
        elif col == S.LABELS:
            arrays[col] = pa.array([list(v) for v in df[col].tolist()], type=pa.list_(pa.string()))
        elif col == S.WEIGHT:
            arrays[col] = pa.array(df[col].astype("float64").to_numpy(), type=pa.float64())
        else:
            try:
                arrays[col] = pa.Table.from_pandas(df[[col]], preserve_index=False).column(0)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                arrays[col] = pa.array(_as_text(df[col]), type=pa.string())
                _say_written_as_text((shown or target).name, col, [df[col]])
    pq.write_table(pa.table(arrays), target)


def _say_written_as_text(where: str, col: str, parts: list[pd.Series]) -> None:
    """Warn that column ``col`` mixes kinds of values and was written as text, counting the
    values not of its most common kind."""
    from collections import Counter

    kinds = Counter(type(v).__name__ for part in parts for v in _py_values(part) if v is not None)
    common = kinds.most_common(1)[0][1] if kinds else 0
    logger.warning("%s: column %r mixes values of several kinds (%s), which a Parquet column cannot hold: written as "
                   "text (JSON for lists and objects); %d value(s) not of its most common kind", where, col,
                   ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())), sum(kinds.values()) - common)


def _one_arrow_type(parts: list[pd.Series]) -> bool:
    """Whether the values of one column, across a dataset's splits, fit one Parquet column."""
    import pyarrow as pa

    try:
        pa.Table.from_pandas(pd.concat([p.to_frame() for p in parts], ignore_index=True), preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def _as_text(series: pd.Series) -> list[str | None]:
    """A column's values as text for a file of text cells: strings as they are, lists and objects
    as JSON, other values as ``str``; missing values stay missing (None)."""
    out: list[str | None] = []
    for v in _py_values(series):
        if v is None or isinstance(v, str):
            out.append(v)
        elif isinstance(v, (list, tuple, dict)):
            out.append(json.dumps(v, ensure_ascii=False, default=str))
        else:
            out.append(str(v))
    return out


def _write_delimited(df: pd.DataFrame, target: Path, sep: str) -> None:
    out = df.copy()
    if S.LABELS in out.columns:  # lists joined; a cell that is text already (read from CSV) is written as read
        out[S.LABELS] = [v if isinstance(v, str) or not isinstance(v, (list, tuple, np.ndarray)) else S.join_labels(v)
                         for v in out[S.LABELS].tolist()]
    for col in out.columns:  # lists and objects in other columns: JSON, not Python's repr
        if col != S.LABELS and out[col].dtype == object and any(
                isinstance(v, (list, tuple, dict, np.ndarray)) for v in out[col].tolist()):
            out[col] = _as_text(out[col])
    out.to_csv(target, sep=sep, index=False, lineterminator="\n", encoding="utf-8")


def write_table(df: pd.DataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write one table atomically; ``product_types`` lists become ``a|b`` in CSV/TSV."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in S.FORMAT_EXT:
        raise ConfigError(f"unknown format {fmt!r}; use parquet, jsonl, csv or tsv")
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            _write_parquet(df, tmp, path)
        elif fmt == "jsonl":
            _write_jsonl(df, tmp)
        else:
            _write_delimited(df, tmp, "\t" if fmt == "tsv" else ",")
    return path


#: what a folder of data that q2pt wrote holds (``data split``, ``data from-clicks``, ``data
#: simulate``, :func:`write_dataset`): split files, their reports, and folds of the same
DATA_FOLDER_FILES = frozenset({f"{s}{ext}" for s in S.SPLITS for ext in S.FORMAT_EXT.values()}
                              | {"split.json", "clicks_report.json", "simulated.json"})


def is_data_folder(folder: Path) -> bool:
    """Whether ``folder`` holds only what q2pt writes as a dataset (:data:`DATA_FOLDER_FILES`,
    ``fold-N`` folders of the same, hidden debris of an interrupted write): what ``--overwrite``
    may replace."""
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.is_symlink() and entry.name.startswith("fold-") and entry.name[5:].isdigit():
            if not is_data_folder(entry):
                return False
        elif entry.name not in DATA_FOLDER_FILES or not entry.is_file():
            return False
    return True


def check_target(out: Path, overwrite: bool, *, directory: bool = True, inputs: Sequence[str | Path] = (),
                 data: bool = False) -> None:
    """ConfigError if ``out`` exists (a file, or a non-empty directory) and not ``overwrite``,
    or if it is a file where a directory is to be written, or holds one of ``inputs`` (the
    files or folders the command reads). ``data``: ``out`` is a dataset folder, replaced with
    ``overwrite`` only when it holds nothing but a dataset q2pt wrote (:func:`is_data_folder`:
    not the raw file, a model or notes kept beside them)."""
    if directory and out.is_file():
        raise ConfigError(f"{out} is a file; a folder is written there")
    if not directory and out.is_dir():
        raise ConfigError(f"{out} is a directory; a single file is written there")
    target = out.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == target or target in source.parents:
            raise ConfigError(f"{out} holds {given}, which this command reads: write the output to another folder "
                              "(it would be replaced)")
    if out.exists() and not overwrite:
        if out.is_file() or any(out.iterdir()):
            raise ConfigError(f"{out} already exists: pass --overwrite to replace it, or choose another path")
    if data and overwrite and directory and out.is_dir() and not is_data_folder(out):
        raise ConfigError(f"{out} holds more than a dataset (files q2pt did not write there): --overwrite replaces "
                          "only a data folder; choose another path, or empty it yourself")


def write_dataset(
    data: "Dataset | Mapping[str, pd.DataFrame]",
    out: str | Path,
    fmt: str = "parquet",
    *,
    single_file: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a dataset atomically and return the written path.

    Directory layout (default): ``out/train.<ext>``, ``out/valid.<ext>``, ``out/test.<ext>``.
    ``single_file=True``: one file ``out`` (its extension wins over ``fmt``) with a ``split``
    column. An existing non-empty ``out`` is only replaced with ``overwrite=True``.
    """
    out = Path(out)
    splits = _as_splits(data)
    check_target(out, overwrite, directory=not single_file, data=True)
    if single_file:
        if out.suffix.lower() in S.FORMATS:
            fmt = S.FORMATS[out.suffix.lower()]
        elif fmt not in S.FORMAT_EXT:
            raise ConfigError(f"unknown format {fmt!r}; use parquet, jsonl, csv or tsv")
        else:
            out = out.with_name(out.name + S.FORMAT_EXT[fmt])
            check_target(out, overwrite, directory=False)
        frames = []
        for split, df in splits.items():
            df = df.copy()
            df.insert(0, S.SPLIT, split)
            frames.append(df)
        write_table(pd.concat(frames, ignore_index=True), out, fmt)
        return out
    if fmt not in S.FORMAT_EXT:
        raise ConfigError(f"unknown format {fmt!r}; use parquet, jsonl, csv or tsv")
    if fmt == "parquet":  # a column is one type in every split's file: text in all where the kinds mix
        splits = dict(splits)
        extra = {c for df in splits.values() for c in df.columns if c not in S.CORE_COLUMNS}
        for col in sorted(extra):
            parts = [df[col] for df in splits.values() if col in df.columns]
            if not _one_arrow_type(parts):
                _say_written_as_text("the dataset written", col, parts)  # (out: a temporary folder, often)
                splits = {k: df.assign(**{col: _as_text(df[col])}) if col in df.columns else df
                          for k, df in splits.items()}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for split, df in splits.items():
            write_table(df, tmp / f"{split}{S.FORMAT_EXT[fmt]}", fmt)
    return out


#: the optional file of a dataset folder naming each store's languages: {"uk": ["en"], ...}
LOCALE_LANGUAGES_FILE = "locales.json"


def read_locale_languages(path: Path) -> dict[str, list[str]]:
    """The store -> languages map of a dataset folder's ``locales.json`` ({} when there is
    none); DataError naming the file and the store for a malformed one."""
    file = path / LOCALE_LANGUAGES_FILE if path.is_dir() else None
    if file is None or not file.is_file():
        return {}
    from q2pt.io import read_text_file

    text = read_text_file(file, "the store -> languages map", DataError)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{file}: cannot read the store -> languages map: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{file}: expected a JSON object mapping each store to a list of language codes")
    out: dict[str, list[str]] = {}
    for store, langs in data.items():
        if not isinstance(langs, list) or not langs or not all(isinstance(x, str) and x.strip() for x in langs):
            raise DataError(f"{file}: store {store!r}: expected a non-empty list of language codes, got {langs!r}")
        out[str(store)] = [x.strip() for x in langs]
    return out
