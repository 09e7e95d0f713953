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
                 max_queries: int, seed: int = 0, batch_size: int = 1024) -> int:
    """Embed ``frame``'s queries (with their locale tokens when ``locale_aware``) and give
    ``net`` its memory over ``classes`` (labels outside them are left out); returns the number
    of queries kept."""
    if len(frame) == 0 or net.memory_weight <= 0.0:
        return 0
    rows = np.arange(len(frame))
    if len(rows) > max_queries:
        rows = np.sort(np.random.default_rng([seed, 7]).permutation(len(rows))[:max_queries])
        logger.info("query memory: %d of %d training queries kept (model.memory_max_queries)", len(rows), len(frame))
    part = frame.iloc[rows]
    queries = part["query"].astype(str).tolist()
    locales = part["locale"].astype(str).tolist() if locale_aware else None
    index = {c: i for i, c in enumerate(classes)}
    labels = [[index[x] for x in row if x in index] for row in label_lists(part["product_types"])]
    width = max(1, max(len(r) for r in labels))
    padded = np.full((len(labels), width), len(classes), dtype=np.int64)
    for i, r in enumerate(labels):
        padded[i, : len(r)] = r
    was_training = net.training
    net.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(queries), batch_size):
                stop = start + batch_size
                batch = net.encoder.tokenize(queries[start:stop], None if locales is None else locales[start:stop])
                chunks.append(net.encoder(batch).float())
    finally:
        net.train(was_training)
    net.set_memory(torch.cat(chunks).clone(), torch.from_numpy(padded))
    return len(rows)
