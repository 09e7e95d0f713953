"""The variants' orchestration: :func:`fit_networks` trains the networks of a model (one
unified network, or one per locale), resumably."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from q2pt.data.labels import label_lists, union_cut_names
from q2pt.data.tree import type_name
from q2pt.errors import ConfigError, require
from q2pt.inference import UNIFIED
from q2pt.metrics import stop_metric_label
from q2pt.model_folder import check_output_folder
from q2pt.network import build_network
from q2pt.training.checkpoints import Checkpointer, StageCheckpoint, comparable_config
from q2pt.training.loop import TrainHooks, stage_label, stop_metric, train_network
from q2pt.training.memory import build_memory
from q2pt.training.names import name_examples, subtype_names_used
from q2pt.training.tokens import prepare_split
from q2pt.weights import load_network_state

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

if TYPE_CHECKING:  # pragma: no cover

    from q2pt.config import Config
    from q2pt.data import Dataset
    from q2pt.data.tree import LabelTree
    from q2pt.training.warm import WarmStart

logger = logging.getLogger(__name__)


def _compared_config(config: "Config", dataset: "Dataset", depth: int | None) -> dict[str, Any]:
    """``config`` as a run's identity compares it on ``dataset`` (learnt as a tree of ``depth``
    levels, or flat: None): the keys that do not change the trained weights left out
    (:func:`comparable_config`), and those whose setting is resolved by the data to what
    training does."""
    compared = comparable_config(config)
    # the metric early stopping watches, resolved: "auto" and the metric it picks train alike
    compared["train"]["stop_metric"] = stop_metric(config.train, depth is not None)
    compared["model"]["head_init"] = head_init(config, depth)  # likewise "auto" and the start it picks
    # where they change nothing, subtype names train alike with the key off (and as before it existed)
    compared["train"]["subtype_names"] = subtype_names_used(config, dataset)
    return compared


def _compared_saved_config(saved: "Config", dataset: "Dataset", depth: int | None) -> dict[str, Any]:
    """A checkpoint's saved config as :func:`_compared_config` gives the run's own. Since
    2026-12-06 a run's identity holds the resolved start of the head, so a saved
    ``model.head_init`` of "auto" was written before, when "auto" started every tree from
    random rows: it is read with that rule."""
    if saved.model.head_init == "auto":
        saved = saved.model_copy(deep=True)
        saved.model.head_init = "names" if depth is None else "random"
    return _compared_config(saved, dataset, depth)


def _run_identity(config: "Config", dataset: "Dataset", classes: list[str], locales: list[str],
                  warm: "WarmStart | None" = None, *, depth: int | None = None) -> dict[str, Any]:
    compared = _compared_config(config, dataset, depth)
    identity = {"config": compared, "data_fingerprint": dataset.fingerprint, "labels": classes, "locales": locales}
    if compared["train"]["subtype_names"]:  # from the paths before the cut, which the fingerprint does not see
        identity["cut_names_sha256"] = dataset.cut_names_sha256
    if warm is not None:  # a resume must start from the same parent (and label map)
        identity["parent"] = {"fingerprint": warm.parent.fingerprint, "label_map": dict(warm.label_map)}
    return identity


#: ``model.head_init auto``: trees of at most this many levels start from the names, deeper ones
#: from random rows (measured on real queries: see the key in :mod:`q2pt.config`)
NAMES_MAX_TREE_DEPTH = 2


def head_init(config: "Config", depth: int | None) -> str:
    """How the output layer of a model that learns a tree of ``depth`` levels (None: a flat
    model) starts, ``model.head_init`` resolved: "names" or "random". "auto" is "names" for a
    flat model and a tree of at most :data:`NAMES_MAX_TREE_DEPTH` levels, "random" for a deeper
    tree; a head with hidden layers starts from random rows whatever the setting."""
    init = config.model.head_init
    if config.model.head_hidden:
        return "random"
    if init == "auto":
        return "names" if depth is None or depth <= NAMES_MAX_TREE_DEPTH else "random"
    return init


def learnt_depth(tree: "LabelTree | None", labels: Iterable[str]) -> int | None:
    """How many levels of ``tree`` a model with these ``labels`` learns (its deepest label's
    level; a taxonomy file's deeper paths are in the tree but not learnt); None: no tree."""
    if tree is None:
        return None
    return max((tree.level_of(c) for c in labels), default=1)


@dataclass
class TrainedNetworks:
    """What :func:`fit_networks` produced: the networks (under :data:`~q2pt.inference.UNIFIED`
    or per locale), each network's labels, the model's labels and locales, and a training
    summary per network."""

    networks: dict[str, Any]
    network_labels: dict[str, list[str]]
    classes: list[str]
    locales: list[str]
    training: dict[str, Any]


def fit_networks(
    config: "Config",
    dataset: "Dataset",
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    hooks: TrainHooks | None = None,
    warm: "WarmStart | None" = None,
    tree: "LabelTree | None" = None,
) -> TrainedNetworks:
    """Train the networks of ``config``'s variant and encoder on ``dataset`` (see the package
    docstring); with ``out_dir`` checkpoints go to ``out_dir/checkpoints`` and ``resume``
    continues from the last one; ``warm`` initialises each fresh network from a parent
    model's (:mod:`q2pt.training.warm`). Thresholds and saving are the model's
    (:meth:`q2pt.models.Q2PTModel.fit`).
    """
    hooks = hooks or TrainHooks()
    cfg = config.train
    if warm is not None and cfg.warm_start_epochs is not None and cfg.warm_start_epochs < cfg.max_epochs:
        cfg = cfg.model_copy(update={"max_epochs": cfg.warm_start_epochs})
        logger.info("warm start: at most %d epochs (train.warm_start_epochs)", cfg.max_epochs)
    variant = config.model.variant
    train_df = dataset.train
    if len(train_df) == 0:
        raise ConfigError("the dataset has no training examples")
    valid_df = dataset.valid
    classes = sorted({x for row in label_lists(train_df["product_types"]) for x in row})
    locales = sorted(train_df["locale"].astype(str).unique().tolist())
    depth = learnt_depth(tree, classes)
    start = head_init(config, depth)

    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started_here = False  # a fresh run's checkpoint folder, made by this call
    out_existed = out_dir is not None and Path(out_dir).exists()
    try:
        checkpointer = None
        resumed_done: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, Any]]] = {}
        resumed_progress: tuple[str, StageCheckpoint] | None = None
        if out_dir is not None:
            check_output_folder(Path(out_dir))
            checkpointer = Checkpointer(Path(out_dir) / "checkpoints",
                                        _run_identity(config, dataset, classes, locales, warm, depth=depth),
                                        compare=lambda saved: _compared_saved_config(saved, dataset, depth))
            if resume and checkpointer.exists():
                checkpointer.check_run()
                resumed_done = checkpointer.done_stages()
                resumed_progress = checkpointer.load_progress()
                logger.info("resuming from %s (%d network(s) finished)", checkpointer.folder, len(resumed_done))
            else:
                if resume:
                    logger.warning("no checkpoint in %s: training from the start", checkpointer.folder)
                if hooks.is_main:
                    checkpointer.start()
                    started_here = True

        if variant == "unified-aware" and hooks.is_main:
            given = {k.casefold() for k in (*dataset.locale_languages, *config.data.locale_languages)}
            read = [loc for loc in locales if loc.casefold() not in given]
            if read:
                logger.info(
                    "locale token(s) of %s seeded from the locale ids read as language codes "
                    "(data.locale_languages, or a locales.json in the dataset folder, says which languages a store uses)",
                    ", ".join(read),
                )
        if variant == "non-unified":
            train_locs, valid_locs = train_df["locale"].astype(str), valid_df["locale"].astype(str)
            stages = [(loc, train_df[train_locs == loc], valid_df[valid_locs == loc]) for loc in locales]
        else:
            stages = [(UNIFIED, train_df, valid_df[valid_df["locale"].astype(str).isin(locales)])]

        networks: dict[str, Any] = {}
        network_labels: dict[str, list[str]] = {}
        summaries: dict[str, Any] = {}
        added: dict[str, int] = {}  # name examples per network (train.name_examples)
        for i, (stage, tr, va) in enumerate(stages):
            if stage == UNIFIED:
                stage_classes = classes
            else:
                stage_classes = sorted({x for row in label_lists(tr["product_types"]) for x in row})
            if cfg.name_examples > 0:  # the types' names as training queries (and memory rows)
                # and the names of the levels data.label_depth cut away, from this network's own rows
                subtypes = union_cut_names(tr) if cfg.subtype_names else {}
                names = name_examples(stage_classes, locales if stage == UNIFIED else [stage], cfg.name_examples,
                                      sep=config.data.label_separator, tree=tree, subtype_names=subtypes)
                if "weight" not in tr.columns:
                    tr = tr.assign(weight=1.0)
                tr = pd.concat([tr, names], ignore_index=True)
                stages[i] = (stage, tr, va)
                added[stage] = len(names)
                if hooks.is_main:
                    logger.info("%s: %d product-type names added as training queries, weight %g "
                                "(train.name_examples%s)", stage_label(stage), len(names), cfg.name_examples,
                                "; with the names of the levels data.label_depth cut away, train.subtype_names"
                                if subtypes else "")
            torch.manual_seed(cfg.seed)
            net = build_network(config, stage_classes, locales if variant == "unified-aware" else None,
                                dataset.locale_languages)
            network_labels[stage] = stage_classes
            networks[stage] = net
            if stage in resumed_done:

                weights, metadata, meta = resumed_done[stage]
                where = str(checkpointer.folder / "done") if checkpointer is not None else "checkpoint"
                load_network_state(net, weights, metadata, source=where)
                net.eval()
                summaries[stage] = {k: v for k, v in meta.items() if k != "stage"}
                continue
            aware = variant == "unified-aware"
            train_split = prepare_split(net.encoder, tr, stage_classes, locale_aware=aware,
                                        with_agnostic=aware and cfg.locale_dropout > 0)
            levels = None if tree is None else np.asarray([tree.level_of(c) for c in stage_classes])
            if start == "names":  # the rows; the bias is the prior's, and a warm start then overrides its known types
                net.init_head_from_names([type_name(c, config.data.label_separator) for c in stage_classes],
                                         config.model.head_init_scale)
            net.init_output_bias(_output_prior(train_split, len(stage_classes),
                                               levels if cfg.tree_output_prior == "per_level" else None))
            if warm is not None:  # after the prior bias: new types keep it, the parent's types their own
                warm.apply(stage, net, stage_classes)
            valid_split = prepare_split(net.encoder, va, stage_classes, locale_aware=aware) if len(va) else None
            if valid_split is None and hooks.is_main:
                logger.warning("%s: no validation examples: no early stopping, keeping the last weights", stage_label(stage))
            stage_resume = None
            if resumed_progress is not None and resumed_progress[0] == stage:
                stage_resume = resumed_progress[1]
            result = train_network(
                net, train_split, valid_split, cfg, stage=stage, stage_seed=(cfg.seed, i),
                checkpointer=checkpointer, resume=stage_resume, progress=progress, hooks=hooks,
                column_levels=levels, column_parents=_parents(tree, stage_classes),
            )
            summaries[stage] = result.summary()
            if checkpointer is not None and hooks.is_main:
                checkpointer.save_done(stage, net, result)
            if stage != UNIFIED and hooks.is_main:
                best = "-" if result.best_metric is None else f"{result.best_metric:.4f}"
                n_names = added.get(stage, 0)
                logger.info(
                    "%s (%d/%d): %d train queries%s, %d labels, %d epochs; best valid %s %s",
                    stage_label(stage), i + 1, len(stages), train_split.n - n_names,
                    f" and {n_names} type names" if n_names else "", len(stage_classes), result.epochs,
                    stop_metric_label(result.metric, cfg.precision_target), best,
                )

        if config.model.memory_weight > 0:  # after training (or resuming): the final encoder's embeddings
            for stage, tr, _ in stages:
                kept = build_memory(networks[stage], tr, network_labels[stage], locale_aware=variant == "unified-aware",
                                    max_queries=config.model.memory_max_queries, dim=config.model.memory_dim,
                                    seed=cfg.seed)
                summaries[stage]["memory_queries"] = kept
            if hooks.is_main:
                kept_all = [int(s.get("memory_queries", 0)) for s in summaries.values()]
                logger.info("query memory (model.memory_weight %g): %s; the validation figures from here on blend "
                            "it in, the per-epoch ones above did not", config.model.memory_weight,
                            f"{kept_all[0]} training queries" if len(kept_all) == 1 else
                            f"{min(kept_all)}-{max(kept_all)} training queries in each of {len(kept_all)} networks")
        for stage, n in added.items():
            summaries[stage]["name_examples"] = n
        for summary in summaries.values():
            summary["head_init"] = start  # the start model.head_init resolved to
        return TrainedNetworks(networks, network_labels, classes, locales, summaries)
    except Exception:
        # an error before anything was learnt (a config error found building the encoder): no
        # run to resume, so no checkpoint folder that would make the corrected rerun need --overwrite
        if started_here and checkpointer is not None and checkpointer.has_no_progress():
            shutil.rmtree(checkpointer.folder, ignore_errors=True)
            if not out_existed and out_dir is not None and not any(Path(out_dir).iterdir()):
                Path(out_dir).rmdir()
        raise
    finally:
        torch.set_num_threads(previous_threads)


def _output_prior(split: Any, n_labels: int, levels: np.ndarray | None) -> float | np.ndarray:
    """The prior the outputs start at: the share of positive (query, type) pairs; with
    ``levels`` (``train.tree_output_prior`` per_level) each level's own share."""
    if levels is None:
        return split.targets.nnz / max(1, split.n * n_labels)
    per_column = np.asarray(split.targets.sum(axis=0)).ravel() / max(1, split.n)
    out = np.empty(n_labels, dtype=np.float64)
    for level in np.unique(levels):
        cols = levels == level
        out[cols] = per_column[cols].mean()
    return out


def _parents(tree: "LabelTree | None", classes: list[str]) -> np.ndarray | None:
    """Whether each output is a parent of another output (None: a flat model)."""
    if tree is None:
        return None
    known = set(classes)
    return np.asarray([any(k in known for k in tree.children.get(c, [])) for c in classes], dtype=bool)
