"""Hashed word and character n-gram embedding bag, trained from scratch (fastText-like).

A query is lower-cased and NFKC-normalised, split on whitespace, and represented by the
hashed ids of

* its words and word n-grams up to ``word_ngrams`` (``"w\\0red"``, ``"w\\0red shoes"``), and
* the character n-grams (``min_n``..``max_n``) of every word wrapped in ``<`` and ``>``
  (``"c\\0<re"``, ``"c\\0red"``...), which also covers scripts written without spaces;

its embedding is the mean of those ids' vectors (``torch.nn.EmbeddingBag``). Hashing uses
CRC-32 of the UTF-8 bytes (``zlib.crc32``), stable across processes and platforms (Python's
``hash()`` is salted per process). Locale tokens are the extra rows ``buckets + i``.

With ``sparse=True`` (default) the table gets sparse gradients: optimise
``sparse_parameters()`` with ``torch.optim.SparseAdam``.
"""

from __future__ import annotations

import functools
import unicodedata
import zlib
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from q2pt.encoders import Encoder, torch
from q2pt.errors import ConfigError, ModelLoadError

_OPTIONS = ("dim", "buckets", "min_n", "max_n", "word_ngrams", "lowercase", "sparse", "cache_size")


def stable_hash(text: str) -> int:
    """CRC-32 of the UTF-8 bytes: the same value in every process and on every platform."""
    return zlib.crc32(text.encode("utf-8"))


@functools.lru_cache(maxsize=8)
def _featurizer(
    buckets: int, min_n: int, max_n: int, word_ngrams: int, lowercase: bool, cache_size: int
) -> Callable[[str], tuple[int, ...]]:
    """``query -> bucket ids`` for one feature configuration, shared by the encoders of that
    configuration: an LRU cache of ``cache_size`` queries, and a per-word cache (emptied when
    it reaches ``max(cache_size, 65536)`` words) so that unseen queries of known words are cheap."""
    word_cache: dict[str, tuple[int, ...]] = {}
    crc = zlib.crc32
    max_words = max(cache_size, 1 << 16)

    def word_ids(word: str) -> tuple[int, ...]:
        ids = word_cache.get(word)
        if ids is None:
            ids_list = [crc(("w\0" + word).encode("utf-8")) % buckets]
            if max_n > 0:
                w = "<" + word + ">"
                size = len(w)
                for n in range(min_n, max_n + 1):
                    for i in range(size - n + 1):
                        ids_list.append(crc(("c\0" + w[i : i + n]).encode("utf-8")) % buckets)
            ids = tuple(ids_list)
            if len(word_cache) >= max_words:
                word_cache.clear()
            word_cache[word] = ids
        return ids

    def features(query: str) -> tuple[int, ...]:
        text = unicodedata.normalize("NFKC", query)
        if lowercase:
            text = text.lower()
        words = text.split()
        ids = list(chain.from_iterable(map(word_ids, words)))
        for n in range(2, word_ngrams + 1):
            for i in range(len(words) - n + 1):
                ids.append(crc(("w\0" + " ".join(words[i : i + n])).encode("utf-8")) % buckets)
        return tuple(ids)

    return functools.lru_cache(maxsize=cache_size)(features) if cache_size > 0 else features


class NgramEncoder(Encoder):
    """fastText-like hashed n-gram embedding bag (no pre-training).

    Options: ``dim`` (output width, 128), ``buckets`` (hash table rows, 2**18),
    ``min_n``/``max_n`` (character n-gram range, 3..5; ``max_n=0`` disables them),
    ``word_ngrams`` (longest word n-gram, 2), ``lowercase`` (True), ``sparse`` (sparse
    gradients for SparseAdam, True), ``cache_size`` (LRU cache of ids per query string).
    """

    kind = "ngram"
    default_lr = 1e-2

    def __init__(
        self,
        locales: Sequence[str] | None = None,
        *,
        dim: int = 128,
        buckets: int = 1 << 18,
        min_n: int = 3,
        max_n: int = 5,
        word_ngrams: int = 2,
        lowercase: bool = True,
        sparse: bool = True,
        cache_size: int = 1 << 17,
    ) -> None:
        super().__init__(locales)
        for name, value, low in (("dim", dim, 1), ("buckets", buckets, 1), ("word_ngrams", word_ngrams, 1),
                                 ("min_n", min_n, 1), ("max_n", max_n, 0), ("cache_size", cache_size, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"ngram encoder: {name} must be an integer >= {low}, got {value!r}")
        if max_n and max_n < min_n:
            raise ConfigError(f"ngram encoder: max_n ({max_n}) must be 0 or >= min_n ({min_n})")
        self.dim = dim
        self.buckets = buckets
        self.min_n, self.max_n, self.word_ngrams = min_n, max_n, word_ngrams
        self.lowercase = bool(lowercase)
        self.sparse = bool(sparse)
        self.cache_size = cache_size
        self._features = _featurizer(buckets, min_n, max_n, word_ngrams, self.lowercase, cache_size)
        self.bag = torch.nn.EmbeddingBag(buckets + len(self.locales), dim, mode="mean", sparse=self.sparse)
        # fastText's initialisation: small uniform vectors
        torch.nn.init.uniform_(self.bag.weight, -1.0 / dim, 1.0 / dim)

    def tokenize(self, queries: Sequence[str], locales: Sequence[str] | None) -> dict[str, Any]:
        """``{"ids": (N,) int64 bucket ids, "offsets": (B,) int64 start of each query}``."""
        queries = list(queries)
        loc = self.locale_ids(locales, len(queries))
        feats = self._features
        base = self.buckets
        seqs = [feats(q) if li is None else (base + li,) + feats(q) for q, li in zip(queries, loc)]
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs), dtype=np.int64)
        if len(seqs) > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
        return {"ids": torch.from_numpy(flat), "offsets": torch.from_numpy(offsets)}

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.bag(batch["ids"], batch["offsets"])

    def sparse_parameters(self) -> list[Any]:
        return [self.bag.weight] if self.sparse else []

    def locale_rows(self) -> dict[str, int]:
        return {"bag.weight": self.buckets}

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "locales": list(self.locales),
            "dim": self.dim,
            "buckets": self.buckets,
            "min_n": self.min_n,
            "max_n": self.max_n,
            "word_ngrams": self.word_ngrams,
            "lowercase": self.lowercase,
            "sparse": self.sparse,
            "cache_size": self.cache_size,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: str | Path | None = None) -> "NgramEncoder":
        """Rebuild from ``get_config()`` (no assets: the hashing is the vocabulary)."""
        options = {k: v for k, v in config.items() if k not in ("kind", "locales")}
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ModelLoadError(f"ngram encoder config has unknown keys: {', '.join(unknown)}")
        return cls(locales=config.get("locales") or None, **options)
