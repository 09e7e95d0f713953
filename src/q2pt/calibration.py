"""Threshold calibration: the per-locale thresholds a trained model predicts with.

:func:`calibrate_thresholds` scores the validation rows of the training locales, computes
the validation metrics, and calibrates a global threshold and one per locale whose validation
data suffices (:func:`locale_min_positives`) at the training's target precision with
:func:`q2pt.metrics.thresholds_or_default` -- the same function the experiment's baselines are
calibrated with -- writing them into the model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from q2pt.data.labels import label_lists, multi_hot

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.models import Q2PTModel

logger = logging.getLogger(__name__)

__all__ = ["LOCALE_MIN_POSITIVES", "calibrate_thresholds", "locale_min_positives"]

#: the positive validation pairs a locale needs for its own threshold when
#: ``train.locale_threshold_min_positives`` is None, by whether the model is unified (one network
#: for every locale) -- the measured reasons are in that key's doc (:mod:`q2pt.config`)
LOCALE_MIN_POSITIVES: dict[bool, int] = {True: 200, False: 20}


def locale_min_positives(configured: int | None, unified: bool) -> int:
    """The positive validation pairs a locale needs for a threshold of its own: ``configured``
    (``train.locale_threshold_min_positives``) when set, else :data:`LOCALE_MIN_POSITIVES` of
    a unified or a per-locale model. Training's calibration and the experiment's baselines
    use it alike."""
    return int(configured) if configured is not None else LOCALE_MIN_POSITIVES[bool(unified)]

#: bootstrap resamples of the validation metrics' 95% CIs (the model card shows them): 200 keep
#: the interval ends to about +-0.01 and cost well under a second on 10k validation queries
VALIDATION_BOOTSTRAP = 200


def calibrate_thresholds(model: "Q2PTModel", valid: "pd.DataFrame") -> None:
    """Validation metrics (with bootstrap CIs) and calibrated per-locale thresholds into the
    model's manifest.

    Uses the valid rows of the training locales (the same rows for every variant), their product
    types cut as the training labels were and, for a tree, with their ancestors.
    """
    from q2pt.metrics import (
        calibrate_level_thresholds,
        calibrate_type_thresholds,
        evaluate,
        evaluate_levels,
        own_thresholds,
        thresholds_or_default,
        thresholds_reached,
    )

    precision = model.config.train.precision_target
    valid = model.labels_as_trained(valid, "the validation rows")
    if model.tree_ is not None:  # every node is judged: the rows' types with their ancestors (added once)
        from q2pt.data.tree import closed_frame

        valid = closed_frame(valid, model.tree_)[0]
    rows = valid[valid["locale"].astype(str).isin(model.locales_)]
    thresholds: dict[str, float] = {"global": 0.5}
    details: dict[str, str] = {"global": "default 0.5: no validation data to calibrate on"}
    metrics = None
    type_thresholds: dict[str, dict[str, float]] = {}
    level_thresholds: dict[str, dict[str, float | None]] = {}
    if len(rows):
        queries = rows["query"].astype(str).tolist()
        locs = rows["locale"].astype(str).tolist()
        scores = model.predict_proba(queries, locs)
        y, missing = multi_hot(label_lists(rows["product_types"]), model.classes_)
        y = y.toarray()
        metrics = evaluate(y, scores, locs, precision=precision, n_missing=missing,
                           bootstrap=VALIDATION_BOOTSTRAP, seed=model.config.train.seed)
        cfg = model.config.train
        support = locale_min_positives(cfg.locale_threshold_min_positives,
                                       model.config.model.variant != "non-unified")
        thresholds, details = thresholds_or_default(y, scores, locs, precision, min_positives=support,
                                                    n_missing=missing)
        logger.info("thresholds: global %.4g; %d of %d locales have their own (at least %d validation positives "
                    "and the target reached), the others use the global one", thresholds["global"],
                    len(own_thresholds(details)), len(set(locs)), support)
        tree = getattr(model, "tree_", None)
        if tree is not None:
            levels = [tree.level.get(c, 1) for c in model.classes_]
            level_thresholds = calibrate_level_thresholds(y, scores, locs, levels, precision, support)
            glob = level_thresholds.get("global", {})
            shown = ", ".join(f"level {lv} {'-' if glob[lv] is None else f'{glob[lv]:.4g}'}" for lv in sorted(glob, key=int))
            own = sum(k != "global" and any(t is not None for t in v.values()) for k, v in level_thresholds.items())
            logger.info("level thresholds (what a tree's answers are cut at): global %s; %d of %d locales have "
                        "their own at some level", shown, own, len(set(locs)))
            metrics["levels"] = evaluate_levels(y, scores, locs, levels, precision, VALIDATION_BOOTSTRAP,
                                                model.config.train.seed)
        if cfg.type_thresholds:
            type_thresholds = calibrate_type_thresholds(y, scores, locs, model.classes_, precision,
                                                        cfg.type_threshold_min_positives)
            logger.info("per-(locale, type) thresholds: %d pairs with at least %d validation positives",
                        sum(len(v) for v in type_thresholds.values()), cfg.type_threshold_min_positives)
    if metrics is None:
        logger.warning("no validation data: thresholds default to 0.5")
    model.thresholds_ = thresholds
    model.type_thresholds_ = type_thresholds
    model.level_thresholds_ = level_thresholds
    if level_thresholds:
        model.manifest["level_thresholds"] = level_thresholds
    model.manifest["metrics"] = metrics
    model.manifest["thresholds"] = thresholds
    model.manifest["type_thresholds"] = type_thresholds
    model.manifest["threshold_details"] = details
    model.thresholds_reached_ = thresholds_reached(details)
    model.manifest["thresholds_reached"] = model.thresholds_reached_

