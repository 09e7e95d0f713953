"""An estimate of an experiment's duration, printed before it starts.

Training dominates: every variant's training loop is planned in optimiser steps (epochs,
``min_steps``, ``max_steps``; early stopping can only make it shorter), and a few training
steps of the main encoder are timed on this machine before anything else runs. Evaluation
is a fixed share of that training time; baselines are scaled from their cost on the
development machine by how much slower (or faster) this machine ran the training steps.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.config import Config
    from q2pt.data import Dataset

__all__ = ["name_counts", "planned_examples", "training_throughput", "estimate_seconds", "BASELINE_SECONDS_PER_1K",
           "DEV_TRAIN_QPS"]

#: training queries/s of the ``use`` encoder on the development machine (2 cores, AMD EPYC,
#: one torch thread: bench/train_speed.py --threads 1), the reference the factors below scale from
DEV_TRAIN_QPS = {"use": 986.0, "ngram": 22_981.0}
#: seconds per 1,000 training queries of each baseline on the development machine: the
#: ``train_seconds`` of the quick demo's report (2026-12-01, idle, 32,138 training queries,
#: quick budget: fastText 5 epochs, TF-IDF 3 passes), and for e5-lr a real 3,920-query fold
#: (bench/real_quality.py; the first e5 baseline of a process embeds every query at ~145/s,
#: the second reuses them)
BASELINE_SECONDS_PER_1K: dict[str, float] = {
    "fasttext-per-locale": 0.37,
    "fasttext-unified": 0.14,
    "tfidf-per-locale": 0.63,
    "tfidf-unified": 0.72,
    "use-lr-per-locale": 2.2,
    "use-lr-unified": 0.27,
    "e5-lr-per-locale": 14.7,
    "e5-lr-unified": 1.0,
}
#: evaluation (scoring valid at every check, test, bootstrap CIs) as a share of training time
EVAL_SHARE = 0.25


def name_counts(train: "pd.DataFrame", sep: str, subtype_names: bool = False) -> dict[str, int]:
    """How many name rows ``train.name_examples`` adds to each network: per locale (the distinct
    names of its types and of their ancestors in the paths, and with ``subtype_names`` those
    cut away from its rows' paths: the ``cut_names`` column, ``train.subtype_names``) and under
    ``"*"`` for a unified network (those of every type). A tree's ancestors are counted whether
    or not the model learns them (``model.hierarchy flat`` does not): an estimate."""
    from q2pt.data.labels import label_lists, split_path, union_cut_names
    from q2pt.data.tree import type_name

    def names_of(rows: "pd.DataFrame") -> set[str]:
        names = {type_name(level, sep) for types in label_lists(rows["product_types"]) for t in types
                 for level in split_path(t, sep) or [t]}  # the types' and their ancestors' names
        if subtype_names:
            names.update(n for below in union_cut_names(rows).values() for n in below)
        return names

    per_locale = {str(loc): names_of(rows) for loc, rows in train.groupby(train["locale"].astype(str), sort=True)}
    out = {loc: len(names) for loc, names in per_locale.items()}
    out["*"] = len(set().union(*per_locale.values())) if per_locale else 0
    return out


def planned_examples(config: "Config", sizes: Mapping[str, int], names: Mapping[str, int] | None = None) -> int:
    """Training examples the loop passes at most for ``config``'s variant on training splits of
    ``sizes`` (queries per locale): every network's steps x its batch size. ``names``
    (:func:`name_counts`): the rows ``train.name_examples`` adds to each network."""
    cfg = config.train
    bs = cfg.batch_size
    extra = dict(names or {}) if cfg.name_examples > 0 else {}

    def one(n: int) -> int:
        if n <= 0:
            return 0
        per_epoch = max(1, math.ceil(n / bs))
        epochs = cfg.max_epochs
        if cfg.min_steps:
            epochs = max(epochs, math.ceil(cfg.min_steps / per_epoch))
        steps = epochs * per_epoch
        if cfg.max_steps is not None:
            steps = min(steps, cfg.max_steps)
        return steps * min(bs, n)

    if config.model.variant == "non-unified":
        return sum(one(int(n) + extra.get(loc, 0)) for loc, n in sizes.items())
    return one(int(sum(sizes.values())) + extra.get("*", 0))


def training_throughput(config: "Config", dataset: "Dataset", *, steps: int = 4, warmup: int = 1) -> float:
    """Training queries/s of ``config``'s network on a few of ``dataset``'s training batches (the
    weights are thrown away)."""
    import torch

    from q2pt.network import build_network
    from q2pt.training import make_optimizers, prepare_split, train_step

    cfg = config.train
    train = dataset.train
    n = min(len(train), cfg.batch_size * (steps + warmup))
    part = train.iloc[:n]
    classes = sorted({t for ts in part["product_types"] for t in ts})
    previous = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(0)
        aware = config.model.variant == "unified-aware"
        net = build_network(config, classes, sorted(part["locale"].astype(str).unique()) if aware else None)
        split = prepare_split(net.encoder, part, classes, locale_aware=aware)
        opts = make_optimizers(net, cfg)
        weights = torch.from_numpy(split.weights)
        bs = min(cfg.batch_size, split.n)
        batches = [np.arange(i, min(i + bs, split.n)) for i in range(0, split.n, bs)] or [np.arange(split.n)]
        net.train()
        done = 0
        start = None
        for i in range(steps + warmup):
            if i == warmup:
                start = time.perf_counter()
            idx = batches[i % len(batches)]
            train_step(net, opts, split, idx, None, split.targets, weights, output=net.output)
            if i >= warmup:
                done += len(idx)
        elapsed = time.perf_counter() - (start or time.perf_counter())
    finally:
        torch.set_num_threads(previous)
    return done / max(elapsed, 1e-9)


def estimate_seconds(
    configs: Sequence["Config"], baselines: Sequence[str], sizes: Mapping[str, int], train_qps: float, encoder_kind: str,
    names: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """``{"seconds", "variants", "baselines", "factor"}``: the estimate and its parts (``names``:
    :func:`name_counts` of the training split)."""
    variants = sum(planned_examples(c, sizes, names) for c in configs) / max(train_qps, 1e-9)
    dev = DEV_TRAIN_QPS.get(encoder_kind)
    factor = dev / train_qps if dev else 1.0
    n_1k = sum(sizes.values()) / 1000.0
    base = sum(BASELINE_SECONDS_PER_1K.get(b, 1.0) for b in baselines) * n_1k * max(factor, 0.25)
    total = variants * (1.0 + EVAL_SHARE) + base
    return {"seconds": total, "variants": variants, "baselines": base, "factor": factor}
