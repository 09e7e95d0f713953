"""Whether the rows a model is evaluated on were in its own training data.

A model scores the queries it was trained on far better than new ones, so ``q2pt evaluate``
says when the rows overlap the model's training or validation split. The model folder does not
keep its training queries: the check reads the dataset the model's config names (``data.path``)
and uses it only when its fingerprint is the one the manifest recorded (the same rows, cut the
same way); otherwise it says it could not check.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from q2pt.errors import Q2PTError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.models import Q2PTModel

__all__ = ["overlap_note", "training_overlap"]

logger = logging.getLogger(__name__)


def _keys(frame: "pd.DataFrame") -> "pd.Series":
    from q2pt.data import schema as S

    return S.normalize_queries(frame[S.QUERY].astype(str)) + "\x1f" + frame[S.LOCALE].astype(str)


def training_overlap(model: "Q2PTModel", frame: "pd.DataFrame") -> dict[str, Any]:
    """How many of ``frame``'s rows (same locale and normalized query) are in the training and
    validation splits the model was trained with: ``{"checked": True, "rows": n, "in_train": k,
    "in_valid": v}``, or ``{"checked": False, "reason": ...}`` when that data cannot be read as
    it was (a simulated store, a moved or changed file)."""
    from q2pt.data import load_configured

    data = model.manifest.get("data") or {}
    path = model.config.data.path
    if not path and data.get("simulated"):  # (a folder written by q2pt data simulate has a path: checked)
        return {"checked": False, "reason": "the model was trained on the simulated store made in memory (no data.path)"}
    if not path:
        return {"checked": False, "reason": "the model's config names no data path (trained from frames)"}
    if not Path(path).exists():
        return {"checked": False, "reason": f"its training data {path} is not found from here"}
    data_log = logging.getLogger("q2pt.data")  # its load notes were given at training time: not again here
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    try:
        dataset = load_configured(model.config.data, validate=False)
    except Q2PTError as exc:
        return {"checked": False, "reason": f"its training data {path} cannot be read: {exc}"}
    finally:
        data_log.setLevel(level)
    if dataset.fingerprint != data.get("fingerprint"):
        return {"checked": False, "reason": f"{path} has changed since the model was trained (another fingerprint)"}
    keys = _keys(frame)
    return {"checked": True, "rows": int(len(frame)), "in_train": int(keys.isin(set(_keys(dataset.train))).sum()),
            "in_valid": int(keys.isin(set(_keys(dataset.valid))).sum())}


def overlap_note(overlap: dict[str, Any], whose: str = "the model's") -> str | None:
    """Say what a :func:`training_overlap` result means for the figures: a warning (returned,
    for a report) when rows were in ``whose`` training or validation split, a note of why it
    was not checked, else nothing."""
    if not overlap.get("checked"):
        logger.info("whether these rows were in %s training data is not checked: %s", whose, overlap.get("reason"))
        return None
    if not (overlap["in_train"] or overlap["in_valid"]):
        return None
    note = (f"{overlap['in_train']} of {overlap['rows']} rows are in {whose} training split and "
            f"{overlap['in_valid']} in its validation split: the figures on them are optimistic; "
            "use held-out rows (e.g. the test split)")
    logger.warning("%s", note)
    return note
