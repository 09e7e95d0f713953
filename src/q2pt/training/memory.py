"""The query memory of a trained network (``model.memory_*``): its encoder's embeddings of the
training queries and their product types, which :meth:`q2pt.network.Q2PTNet.scores` blends
into every score as the vote of a query's nearest training queries.

Built once after training (no gradient, one forward pass over at most
``model.memory_max_queries`` training queries, a seeded sample beyond that) and kept as two
buffers of the network, so it is saved, loaded, served and exported to ONNX with the weights.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from q2pt.data.labels import label_lists
from q2pt.errors import require

if TYPE_CHECKING:
    import pandas as pd
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

__all__ = ["build_memory"]

logger = logging.getLogger(__name__)


def build_memory(net: Any, frame: "pd.DataFrame", classes: Sequence[str], *, locale_aware: bool,
                 max_queries: int, dim: int = 0, seed: int = 0, batch_size: int = 1024) -> int:
    """Embed ``frame``'s queries (with their locale tokens when ``locale_aware``) and give
    ``net`` its memory over ``classes`` (labels outside them are left out); returns the number
    of memory rows. Rows of the same query (and locale, when ``locale_aware``) are one memory
    row whose labels carry their share of the rows' weights (``weight`` column), so sample
    weights count in the vote as in the loss. ``dim`` > 0 and below both the encoder's width
    and the number of memory rows: the keys are the unit embeddings' projections on their
    ``dim`` principal directions (uncentred SVD), kept with the projection that maps a query's
    embedding to the same space."""
    if len(frame) == 0 or net.memory_weight <= 0.0:
        return 0
    weights = (frame["weight"].to_numpy(dtype=np.float64, na_value=1.0) if "weight" in frame.columns
               else np.ones(len(frame)))
    index = {c: i for i, c in enumerate(classes)}
    merged: dict[tuple[str, str], dict[int, float]] = {}
    totals: dict[tuple[str, str], float] = {}
    for q, loc, row, w in zip(frame["query"].astype(str), frame["locale"].astype(str),
                              label_lists(frame["product_types"]), weights):
        key = (q, loc if locale_aware else "")
        shares = merged.setdefault(key, {})
        totals[key] = totals.get(key, 0.0) + float(w)
        for x in row:
            if x in index:
                shares[index[x]] = shares.get(index[x], 0.0) + float(w)
    keys = list(merged)
    if len(keys) > max_queries:
        keep = np.sort(np.random.default_rng([seed, 7]).permutation(len(keys))[:max_queries])
        logger.info("query memory: %d of %d training queries kept (model.memory_max_queries)", len(keep), len(keys))
        keys = [keys[i] for i in keep]
    queries = [q for q, _ in keys]
    locales = [loc for _, loc in keys] if locale_aware else None
    width = max(1, max(len(merged[k]) for k in keys))
    padded = np.full((len(keys), width), len(classes), dtype=np.int64)
    values = np.zeros((len(keys), width), dtype=np.float32)
    for i, k in enumerate(keys):
        for j, (label, w) in enumerate(sorted(merged[k].items())):
            padded[i, j], values[i, j] = label, w / max(totals[k], 1e-12)
    embedded = net.encoder.encode(queries, locales, batch_size=batch_size).float()
    projection = None
    if 0 < dim < embedded.shape[1] and dim < embedded.shape[0]:
        unit = embedded / embedded.norm(dim=1, keepdim=True).clamp_min(1e-12)
        projection = torch.linalg.svd(unit, full_matrices=False)[2][:dim].T.contiguous()  # (width, dim)
        embedded = unit @ projection
    net.set_memory(embedded, torch.from_numpy(padded), torch.from_numpy(values), projection)
    return len(embedded)
