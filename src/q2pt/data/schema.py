"""The dataset schema: column names, query normalisation, label (de)serialisation,
the canonical content fingerprint, and the problem type the data layer reports.

A dataset row has ``query`` (str), ``locale`` (str id), ``product_types`` (a non-empty
list of str; in CSV/TSV one string joined with ``|``) and optionally ``weight`` (a
positive number, default 1.0). Simulated data adds ``intent`` and ``sim_*`` analysis
columns; any other extra column is kept as given.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from q2pt.errors import Problem

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# --- column names -----------------------------------------------------------------
QUERY = "query"
LOCALE = "locale"
LABELS = "product_types"
WEIGHT = "weight"
SPLIT = "split"
INTENT = "intent"  # simulated data only: the clean intended type (analysis only)
#: a training split cut by ``data.label_depth``: per row, {cut type: names of the levels cut away
#: below it} (:func:`q2pt.data.labels.cut_level_names` of the row's paths); set at load time
CUT_NAMES = "cut_names"

REQUIRED_COLUMNS: tuple[str, ...] = (QUERY, LOCALE, LABELS)
CORE_COLUMNS: tuple[str, ...] = (QUERY, LOCALE, LABELS, WEIGHT)
SPLITS: tuple[str, ...] = ("train", "valid", "test")

# click-log columns (q2pt data from-clicks)
PRODUCT_TYPE = "product_type"
CLICKS = "clicks"
PURCHASES = "purchases"
CLICK_COLUMNS: tuple[str, ...] = (QUERY, LOCALE, PRODUCT_TYPE, CLICKS)

LABEL_SEP = "|"  # joins product types in one CSV/TSV cell
DEFAULT_WEIGHT = 1.0
DEFAULT_MAX_QUERY_CHARS = 200

# file formats, detected by extension
FORMATS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
}
FORMAT_EXT: dict[str, str] = {"parquet": ".parquet", "jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv"}

# Bytes that are not valid UTF-8 are decoded to this private-use character so that the
# row and field holding them can be found after parsing (see q2pt.data.io).
BAD_BYTES_MARK = "\U0010fffd"
_NOT_UNICODE = re.compile("[\ud800-\udfff\U0010fffd]")

_WS = re.compile(r"\s+")
#: Unicode categories that show nothing: control (Cc), format (Cf: zero-width spaces and joiners,
#: direction marks, tags), separators (Zs, Zl, Zp); and the letters and marks that render blank
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_BLANK_CHARS = frozenset("\u034f\u115f\u1160\u3164\uffa0") | {chr(c) for c in range(0xFE00, 0xFE10)} | {
    chr(c) for c in range(0xE0100, 0xE01F0)}  # combining grapheme joiner, Hangul fillers, variation selectors
#: characters that show nothing inside a query, removed from its normalized form: soft hyphen,
#: zero-width spaces, joiners and non-joiners, direction marks and embeddings, word joiners, the
#: byte-order mark, tags (format characters), and the blank ones above
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
                        "\U000e0001\U000e0020-\U000e007f" + "".join(sorted(_BLANK_CHARS)) + "]")


def normalize_query(query: str) -> str:
    """The form queries are compared in (duplicates, leakage, splitting): invisible characters
    (zero-width spaces, direction marks, ...) removed, Unicode NFKC, case-folded, runs of
    whitespace collapsed to one space, stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", _INVISIBLE.sub("", query)).casefold()).strip()


def normalize_queries(queries: "pd.Series", *, keep_invisible: bool = False) -> "pd.Series":
    """Vectorised :func:`normalize_query` over a Series of str; ``keep_invisible``: the form
    before q2pt 0.2 (2026-12-07) removed invisible characters, which the query hashes of older
    model folders were made with (:func:`has_invisible`)."""
    import pandas as pd

    s = pd.Series(queries, dtype="str", index=getattr(queries, "index", None))
    if not keep_invisible:
        s = s.str.replace(_INVISIBLE.pattern, "", regex=True)
    return s.str.normalize("NFKC").str.casefold().str.replace(_WS.pattern, " ", regex=True).str.strip()


def has_invisible(queries: "pd.Series") -> "pd.Series":
    """Per query: whether it holds a character :func:`normalize_query` removes as invisible."""
    import pandas as pd

    return pd.Series(queries, dtype="str", index=getattr(queries, "index", None)).str.contains(_INVISIBLE.pattern,
                                                                                            regex=True)


def query_keys(frame: "pd.DataFrame", *, keep_invisible: bool = False) -> "pd.Series":
    """Each row's (normalized query, locale) as one string: what makes two rows the same query
    in one store (duplicates, leakage between splits, rows a model was trained on);
    ``keep_invisible``: as :func:`normalize_queries`."""
    return normalize_queries(frame[QUERY].astype(str), keep_invisible=keep_invisible) + "\x1f" + \
        frame[LOCALE].astype(str)


def clean_query_text(query: str) -> str:
    """Whitespace-tidied query text (stripped, inner runs collapsed); case is kept."""
    return _WS.sub(" ", query).strip()


def has_bad_text(value: str) -> bool:
    """True if ``value`` holds undecodable bytes (or lone surrogates) -- i.e. is not valid UTF-8."""
    return _NOT_UNICODE.search(value) is not None


def has_visible_text(value: str) -> bool:
    """Whether ``value`` shows anything: not only whitespace, control and invisible characters
    (a query of zero-width spaces or NULs is empty to a shopper, and to q2pt)."""
    if value.isprintable() and value.strip() and value.isascii():  # the common case, at C speed
        return True
    return any(not c.isspace() and c not in _BLANK_CHARS and unicodedata.category(c) not in _INVISIBLE_CATEGORIES
               for c in value)


def any_bad_text(values: Iterable[Any]) -> bool:
    """Cheap column-level test: could any string in ``values`` hold undecodable bytes? (one
    search over the strings joined, not one per value)"""
    try:
        return has_bad_text("".join([v for v in values if type(v) is str]))
    except TypeError:  # pragma: no cover - str subclasses
        return True


def replace_bad_text(value: str) -> str:
    """``value`` with each undecodable byte (or lone surrogate) as U+FFFD, the replacement
    character: for text passed through, not judged (a prediction input's extra columns)."""
    return _NOT_UNICODE.sub("\ufffd", value)


def locale_case_clash(counts: Mapping[str, int]) -> tuple[str, str]:
    """Of locale ids that differ only in case, each with its row count: the rarest spelling (the
    row to fix first) and the message naming them all (one rule for a dataset and a click log)."""
    rare = min(counts, key=lambda loc: (counts[loc], loc))
    shown = ", ".join(f"{loc} ({n} row{'' if n == 1 else 's'})" for loc, n in counts.items())
    return rare, f"locale ids {shown} differ only in case: q2pt treats them as one store"


def query_problem(value: object, max_chars: int = DEFAULT_MAX_QUERY_CHARS) -> tuple[str, str] | None:
    """Why a query cannot be used -- ``(kind, message)`` -- or None: the one rule for training
    data (``q2pt data validate``) and prediction input (files, streaming, Ray, the HTTP API)."""
    if value is None or (isinstance(value, float) and value != value) or type(value).__name__ == "_Missing":
        return "missing_value", "no query"
    if not isinstance(value, str):
        return "wrong_type", f"query must be a string, got {type(value).__name__}"
    if has_bad_text(value):
        return "non_utf8", "query has bytes that are not valid UTF-8 (not Unicode text)"
    if not has_visible_text(value):
        return "empty_query", "empty query, or only whitespace, control or invisible characters"
    if len(value) > max_chars:
        return "query_too_long", f"query has {len(value)} characters, over the limit of {max_chars} (--max-query-chars)"
    return None


def join_labels(labels: Iterable[str]) -> str:
    """``["a", "b"]`` -> ``"a|b"`` (the CSV/TSV form)."""
    return LABEL_SEP.join(labels)


def split_labels(cell: str) -> list[str]:
    """``"a | b"`` -> ``["a", "b"]``: split on ``|``, surrounding spaces removed.

    Empty pieces are kept as ``""`` so that validation can report them."""
    if cell.strip() == "":
        return []
    return [p.strip() for p in cell.split(LABEL_SEP)]


def fingerprint(splits: Mapping[str, "pd.DataFrame"]) -> str:
    """sha256 (first 16 hex digits) of the canonical content of a dataset.

    The content is the set of rows (split, query, locale, sorted product types, weight);
    row order, label order, file format and extra columns do not change it, so the same
    data stored as Parquet, JSONL, CSV or TSV has the same fingerprint. Each row is one
    line ``split US query US locale US label RS label... US repr(weight)``; text holding
    the separators is JSON-escaped first, so the serialisation is unambiguous.
    """
    lines: list[str] = []
    for split in sorted(splits):
        df = splits[split]
        if len(df) == 0:
            continue
        queries = [_fp_text(q) for q in df[QUERY].tolist()]
        locales = [_fp_text(x) for x in df[LOCALE].tolist()]
        labels = ["\x1e".join(_fp_text(x) for x in sorted(labs)) for labs in df[LABELS].tolist()]
        weights = df[WEIGHT].tolist() if WEIGHT in df.columns else [DEFAULT_WEIGHT] * len(df)
        lines.extend(
            f"{split}\x1f{q}\x1f{loc}\x1f{labs}\x1f{float(w)!r}"
            for q, loc, labs, w in zip(queries, locales, labels, weights)
        )
    lines.sort()
    return hashlib.sha256("\n".join(lines).encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


_FP_SPECIAL = re.compile("[\x1e\x1f\n\"]")


def _fp_text(text: str) -> str:
    """``text``, or its JSON form when it holds a separator (or a quote, so that the
    escaped form cannot collide with a plain one)."""
    return json.dumps(text, ensure_ascii=False) if _FP_SPECIAL.search(text) else text


@dataclass(frozen=True)
class DataProblem(Problem):
    """A :class:`~q2pt.errors.Problem` with a machine-readable ``kind``
    (``empty_query``, ``leakage``, ...), used to count problems by kind."""

    kind: str = "other"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def problem(
    kind: str, file: str, row: int | None, field: str | None, message: str, severity: str = "error"
) -> DataProblem:
    """Shorthand constructor (keyword order of :class:`DataProblem` is awkward)."""
    return DataProblem(file=file, row=row, field=field, message=message, severity=severity, kind=kind)


def row_problems(
    queries: Sequence[Any], locales: Sequence[Any], file: str, *, first_row: int | None = 1,
    rows: Sequence[int] | None = None, max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
) -> list[Problem]:
    """The problems of prediction rows, the one rule for every way in (a file, ``--stream``, Ray,
    QUERY arguments, the library's :meth:`q2pt.models.Q2PTModel.infer`): a query as
    :func:`query_problem` reads it, a locale a non-empty string. Row numbers from ``rows``, else
    counted from ``first_row`` (None: unknown, and the value is shown instead)."""
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
