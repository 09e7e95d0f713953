"""Whether the rows a model is judged on were learnt: in its training or validation split, or
in those of the models it was warm-started from (queries recur week to week).

A model folder keeps the hashes of the queries it learnt (:mod:`q2pt.seen`), its parents'
included, so ``q2pt evaluate`` and ``q2pt compare`` say when rows overlap them, a warm start
says when its validation rows hold queries its parent learnt, and ``q2pt data split --seen-by``
keeps them out of a new validation and test split. A model folder written before that file
existed is checked from the dataset its config names (``data.path``), used only when its
fingerprint is the one the manifest recorded (the same rows, cut the same way), and from its
parents' folders; otherwise it says what it could not check.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from q2pt.errors import Q2PTError
from q2pt.seen import SEEN_FILE, SeenQueries, key_hashes, seen_in

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.models import Q2PTModel

__all__ = ["learnt_hashes", "overlap_note", "seen_of", "training_overlap", "warm_start_note"]

logger = logging.getLogger(__name__)

#: how many warm starts back an older model folder's parents are followed (each one's data is read)
MAX_ANCESTORS = 8


def _from_data(data_cfg: Any, data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | str:
    """An older model's training and validation hashes, from the data its config names, when it
    is still the data the manifest's ``data`` recorded; else why not."""
    from q2pt.data import load_configured

    path = getattr(data_cfg, "path", None)
    if not path and data.get("simulated"):  # (a folder written by q2pt data simulate has a path: checked)
        return "the model was trained on the simulated store made in memory (no data.path)"
    if not path:
        return "the model's config names no data path (trained from frames)"
    if not Path(path).exists():
        return f"its training data {path} is not found from here"
    data_log = logging.getLogger("q2pt.data")  # its load notes were given at training time: not again here
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    try:
        dataset = load_configured(data_cfg, validate=False)
    except Q2PTError as exc:
        return f"its training data {path} cannot be read: {exc}"
    finally:
        data_log.setLevel(level)
    if dataset.fingerprint != data.get("fingerprint"):
        return f"{path} has changed since the model was trained (another fingerprint)"
    return key_hashes(dataset.train), key_hashes(dataset.valid)


def _parent_seen(manifest: dict[str, Any], depth: int, visited: set[str]) -> tuple[np.ndarray, list[str]]:
    """Every hash the parents of an older model folder learnt, and what could not be read."""
    parent = manifest.get("parent")
    if not isinstance(parent, dict) or not parent.get("path"):
        return np.zeros(0, dtype=np.uint64), []
    path = str(parent["path"])
    if depth >= MAX_ANCESTORS or path in visited:
        return np.zeros(0, dtype=np.uint64), [f"{path}: not followed (more than {MAX_ANCESTORS} warm starts back, "
                                              "or a loop)"]
    found = _seen_of_folder(Path(path), parent.get("fingerprint"), depth + 1, visited | {path})
    if isinstance(found, str):
        return np.zeros(0, dtype=np.uint64), [f"{path}: {found}"]
    return found.all(), found.unchecked


def _seen_of_folder(folder: Path, fingerprint: str | None, depth: int, visited: set[str]) -> SeenQueries | str:
    from q2pt.config import Config
    from q2pt.model_folder import model_fingerprint, read_manifest

    try:
        manifest = read_manifest(folder)
        if fingerprint and model_fingerprint(folder) != fingerprint:
            return "the folder holds another model now (another fingerprint)"
        if isinstance(manifest.get("seen"), dict) and (folder / SEEN_FILE).is_file():
            return SeenQueries.load(folder, manifest["seen"])
        return _legacy_seen(manifest, Config.from_saved(manifest["config"]).data, depth, visited)
    except Q2PTError as exc:
        return f"the model cannot be read: {exc}"


def _legacy_seen(manifest: dict[str, Any], data_cfg: Any, depth: int = 0,
                 visited: set[str] | None = None) -> SeenQueries | str:
    own = _from_data(data_cfg, manifest.get("data") or {})
    if isinstance(own, str):
        return own
    parents, unchecked = _parent_seen(manifest, depth, visited or set())
    return SeenQueries(np.unique(own[0]), np.unique(own[1]), np.unique(parents), unchecked)


def seen_of(model: "Q2PTModel") -> SeenQueries | str:
    """The queries ``model`` learnt (its folder's, or for an older folder from its data and its
    parents'), or why they cannot be known."""
    if model.seen_ is not None:
        return model.seen_
    return _legacy_seen(model.manifest, model.config.data)


def learnt_hashes(model_dir: "str | Path") -> tuple[np.ndarray, list[str]]:
    """Every query hash a model folder learnt, its parents' included, and what of its parents
    could not be read (for ``q2pt data split --seen-by``). DataError when even the model's own
    cannot be known."""
    from q2pt.errors import DataError

    found = _seen_of_folder(Path(model_dir), None, 0, {str(model_dir)})
    if isinstance(found, str):
        raise DataError(f"--seen-by {model_dir}: the queries it learnt cannot be known: {found}")
    return found.all(), found.unchecked


def training_overlap(model: "Q2PTModel", frame: "pd.DataFrame") -> dict[str, Any]:
    """How many of ``frame``'s rows (same locale and normalized query) the model learnt:
    ``{"checked": True, "rows": n, "in_train": k, "in_valid": v}``, plus for a warm-started model
    ``in_ancestors`` (rows in a parent's splits and in neither of its own) and
    ``ancestors_unchecked`` (parents whose queries could not be read); or ``{"checked": False,
    "reason": ...}``."""
    seen = seen_of(model)
    if isinstance(seen, str):
        return {"checked": False, "reason": seen}
    hit = seen.lookup(frame)
    out: dict[str, Any] = {"checked": True, "rows": int(len(frame)), "in_train": int(hit["train"].sum()),
                           "in_valid": int(hit["valid"].sum())}
    if len(seen.ancestors) or seen.unchecked or model.manifest.get("parent"):
        out["in_ancestors"] = int((hit["ancestors"] & ~(hit["train"] | hit["valid"])).sum())
    if seen.unchecked:
        out["ancestors_unchecked"] = list(seen.unchecked)
    return out


def warm_start_note(parent_seen: SeenQueries | str, valid: "pd.DataFrame", parent: str) -> str | None:
    """A warm start's validation rows that its parent (or the parent's parents) learnt: the
    early stopping and the thresholds rest partly on them, so the precision reached on new
    queries may fall short. Logged as a warning, and returned; None when there are none (or, said
    at info level, when they cannot be known)."""
    if isinstance(parent_seen, str):
        logger.info("whether the validation rows were learnt by %s is not checked: %s", parent, parent_seen)
        return None
    seen = int(seen_in(valid, parent_seen.all()).sum()) if len(valid) else 0
    if not seen:
        return None
    note = (f"{seen} of {len(valid)} validation rows were learnt by the model this one is warm-started from "
            f"({parent}, or its own parents): early stopping and the calibrated thresholds rest partly on them, so "
            "the precision served on new queries may fall short of the target; split this week's data with "
            "q2pt data split --seen-by PARENT_DIR so that they stay in train")
    logger.warning("%s", note)
    return note


def overlap_note(overlap: dict[str, Any], whose: str = "the model's") -> str | None:
    """Say what a :func:`training_overlap` result means for the figures: a warning (returned,
    for a report) when rows were learnt by the model or its parents, a note of why it was not
    checked, else nothing."""
    if not overlap.get("checked"):
        logger.info("whether these rows were in %s training data is not checked: %s", whose, overlap.get("reason"))
        return None
    for reason in overlap.get("ancestors_unchecked") or ():
        logger.info("not checked against a model %s is warm-started from: %s", whose.removesuffix("'s"), reason)
    own, inherited = overlap["in_train"] or overlap["in_valid"], overlap.get("in_ancestors") or 0
    if not (own or inherited):
        return None
    parts = [f"{overlap['in_train']} of {overlap['rows']} rows are in {whose} training split and "
             f"{overlap['in_valid']} in its validation split"] if own else []
    if inherited:
        parts.append(f"{inherited} {'more ' if own else ''}rows are in the training or validation splits of the "
                     "model(s) it was warm-started from")
    note = ("; ".join(parts) + ": the figures on them are optimistic (queries recur week to week: judge on rows "
            "no model of the lineage trained on)")
    logger.warning("%s", note)
    return note
