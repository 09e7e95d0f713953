"""The q2pt classifier and its model folders.

:class:`Q2PTNet` is the network: encoder -> dropout -> head (``model.head_hidden`` hidden
layers, then one linear layer) giving one logit per product type; a sigmoid turns logits
into scores and training minimises binary cross-entropy (see :mod:`q2pt.training`), or, with
``model.output softmax``, a softmax over the types and cross-entropy (:meth:`Q2PTNet.scores`
is the one place that turns logits into scores).

:class:`Q2PTModel` is the scikit-learn style estimator over the paper's three variants:

``non-unified``
    one network per locale, each over the product types seen in that locale's training
    data; :meth:`Q2PTModel.predict_proba` maps each back to the global ``classes_`` order
    (zeros elsewhere). A locale outside training is refused (``UnknownLocaleError``)
    unless a ``fallback_locale`` is given.
``unified-agnostic``
    one network for every locale, which never sees the locale.
``unified-aware``
    one network; the encoder prepends the query's locale token (the paper's locale-aware
    conditioning). A locale unseen in training gets no token -- the locale-agnostic mode,
    trained by ``train.locale_dropout`` -- and a warning says so.

A model folder (:meth:`Q2PTModel.save`, :func:`load_model`)::

    MODEL_DIR/manifest.json          format_version, versions, variant, encoder, locales,
                                     labels, data, config, validation metrics, thresholds,
                                     sha256 of every other file
    MODEL_DIR/MODEL_CARD.md          the model card, written from the manifest
                                     (:mod:`q2pt.model_card`)
    MODEL_DIR/model.safetensors      unified: the network's state_dict
    MODEL_DIR/encoder/               unified: encoder assets
    MODEL_DIR/models/<LOC>/model.safetensors, models/<LOC>/encoder/   non-unified
    MODEL_DIR/seen.safetensors       hashes of the queries it learnt, its warm-start parents'
                                     included (:mod:`q2pt.seen`)
    MODEL_DIR/checkpoints/           training checkpoints while it trains (removed once
                                     :meth:`Q2PTModel.fit` has saved the model)

It is written atomically (built in a temporary folder, then renamed) and never uses pickle.

Pretrained deltas: tensors that the encoder can rebuild from installed pretrained resources
(``Encoder.pretrained_state()``; the ``use`` encoder's 128k x 512 embedding table) are not
stored in full. :func:`pack_state` writes such a tensor ``NAME`` as two entries of the same
safetensors file, ``NAME#pretrained_delta.rows`` (int64 indexes of the rows that differ from
the pretrained value) and ``NAME#pretrained_delta.values`` (those rows), and records the
resource (package, version, sha256 of its weights file) in the file's metadata and in the
manifest. A frozen table costs nothing, a sparsely fine-tuned one only its touched rows.
:func:`load_network_state` rebuilds the tensor from the installed resource, and refuses
(``ModelLoadError``) when its sha256 differs from the recorded one. Training checkpoints use
the same encoding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np

from q2pt import __version__
from q2pt.config import Config, resolve_config
from q2pt.errors import ConfigError, DataError, ModelLoadError, Problem, require
from q2pt.inference import (
    DEFAULT_BATCH_SIZE,
    UNIFIED,
    Forward,
    Inference,
    InferenceCore,
    encoder_tokenizers,
    threshold_of,
    torch_forward,
)
from q2pt.io import atomic_path, folder_lock
from q2pt.model_card import MODEL_CARD, render_model_card
from q2pt.model_folder import (
    FORMAT_VERSION,
    MANIFEST,
    check_files,
    check_output_folder,
    check_train_target,
    folder_state,
    hash_files,
    make_readable,
    model_fingerprint,
    network_paths,
    read_manifest,
    versions,
)
from q2pt.network import Q2PTNet, memory_settings, torch_threads
from q2pt.seen import SeenQueries
from q2pt.weights import DELTA_METADATA, check_pretrained_resource, load_network_state, pack_state, read_safetensors

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.data import Dataset
    from q2pt.data.tree import LabelTree
    from q2pt.training import TrainedNetworks, TrainHooks
    from q2pt.training.warm import WarmStart

logger = logging.getLogger(__name__)


__all__ = ["Q2PTModel", "load_model"]


class Q2PTModel:
    """Query -> product types classifier, in one of the three variants (see the module doc).

    Args:
        variant: "non-unified", "unified-agnostic" or "unified-aware" (default
            ``config.model.variant``, itself "unified-aware" by default).
        encoder: encoder spec ("use", "ngram", "hf:NAME_OR_PATH"); default
            ``config.model.encoder`` ("use").
        config: a resolved :class:`~q2pt.config.Config` (see
            :func:`~q2pt.config.resolve_config`); None: defaults with the encoder's
            overrides.

    Fitted attributes: ``classes_`` (ordered labels), ``locales_`` (training locales),
    ``thresholds_`` ({"global": t, LOC: t}), ``networks`` ({"*": net} or {LOC: net}),
    ``network_labels_`` (each network's labels), ``manifest``.
    """

    def __init__(self, variant: str | None = None, encoder: str | None = None, config: Config | None = None):
        if config is None:
            config = resolve_config(encoder=encoder, flags={"model.variant": variant})
        else:
            if not isinstance(config, Config):
                raise ConfigError(f"config must be a q2pt.config.Config, got {type(config).__name__}")
            if encoder is not None and encoder != config.model.encoder:
                raise ConfigError(
                    f"encoder {encoder!r} differs from the config's model.encoder {config.model.encoder!r}; "
                    "resolve the config with that encoder (resolve_config(encoder=...))"
                )
            if variant is not None and variant != config.model.variant:
                config = Config.from_dict(_with(config.to_dict(), "model", "variant", variant))
        self.config: Config = config
        self.classes_: list[str] = []
        self.locales_: list[str] = []
        self.thresholds_: dict[str, float] = {}
        #: {locale: {product type: threshold}} (train.type_thresholds); others use thresholds_
        self.type_thresholds_: dict[str, dict[str, float]] = {}
        #: a hierarchical model's tree (model.hierarchy) and thresholds per level
        self.tree_: "LabelTree | None" = None
        self.level_thresholds_: dict[str, dict[str, float | None]] = {}
        #: per key of thresholds_: whether it reached the precision target on validation (None: unknown)
        self.thresholds_reached_: dict[str, bool] | None = None
        self.networks: dict[str, Q2PTNet] = {}
        self.network_labels_: dict[str, list[str]] = {}
        self.manifest: dict[str, Any] = {}
        self.fingerprint: str | None = None  # sha256 of the manifest once saved or loaded
        self.folder: str | None = None  # the model folder it was last saved to or loaded from
        #: the queries it learnt, its warm-start parents' included (q2pt.seen; None: a folder from before)
        self.seen_: "SeenQueries | None" = None

    @property
    def variant(self) -> str:
        """``config.model.variant``: non-unified, unified-agnostic or unified-aware."""
        return self.config.model.variant

    @property
    def encoder(self) -> str:
        """``config.model.encoder``: the encoder spec."""
        return self.config.model.encoder

    def __repr__(self) -> str:
        fitted = f", {len(self.classes_)} labels, {len(self.locales_)} locales" if self.networks else ""
        return f"Q2PTModel(variant={self.variant!r}, encoder={self.encoder!r}{fitted})"

    # ------------------------------------------------------------------ training
    def fit(
        self,
        dataset: "Dataset",
        *,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        hooks: "TrainHooks | None" = None,
        warm_start: "WarmStart | None" = None,
        overwrite: bool = False,
    ) -> "Q2PTModel":
        """Train on ``dataset`` (train split; valid for early stopping and thresholds).

        The model's config records how the dataset was loaded (:func:`recorded_config`: its
        path, and the depth its product type paths were cut to), so that the saved model
        judges and warm-starts as it was trained.

        With ``out_dir``: checkpoints go to ``out_dir/checkpoints`` and the model folder is
        saved to ``out_dir`` at the end (the checkpoints are then removed: a finished run has
        nothing to resume); ``resume=True`` continues from the last checkpoint. A model
        already in ``out_dir`` is replaced only with ``overwrite=True`` (ConfigError).
        ``warm_start``: start from an earlier model (:meth:`warm_start_from` makes one); the
        manifest and the model card record it as the parent.
        """
        from q2pt.calibration import calibrate_thresholds
        from q2pt.training import TrainHooks, fit_networks
        from q2pt.training.checkpoints import remove_checkpoints

        hooks = hooks or TrainHooks()
        if out_dir is not None and hooks.world_size == 1:  # (distributed.fit checks on every rank first)
            check_train_target(Path(out_dir), resume=resume, overwrite=overwrite)
        self.config = recorded_config(self.config, dataset)
        parent_seen: "SeenQueries | str | None" = None
        if warm_start is not None:  # against the config as trained (its recorded label depth)
            from q2pt.overlap import seen_of, warm_start_note
            from q2pt.training.warm import check_parent

            check_parent(warm_start.parent, self.config, warm_start.source)
            if out_dir is not None and warm_start.parent.folder is not None and \
                    Path(out_dir).resolve() == Path(warm_start.parent.folder).resolve():
                raise ConfigError(f"{out_dir} is the parent model's folder: train the new model into another folder "
                                  "(the parent would be replaced while it is read, and its record would point at itself)")
            from q2pt.data.labels import label_lists
            from q2pt.data.tree import LabelTree

            labels = [t for row in label_lists(dataset.train["product_types"]) for t in row]
            warm_start.check_new_names(set(LabelTree.from_labels(labels, self.config.data.label_separator).parent))
            parent_seen = seen_of(warm_start.parent)
            if hooks.is_main:
                warm_start_note(parent_seen, dataset.valid, warm_start.source)
        inherited, unchecked = None, []  # what the parent learnt, and what of it cannot be known
        if isinstance(parent_seen, SeenQueries):
            inherited, unchecked = parent_seen.all(), parent_seen.unchecked
        elif parent_seen is not None and warm_start is not None:
            unchecked = [f"{warm_start.source}: {parent_seen}"]
        self.seen_ = SeenQueries.of(dataset.train, dataset.valid, inherited, unchecked)
        dataset = self._with_tree(dataset)
        # the main process holds the output folder's write lock from the first checkpoint to the save
        lock = folder_lock(out_dir, "model folder") if out_dir is not None and hooks.is_main else contextlib.nullcontext()
        with lock:
            with torch_threads(self.config.train.threads):
                trained = fit_networks(self.config, dataset, out_dir=out_dir, resume=resume, progress=progress,
                                       hooks=hooks, warm=warm_start, tree=self.tree_)
                self._set_trained(trained, dataset)
                if self.tree_ is not None:
                    self.manifest["tree"] = self.tree_.to_json()
                if warm_start is not None:
                    self.manifest["parent"] = warm_start.manifest_entry()
                calibrate_thresholds(self, dataset.valid)
            if out_dir is not None and hooks.is_main:
                self.save(out_dir)
                remove_checkpoints(out_dir)  # the saved model holds what they held
        return self

    def _with_tree(self, dataset: "Dataset") -> "Dataset":
        """The dataset a hierarchical model learns from (every label with its ancestors; the
        tree in ``tree_``), or ``dataset`` itself for a flat model (``model.hierarchy``)."""
        import dataclasses

        from q2pt.data.tree import closed_frame, configured_tree

        self.tree_ = configured_tree(self.config, dataset.labels)
        if self.tree_ is None:
            if self.config.data.taxonomy:
                logger.warning("data.taxonomy %s is not used: this model is flat (its labels have one level, or "
                               "model.hierarchy flat); a taxonomy gives a tree's model its deeper paths",
                               self.config.data.taxonomy)
            return dataset
        splits, added = {}, 0
        for name, frame in dataset.splits.items():
            splits[name], n = closed_frame(frame, self.tree_)
            added += n
        learned = {t for ts in splits["train"]["product_types"] for t in ts} if "train" in splits else set()
        unlearned = sum(node not in learned for node in self.tree_.parent)
        logger.info("product type tree: depth %d, %d nodes; every level is learned (%d ancestor labels added; "
                    "model.hierarchy %s)%s", self.tree_.depth, len(self.tree_.parent), added, self.config.model.hierarchy,
                    f"; {unlearned} node(s) no training query has (a taxonomy's) are in the tree, not learned"
                    if unlearned else "")
        return dataclasses.replace(dataset, splits=splits)

    def warm_start_from(self, parent: "Q2PTModel | str | os.PathLike[str]",
                        label_map: "Mapping[str, str] | str | os.PathLike[str] | None" = None) -> "WarmStart":
        """A warm start of this model from ``parent`` (a model or its folder), with an optional
        label map (old -> new product type; a dict or a file, see
        :func:`q2pt.training.warm.read_label_map`). Refused (ConfigError) when the parent's
        variant, encoder or network shape differ from this model's config."""
        from q2pt.training.warm import WarmStart, check_parent, read_label_map, unknown_in_label_map

        if isinstance(parent, Q2PTModel):
            source = parent.folder or "the parent model (never saved)"
        else:  # the manifest's path: from anywhere, and the folder itself, not a symlink a later deploy switches
            source, parent = os.path.realpath(parent), load_model(parent)
        parent._check_fitted()
        check_parent(parent, self.config, source)
        if label_map is not None and not isinstance(label_map, Mapping):
            label_map = read_label_map(label_map)
        unknown = unknown_in_label_map(label_map or {}, parent.classes_)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            logger.warning("label map: %d of its %d old names are not product types of the parent, so nothing is "
                           "carried over from them: %s", len(unknown), len(label_map or {}), shown)
        return WarmStart(parent, source, dict(label_map or {}))

    def _set_trained(self, trained: "TrainedNetworks", dataset: "Dataset") -> None:
        self.networks = dict(trained.networks)
        self.network_labels_ = dict(trained.network_labels)
        self.classes_ = list(trained.classes)
        self.locales_ = list(trained.locales)
        training = trained.training
        for net in self.networks.values():
            net.eval()
        first = next(iter(self.networks.values()))
        self.manifest = {
            "format_version": FORMAT_VERSION,
            "q2pt_version": __version__,
            "torch_version": torch.__version__,
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "variant": self.variant,
            "encoder": {
                "spec": self.encoder, "kind": first.encoder.kind, "config": first.encoder.get_config(),
                "pretrained_resource": first.encoder.pretrained_resource(),
            },
            "locales": self.locales_,
            "labels": self.classes_,
            "data": {
                "source": str(dataset.source),
                "fingerprint": dataset.fingerprint,
                "simulated": bool(dataset.simulated),
                "n_train": int(len(dataset.train)),
                "n_valid": int(len(dataset.valid)),
                "locale_counts": {name: {str(k): int(v) for k, v in
                                         getattr(dataset, name)["locale"].astype(str).value_counts().sort_index().items()}
                                  for name in ("train", "valid")},
                "locale_languages": {**dataset.locale_languages, **self.config.data.locale_languages},
            },
            "config": self.config.to_dict(),
            "metrics": None,
            "thresholds": {},
            "training": training,
        }

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not self.networks:
            raise ModelLoadError("this model is not trained: call fit() or load_model() first")

    def predict_proba(
        self,
        queries: Sequence[str] | str,
        locales: Sequence[str] | str,
        *,
        fallback_locale: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> np.ndarray:
        """Scores ``(n, len(classes_))`` in ``classes_`` order, one row per query.

        ``locales`` is one locale per query, or one locale for all. A locale outside
        ``locales_``: unified models score locale-agnostically and log a warning;
        non-unified models raise UnknownLocaleError unless ``fallback_locale`` is given.
        """
        scores, _, _ = self.predict_details(queries, locales, fallback_locale=fallback_locale, batch_size=batch_size)
        return scores

    def labels_of(self, key: str) -> list[str]:
        """The labels network ``key`` scores, in its output order."""
        self._check_fitted()
        return list(self.network_labels_.get(key) or self.classes_)

    def inference(self, fallback_locale: str | None = None, *, forward: "Forward | None" = None,
                  unseen: Literal["error", "skip"] = "error") -> InferenceCore:
        """The model's :class:`~q2pt.inference.InferenceCore`: locale resolution, scoring and
        type selection, with ``forward`` as the forward pass (None: the PyTorch networks);
        ``unseen="skip"``: a non-unified model scores nothing for a locale it has no network for
        (instead of raising UnknownLocaleError), as when an experiment judges it on every row."""
        self._check_fitted()
        return InferenceCore(
            variant=self.variant, classes=self.classes_, locales=self.locales_, thresholds=self.thresholds_,
            tokenizers=encoder_tokenizers(self.networks), forward=forward or torch_forward(self.networks),
            network_labels=self.network_labels_, fallback_locale=fallback_locale,
            type_thresholds=self.type_thresholds_, tree=self.tree_, level_thresholds=self.level_thresholds_,
            consistent=self.config.model.tree_scores == "consistent", thresholds_reached=self.thresholds_reached_,
            own_thresholds=self._own_thresholds(), unseen=unseen,
        )

    def _own_thresholds(self) -> list[str] | None:
        """The locales calibration gave a threshold of their own (None: a manifest without the details)."""
        from q2pt.metrics import own_thresholds

        details = (self.manifest or {}).get("threshold_details")
        return own_thresholds(details) if isinstance(details, dict) and details else None

    def infer(
        self,
        queries: Sequence[str] | str,
        locales: Sequence[str] | str,
        *,
        fallback_locale: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        unseen: Literal["error", "skip"] = "error",
    ) -> "Inference":
        """Resolve and score queries: an :class:`Inference` (the core, each query's
        :class:`~q2pt.inference.Resolution`, and scores with NaN for labels not scored;
        ``unseen``: as :meth:`inference`)."""
        core = self.inference(fallback_locale, unseen=unseen)
        queries, locs = checked_rows(queries, locales)
        resolutions = core.resolve_all(locs)
        return Inference(core, resolutions, core.scores(queries, resolutions, batch_size))

    def predict_details(
        self,
        queries: Sequence[str] | str,
        locales: Sequence[str] | str,
        *,
        fallback_locale: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> tuple[np.ndarray, list[str], list[str | None]]:
        """Like :meth:`predict_proba`, plus per query a note ("" normally; says when the
        locale was unseen and how it was handled) and the locale whose calibrated threshold
        applies (None: the global threshold)."""
        result = self.infer(queries, locales, fallback_locale=fallback_locale, batch_size=batch_size)
        return result.probabilities(), result.notes, result.threshold_locales

    def threshold_for(self, locale: str | None) -> float:
        """The calibrated threshold of a locale (the global one for None or unknown), as
        :meth:`q2pt.inference.InferenceCore.threshold_for` gives it."""
        return threshold_of(self.thresholds_, locale)[0]

    def predict(
        self,
        queries: Sequence[str] | str,
        locales: Sequence[str] | str,
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        fallback_locale: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[list[str]]:
        """Predicted product types per query (calibrated per-locale thresholds by default)."""
        result = self.infer(queries, locales, fallback_locale=fallback_locale, batch_size=batch_size)
        return [[t for t, _ in row] for row in result.select(threshold=threshold, top_k=top_k)]

    # ------------------------------------------------------------------ evaluation
    def labels_as_trained(self, frame: "pd.DataFrame", source: str = "the rows") -> "pd.DataFrame":
        """``frame`` with its product types cut as this model's training labels were
        (``data.label_depth``; a frame cut already is unchanged): the rows :meth:`evaluate`,
        calibration and comparison judge. DataError when a column is missing or a row's
        ``product_types`` is not a non-empty list of strings (a CSV's ``a|b`` cell read as text:
        :func:`q2pt.data.load_labelled` reads it)."""
        from q2pt.data.labels import truncate_labels

        missing = [c for c in ("query", "locale", "product_types") if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: missing column(s) {', '.join(missing)} (need query, locale and product_types)")
        problems = []
        for i, cell in enumerate(frame["product_types"].tolist(), start=1):
            if isinstance(cell, str):
                problems.append(Problem(source, i, "product_types", f"a string, not a list of product types: "
                                        f"{cell!r:.60} (q2pt.data.load_labelled reads a CSV's 'a|b' cells)"))
            elif (not isinstance(cell, (list, tuple, np.ndarray)) or len(cell) == 0
                  or not all(isinstance(t, str) and t.strip() for t in cell)):
                problems.append(Problem(source, i, "product_types",
                                        f"expected a non-empty list of product types, got {cell!r:.60}"))
        if problems:
            raise DataError(f"{source}: {len(problems)} row(s) without a list of product types", problems)
        data = self.config.data
        return truncate_labels(frame, data.label_depth, data.label_separator)[0]

    def evaluate(
        self,
        frame: "pd.DataFrame",
        *,
        precision: float = 0.8,
        bootstrap: int = 0,
        seed: int = 0,
        fallback_locale: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        top_types: int = 10,
        level: int | None = None,
        inference: "Inference | None" = None,
    ) -> dict[str, Any]:
        """R@P, PR-AUC, thresholds and counts, globally and per locale, on a labelled frame.

        A hierarchical model (``tree_``) is judged on every node of its tree (a query's types
        with their ancestors) and adds ``levels`` (the same figures per level of the tree, each
        over that level's types only), ``leaf`` (the same over the bottom types it scores, at any
        depth), ``hierarchical`` (precision and recall of its answers --
        the deepest confident types, with back-off -- against the true types, both with their
        ancestors, and ``coverage``: the share of queries given some type at a threshold that
        reached the precision target on validation, see :meth:`InferenceCore.reached`), with bootstrap
        CIs when ``bootstrap`` is set. ``level``: judge level N alone (its types' columns;
        the true paths cut to N levels). ``inference``: :meth:`infer` of the frame's rows, when
        the caller scored them already.

        Product types outside ``classes_`` count as missed positives. Returns
        :func:`q2pt.metrics.evaluate`'s dict; each entry also has ``calibrated``: precision,
        recall and F1 when every query uses its locale's calibrated threshold (the
        operating point ``predict`` uses by default); ``types`` holds the per-product-type
        precision, recall and support at that operating point and the ``top_types`` types
        that fail most per locale (:func:`q2pt.diagnostics.per_type_report`).
        """
        from q2pt.data.labels import label_lists, multi_hot
        from q2pt.diagnostics import per_type_report
        from q2pt.metrics import evaluate, evaluate_levels, precision_recall_at, set_precision_recall, to_jsonable

        self._check_fitted()
        frame = self.labels_as_trained(frame)
        tree = self.tree_
        if level is not None and (tree is None or not 1 <= level <= tree.depth):
            raise ConfigError(
                f"level {level}: " + ("this model is flat: it is judged on its own labels (train a hierarchical "
                                       "model, model.hierarchy tree, to judge levels)" if tree is None else
                                       f"its tree has levels 1 to {tree.depth}"))
        queries = frame["query"].astype(str).tolist()
        locs = frame["locale"].astype(str).tolist()
        if inference is None:  # else: the frame's rows already scored (by the caller, in this order)
            inference = self.infer(queries, locs, fallback_locale=fallback_locale, batch_size=batch_size)
        scores, tloc = inference.probabilities(), inference.threshold_locales
        truth = label_lists(frame["product_types"])
        classes = list(self.classes_)
        cuts = inference.core.cuts(inference.resolutions)
        # as deployed: every type at or above its threshold (a tree's: or a descendant is)
        sure = inference.core.confident(scores, cuts)
        hierarchical = None
        if tree is not None:
            truth = [tree.close(t) for t in truth]
            answers = inference.paths()
            at_target = inference.core.reached(inference.resolutions)
            column = inference.core.column_of
            hierarchical = set_precision_recall(
                [set(t) for t in truth],
                [{a["product_type"] for p in row for a in p["ancestors"]} | {p["product_type"] for p in row}
                 for row in answers], locs, precision, bootstrap=bootstrap, seed=seed,
                covered=[any(at_target[i, column[p["product_type"]]] for p in row) for i, row in enumerate(answers)])
            if level is not None:  # one level: its columns, and the true paths cut to it
                cols = np.flatnonzero(inference.core.node_level == level)
                classes = [classes[c] for c in cols]
                scores, sure = scores[:, cols], sure[:, cols]
                truth = [[x for x in t if tree.level_of(x) == level] for t in truth]
        y, missing = multi_hot(truth, classes)
        y = y.toarray()
        result = evaluate(y, scores, locs, precision=precision, bootstrap=bootstrap, seed=seed, n_missing=missing)
        if tree is not None and hierarchical is not None and level is None:
            known = set(classes)
            depth_of = [[tree.level_of(x) for x in t if x not in known] for t in truth]  # unscoreable, by level
            missing_by_level = {k: np.asarray([d.count(k) for d in depth_of], dtype=np.int64)
                                for k in range(1, tree.depth + 1)}
            result["levels"] = evaluate_levels(y, scores, locs, inference.core.node_level, precision, bootstrap, seed,
                                               missing_by_level)
            # the leaves: the bottom types the model scores, at whatever depth (a true leaf it never
            # learned is a missed positive)
            # positives: each query's deepest true types; one the model cannot answer at its bottom
            # (not among its leaf columns) is a missed positive
            leaf = inference.core.leaf_col
            leaf_names = [c for c, is_leaf in zip(classes, leaf.tolist()) if is_leaf]
            # (tree.close gives a type the tree lacks the ancestors its path names)
            above = [{a for o in t for a in tree.close([o])[:-1]} for t in truth]  # each row's ancestors
            deepest = [[x for x in t if x not in anc] for t, anc in zip(truth, above)]
            y_leaf, missing_leaf = multi_hot(deepest, leaf_names)
            result["leaf"] = evaluate(y_leaf.toarray(), scores[:, leaf], locs, precision=precision,
                                      bootstrap=bootstrap, seed=seed, n_missing=missing_leaf)
            result["hierarchical"] = hierarchical
        if level is not None:
            result["level"] = level
        # the deployed answers as one rule at 0.5: 1 where selected, 0 where not
        shifted = sure.astype(np.float64)
        locs_arr = np.asarray(locs, dtype=object)

        def at_calibrated(rows: np.ndarray | slice) -> dict[str, Any]:
            p, r, f = precision_recall_at(y[rows], shifted[rows], 0.5, n_missing=int(missing[rows].sum()))
            return to_jsonable({"precision": p, "recall": r, "f1": f})

        result["global"]["calibrated"] = at_calibrated(slice(None))
        for loc, entry in result["locales"].items():
            rows = np.flatnonzero(locs_arr == loc)
            entry["calibrated"] = {"threshold": self.threshold_for(tloc[rows[0]]), **at_calibrated(rows)}
        # every type at or above its threshold (a hierarchical model's ancestors too): per type
        names = np.asarray(classes, dtype=object)
        predicted = [names[np.flatnonzero(sure[i])].tolist() for i in range(len(queries))]
        result["types"] = to_jsonable(per_type_report(truth, predicted, locs, top=top_types))
        return result

    # ------------------------------------------------------------------ saving
    def save(self, folder: str | Path) -> None:
        """Write the model folder atomically (see the module docstring), holding its write lock."""
        self._check_fitted()
        folder = Path(folder)
        with folder_lock(folder, "model folder"):
            self._save(folder)

    def _save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        check_output_folder(folder)
        manifest = json.loads(json.dumps(self.manifest))
        manifest["networks"] = {}
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            for stage, net in self.networks.items():
                weights, assets = network_paths(stage)
                (tmp / weights).parent.mkdir(parents=True, exist_ok=True)
                tensors, metadata = pack_state(net)
                save_file(tensors, str(tmp / weights), metadata=metadata)
                del tensors
                net.encoder.save_assets(tmp / assets)
                manifest["networks"][stage] = {
                    "weights": weights,
                    "assets": assets,
                    "labels": None if stage == UNIFIED else self.network_labels_[stage],
                    "encoder": net.encoder.get_config(),
                }
                if DELTA_METADATA in metadata:
                    manifest["networks"][stage]["pretrained_delta"] = json.loads(metadata[DELTA_METADATA])
            if self.seen_ is not None:
                self.seen_.save(tmp)
                manifest["seen"] = self.seen_.manifest_entry()
            else:
                manifest.pop("seen", None)
            (tmp / MODEL_CARD).write_text(render_model_card(manifest), encoding="utf-8")
            make_readable(tmp)
            manifest["files"] = hash_files(tmp)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            old_checkpoints = folder / "checkpoints"
            if old_checkpoints.is_dir():
                os.replace(old_checkpoints, tmp / "checkpoints")
            fingerprint = model_fingerprint(tmp)
        self.manifest = manifest
        self.fingerprint = fingerprint
        self.folder = os.path.abspath(folder)


# ---------------------------------------------------------------------- pretrained deltas


# ---------------------------------------------------------------------- helpers


def recorded_config(config: Config, dataset: "Dataset") -> Config:
    """``config`` with its ``data`` section saying how ``dataset`` was loaded
    (``Dataset.loaded_with``: the path, or the simulated store's preset and seed; the depth the
    product type paths were cut to), which the saved model records: ``q2pt evaluate`` cuts
    labels and finds the training rows with it. A depth that contradicts the config's is
    refused (ConfigError): the model would be judged on other types than it learnt."""
    loaded = dataset.loaded_with
    if not loaded:
        return config
    data = config.data
    depth = loaded.get("label_depth")
    if data.label_depth is not None and (depth != data.label_depth or (
            loaded.get("label_separator", data.label_separator) != data.label_separator)):
        raise ConfigError(
            f"the dataset's product type paths were cut with label_depth {depth!r} (separator "
            f"{loaded.get('label_separator', data.label_separator)!r}), the config's data.label_depth is "
            f"{data.label_depth!r} (separator {data.label_separator!r}): load the data with "
            "q2pt.data.load_configured(config.data), or set the same depth")
    changed = {k: v for k, v in loaded.items() if getattr(data, k, None) != v}
    if not changed:
        return config
    logger.info("the model records how its data was loaded: %s",
                ", ".join(f"data.{k} {v!r}" for k, v in changed.items()))
    body = config.to_dict()
    body["data"].update(changed)
    return Config.from_dict(body, source="the config and its dataset")


def checked_rows(queries: Any, locales: Any) -> tuple[list[str], list[str]]:
    """Queries and locales to predict, as lists of str (one locale str: every query's), checked
    as ``q2pt predict`` checks its rows (:func:`q2pt.data.schema.row_problems`; no length limit:
    that is the CLI's and the server's ``--max-query-chars``): a DataError names every row (counted
    from 1) whose query is None, NaN, not a string, empty or not valid UTF-8, or whose locale is
    not a non-empty string, instead of scoring its text form."""
    from q2pt.data.schema import row_problems

    if isinstance(queries, str):
        queries = [queries]
    elif queries is None or not hasattr(queries, "__iter__"):
        raise DataError(f"queries: expected a string or a sequence of strings, got {type(queries).__name__}")
    queries = list(queries)
    if isinstance(locales, str):
        locales = [locales] * len(queries)
    elif locales is None or not hasattr(locales, "__iter__"):
        raise DataError(f"locales: expected a locale id or one per query, got {type(locales).__name__}")
    locales = list(locales)
    if len(locales) != len(queries):
        raise DataError(f"got {len(queries)} queries but {len(locales)} locales (give one locale, or one per query)")
    problems = row_problems(queries, locales, "the queries given", max_query_chars=sys.maxsize)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in rows that cannot be predicted (rows counted from 1; nothing "
                        "was predicted)", problems)
    return [str(q) for q in queries], [str(loc) for loc in locales]


def _with(data: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    data[section][key] = value
    return data


#: how often a load starts again when the folder is replaced while it is read (a save into it)
LOAD_TRIES = 5


def load_model(folder: str | os.PathLike[str]) -> Q2PTModel:
    """Load a model folder written by :meth:`Q2PTModel.save`.

    Raises ModelLoadError naming the file for a missing folder or file, a corrupt file
    (invalid JSON, checksum mismatch, unreadable weights) or a newer format version.

    One load reads one model: the folder's identity and manifest are taken before and after
    (:func:`~q2pt.model_folder.folder_state`), and a load during which a save replaced the
    folder (or a deploy switched its symlink) starts again, so that a server reloading while a
    model is written into its folder never pairs one model's weights with another's thresholds.
    """
    folder = Path(folder)
    for _ in range(LOAD_TRIES):
        before = folder_state(folder)
        try:
            model = _load_model_once(folder)
        except ModelLoadError:
            if folder_state(folder) != before:
                continue  # a save replaced the folder mid-way: what failed may be the mix
            raise
        if before is not None and folder_state(folder) == before:
            model.fingerprint = before[2]
            return model
    raise ModelLoadError(f"{folder} was replaced {LOAD_TRIES} times while it was being loaded "
                         f"(models are being saved into it): load it again when the writer is done")


def _load_model_once(folder: Path) -> Q2PTModel:
    from q2pt.encoders import encoder_from_config

    manifest = read_manifest(folder)
    mpath = folder / MANIFEST
    check_files(folder, manifest)
    try:
        config = Config.from_saved(manifest["config"], source=str(mpath))
    except ConfigError as exc:
        raise ModelLoadError(f"{mpath} has an invalid config: {exc}") from None
    model = Q2PTModel(config=config)
    if manifest["variant"] != config.model.variant:
        raise ModelLoadError(f"{mpath} is corrupt (variant {manifest['variant']!r} differs from its config)")
    classes = list(manifest["labels"])
    networks: dict[str, Q2PTNet] = {}
    network_labels: dict[str, list[str]] = {}
    for stage, entry in manifest["networks"].items():
        labels = classes if entry.get("labels") is None else list(entry["labels"])
        assets = folder / entry["assets"]
        try:
            # load_pretrained=False: the weights follow (a frozen use table is still the shared one)
            encoder = encoder_from_config(entry["encoder"], assets, load_pretrained=False)
        except Exception as exc:
            raise ModelLoadError(f"cannot rebuild the encoder from {assets}: {exc}") from None
        delta = entry.get("pretrained_delta")
        if delta is not None:
            check_pretrained_resource(delta.get("resource") if isinstance(delta, dict) else None,
                                      encoder.pretrained_resource(), str(mpath))
        net = Q2PTNet(encoder, len(labels), config.model.dropout, config.model.head_hidden, config.model.output,
                      memory_settings(config))
        wpath = folder / entry["weights"]
        tensors, metadata = read_safetensors(wpath)
        out_rows = tensors.get(f"head.{len(net.head) - 1}.weight")  # the output layer: one row a product type
        if out_rows is not None and out_rows.ndim == 2 and out_rows.shape[0] != len(labels):
            raise ModelLoadError(f"{wpath} does not fit the network described in {mpath}: its output layer has "
                                 f"{out_rows.shape[0]} rows where the manifest lists {len(labels)} product types")
        try:
            if "memory_keys" in tensors or "memory_labels" in tensors:
                net.set_memory(tensors.get("memory_keys"), tensors.get("memory_labels"), tensors.get("memory_values"),
                               tensors.get("memory_projection"))
            load_network_state(net, tensors, metadata, source=str(wpath))
        except (RuntimeError, ConfigError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{wpath} does not fit the network described in {mpath}: {exc}") from None
        del tensors
        net.eval()
        networks[stage] = net
        network_labels[stage] = labels
    model.networks = networks
    model.network_labels_ = network_labels
    model.classes_ = classes
    model.locales_ = list(manifest["locales"])
    model.thresholds_ = {k: float(v) for k, v in manifest["thresholds"].items()}
    model.type_thresholds_ = {str(loc): {str(t): float(v) for t, v in types.items()}
                              for loc, types in (manifest.get("type_thresholds") or {}).items()}
    if manifest.get("tree"):
        from q2pt.data.tree import LabelTree

        try:
            model.tree_ = LabelTree.from_json(manifest["tree"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"{mpath} is corrupt (tree: {exc})") from None
    model.level_thresholds_ = {str(k): {str(lv): None if t is None else float(t) for lv, t in v.items()}
                               for k, v in (manifest.get("level_thresholds") or {}).items()}
    reached = manifest.get("thresholds_reached")
    if not isinstance(reached, dict) and isinstance(manifest.get("threshold_details"), dict):
        from q2pt.metrics import thresholds_reached  # a model saved before the field: from the details

        reached = thresholds_reached(manifest["threshold_details"])
    model.thresholds_reached_ = {str(k): bool(v) for k, v in reached.items()} if isinstance(reached, dict) else None
    if isinstance(manifest.get("seen"), dict):
        model.seen_ = SeenQueries.load(folder, manifest["seen"])
    model.manifest = manifest
    model.folder = os.path.abspath(folder)
    return model

