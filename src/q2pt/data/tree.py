"""Product-type trees: category paths (``"home & garden > kitchen > cookware > pots"``) as a
taxonomy, so that a model can learn, predict and be judged at every level.

A node is a whole path prefix, spelled with the separator (``data.label_separator``, default
``" > "``; levels are split as :mod:`q2pt.data.labels` splits them, whitespace around the
separator ignored): ``"a"``, ``"a > b"``, ``"a > b > c"``. Two nodes with the same last name
under different parents (``"garden > pots"``, ``"kitchen > pots"``) are different nodes; the
tree reports such names (:meth:`LabelTree.shared_names`) because they are often a data error.
Commas, slashes and quotes inside a name are plain characters.

:meth:`LabelTree.from_labels` derives the tree from labels (every prefix of every path is a
node), optionally with more paths from a taxonomy file (:func:`read_taxonomy`: one path a
line); :meth:`LabelTree.close` adds a label list's ancestors (a query of ``"a > b > c"`` is
also a query of ``"a > b"`` and ``"a"``: the implied positives a hierarchical model learns).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from q2pt.errors import DataError, Problem

from .labels import DEFAULT_SEPARATOR, has_empty_level, level_words, split_path

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.config import Config

__all__ = ["LabelTree", "closed_frame", "configured_tree", "read_taxonomy", "split_path", "training_tree", "type_name"]


def type_name(label: str, sep: str = DEFAULT_SEPARATOR) -> str:
    """A product type's name as words: the last level of its path with ``_`` read as a space
    (``type_name("kitchen > cookware > frying_pan")`` -> ``"frying pan"``); the label itself
    when that leaves nothing."""
    levels = split_path(label, sep)
    return level_words(levels[-1] if levels else label) or label


def read_taxonomy(path: str | Path, sep: str = DEFAULT_SEPARATOR) -> list[str]:
    """The paths of a taxonomy file (UTF-8, one path a line; blank lines and lines starting
    with ``#`` are skipped), each normalised (levels joined with ``sep``). A path with an empty
    level (``a >  > b``, ``> b``) is refused naming its line: it was read as ``a > b`` silently,
    where the data's rows get a warning for it."""
    from q2pt.io import read_text_file

    path = Path(path)
    text = read_text_file(path, "the taxonomy file", DataError)
    out, problems = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        levels = split_path(line, sep)
        if not levels:
            problems.append(Problem(str(path), i, None, f"no product type in {line!r}"))
            continue
        if has_empty_level(line.strip(), sep):
            problems.append(Problem(str(path), i, None, f"an empty level in {line.strip()!r}"))
            continue
        out.append(sep.join(levels))
    if problems:
        raise DataError(f"{path}: invalid taxonomy", problems)
    return out


@dataclass
class LabelTree:
    """A taxonomy of product-type paths: each node's parent (None for a top-level type), its
    level (1 for the top) and its children. Not changed once built (its children and levels are
    derived at construction, and inference caches its structure over a model's columns)."""

    separator: str = DEFAULT_SEPARATOR
    parent: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.children: dict[str, list[str]] = defaultdict(list)
        self.level: dict[str, int] = {}
        for node in sorted(self.parent):
            self.level[node] = len(split_path(node, self.separator))
            up = self.parent[node]
            if up is not None:
                self.children[up].append(node)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_labels(cls, labels: Iterable[str], sep: str = DEFAULT_SEPARATOR,
                    extra_paths: Iterable[str] = ()) -> "LabelTree":
        """The tree of every prefix of every label (and of ``extra_paths``, e.g. a taxonomy
        file's)."""
        parent: dict[str, str | None] = {}
        seen: set[str] = set()
        for label in [*labels, *extra_paths]:
            if label in seen:
                continue
            seen.add(label)
            levels = split_path(label, sep)
            up: str | None = None
            for k in range(1, len(levels) + 1):
                node = sep.join(levels[:k])
                parent.setdefault(node, up)
                up = node
        return cls(sep, parent)

    def normalize(self, label: str) -> str:
        """The node spelling of a label (levels joined with the separator)."""
        levels = split_path(label, self.separator)
        return self.separator.join(levels) if levels else label.strip()

    # ------------------------------------------------------------------ structure
    @property
    def nodes(self) -> list[str]:
        return sorted(self.parent)

    @property
    def depth(self) -> int:
        return max(self.level.values(), default=0)

    @property
    def is_hierarchical(self) -> bool:
        """More than one level: a tree, not a flat list."""
        return self.depth > 1

    def level_of(self, label: str) -> int:
        """A label's level: its node's, or the number of its levels when the tree lacks it."""
        return self.level.get(label) or len(split_path(label, self.separator))

    def is_leaf(self, node: str) -> bool:
        return not self.children.get(node)

    def ancestors(self, node: str) -> list[str]:
        """The node's ancestors, the top level first (not the node itself)."""
        out: list[str] = []
        up = self.parent.get(node)
        while up is not None:
            out.append(up)
            up = self.parent.get(up)
        return out[::-1]

    def close(self, labels: Sequence[str]) -> list[str]:
        """``labels`` (normalised) with every ancestor added, ancestors first, no duplicates."""
        out: dict[str, None] = {}
        for label in labels:
            node = self.normalize(label)
            for a in self.ancestors(node) if node in self.parent else self._prefixes(node)[:-1]:
                out[a] = None
            out[node] = None
        return list(out)

    def _prefixes(self, label: str) -> list[str]:
        levels = split_path(label, self.separator)
        return [self.separator.join(levels[:k]) for k in range(1, len(levels) + 1)]

    def shared_names(self) -> dict[str, list[str]]:
        """Names (a node's last level) found under more than one parent, the top of the tree
        counting as one (``pots`` and ``home > pots``): ``{name: [nodes]}``."""
        by_name: dict[str, list[str]] = defaultdict(list)
        for node in self.parent:
            levels = split_path(node, self.separator)
            if levels:
                by_name[levels[-1]].append(node)
        return {k: sorted(v) for k, v in sorted(by_name.items()) if len(v) > 1}

    # ------------------------------------------------------------------ statistics
    def stats(self, label_lists: Sequence[Sequence[str]] | None = None,
              locales: Sequence[str] | None = None) -> dict[str, Any]:
        """Depth, nodes and branching per level, leaves, shared names; with the data's label
        lists (and locales), the types in use per level, globally and per locale."""
        per_level: dict[int, list[str]] = defaultdict(list)
        for node, lev in self.level.items():
            per_level[lev].append(node)
        levels = []
        for lev in sorted(per_level):
            nodes = per_level[lev]
            branching = [len(self.children.get(n, [])) for n in nodes if self.children.get(n)]
            levels.append({
                "level": lev, "nodes": len(nodes), "leaves": sum(self.is_leaf(n) for n in nodes),
                "with_children": len(branching),
                "branching_mean": (sum(branching) / len(branching)) if branching else None,
                "branching_max": max(branching, default=0),
            })
        out: dict[str, Any] = {"depth": self.depth, "nodes": len(self.parent),
                               "leaves": sum(self.is_leaf(n) for n in self.parent), "levels": levels,
                               "shared_names": self.shared_names()}
        if label_lists is not None:
            used: dict[int, set[str]] = defaultdict(set)
            by_locale: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
            for i, labels in enumerate(label_lists):
                for node in self.close(labels):
                    lev = self.level_of(node)
                    used[lev].add(node)
                    if locales is not None:
                        by_locale[str(locales[i])][lev].add(node)
            out["types_per_level"] = {str(k): len(v) for k, v in sorted(used.items())}
            if locales is not None:
                out["types_per_level_per_locale"] = {
                    loc: {str(k): len(v) for k, v in sorted(levs.items())} for loc, levs in sorted(by_locale.items())}
        return out

    @staticmethod
    def per_locale_text(stats: Mapping[str, Any]) -> str:
        """``"de 2/1/2; fr 3/3/1"``: the types in use per level per locale of :meth:`stats`'s
        output ("" without them)."""
        per_loc = stats.get("types_per_level_per_locale") or {}
        levels = [str(lv["level"]) for lv in stats.get("levels", [])]
        return "; ".join(f"{loc} " + "/".join(str(v.get(k, 0)) for k in levels) for loc, v in per_loc.items())

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        return {"separator": self.separator, "parent": dict(sorted(self.parent.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LabelTree":
        return cls(str(data["separator"]), {str(k): (None if v is None else str(v))
                                            for k, v in dict(data["parent"]).items()})


def training_tree(hierarchy: str, labels: Iterable[str], sep: str = DEFAULT_SEPARATOR,
                  taxonomy: str | Path | None = None, depth: int | None = None) -> LabelTree | None:
    """The tree a model with ``model.hierarchy`` learns from these training labels (and the
    taxonomy file's paths, cut to ``depth`` levels as ``data.label_depth`` cuts the labels):
    None for a flat model ("flat", or "auto" with labels of one level)."""
    extra = read_taxonomy(taxonomy, sep) if taxonomy else []
    if depth is not None:
        extra = sorted({sep.join(split_path(p, sep)[:depth]) for p in extra})
    tree = LabelTree.from_labels(labels, sep, extra)
    if hierarchy == "flat" or (hierarchy == "auto" and not tree.is_hierarchical):
        return None
    return tree


def configured_tree(config: "Config", labels: Iterable[str]) -> LabelTree | None:
    """:func:`training_tree` as ``config`` sets it (``model.hierarchy``; ``data.label_separator``,
    ``taxonomy``, ``label_depth``): the tree a model with that config learns from ``labels``."""
    d = config.data
    return training_tree(config.model.hierarchy, labels, d.label_separator, d.taxonomy, d.label_depth)


def closed_frame(frame: "pd.DataFrame", tree: LabelTree) -> tuple["pd.DataFrame", int]:
    """A copy of ``frame`` whose product types hold their ancestors too (normalised paths),
    and how many labels were added."""
    import pandas as pd

    from . import schema as S

    added = 0
    out_lists = []
    for labels in frame[S.LABELS].tolist():
        closed = tree.close(list(labels))
        added += len(closed) - len(set(labels))
        out_lists.append(closed)
    out = frame.copy()
    out[S.LABELS] = pd.Series(out_lists, index=frame.index, dtype=object)
    return out, added
