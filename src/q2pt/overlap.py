"""Whether the rows a model is evaluated on were in its own training data.

A model scores the queries it was trained on far better than new ones, so ``q2pt evaluate``
and ``q2pt compare`` say when the rows overlap the model's training or validation split, or
those of the models it was warm-started from (queries recur week to week). The model folder does
not keep its training queries: the check reads the dataset the model's config names
(``data.path``) and uses it only when its fingerprint is the one the manifest recorded (the same
rows, cut the same way); otherwise it says it could not check. :func:`seen_keys` gives ``q2pt
data split --seen-by`` the same rows, to keep them out of a new validation and test split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from q2pt.errors import Q2PTError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.models import Q2PTModel

__all__ = ["overlap_note", "seen_keys", "training_overlap", "warm_start_note"]

logger = logging.getLogger(__name__)


def _keys(frame: "pd.DataFrame") -> "pd.Series":
    from q2pt.data.schema import query_keys

    return query_keys(frame)


def _split_keys(data_cfg: Any, data: dict[str, Any]) -> tuple[set[str], set[str]] | str:
    """The keys of the training and validation rows of the data a config's ``data`` section
    names, when it is still the data the manifest's ``data`` recorded; else why not."""
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
    return set(_keys(dataset.train)), set(_keys(dataset.valid))


#: how many warm starts back the checks follow a model's parents
MAX_ANCESTORS = 8


def _ancestors(manifest: dict[str, Any]) -> "Iterator[tuple[str, tuple[set[str], set[str]] | str]]":
    """(path, its training and validation keys or why not) of each model a manifest's model was
    warm-started from, up the chain (the manifest's ``parent``), until one cannot be read."""
    from q2pt.config import Config
    from q2pt.errors import ModelLoadError
    from q2pt.model_folder import model_fingerprint, read_manifest

    for _ in range(MAX_ANCESTORS):
        parent = manifest.get("parent")
        if not isinstance(parent, dict) or not parent.get("path"):
            return
        path = Path(str(parent["path"]))
        try:
            manifest = read_manifest(path)
            if parent.get("fingerprint") and model_fingerprint(path) != parent["fingerprint"]:
                raise ModelLoadError("it holds another model now (another fingerprint)")
            found = _split_keys(Config.from_saved(manifest["config"]).data, manifest.get("data") or {})
        except (ModelLoadError, Q2PTError) as exc:
            yield str(path), f"the parent model cannot be read: {exc}"
            return
        yield str(path), found
        if isinstance(found, str):
            return


def training_overlap(model: "Q2PTModel", frame: "pd.DataFrame") -> dict[str, Any]:
    """How many of ``frame``'s rows (same locale and normalized query) are in the training and
    validation splits the model was trained with: ``{"checked": True, "rows": n, "in_train": k,
    "in_valid": v}``, or ``{"checked": False, "reason": ...}`` when that data cannot be read as
    it was (a simulated store, a moved or changed file).

    A warm-started model learnt from its parents' data too: ``ancestors`` lists each parent up
    the chain (path, and ``in_train_or_valid`` or why not checked), and ``in_ancestors`` counts
    the rows in some ancestor's training or validation split that are in neither of the model's
    own."""
    keys = _keys(frame)
    found = _split_keys(model.config.data, model.manifest.get("data") or {})
    mine = np.zeros(len(keys), dtype=bool)
    if isinstance(found, str):
        out: dict[str, Any] = {"checked": False, "reason": found}
    else:
        in_train, in_valid = keys.isin(found[0]).to_numpy(), keys.isin(found[1]).to_numpy()
        out = {"checked": True, "rows": int(len(keys)), "in_train": int(in_train.sum()), "in_valid": int(in_valid.sum())}
        mine = in_train | in_valid
    ancestors, lineage = [], np.zeros(len(keys), dtype=bool)
    for path, got in _ancestors(model.manifest):
        if isinstance(got, str):
            ancestors.append({"path": path, "checked": False, "reason": got})
            continue
        either = keys.isin(got[0] | got[1]).to_numpy()
        lineage |= either
        ancestors.append({"path": path, "checked": True, "in_train_or_valid": int(either.sum())})
    if ancestors:
        out["ancestors"] = ancestors
        out["in_ancestors"] = int((lineage & ~mine).sum())
    return out


def seen_keys(model_dir: "str | Path") -> tuple[set[str], list[str]]:
    """The (normalized query, locale) keys of every training and validation row of a model folder
    and of the models it was warm-started from, and those folders: what ``q2pt data split
    --seen-by MODEL_DIR`` keeps out of a new validation and test split. DataError when some of
    that data cannot be read as it was."""
    from q2pt.config import Config
    from q2pt.errors import DataError
    from q2pt.model_folder import read_manifest

    manifest = read_manifest(Path(model_dir))
    found = _split_keys(Config.from_saved(manifest["config"]).data, manifest.get("data") or {})
    chain = [(str(model_dir), found), *_ancestors(manifest)]
    keys: set[str] = set()
    for path, got in chain:
        if isinstance(got, str):
            raise DataError(f"--seen-by {model_dir}: the training data of {path} cannot be read as it was: {got}")
        keys |= got[0] | got[1]
    return keys, [path for path, _ in chain]


def warm_start_note(parent: "Q2PTModel", valid: "pd.DataFrame") -> str | None:
    """A warm start's validation rows that its parent (or the parent's parents) trained or
    validated on: the early stopping and the thresholds rest partly on queries the network
    learnt already, so the precision reached on new queries may fall short. Logged as a
    warning, and returned; None when there are none or they cannot be checked."""
    if len(valid) == 0:
        return None
    found = training_overlap(parent, valid)
    seen = (found["in_train"] + found["in_valid"] if found.get("checked") else 0) + (found.get("in_ancestors") or 0)
    if not seen:
        return None
    note = (f"{seen} of {len(valid)} validation rows were in the training or validation data of the model this one "
            f"is warm-started from ({parent.folder or 'the parent'}, or its own parents): early stopping and the "
            "calibrated thresholds rest partly on queries it learnt already, so the precision served on new "
            "queries may fall short of the target; split this week's data with q2pt data split --seen-by PARENT_DIR "
            "so that they stay in train")
    logger.warning("%s", note)
    return note


def overlap_note(overlap: dict[str, Any], whose: str = "the model's") -> str | None:
    """Say what a :func:`training_overlap` result means for the figures: a warning (returned,
    for a report) when rows were in ``whose`` training or validation split, a note of why it
    was not checked, else nothing."""
    inherited = overlap.get("in_ancestors") or 0
    if not overlap.get("checked"):
        logger.info("whether these rows were in %s training data is not checked: %s", whose, overlap.get("reason"))
        if not inherited:
            return None
    own = bool(overlap.get("checked")) and bool(overlap["in_train"] or overlap["in_valid"])
    if not (own or inherited):
        return None
    parts = []
    if own:
        parts.append(f"{overlap['in_train']} of {overlap['rows']} rows are in {whose} training split and "
                     f"{overlap['in_valid']} in its validation split")
    if inherited:
        parts.append(f"{inherited} {'more ' if own else ''}rows are in the training or validation data of the model(s) "
                     f"it was warm-started from ({', '.join(a['path'] for a in overlap['ancestors'])})")
    note = ("; ".join(parts) + ": the figures on them are optimistic (queries recur week to week: judge on rows "
            "no model of the lineage trained on)")
    logger.warning("%s", note)
    return note
