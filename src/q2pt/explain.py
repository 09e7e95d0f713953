"""Why a query got a product type: each word's (and the locale token's) contribution.

Method: **occlusion**. A query's words are its whitespace-separated tokens. The contribution
of word ``i`` to product type ``T`` is ``score(query) - score(query without word i)``, with the
query's own locale handling; the contribution of the locale token (unified-aware models, for
a locale seen in training) is ``score(query) - score(query without the locale token)``, the
locale-agnostic score the model gives unseen locales. Positive: the word raises T's score;
negative: it lowers it. Contributions need not add up to the score (words interact).
Everything is one batched forward pass of ``words + 2`` queries through the model's
:class:`~q2pt.inference.InferenceCore` -- the same path as every prediction -- so it is as
fast as predicting a small batch (``bench/explain_speed.py``).

Occlusion is exact about what it measures (the model's own score without the word), needs no
gradients (the ONNX runtime and frozen encoders explain the same way) and costs one forward
pass; integrated gradients would need a differentiable path from the characters to the
score, which the hashed n-gram and the pretrained tokenizers do not have.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from q2pt.data.schema import has_visible_text
from q2pt.errors import ConfigError
from q2pt.inference import InferenceCore

__all__ = ["METHOD", "explain", "unknown_type_message", "words_of"]

METHOD = "occlusion: contribution = score(query) - score(query without the word / the locale token)"

_WORD = re.compile(r"\S+")


def words_of(query: str) -> list[tuple[str, int, int]]:
    """The query's words: ``(word, start, end)`` character spans of its whitespace-separated tokens."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(query)]


def unknown_type_message(product_type: str, core: InferenceCore, renamed: Mapping[str, str] | None = None) -> str:
    """Why ``product_type`` cannot be explained, with the model's types it may mean: its new
    name where the model's warm start renamed it (``renamed``: old -> new,
    :func:`q2pt.model_folder.parent_label_map`), a tree's
    paths that end in that name (``running_shoes`` for ``shoes > athletic_shoes >
    running_shoes``), else the closest spellings."""
    import difflib

    new = (renamed or {}).get(product_type)
    if new is not None and new in core.classes:
        return (f"product type {product_type!r} is not one of the model's {len(core.classes)} types: it was renamed "
                f"{new!r} when this model was trained from its parent (its label map)")
    sep = core.tree.separator if core.tree is not None else None
    wanted = product_type.strip().casefold()
    ends = [c for c in core.classes if sep and c.rsplit(sep, 1)[-1].strip().casefold() == wanted]
    near = ends or difflib.get_close_matches(product_type, core.classes, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in near[:3])}?" if near else ""
    if ends:
        hint += " (a tree's types are named by their whole paths)"
    return f"product type {product_type!r} is not one of the model's {len(core.classes)} types{hint}"


def _default_column(core: InferenceCore, full: np.ndarray, res: Any) -> int:
    """The type explained when none is named: the best-scored one; for a tree (where a parent
    scores at least as high as its children) the first predicted path's type, else the
    best-scored bottom type."""
    scored = np.where(np.isnan(full), -np.inf, full)
    if core.tree is None:
        return int(np.argmax(scored))
    paths = core.select_paths(full[None, :], [res])[0]
    if paths:
        return core.classes.index(paths[0]["product_type"])
    leaves = np.where(core.leaf_col, scored, -np.inf)
    return int(np.argmax(leaves if np.isfinite(leaves).any() else scored))  # (no leaf scored: any type)


def explain(core: InferenceCore, query: str, locale: str, product_type: str | None = None,
            renamed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The contributions of ``query``'s words and locale token to ``product_type``'s score
    (default: the query's best-scored type; for a tree, the type it predicts, as
    :func:`_default_column` picks it) in ``locale``; see the module doc.

    Returns a JSON-ready dict: ``query``, ``locale``, ``locale_used``, ``product_type``,
    ``score``, ``threshold``, ``predicted``, ``words`` (``word``, ``start``, ``end``,
    ``score_without``, ``contribution``), ``locale_token`` (``token``, ``score_without``,
    ``contribution``; None when the model has no locale token for this query), ``method``
    and ``warnings``. Raises UnknownLocaleError as prediction does, and ConfigError for a type
    the model does not know (naming its new name where ``renamed``, the model's renames, has it).
    """
    text = query.strip()
    if not has_visible_text(text):
        raise ConfigError("nothing to explain: the query is empty (or only whitespace, control or invisible characters)")
    res = core.resolve(locale)
    words = words_of(text)
    variants = [text] + [" ".join(w for j, (w, _, _) in enumerate(words) if j != i) for i in range(len(words))]
    resolutions = [res] * len(variants)
    token = res.token_locale
    if token is not None:  # the same query without the locale token
        variants.append(text)
        resolutions.append(replace(res, token_locale=None))
    scores = core.scores(variants, resolutions)
    full = scores[0]
    if product_type is None:
        col = _default_column(core, full, res)
    else:
        if product_type not in core.classes:
            raise ConfigError(unknown_type_message(product_type, core, renamed))
        col = core.classes.index(product_type)
    score = float(full[col])
    if np.isnan(score):
        raise ConfigError(f"product type {core.classes[col]!r} is not scored for locale {locale!r} by this model")
    cut = core.cuts([res])
    threshold = float(cut[0, col])  # the locale's, or its own for this type
    out: dict[str, Any] = {
        "query": text,
        "locale": res.locale,
        "locale_used": res.locale_used,
        "product_type": core.classes[col],
        "score": score,
        "threshold": threshold,
        "predicted": bool(core.confident(full[None, :], cut)[0, col]),  # a tree: or a descendant is
        "words": [
            {"word": w, "start": start, "end": end, "score_without": float(scores[1 + i, col]),
             "contribution": score - float(scores[1 + i, col])}
            for i, (w, start, end) in enumerate(words)
        ],
        "locale_token": None,
        "method": METHOD,
        "warnings": [res.warning] if res.warning else [],
    }
    if token is not None:
        without = float(scores[-1, col])
        out["locale_token"] = {"token": token, "score_without": without, "contribution": score - without}
    return out
