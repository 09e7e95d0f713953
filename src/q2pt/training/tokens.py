"""Token caches and prepared splits: every split is tokenized once, batches gather rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from q2pt.data.labels import label_lists, multi_hot
from q2pt.errors import require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


logger = logging.getLogger(__name__)


class TokenCache:
    """A split tokenized once by an encoder; :meth:`take` gathers rows as a batch.

    Two tokenization layouts are gathered without re-tokenizing: *row-aligned* (every
    tensor has one row per query, e.g. padded ``input_ids``/``attention_mask``; padding is
    trimmed to the batch's longest query) and *flat* (token tensors concatenated over the
    queries, with per-query ``offsets`` or ``lengths``, e.g. EmbeddingBag inputs). An
    encoder may also define ``select_rows(batch, idx)`` itself. The gathering is checked
    once by comparing the encoder's output on gathered rows with its output on the same
    queries tokenized alone; if they differ, batches are tokenized on demand (correct,
    slower).
    """

    def __init__(self, encoder: Any, queries: Sequence[str], locales: Sequence[str | None] | None):
        self.encoder = encoder
        self.n = len(queries)
        self._queries = list(queries)
        self._locales = None if locales is None else list(locales)
        self._tokens: dict[str, Any] | None = None
        self._layout = "tokenize"
        self._parts: list[TokenCache] = []
        if self.n and callable(getattr(encoder, "join", None)):  # a composite: each part cached on its own
            self._parts = [TokenCache(part, self._queries, self._locales) for part in encoder.parts]
            self._layout = "parts"
        elif self.n:
            tokens = encoder.tokenize(self._queries, self._locales)
            layout = self._detect_layout(tokens)
            if layout is not None:
                self._tokens, self._layout = tokens, layout
                if not self._gather_matches():
                    logger.debug("%s: cannot gather cached tokens; tokenizing per batch", type(encoder).__name__)
                    self._tokens, self._layout = None, "tokenize"

    @property
    def layout(self) -> str:
        """"rows", "flat", "encoder" (the encoder's select_rows), "parts" (a composite encoder: one
        cache per part, joined) or "tokenize" (per batch)."""
        return self._layout

    def _detect_layout(self, tokens: Mapping[str, Any]) -> str | None:
        if callable(getattr(self.encoder, "select_rows", None)):
            return "encoder"
        if not tokens or not all(torch.is_tensor(v) and v.dim() >= 1 for v in tokens.values()):
            return None
        n = self.n
        if all(v.shape[0] == n for k, v in tokens.items() if k not in ("offsets", "lengths")) and not (
            "offsets" in tokens or "lengths" in tokens
        ):
            return "rows"
        flat_sizes = {v.shape[0] for k, v in tokens.items() if k not in ("offsets", "lengths") and v.shape[0] != n}
        if len(flat_sizes) > 1:
            return None
        total = flat_sizes.pop() if flat_sizes else n
        if "offsets" in tokens:
            offsets = tokens["offsets"]
            if offsets.dim() != 1 or offsets.shape[0] != n:
                return None
            starts = offsets.numpy().astype(np.int64)
            lengths = np.diff(np.append(starts, total))
        elif "lengths" in tokens:
            lengths = tokens["lengths"].numpy().astype(np.int64)
            if lengths.ndim != 1 or lengths.shape[0] != n or int(lengths.sum()) != total:
                return None
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        else:
            return None
        if (lengths < 0).any():
            return None
        self._starts, self._lengths, self._total = starts, lengths, total
        return "flat"

    def _gather_matches(self) -> bool:
        probe = np.arange(min(self.n, 4))[::-1].copy()  # reversed: order must follow idx
        gathered = self.take(probe)
        alone = self.encoder.tokenize(
            [self._queries[i] for i in probe], None if self._locales is None else [self._locales[i] for i in probe]
        )
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            with torch.inference_mode():
                a, b = self.encoder(gathered), self.encoder(alone)
        except Exception:  # a malformed gathered batch: fall back to tokenizing
            return False
        finally:
            self.encoder.train(was_training)
        return a.shape == b.shape and bool(torch.allclose(a, b, atol=1e-5, rtol=1e-4))

    def take(self, idx: np.ndarray) -> dict[str, Any]:
        """The batch of rows ``idx`` (ready for ``encoder.forward``)."""
        idx = np.asarray(idx, dtype=np.int64)
        tokens = self._tokens
        if self._layout == "parts":
            return self.encoder.join([part.take(idx) for part in self._parts])
        if self._layout == "tokenize" or tokens is None:
            queries = [self._queries[i] for i in idx]
            locales = None if self._locales is None else [self._locales[i] for i in idx]
            return self.encoder.tokenize(queries, locales)
        if self._layout == "encoder":
            return self.encoder.select_rows(tokens, idx)
        rows = torch.from_numpy(idx)
        if self._layout == "rows":
            out = {k: v.index_select(0, rows) for k, v in tokens.items()}
            mask = out.get("attention_mask")
            if mask is not None and mask.dim() == 2 and mask.shape[0] > 0:
                width = mask.shape[1]
                used = max(1, int(mask.sum(dim=1).max()))
                if used < width and not bool(mask[:, used:].any()):  # right padding: trim it
                    out = {k: (v[:, :used] if v.dim() >= 2 and v.shape[1] == width else v) for k, v in out.items()}
            return out
        # flat layout: gather each query's token segment
        lengths = self._lengths[idx]
        new_starts = np.zeros(len(idx), dtype=np.int64)
        if len(idx) > 1:
            np.cumsum(lengths[:-1], out=new_starts[1:])
        positions = np.repeat(self._starts[idx] - new_starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        pos = torch.from_numpy(positions)
        out = {}
        for k, v in tokens.items():
            if k == "offsets":
                out[k] = torch.from_numpy(new_starts)
            elif k == "lengths":
                out[k] = torch.from_numpy(lengths.copy())
            elif v.shape[0] == self._total:
                out[k] = v.index_select(0, pos)
            else:
                out[k] = v.index_select(0, rows)
        return out


@dataclass
class PreparedSplit:
    """A split ready for the loop: cached tokens, targets, weights, locales.

    With ``has_agnostic`` (unified-aware training with locale dropout) ``tokens`` holds
    ``2n`` rows: row ``i`` is query ``i`` with its locale token, row ``n + i`` the same
    query without it, so that a batch mixing both is one gather and one forward pass.
    """

    tokens: TokenCache
    targets: Any  # scipy.sparse.csr_matrix (n, L) float32
    weights: np.ndarray  # (n,) float32
    locales: list[str]
    n_missing: np.ndarray  # (n,) positives outside the label space
    has_agnostic: bool = False

    @property
    def n(self) -> int:
        return int(self.weights.shape[0])

    def rows(self, idx: np.ndarray, drop: np.ndarray | None) -> np.ndarray:
        """Token rows of examples ``idx``: the agnostic copy where ``drop[idx]`` is set."""
        if drop is None or not self.has_agnostic:
            return idx
        return np.where(drop[idx], idx + self.n, idx)


def prepare_split(
    encoder: Any,
    frame: "pd.DataFrame",
    classes: Sequence[str],
    *,
    locale_aware: bool,
    with_agnostic: bool = False,
) -> PreparedSplit:
    """Tokenize a DataFrame split once and encode its labels over ``classes``."""
    queries = frame["query"].astype(str).tolist()
    locales = frame["locale"].astype(str).tolist()
    targets, missing = multi_hot(label_lists(frame["product_types"]), classes)
    if "weight" in frame.columns:
        weights = frame["weight"].to_numpy(dtype=np.float32, na_value=1.0)
    else:
        weights = np.ones(len(frame), dtype=np.float32)
    if locale_aware and with_agnostic:
        # the base Encoder contract: a None locale gets no locale token
        with_none: list[str | None] = [*locales, *([None] * len(queries))]
        tokens = TokenCache(encoder, queries + queries, with_none)
    else:
        tokens = TokenCache(encoder, queries, locales if locale_aware else None)
    return PreparedSplit(tokens, targets, weights, locales, missing, locale_aware and with_agnostic)
