"""Shared test data and helpers (imported by the test modules: ``from support import ...``).

Three small hand-made data sets, none of them the simulated store: the 2-locale, 4-type
``tiny_*`` set (models, training, CLI), the 3-locale, 5-type ``handmade_*`` set (serving,
ONNX, the demo page) and the ``stream_*`` set (streaming, Ray). The trained models built
from them are session fixtures in ``conftest.py``, trained once per test session.

:func:`need` imports an optional dependency: a skip on a developer's machine without it,
a failure in CI (``CI=true``), where every extra is installed and a skip would hide a
broken install.
"""

from __future__ import annotations

import importlib
import os
import random
from typing import Any

import numpy as np
import pandas as pd
import pytest

from q2pt.config import resolve_config
from q2pt.data import from_frames


def need(module: str, reason: str | None = None) -> Any:
    """``import module``; without it: skip (a failure when ``$CI`` is set)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


# ---------------------------------------------------------------- tiny: 2 locales, 4 types
# ---------------------------------------------------------------- tiny synthetic data
# Not the simulated store: a hand-made 2-locale, 4-type problem small enough to overfit fast.
LOCALES = ("de_DE", "en_US")


WORDS = {
    "shoes": {"de_DE": ["schuhe", "stiefel", "sandalen"], "en_US": ["shoes", "boots", "sandals"]},
    "television": {"de_DE": ["fernseher", "glotze"], "en_US": ["television", "tv set"]},
    "frying_pan": {"de_DE": ["pfanne", "bratpfanne"], "en_US": ["frying pan", "skillet"]},
    "sofa": {"de_DE": ["sofa", "couch"], "en_US": ["sofa", "couch"]},
}


ADJ = {"de_DE": ["rot", "billig", "neu", "gross"], "en_US": ["red", "cheap", "new", "big"]}


TYPES = sorted(WORDS)


def labelled_frame(n: int, seed: int, *, locales, words, mods, types, multi_every: int, id_base: int) -> pd.DataFrame:
    """n unique labelled queries "<modifier> <type word> <number>" (the number makes every query
    unique, within and across splits), each locale drawing from the types it has words for;
    every ``multi_every``-th query names a second type (multi-label)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        loc = locales[i % len(locales)]
        offered = [t for t in types if loc in words[t]]
        t = offered[rng.integers(len(offered))]
        forms = words[t][loc]
        query = f"{mods[loc][rng.integers(len(mods[loc]))]} {forms[rng.integers(len(forms))]} {seed * id_base + i}"
        labels = [t]
        if i % multi_every == 0:
            t2 = offered[(offered.index(t) + 1) % len(offered)]
            query += " " + words[t2][loc][0]
            labels.append(t2)
        rows.append({"query": query, "locale": loc, "product_types": labels, "weight": 1.0})
    return pd.DataFrame(rows)


def tiny_frame(n: int, seed: int, locales=LOCALES, types=TYPES) -> pd.DataFrame:
    """n labelled, unique queries; every 8th is multi-label (two types in one query)."""
    return labelled_frame(n, seed, locales=locales, words=WORDS, mods=ADJ, types=types, multi_every=8, id_base=1000)


def tiny_dataset(n_train: int = 160, n_valid: int = 48, n_test: int = 48, seed: int = 0):
    return from_frames(
        {"train": tiny_frame(n_train, seed), "valid": tiny_frame(n_valid, seed + 1), "test": tiny_frame(n_test, seed + 2)},
        source="tiny-test-data", validate=False,
    )


def with_levels(data, levels: int):
    """``data`` with every type ``t`` as a path of ``levels`` levels (``d > g > t`` for 3)."""
    def path(t):
        return " > ".join([f"d{TYPES.index(t) % 2}", f"g{TYPES.index(t) % 3}"][:levels - 1] + [t])

    return from_frames({k: f.assign(product_types=f["product_types"].map(lambda ts: [path(t) for t in ts]))
                        for k, f in data.splits.items()}, source="tiny", validate=False)


def ngram_config(variant: str = "unified-aware", *extra: str):
    """A small, fast ngram set-up (one torch thread: tiny ops suffer from thread hand-offs
    when the 2-core machine is busy)."""
    return resolve_config(
        None,
        ["--model.encoder_options.dim", "32", "--model.encoder_options.buckets", "4096",
         "--train.batch_size", "16", "--train.max_epochs", "12", "--train.patience", "12",
         "--train.lr", "0.05", "--train.threads", "1", *extra],
        "ngram", flags={"model.variant": variant},
    )


# ---------------------------------------------------------------- handmade: 3 locales, 5 types
# ---------------------------------------------------------------- hand-made data + models
HANDMADE_LOCALES = ("de_DE", "en_US", "fr_FR")


HANDMADE_WORDS = {
    "shoes": {"de_DE": ["schuhe", "stiefel", "turnschuhe"], "en_US": ["shoes", "boots", "sneakers"],
              "fr_FR": ["chaussures", "bottes", "baskets"]},
    "headphones": {"de_DE": ["kopfhörer", "ohrhörer"], "en_US": ["headphones", "earbuds"],
                   "fr_FR": ["casque audio", "écouteurs"]},
    "phone case": {"de_DE": ["handyhülle", "handytasche"], "en_US": ["phone case", "iphone cover"],
                   "fr_FR": ["coque téléphone", "étui portable"]},
    "toy bricks": {"de_DE": ["klemmbausteine", "bausteine"], "en_US": ["building blocks", "toy bricks"],
                   "fr_FR": ["briques jouet", "jeu de construction"]},
    # only sold in en_US: the non-unified de_DE / fr_FR networks do not know it
    "gift card": {"en_US": ["gift card", "gift voucher"]},
}


HANDMADE_MODS = {"de_DE": ["rot", "blau", "billig", "neu", "kinder", "damen"],
        "en_US": ["red", "blue", "cheap", "new", "kids", "women"],
        "fr_FR": ["rouge", "bleu", "pas cher", "neuf", "enfant", "femme"]}


def handmade_frame(n: int, seed: int) -> pd.DataFrame:
    """n unique labelled queries (a number makes each unique); every 10th has two types."""
    return labelled_frame(n, seed, locales=HANDMADE_LOCALES, words=HANDMADE_WORDS, mods=HANDMADE_MODS,
                          types=list(HANDMADE_WORDS), multi_every=10, id_base=10_000)


def handmade_dataset():
    return from_frames(
        {"train": handmade_frame(480, 0), "valid": handmade_frame(150, 1), "test": handmade_frame(150, 2)},
        source="handmade-serving-test-data", validate=False,
    )




# ---------------------------------------------------------------- stream: 3 locales, 5 types
STREAM_TYPES = {
    "shoes": ["shoe", "sneaker", "boot"],
    "shirt": ["shirt", "tee", "blouse"],
    "phone": ["phone", "mobile", "smartphone"],
    "tv": ["tv", "television", "screen"],
    "bag": ["bag", "purse", "backpack"],
}


STREAM_ADJ = ["red", "blue", "cheap", "new", "large", "rot", "bleu", "neu"]


def stream_split(n: int, seed: int) -> pd.DataFrame:
    r = random.Random(seed)
    names = sorted(STREAM_TYPES)
    rows = []
    for i in range(n):
        t = r.choice(names)
        query = f"{r.choice(STREAM_ADJ)} {r.choice(STREAM_TYPES[t])} {seed}x{i}"
        rows.append({"query": query, "locale": r.choice(["de", "fr", "us"]), "product_types": [t], "weight": 1.0})
    return pd.DataFrame(rows)




def run_cli(capsys, *argv: Any) -> tuple[int, str, str]:
    """``q2pt ARGV...`` through :func:`q2pt.cli.main` (each argument as text): the exit code,
    stdout and stderr, and never a traceback in either."""
    from q2pt.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err
