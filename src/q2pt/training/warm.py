"""Warm start: a new model's networks initialised from an earlier model (``q2pt train
--init-from MODEL_DIR``).

What carries over (:func:`warm_start_network`), per network (the unified one, or each
locale's; a locale new to a non-unified model starts fresh):

* every encoder and hidden-head tensor of the same name and shape (the pretrained parts a
  frozen encoder shares are the same tensor already);
* locale-token rows (:meth:`q2pt.encoders.Encoder.locale_rows`) by locale: a locale the parent
  knew keeps its learned token, a new one keeps its fresh seeded token;
* output rows by product type: a type the parent had keeps its weights and bias; a type the
  label map (:func:`read_label_map`: old -> new, for renames and merges) maps from one or more
  parent types starts at their mean; a new type starts fresh (random weights, the prior bias);
  a parent type that is gone is dropped.

``q2pt train --init-from`` trains with the parent's settings (:func:`inherited_settings`: its
resolved config under the new run's config file and flags, less where its data came from; in
the library, build the new model's config from it, as :meth:`q2pt.models.Q2PTModel.warm_start_from`
uses the model's own config). The parent
must have the same variant, encoder and network shape (``model.encoder``,
``model.encoder_options``, ``model.head_hidden``, ``model.output``) and cut product type
paths the same way (``data.label_depth``, ``data.label_separator``): :func:`check_parent`
says why not. Training then proceeds as usual (early stopping on validation), from weights
that are already good: :mod:`bench.warm_start` measures the time saved.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from q2pt.errors import ConfigError, DataError, ModelLoadError, Problem, require
from q2pt.inference import UNIFIED
from q2pt.weights import pretrained_reference, same_storage

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.config import Config
    from q2pt.models import Q2PTModel

logger = logging.getLogger(__name__)

__all__ = [
    "WarmStart",
    "check_parent",
    "inherited_settings",
    "read_label_map",
    "unknown_in_label_map",
    "warm_start_network",
]

#: model settings that fix the networks' shapes: a parent must agree on every one
SHAPE_KEYS = ("variant", "encoder", "encoder_options", "head_hidden", "output")
#: the data keys that decide what a product type's name is
LABEL_KEYS = ("label_depth", "label_separator")


def read_label_map(path: "str | os.PathLike[str]") -> dict[str, str]:
    """A label map file: old product type -> new one. JSON (an object ``{"old": "new"}``) or
    a two-column CSV/TSV ``old,new`` (a header row ``old,new`` is skipped). Several old types
    may map to one new type (a merge). Problems name the file and row."""
    import csv

    from q2pt.io import read_text_file

    path = Path(path)
    text = read_text_file(path, "the label map", DataError)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                                 for k, v in data.items()):
            raise DataError(f"{path}: a label map is a JSON object of old -> new product type names (strings)")
        return dict(data)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    out: dict[str, str] = {}
    problems = []
    for i, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), start=1):
        if not row or not any(c.strip() for c in row):
            continue
        if i == 1 and [c.strip().lower() for c in row] == ["old", "new"]:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            problems.append(Problem(str(path), i, None, f"expected two columns old{delimiter}new, got {row!r}"))
            continue
        old, new = row[0].strip(), row[1].strip()
        if old in out and out[old] != new:
            problems.append(Problem(str(path), i, None, f"{old!r} is mapped twice ({out[old]!r} and {new!r})"))
            continue
        out[old] = new
    if problems:
        raise DataError(f"{path}: invalid label map", problems)
    return out


def check_parent(parent: "Q2PTModel", config: "Config", source: str) -> None:
    """Refuse a parent whose networks cannot seed ``config``'s (ConfigError naming the setting)."""
    mine = config.model.model_dump(mode="json")
    theirs = parent.config.model.model_dump(mode="json")
    for key in SHAPE_KEYS:
        if mine.get(key) != theirs.get(key):
            raise ConfigError(
                f"cannot warm-start from {source}: its model.{key} is {theirs.get(key)!r}, this training's is "
                f"{mine.get(key)!r} (a warm start needs the same variant, encoder and network shape; train from "
                "scratch, or set the same value)")
    for key in LABEL_KEYS:  # product types are kept by name: paths cut otherwise are other types
        ours, parents = getattr(config.data, key), getattr(parent.config.data, key)
        if ours != parents:
            raise ConfigError(
                f"cannot warm-start from {source}: its data.{key} is {parents!r}, this training's is {ours!r} (its "
                "product types are kept by name, and paths cut otherwise name other types; set the same value, or "
                "train from scratch)")


def inherited_settings(parent_dir: "str | os.PathLike[str]",
                       config_file: "str | os.PathLike[str] | None" = None) -> dict[str, Any]:
    """The resolved config a parent model was trained with, less where its data came from and its
    machine's threads (:meth:`q2pt.config.Config.recipe`), with a warm start's own
    ``config_file`` over it: the file layer of :func:`q2pt.config.resolve_config` (its flags go
    over it), so ``--init-from`` alone trains as the parent did. Refused (ModelLoadError) when
    the folder is not a model."""
    from q2pt.config import Config, file_over
    from q2pt.model_folder import read_manifest

    manifest = read_manifest(Path(parent_dir))
    saved = manifest.get("config")
    if not isinstance(saved, Mapping):
        raise ModelLoadError(f"{parent_dir}: its manifest holds no config to warm-start from")
    layer = Config.from_saved(saved, source=f"{parent_dir}/manifest.json").recipe()
    return file_over(layer, Path(config_file) if config_file else None)


def unknown_in_label_map(label_map: Mapping[str, str], parent_types: Sequence[str]) -> list[str]:
    """The old names of a label map that are not product types of the parent (a typo, or a
    rename made in an earlier week): nothing is carried over from them."""
    known = set(parent_types)
    return [old for old in label_map if old not in known]


def _likely_renames(gone: Sequence[str], new: Sequence[str]) -> list[tuple[str, str]]:
    """(gone, new) pairs that look like one type renamed: the same last level of the path, or
    close spellings of it (difflib ratio 0.8 or more)."""
    import difflib

    def leaf(name: str) -> str:
        return name.rsplit(">", 1)[-1].strip().casefold()

    out = []
    for g in gone:
        best = max(new, key=lambda n: difflib.SequenceMatcher(None, leaf(g), leaf(n)).ratio(), default=None)
        if best is not None and difflib.SequenceMatcher(None, leaf(g), leaf(best)).ratio() >= 0.8:
            out.append((g, best))
    return out


def _few(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(repr(x) for x in names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


@dataclass
class WarmStart:
    """A parent model and the label map, applied to each network :func:`fit_networks` builds."""

    parent: "Q2PTModel"
    source: str
    label_map: Mapping[str, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    #: new names of the label map that are not types of the data trained on (set by :meth:`check_new_names`)
    unknown_new: list[str] = field(default_factory=list)

    def check_new_names(self, types: "set[str]") -> None:
        """Warn of the label map's new names that name no type of the training data (``types``,
        ancestors of a path included): what the parent learnt of their old types is not carried
        over (a typo on the new side), and the manifest does not record them as applied."""
        known_old = set(self.parent.classes_)
        self.unknown_new = sorted({new for old, new in self.label_map.items() if old in known_old and new not in types})
        if self.unknown_new:
            close = _likely_renames(self.unknown_new, sorted(types))
            logger.warning("label map: %d new name(s) are not product types of the training data, so nothing is carried "
                           "over to them: %s%s", len(self.unknown_new), _few(self.unknown_new),
                           f" (did you mean {_few([b for _, b in close])}?)" if close else "")

    def apply(self, stage: str, net: Any, classes: Sequence[str]) -> None:
        parent_net = self.parent.networks.get(stage)
        if parent_net is None:
            self.report.setdefault("fresh_networks", []).append(stage)
            logger.info("warm start: %s is new (no network in %s): trained from scratch", stage, self.source)
            return
        counts = warm_start_network(net, parent_net, classes, self.parent.labels_of(stage), self.label_map)
        self.report.setdefault("networks", {})[stage] = counts
        which = "the unified network" if stage == UNIFIED else f"locale {stage}"
        logger.info(
            "warm start of %s from %s: %d product types kept, %d renamed or merged, %d new, %d dropped; "
            "%d locale token(s) kept, %d new", which, self.source, counts["types_kept"], counts["types_mapped"],
            counts["types_new"], counts["types_dropped"], counts["locales_kept"], counts["locales_new"])
        mapped = set(self.label_map) | set(self.label_map.values())
        old, new = set(self.parent.labels_of(stage)), set(classes)
        dropped, fresh = sorted(old - new - mapped), sorted(new - old - mapped)
        renames = _likely_renames(dropped, fresh)
        if renames:  # a rename without a label map loses what the parent learnt of the type
            logger.warning("warm start of %s: %s look like renames; without a label map (--label-map, old,new) the new "
                           "type starts afresh", which, _few([f"{a} -> {b}" for a, b in renames]))
        elif dropped and fresh:  # some may be renames that the names do not show
            logger.warning("warm start of %s: new types %s; gone %s; a renamed type needs a label map (--label-map, "
                           "old,new) to keep what the parent learnt of it", which, _few(fresh), _few(dropped))
        elif dropped or fresh:
            logger.info("warm start of %s: new types %s; gone %s", which, _few(fresh) or "none", _few(dropped) or "none")

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest's ``parent``: the label map as applied (old names that are the parent's
        types, new names that are the data's), and the old and new names that were not, apart
        (``label_map_unknown``, ``label_map_unknown_new``)."""
        unknown = unknown_in_label_map(self.label_map, self.parent.classes_)
        left_out_old, left_out_new = set(unknown), set(self.unknown_new)
        applied = {k: v for k, v in self.label_map.items() if k not in left_out_old and v not in left_out_new}
        entry = {"path": self.source, "fingerprint": self.parent.fingerprint,
                 "created": self.parent.manifest.get("created"), "label_map": applied, **self.report}
        if unknown:
            entry["label_map_unknown"] = unknown
        if self.unknown_new:
            entry["label_map_unknown_new"] = list(self.unknown_new)
        return entry


@torch.no_grad()
def warm_start_network(
    net: Any, parent: Any, classes: Sequence[str], parent_classes: Sequence[str], label_map: Mapping[str, str]
) -> dict[str, int]:
    """Copy ``parent``'s weights into the fresh ``net`` (see the module doc); returns counts."""
    state, old = net.state_dict(), parent.state_dict()
    shared = list(pretrained_reference(net)[0].values())
    last = len(net.head) - 1
    head_w, head_b = f"head.{last}.weight", f"head.{last}.bias"
    new_locales, old_locales = list(net.encoder.locales), list(parent.encoder.locales)
    rows_new, rows_old = net.encoder.locale_rows(), parent.encoder.locale_rows()
    if (rows_new is None or rows_old is None) and new_locales != old_locales:
        raise ConfigError(f"cannot warm-start: the {net.encoder.kind} encoder's locale tokens cannot be mapped "
                          "between locale sets, and the parent's locales differ; train from scratch")
    new_rows = {f"encoder.{k}": v for k, v in (rows_new or {}).items()}
    old_rows = {f"encoder.{k}": v for k, v in (rows_old or {}).items()}
    for name, tensor in state.items():
        if name in (head_w, head_b) or any(same_storage(tensor, ref) for ref in shared):
            continue  # the output rows below; a shared pretrained table is the parent's already
        if name not in old:
            raise ConfigError(f"cannot warm-start: the parent network has no {name!r}")
        src = old[name]
        if name in new_rows:
            offset, old_offset = new_rows[name], old_rows.get(name)
            if old_offset != offset or tensor.shape[1:] != src.shape[1:]:
                raise ConfigError(f"cannot warm-start: {name!r} is laid out differently in the parent network")
            tensor[:offset] = src[:offset]
            for i, loc in enumerate(new_locales):
                if loc in old_locales:
                    tensor[offset + i] = src[offset + old_locales.index(loc)]
            continue
        if tensor.shape != src.shape:
            raise ConfigError(f"cannot warm-start: {name!r} has shape {tuple(src.shape)} in the parent network, "
                              f"{tuple(tensor.shape)} here")
        tensor.copy_(src)
    # output rows by product type
    index = {c: i for i, c in enumerate(parent_classes)}
    sources: dict[str, list[int]] = {}
    for old_type, new_type in label_map.items():
        if old_type in index:
            sources.setdefault(new_type, []).append(index[old_type])
    mapped_away = {t for t in label_map if t in index}
    kept = mapped = new = 0
    for k, c in enumerate(classes):
        rows = list(sources.get(c, []))
        if c in index and c not in mapped_away:
            rows.append(index[c])
        if not rows:
            new += 1
            continue
        state[head_w][k] = old[head_w][rows].mean(0)
        state[head_b][k] = old[head_b][rows].mean()
        if rows == [index.get(c)]:
            kept += 1
        else:
            mapped += 1
    used = {i for c in classes for i in sources.get(c, [])} | {index[c] for c in classes
                                                                 if c in index and c not in mapped_away}
    return {"types_kept": kept, "types_mapped": mapped, "types_new": new,
            "types_dropped": len(parent_classes) - len(used),
            "locales_kept": sum(loc in old_locales for loc in new_locales),
            "locales_new": sum(loc not in old_locales for loc in new_locales)}
