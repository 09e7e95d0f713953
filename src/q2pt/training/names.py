"""Name examples (``train.name_examples``): each product type's name as one more training query.

A store's product types have names ("frying pan" for "kitchen > frying_pan"), and a shopper
who types a type's name means that type. With a few dozen training queries a type, the name is
one more example the network learns from, and (with the query memory) one more neighbour a
query can find. It is built from the training labels alone (with ``train.subtype_names``, from
their paths before ``data.label_depth`` cut them: the names of the levels cut away), so it needs
nothing the training data does not already hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import pandas as pd

from q2pt.data.tree import type_name

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.config import Config
    from q2pt.data import Dataset
    from q2pt.data.tree import LabelTree

__all__ = ["name_examples", "subtype_names_used"]


def subtype_names_used(config: "Config", dataset: "Dataset") -> bool:
    """Whether ``train.subtype_names`` changes what ``config`` trains on ``dataset``: on, with
    name examples, on data whose paths ``data.label_depth`` cut (:attr:`q2pt.data.Dataset.cut_names`).
    Otherwise training is what it was before the key existed, and run identities leave it out."""
    t = config.train
    return bool(t.subtype_names and t.name_examples > 0 and dataset.cut_names)


def name_examples(classes: Sequence[str], locales: Sequence[str], weight: float, *,
                  sep: str, tree: "LabelTree | None" = None,
                  subtype_names: "Mapping[str, Sequence[str]] | None" = None) -> pd.DataFrame:
    """Training rows (``query``, ``locale``, ``product_types``, ``weight``): one per distinct
    type name among ``classes`` (:func:`q2pt.data.tree.type_name`, the last level of the
    path), labelled with every class of that name (men's and women's "shorts" are one row with
    both types) and, in a ``tree``, their ancestors. ``subtype_names`` (class -> names below
    it, e.g. the levels ``data.label_depth`` cut away: :attr:`q2pt.data.Dataset.cut_names`)
    adds each of those names as a name of its class, merged with equal names. Row i gets locale
    ``locales[i % n]``: the names are spread over the stores, one row each, rather than
    repeated in every store."""
    stores = list(locales)
    if weight <= 0 or not classes or not stores:
        return pd.DataFrame({"query": [], "locale": [], "product_types": [], "weight": []})
    by_name: dict[str, set[str]] = {}
    for c in classes:
        by_name.setdefault(type_name(c, sep), set()).add(c)
        for name in (subtype_names or {}).get(c, ()):
            by_name.setdefault(name, set()).add(c)
    names = sorted(by_name)
    labels = [sorted(tree.close(sorted(by_name[n])) if tree is not None else by_name[n]) for n in names]
    return pd.DataFrame({
        "query": names,
        "locale": [stores[i % len(stores)] for i in range(len(names))],
        "product_types": labels,
        "weight": [float(weight)] * len(names),
    })
