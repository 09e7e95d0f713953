"""Which queries a model has learnt: its training and validation rows, and those of the models
it was warm-started from, kept in the model folder.

Queries recur week to week, and a model scores the queries it (or a model it was warm-started
from) learnt far better than new ones. A model folder keeps a 64-bit hash of each (normalized
query, locale) of its training and validation splits, and of every split its parents learnt
(``seen.safetensors``, :class:`SeenQueries`), so that ``q2pt evaluate`` and ``compare`` can say
when rows were learnt and ``q2pt data split --seen-by`` can keep them out of a new validation and
test split, without the training data (moved, or replaced by next week's) and without the parent
folders (rotated). The hash is pandas' ``hash_pandas_object`` of :func:`q2pt.data.schema.query_keys`
(SipHash with pandas' fixed key: the same value on every machine and run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["SEEN_FILE", "SeenQueries", "key_hashes", "seen_in"]

#: the file of a model folder that holds :class:`SeenQueries`
SEEN_FILE = "seen.safetensors"
_PARTS = ("train", "valid", "ancestors")


def key_hashes(frame: "pd.DataFrame") -> np.ndarray:
    """A stable 64-bit hash of each row's (normalized query, locale)."""
    import pandas as pd

    from q2pt.data.schema import query_keys

    if len(frame) == 0:
        return np.zeros(0, dtype=np.uint64)
    return pd.util.hash_pandas_object(query_keys(frame), index=False).to_numpy(dtype=np.uint64)


def seen_in(frame: "pd.DataFrame", hashes: np.ndarray) -> np.ndarray:
    """Per row of ``frame``: whether its (normalized query, locale) is among ``hashes``. A query
    with invisible characters is also looked up in the form before q2pt removed them
    (2026-12-07), which the hashes of older model folders were made with."""
    return _RowHashes(frame).among(hashes)


class _RowHashes:
    """A frame's row hashes, computed once for any number of lookups (:func:`seen_in`)."""

    def __init__(self, frame: "pd.DataFrame") -> None:
        import pandas as pd

        from q2pt.data.schema import QUERY, has_invisible, query_keys

        self.hashes = key_hashes(frame)
        self.odd = has_invisible(frame[QUERY].astype(str)).to_numpy(dtype=bool) if len(frame) else np.zeros(0, bool)
        self.old = (pd.util.hash_pandas_object(query_keys(frame[self.odd], keep_invisible=True), index=False)
                    .to_numpy(dtype=np.uint64) if self.odd.any() else np.zeros(0, dtype=np.uint64))

    def among(self, hashes: np.ndarray) -> np.ndarray:
        found = np.isin(self.hashes, hashes)
        if len(self.old):
            found[self.odd] |= np.isin(self.old, hashes)
        return found


def _unique(values: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(values, dtype=np.uint64))


@dataclass
class SeenQueries:
    """The query hashes a model learnt: ``train`` and ``valid`` (its own splits) and
    ``ancestors`` (every split of the models it was warm-started from, up the chain), each
    sorted and unique; ``unchecked``: why some ancestor's could not be added (an older model
    folder whose data cannot be read as it was)."""

    train: np.ndarray
    valid: np.ndarray
    ancestors: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    unchecked: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, train: "pd.DataFrame", valid: "pd.DataFrame", parent: "np.ndarray | None" = None,
           unchecked: list[str] | None = None) -> "SeenQueries":
        """Of a training run's splits, with ``parent``: every hash its parent learnt."""
        return cls(_unique(key_hashes(train)), _unique(key_hashes(valid)),
                   _unique(parent if parent is not None else np.zeros(0, dtype=np.uint64)), list(unchecked or []))

    def all(self) -> np.ndarray:
        """Every hash: what a warm start from this model inherits."""
        return np.union1d(np.union1d(self.train, self.valid), self.ancestors)

    def lookup(self, frame: "pd.DataFrame") -> dict[str, np.ndarray]:
        """Per row of ``frame``: in ``train``, in ``valid``, in ``ancestors`` (boolean arrays)."""
        rows = _RowHashes(frame)
        return {part: rows.among(getattr(self, part)) for part in _PARTS}

    def manifest_entry(self) -> dict[str, Any]:
        return {"file": SEEN_FILE, **{part: int(len(getattr(self, part))) for part in _PARTS},
                **({"unchecked": self.unchecked} if self.unchecked else {})}

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        save_file({part: np.ascontiguousarray(getattr(self, part)).view(np.int64) for part in _PARTS},
                  str(Path(folder) / SEEN_FILE))

    @classmethod
    def load(cls, folder: Path, entry: dict[str, Any] | None = None) -> "SeenQueries":
        from safetensors.numpy import load_file

        from q2pt.errors import ModelLoadError

        path = Path(folder) / SEEN_FILE
        try:
            arrays = load_file(str(path))
            train, valid, ancestors = (np.asarray(arrays[part]).view(np.uint64) for part in _PARTS)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{path} cannot be read: {exc}") from None
        return cls(train, valid, ancestors, list((entry or {}).get("unchecked") or []))
