"""Product-type labels: transforms applied at load time, and their encoding for training.

Product types are often paths in a taxonomy, ``"shoes > women's shoes > flats"``.
:func:`truncate_labels` cuts every path to its first ``depth`` levels (``data.label_depth``
in a training config), so that a model can be trained and judged at a coarser level of
the taxonomy: ``depth=1`` gives ``"shoes"``, ``depth=2`` ``"shoes > women's shoes"``.

Levels are found by splitting on the separator with any whitespace around it ignored
(with the default ``" > "``, ``"a>b"``, ``"a  >  b"`` and ``"a > b"`` are the same path);
each level is stripped, empty levels are dropped, and the kept levels are joined with the
separator itself. A path with ``depth`` levels or fewer is therefore kept as it is, up to
that spacing. Labels of a row that become equal after truncation are merged (the first
occurrence's position is kept).

:func:`label_lists` and :func:`multi_hot` encode a ``product_types`` column as a sparse
0/1 matrix over a model's labels (and count the labels outside them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import schema as S

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from scipy import sparse

DEFAULT_SEPARATOR = " > "


def _splitter(sep: str) -> str:
    """What to split on: the separator without its surrounding whitespace (unless it is
    nothing but whitespace)."""
    if not sep:
        raise ValueError("the label separator must not be empty")
    return sep.strip() or sep


def split_path(label: str, sep: str = DEFAULT_SEPARATOR) -> list[str]:
    """The levels of a path: split on the separator (whitespace around it ignored), each level
    stripped, empty levels dropped. ``split_path("a>b > c")`` -> ``["a", "b", "c"]``."""
    return [p for p in (x.strip() for x in label.split(_splitter(sep))) if p]


def has_empty_level(label: str, sep: str = DEFAULT_SEPARATOR) -> bool:
    """Whether a path has an empty level that :func:`split_path` drops: a separator at its start
    or end, or two in a row (``"a >  > b"``, ``" > b"``, ``"a > "``)."""
    token = _splitter(sep)
    return token in label and any(not x.strip() for x in label.split(token))


def level_words(level: str) -> str:
    """A level of a path as words: ``_`` read as a space, runs of whitespace as one
    (``"frying_pan"`` -> ``"frying pan"``)."""
    return " ".join(level.replace("_", " ").split())


def truncate_path(label: str, depth: int, sep: str = DEFAULT_SEPARATOR) -> str:
    """``label`` cut to its first ``depth`` levels (see the module doc).

    ``truncate_path("a > b > c", 2)`` -> ``"a > b"``; ``truncate_path("a>b", 5)`` -> ``"a > b"``.
    A label with no non-empty level (e.g. ``">"``) is returned stripped, unchanged otherwise."""
    if depth < 1:
        raise ValueError(f"label depth must be at least 1, got {depth}")
    levels = split_path(label, sep)
    if not levels:
        return label.strip()
    return sep.join(levels[:depth])


def truncate_label_lists(
    label_lists: list[list[str]], depth: int, sep: str = DEFAULT_SEPARATOR
) -> tuple[list[list[str]], int]:
    """Truncate every label of every list; duplicates within a list merged.

    Returns (new lists, number of labels whose text changed)."""
    if depth < 1:
        raise ValueError(f"label depth must be at least 1, got {depth}")
    cache: dict[str, str] = {}
    changed = 0
    out: list[list[str]] = []
    for labels in label_lists:
        new: list[str] = []
        for lab in labels:
            cut = cache.get(lab)
            if cut is None:
                cut = cache[lab] = truncate_path(lab, depth, sep)
            if cut != lab:
                changed += 1
            new.append(cut)
        out.append(list(dict.fromkeys(new)))
    return out, changed


def cut_level_names(
    label_lists: Sequence[Sequence[str]], depth: int, sep: str = DEFAULT_SEPARATOR
) -> dict[str, list[str]]:
    """The names of the levels that cutting to ``depth`` drops, under the path they are cut to.

    ``cut_level_names([["a > b > c > d"], ["a > b > e"]], 2)`` ->
    ``{"a > b": ["c", "d", "e"]}``: each dropped level is a name (``_`` read as a space, runs of
    whitespace as one), sorted, without repeats; paths of ``depth`` levels or fewer add nothing.
    Read from a training split's full paths, it is what :mod:`q2pt.training.names` adds as name
    examples of each cut type (``train.subtype_names``)."""
    if depth < 1:
        raise ValueError(f"label depth must be at least 1, got {depth}")
    found: dict[str, set[str]] = {}
    for labels in label_lists:
        for lab in labels:
            levels = split_path(lab, sep)
            if len(levels) <= depth:
                continue
            names = {level_words(x) for x in levels[depth:]}
            found.setdefault(sep.join(levels[:depth]), set()).update(n for n in names if n)
    return {k: sorted(v) for k, v in sorted(found.items()) if v}


def union_cut_names(frame: "pd.DataFrame") -> dict[str, list[str]]:
    """The cut names (:func:`cut_level_names`) of ``frame``'s rows merged: cut type -> sorted
    names, from the frame's ``cut_names`` column (none: ``{}``). A network's rows give its own."""
    if S.CUT_NAMES not in frame.columns:
        return {}
    found: dict[str, set[str]] = {}
    for row in frame[S.CUT_NAMES].tolist():
        if isinstance(row, dict):
            for cut, names in row.items():
                found.setdefault(cut, set()).update(names if isinstance(names, (list, tuple)) else ())
    return {k: sorted(v) for k, v in sorted(found.items())}


def cut_names_digest(frame: "pd.DataFrame") -> str:
    """sha256 of ``frame``'s cut names per locale (:func:`union_cut_names` of each locale's rows,
    what a per-locale network gets; their union is the unified network's): what a training run's
    identity records of them, since the data fingerprint sees the paths after the cut alone."""
    import hashlib
    import json

    per_locale = {str(loc): union_cut_names(rows) for loc, rows in frame.groupby(S.LOCALE, sort=True)}
    return hashlib.sha256(json.dumps(per_locale, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def truncate_labels(
    frame: "pd.DataFrame", depth: int | None, sep: str = DEFAULT_SEPARATOR
) -> tuple["pd.DataFrame", int]:
    """A copy of ``frame`` whose ``product_types`` are cut to their first ``depth`` levels,
    and the number of labels (row, product type pairs) whose text changed.

    ``depth=None`` returns ``frame`` itself and 0. Other columns are untouched."""
    if depth is None:
        return frame, 0
    lists = [list(v) for v in frame[S.LABELS].tolist()]
    new, changed = truncate_label_lists(lists, int(depth), sep)
    out = frame.copy()
    import pandas as pd

    out[S.LABELS] = pd.Series(new, index=frame.index, dtype=object)
    return out, changed


# ------------------------------------------------------------------ label encoding


def label_lists(column: Any) -> list[list[str]]:
    """A ``product_types`` column (lists, arrays or tuples) as a list of lists of str."""
    return [list(v) if not isinstance(v, str) else [v] for v in column]


def multi_hot(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> tuple["sparse.csr_matrix", np.ndarray]:
    """Rows of labels -> (CSR 0/1 matrix over ``classes``, per-row count of labels outside)."""
    from scipy import sparse

    index = {c: i for i, c in enumerate(classes)}
    indptr = [0]
    indices: list[int] = []
    missing = np.zeros(len(labels), dtype=np.int64)
    for r, row in enumerate(labels):
        cols = sorted({index[x] for x in row if x in index})
        missing[r] = len(set(row)) - len(cols)
        indices.extend(cols)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    matrix = sparse.csr_matrix((data, indices, indptr), shape=(len(labels), len(classes)), dtype=np.float32)
    return matrix, missing
