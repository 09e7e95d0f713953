"""The built-in SIMULATED global shop: 20 stores, 12 languages, a few hundred product types.

Nothing here is real shop data. The generator writes search queries the way shoppers
type them and labels them from *simulated clicks*, so that q2pt can be developed,
tested and demonstrated offline:

1. **Store priors.** Every store (locale) gets its own product-type distribution: the
   taxonomy priors, perturbed by a Dirichlet draw per department and per type, times
   hand-set tilts (jp buys more electronics, in more phones ...); types restricted by
   ``locales_only`` are not sold elsewhere.
2. **Queries.** A query has an *intent* (a type drawn from the store prior) and is
   written in the store's language(s) with that language's word order: a surface form
   of the type plus 0-4 attributes (brand -- global or local --, colour, size, material,
   audience, numbers with the store's units and decimal mark ...), German/Dutch/Swedish
   compounds, Japanese without spaces, Arabic noun-first order in Arabic script,
   English loanwords, misspellings and missing accents. Some queries are a bare brand
   (``apple``), a brand and a model number, or a word whose meaning depends on the
   store (``pants`` = trousers in us, underwear in uk; see ``lexicon.CONFLICT_WORDS``).
3. **Clicks -> labels.** Each search gets a few clicks: most on the intent, some on
   related types (accessory / complement / substitute), some noise on popular types.
   Repeated searches of the same query string are aggregated, and a type becomes a
   label when its click share >= ``min_share`` (0.1) and its clicks >= ``min_clicks``
   (2) -- the rule of the click-log converter. Labels are thus as noisy as click labels;
   the clean intent stays in the ``intent`` column for analysis only.
4. **Splits.** 80/10/10 by a hash of the normalised query within each store, so a
   (normalised query, locale) never spans two splits. Valid/test labels not seen in
   train are dropped (and counted in the datasheet).

Everything is drawn from generators seeded by ``seed``: the same (preset, seed) gives
the same rows and byte-identical files.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from q2pt.errors import ConfigError, check_seed

from . import lexicon as lx
from .taxonomy import LOCALES, RELATION_KINDS, Taxonomy, load_taxonomy

__all__ = [
    "PRESETS",
    "SIMULATOR_VERSION",
    "ClickModel",
    "Preset",
    "planned_counts",
    "simulate",
    "write_simulated",
]

#: Bump when the generator's output changes (invalidates caches of simulated data).
SIMULATOR_VERSION = "2"  # 2: taxonomy.json has the groups (the tree's middle level)

SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class ClickModel:
    """How simulated shoppers click, and the rule that turns clicks into labels."""

    extra_clicks_mean: float = 3.0  # clicks per search = 2 + Poisson(mean)
    intent_beta: tuple[float, float] = (5.0, 1.6)  # per query: share of clicks on the intent
    specificity_gain: float = 0.12  # each attribute (up to 3) removes this share of the off-intent clicks
    noise: float = 0.06  # mean share of clicks on random popular types
    noise_temperature: float = 0.7  # noise picks types with prob ~ prior ** temperature
    relation_weights: tuple[tuple[str, float], ...] = (("substitute", 0.45), ("accessory", 0.3), ("complement", 0.25))
    min_share: float = 0.1  # same defaults as the click-log converter
    min_clicks: int = 2


@dataclass(frozen=True)
class QueryModel:
    """What kinds of queries shoppers type and how specific they are."""

    n_attributes_p: tuple[float, ...] = (0.32, 0.34, 0.22, 0.09, 0.03)  # P(0..4 attributes)
    brand_only: float = 0.03  # bare brand ("apple")
    brand_model: float = 0.012  # brand + model number ("sony kd55x")
    conflict_rate: float = 0.003  # share of a store's searches per locale-dependent word
    conflict_min: int = 5  # at least this many searches per word and store
    extra_word: float = 0.05  # "cheap", "günstig", "fiyatları" ...
    english_extra: float = 0.015  # English "sale", "set" in a non-English query
    typo_scale: float = 1.0  # multiplies each language's misspelling rate
    fullwidth_ja: float = 0.05  # Japanese IME full-width Latin
    capitalized: float = 0.02  # first letter typed upper case
    dept_concentration: float = 80.0  # Dirichlet concentration of a store's department mix
    type_concentration: float = 60.0  # ... and of a department's type mix


@dataclass(frozen=True)
class Preset:
    """Size of a simulated dataset."""

    name: str
    n_queries: int  # distinct (query, locale) rows before the split, about
    min_per_locale: int  # floor per store, so that the smallest still has something
    description: str
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "tiny": Preset("tiny", 1_900, 40, "unit tests: ~2,000 queries, every store >= 20 train queries"),
        "demo": Preset("demo", 20_000, 150, "make demo: ~20,000 queries, the comparison in a few minutes on 2 CPU cores"),
        "quick": Preset("quick", 40_000, 300, "~40,000 queries: benchmarks of speed and serving, trains in minutes"),
        "full": Preset("full", 505_000, 3_000, "benchmarks: >= 500,000 queries"),
    }
)


def _preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ConfigError(f"unknown simulated preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def planned_counts(preset: str | Preset) -> dict[str, int]:
    """Distinct queries planned per store (before the split and the label filter)."""
    p = _preset(preset)
    total = sum(lx.LOCALE_SHARES.values())
    return {
        loc: max(p.min_per_locale, round(p.n_queries * lx.LOCALE_SHARES[loc] / total)) for loc in LOCALES
    }


# =====================================================================================
# Per-store context: priors, forms, brands, relations
# =====================================================================================


def _cum(weights: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


def _draw(cum: Sequence[float], rnd: random.Random) -> int:
    return min(bisect.bisect_right(cum, rnd.random() * cum[-1]), len(cum) - 1)


@dataclass
class _Forms:
    words: list[str]
    cum: list[float]
    local: frozenset[str]  # forms added for this store only (loanwords)


class _Store:
    """Everything needed to write and click queries in one store."""

    def __init__(self, locale: str, tax: Taxonomy, prior: np.ndarray, qm: QueryModel, cm: ClickModel):
        self.locale = locale
        self.tax = tax
        self.qm = qm
        self.type_ids: list[str] = list(tax.types)
        self.index = {t: i for i, t in enumerate(self.type_ids)}
        self.prior = prior
        self.prior_cum = np.cumsum(prior)
        self.languages = LOCALES[locale]
        mix = lx.LOCALE_LANGUAGE_MIX.get(locale, {self.languages[0]: 1.0})
        self.lang_list = list(mix)
        self.lang_cum = _cum(list(mix.values()))
        sold = [i for i, p in enumerate(prior) if p > 0]
        self.sold = sold
        self.sold_set = set(sold)

        # surface forms per (type, language), with store-specific additions and removals
        self.forms: dict[tuple[int, str], _Forms] = {}
        local = lx.LOCAL_FORMS.get(locale, {})
        ambiguous: dict[str, dict[str, list[str]]] = {}
        for lang in self.lang_list:
            ambiguous[lang] = {}
            for word, tids in lx.AMBIGUOUS_FORMS.get(lang, {}).items():
                present = [t for t in tids if t in self.index and self.index[t] in self.sold_set]
                if len(present) >= 2:
                    for t in present:
                        ambiguous[lang].setdefault(t, []).append(word)
        for i in sold:
            ptype = tax.types[self.type_ids[i]]
            for lang in self.lang_list:
                words: list[str] = []
                weights: list[float] = []
                base = [f for f in ptype.names[lang] if self._form_allowed(f, ptype.id)] or list(ptype.names[lang])
                for k, f in enumerate(base):
                    words.append(f)
                    weights.append(max(1.0, 0.8 * (len(base) - 1)) if k == 0 else 1.0)
                extra_local = [f for f in local.get(ptype.id, ()) if f not in words] if lang == self.languages[0] else []
                for f in extra_local:
                    words.append(f)
                    weights.append(1.0)
                for f in ambiguous.get(lang, {}).get(ptype.id, []):
                    if f not in words:
                        words.append(f)
                        weights.append(0.35)
                self.forms[(i, lang)] = _Forms(words, _cum(weights), frozenset(extra_local))

        # brands: which ones this store sells, and for which types
        groups_of_type = _type_groups(tax)
        self.brands: list[lx.Brand] = [b for b in lx.BRANDS if b.locales is None or locale in b.locales]
        brand_types: list[list[int]] = []
        for b in self.brands:
            bt = [i for i in sold if groups_of_type[self.type_ids[i]] & set(b.groups)]
            brand_types.append(bt)
        self.type_brands: dict[int, tuple[list[int], list[float]]] = {}
        per_type: dict[int, list[tuple[int, float]]] = {}
        for bi, (b, bt) in enumerate(zip(self.brands, brand_types)):
            boost = 1.5 if b.locales is not None else 1.0
            for i in bt:
                per_type.setdefault(i, []).append((bi, b.popularity * boost))
        for i, lst in per_type.items():
            self.type_brands[i] = ([bi for bi, _ in lst], _cum([w for _, w in lst]))
        keep = [bi for bi, bt in enumerate(brand_types) if bt]
        self.bare_brands = keep
        self.bare_brand_cum = _cum(
            [
                self.brands[bi].popularity * (1.5 if self.brands[bi].locales else 1.0)
                * float(np.sqrt(prior[brand_types[bi]].sum()))
                for bi in keep
            ]
        )
        # a bare brand means the brand's flagship groups first (nike: shoes, then clothes)
        self.brand_type_cum = {}
        for bi in keep:
            b = self.brands[bi]
            focus = [
                max((0.5 ** k for k, g in enumerate(b.groups) if g in groups_of_type[self.type_ids[i]]), default=0.0)
                for i in brand_types[bi]
            ]
            w = (prior[brand_types[bi]] ** 1.5) * np.asarray(focus)
            self.brand_type_cum[bi] = (brand_types[bi], _cum(list(w)))
        self.brand_model_types = {
            bi: [i for i in brand_types[bi] if "model_number" in tax.types[self.type_ids[i]].attributes] for bi in keep
        }

        # locale-dependent words that mean something here
        self.conflicts: list[tuple[str, int]] = []
        for word in lx.CONFLICT_WORDS:
            target = lx.conflict_type(word, locale, self.languages)
            if target is not None and target in self.index and self.index[target] in self.sold_set:
                self.conflicts.append((word, self.index[target]))

        # related types (for co-clicks): padded arrays of ids and cumulative weights
        rel_lists: list[list[tuple[int, float]]] = []
        for tid in self.type_ids:
            related = tax.types[tid].related
            rel: list[tuple[int, float]] = []
            for kind in RELATION_KINDS:
                ids = [self.index[r] for r in related.get(kind, ()) if self.index[r] in self.sold_set]
                for rank, j in enumerate(ids):
                    rel.append((j, dict(cm.relation_weights).get(kind, 0.0) / len(ids) * (1.5 if rank == 0 else 1.0)))
            rel_lists.append(rel)
        kmax = max(1, max(len(x) for x in rel_lists))
        T = len(self.type_ids)
        self.rel_ids = np.zeros((T, kmax), dtype=np.int64)
        self.rel_cum = np.ones((T, kmax), dtype=np.float64)
        self.rel_n = np.zeros(T, dtype=np.int64)
        for i, lst in enumerate(rel_lists):
            if not lst:
                continue
            total = sum(w for _, w in lst)
            acc = 0.0
            for k, (j, w) in enumerate(lst):
                acc += w / total
                self.rel_ids[i, k] = j
                self.rel_cum[i, k] = acc
            self.rel_cum[i, len(lst) - 1 :] = 1.0
            self.rel_n[i] = len(lst)
        noise = prior ** cm.noise_temperature
        self.noise_cum = np.cumsum(noise / noise.sum())

    def _form_allowed(self, form: str, type_id: str) -> bool:
        """A locale-dependent word is only used for the type it means in this store."""
        target = lx.conflict_type(form, self.locale, self.languages)
        return target is None or target == type_id


def _type_groups(tax: Taxonomy) -> dict[str, set[str]]:
    compiled = {g: re.compile(p) for g, p in lx.BRAND_GROUP_PATTERNS.items()}
    out: dict[str, set[str]] = {}
    for t in tax.types.values():
        if "brand" not in t.attributes:
            out[t.id] = set()
            continue
        key = f"{t.department}:{t.id}"
        out[t.id] = {g for g, rx in compiled.items() if rx.search(key)}
    return out


def store_priors(tax: Taxonomy, seed: int, qm: QueryModel) -> dict[str, np.ndarray]:
    """Product-type distribution of every store (zero where a type is not sold)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    type_ids = list(tax.types)
    base = np.array([tax.types[t].prior for t in type_ids], dtype=np.float64)
    dept_of = np.array([list(tax.departments).index(tax.types[t].department) for t in type_ids])
    n_dept = len(tax.departments)
    dept_mass = np.bincount(dept_of, weights=base, minlength=n_dept)
    dept_share = dept_mass / dept_mass.sum()
    keys = [f"{tax.types[t].department}:{t}" for t in type_ids]
    out: dict[str, np.ndarray] = {}
    for loc in LOCALES:
        dept_w = rng.dirichlet(qm.dept_concentration * dept_share + 1e-3)
        p = np.zeros(len(type_ids))
        for d in range(n_dept):
            members = np.flatnonzero(dept_of == d)
            within = base[members] / base[members].sum()
            p[members] = dept_w[d] * rng.dirichlet(qm.type_concentration * within + 1e-3)
        for pattern, factor in lx.LOCALE_TILTS.get(loc, ()):
            rx = re.compile(pattern)
            for k, key in enumerate(keys):
                if rx.search(key):
                    p[k] *= factor
        sold = np.array([tax.types[t].sold_in(loc) for t in type_ids])
        p = np.where(sold, np.maximum(p, 1e-6), 0.0)
        out[loc] = p / p.sum()
    return out


# =====================================================================================
# Writing one query
# =====================================================================================

_WORD_SLOTS = frozenset({"brand", "colour", "material", "audience", "style"})
_SLOT_WEIGHT = {"brand": 2.2, "colour": 1.3, "audience": 1.2, "size_apparel": 0.8, "size_shoe": 0.8}
_COLOUR_CUM = _cum([1.0 / (k + 1.5) for k in range(len(lx.COLOURS["en"]))])
_AUD_CUM = _cum(lx.AUDIENCE_WEIGHTS)
_LOCALE_SPELLING: Mapping[str, Mapping[str, str]] = MappingProxyType({"us": {"grey": "gray"}})


@dataclass
class _Query:
    text: str
    kind: str
    language: str
    n_attributes: int
    conflict_word: str = ""
    misspelled: bool = False
    accents_dropped: bool = False
    loanword: bool = False


def _word_slot(slot: str, lang: str, store: _Store, type_idx: int, rnd: random.Random,
               loan: bool) -> tuple[str, str, str] | None:
    """(text, position, compound prefix) of a word slot, or None if it cannot be filled."""
    rules = lx.LANGUAGE_RULES[lang]
    src = "en" if loan else lang
    if slot == "brand":
        pool = store.type_brands.get(type_idx)
        if pool is None:
            return None
        brand = store.brands[pool[0][_draw(pool[1], rnd)]]
        return brand.form(lang, rnd), "", ""
    if slot == "colour":
        k = _draw(_COLOUR_CUM, rnd)
        word = lx.pick_first_biased(lx.COLOURS[src][k], rnd)
        if src == "en":
            word = _LOCALE_SPELLING.get(store.locale, {}).get(word, word)
        return word, "", ""
    if slot == "style":
        return lx.pick_first_biased(lx.STYLES[src][int(rnd.random() * len(lx.STYLES[src]))], rnd), "", ""
    if slot == "material":
        sw = lx.MATERIALS[src][int(rnd.random() * len(lx.MATERIALS[src]))]
    else:  # audience
        sw = lx.AUDIENCES[src][_draw(_AUD_CUM, rnd)]
    pre = rnd.random() < rules.pre.get(slot, 0.5) if not loan else rnd.random() < 0.5
    if pre and not sw.pre:
        pre = False
    if not pre and not sw.post:
        pre = True
    text = lx.pick_first_biased(sw.pre if pre else sw.post, rnd)
    return text, "pre" if pre else "post", sw.prefix if not loan else ""


def _choose_slots(attrs: Sequence[str], n: int, rnd: random.Random) -> list[str]:
    pool = list(attrs)
    chosen: list[str] = []
    while pool and len(chosen) < n:
        cum = _cum([_SLOT_WEIGHT.get(s, 1.0) for s in pool])
        chosen.append(pool.pop(_draw(cum, rnd)))
    return chosen


def _assemble(store: _Store, lang: str, product: str, slots: list[str], type_idx: int, rnd: random.Random,
              q: _Query) -> str:
    """Put product word and attribute words in the language's order."""
    rules = lx.LANGUAGE_RULES[lang]
    type_id = store.type_ids[type_idx]
    pre: list[tuple[int, str]] = []
    post: list[tuple[int, str]] = []
    filled = 0
    for slot in slots:
        loan = lang != "en" and lang != "ja" and slot in ("colour", "audience", "style") and (
            rnd.random() < rules.loan_attr_prob
        )
        prefix = ""
        if slot in _WORD_SLOTS:
            got = _word_slot(slot, lang, store, type_idx, rnd, loan)
            if got is None:
                continue
            text, pos, prefix = got
        else:
            text, pos = lx.render_slot(slot, lang, store.locale, rnd, type_id)
        if loan:
            q.loanword = True
        filled += 1
        if (
            prefix
            and slot in rules.compound_slots
            and " " not in product
            and "-" not in product
            and rnd.random() < rules.compound_prob
        ):
            product = prefix + product  # herren + laufschuhe -> herrenlaufschuhe
            continue
        if not pos:
            pos = "pre" if rnd.random() < rules.pre.get(slot, 0.2) else "post"
        if pos == "pre":
            pre.append((rules.pre_order.index(slot) if slot in rules.pre_order else 99, text))
        else:
            post.append((rules.post_order.index(slot) if slot in rules.post_order else 99, text))
    q.n_attributes = filled
    pre.sort(key=lambda x: x[0])
    post.sort(key=lambda x: x[0])
    words = [w for _, w in pre] + [product] + [w for _, w in post]
    if len(words) > 2 and rnd.random() < rules.shuffle_prob:
        attrs = [w for _, w in pre] + [w for _, w in post]
        order = sorted(range(len(attrs)), key=lambda _: rnd.random())
        attrs = [attrs[k] for k in order]
        cut = int(rnd.random() * (len(attrs) + 1))
        words = attrs[:cut] + [product] + attrs[cut:]
    r = rnd.random()
    if r < store.qm.extra_word:
        extras = lx.EXTRA_WORDS[lang] + lx.LOCALE_EXTRA_WORDS.get(store.locale, ())
        extra = lx.pick_first_biased(lx.pick(extras, rnd), rnd)
        if lang == "ja" or rnd.random() < 0.6:
            words.append(extra)
        else:
            words.insert(0, extra)
    elif lang != "en" and r < store.qm.extra_word + store.qm.english_extra:
        words.append(lx.pick(lx.ENGLISH_LOAN_EXTRAS, rnd))
        q.loanword = True
    return _join(words, lang, rules, rnd)


def _join(words: list[str], lang: str, rules: lx.LanguageRules, rnd: random.Random) -> str:
    if lang == "ja":
        r = rnd.random()
        if r < rules.no_space_prob:
            return "".join(words)
        if r < rules.no_space_prob + 0.05:
            return "\u3000".join(words)  # ideographic (full-width) space
    return " ".join(words)


def _write_query(store: _Store, kind: str, type_idx: int, lang: str, n_attr: int, rnd: random.Random,
                 word: str = "", brand_idx: int = -1) -> _Query:
    """One search of ``kind`` for intent ``type_idx`` in ``lang`` (the noise comes after)."""
    rules = lx.LANGUAGE_RULES[lang]
    q = _Query("", kind, lang, 0)
    if kind == "brand_only":
        q.text = store.brands[brand_idx].form(lang, rnd)
        return q
    if kind == "brand_model":
        q.text = f"{store.brands[brand_idx].form(lang, rnd)} {lx.model_number(rnd)}"
        q.n_attributes = 1
        return q
    t = store.tax.types[store.type_ids[type_idx]]
    if kind == "conflict":
        product = word
        q.conflict_word = word
        if lang != "en":
            q.loanword = True
    else:
        forms = store.forms[(type_idx, lang)]
        product = forms.words[_draw(forms.cum, rnd)]
        if product in forms.local:
            q.loanword = True
        if lang != "en" and rnd.random() < rules.loan_product_prob:
            product = t.names["en"][0]
            q.loanword = True
        if product in lx.CONFLICT_WORDS:
            q.conflict_word = product
    slots = _choose_slots(t.attributes, n_attr, rnd) if n_attr else []
    q.text = _assemble(store, lang, product, slots, type_idx, rnd, q)
    return q


def _add_noise(q: _Query, store: _Store, rnd: random.Random) -> None:
    """Missing accents, a misspelling, IME full-width Latin, a capital letter."""
    rules = lx.LANGUAGE_RULES[q.language]
    text = q.text
    if rules.accent_drop_prob and rnd.random() < rules.accent_drop_prob:
        new = lx.drop_accents(text, q.language, rnd)
        if new != text:
            q.accents_dropped = True
            text = new
    if rnd.random() < rules.typo_prob * store.qm.typo_scale:
        new = lx.misspell(text, rules, rnd)
        if new != text:
            q.misspelled = True
            text = new
    if q.language == "ja" and rnd.random() < store.qm.fullwidth_ja:
        text = lx.to_fullwidth(text)
    elif rules.script == "latin" and rnd.random() < store.qm.capitalized:
        text = text[:1].upper() + text[1:]
    q.text = text


# =====================================================================================
# One store: searches, clicks, labels
# =====================================================================================


def _generate_searches(store: _Store, n: int, rng: np.random.Generator, rnd: random.Random,
                       with_conflicts: bool) -> tuple[list[_Query], np.ndarray]:
    """``n`` searches (plus the locale-dependent-word quota if ``with_conflicts``)."""
    qm = store.qm
    queries: list[_Query] = []
    intents: list[int] = []
    if with_conflicts:
        per_word = max(qm.conflict_min, round(qm.conflict_rate * n))
        lang = "en" if "en" in store.languages else store.languages[0]
        for word, ti in store.conflicts:
            for k in range(per_word):
                n_attr = 0 if k < qm.conflict_min or rnd.random() < 0.4 else 1 + int(rnd.random() * 2)
                q = _write_query(store, "conflict", ti, lang, n_attr, rnd, word=word)
                _add_noise(q, store, rnd) if k >= qm.conflict_min else None
                queries.append(q)
                intents.append(ti)
    drawn = np.searchsorted(store.prior_cum, rng.random(n) * store.prior_cum[-1], side="right")
    drawn = np.minimum(drawn, len(store.prior) - 1)
    n_attr_all = rng.choice(len(qm.n_attributes_p), size=n, p=np.asarray(qm.n_attributes_p) / sum(qm.n_attributes_p))
    kinds_u = rng.random(n)
    for j in range(n):
        lang = store.lang_list[_draw(store.lang_cum, rnd)] if len(store.lang_list) > 1 else store.lang_list[0]
        u = kinds_u[j]
        ti = int(drawn[j])
        if u < qm.brand_only + qm.brand_model and store.bare_brands:
            bi = store.bare_brands[_draw(store.bare_brand_cum, rnd)]
            types, cum = store.brand_type_cum[bi]
            if u < qm.brand_only:
                ti = types[_draw(cum, rnd)]
                q = _write_query(store, "brand_only", ti, lang, 0, rnd, brand_idx=bi)
            else:
                cands = store.brand_model_types[bi]
                if cands:
                    ti = cands[int(rnd.random() * len(cands))]
                    q = _write_query(store, "brand_model", ti, lang, 1, rnd, brand_idx=bi)
                else:
                    ti = types[_draw(cum, rnd)]
                    q = _write_query(store, "brand_only", ti, lang, 0, rnd, brand_idx=bi)
        else:
            q = _write_query(store, "product", ti, lang, int(n_attr_all[j]), rnd)
        _add_noise(q, store, rnd)
        queries.append(q)
        intents.append(ti)
    return queries, np.asarray(intents, dtype=np.int64)


def _click_labels(store: _Store, qid: np.ndarray, intents: np.ndarray, n_attr_q: np.ndarray,
                  cm: ClickModel, rng: np.random.Generator) -> tuple[dict[int, list[tuple[int, int]]], np.ndarray]:
    """Simulate clicks for every search and aggregate them per query.

    Returns ``{qid: [(type, clicks), ...]}`` of the types that pass the label rule
    (sorted by clicks, descending) and the total clicks per qid.
    """
    n_q = int(qid.max()) + 1 if len(qid) else 0
    T = len(store.type_ids)
    # per query (string): how focused its clicks are
    p_int = rng.beta(cm.intent_beta[0], cm.intent_beta[1], size=n_q)
    spec = np.minimum(n_attr_q, 3) * cm.specificity_gain
    p_int = 1.0 - (1.0 - p_int) * (1.0 - spec)
    p_noise = cm.noise * rng.gamma(2.0, 0.5, size=n_q)
    p_noise = np.minimum(p_noise, 1.0 - p_int)
    # per search: number of clicks
    n_clicks = 2 + rng.poisson(cm.extra_clicks_mean, size=len(qid))
    click_search = np.repeat(np.arange(len(qid)), n_clicks)
    click_q = qid[click_search]
    click_intent = intents[click_search]
    u = rng.random(len(click_search))
    v = rng.random(len(click_search))
    is_int = u < p_int[click_q]
    is_noise = u >= 1.0 - p_noise[click_q]
    is_rel = ~is_int & ~is_noise
    clicked = click_intent.copy()
    # related types: choose by cumulative weights of the intent's relations
    rel_rows = np.flatnonzero(is_rel)
    if len(rel_rows):
        ti = click_intent[rel_rows]
        k = (v[rel_rows, None] > store.rel_cum[ti]).sum(axis=1)
        k = np.minimum(k, store.rel_ids.shape[1] - 1)
        has = store.rel_n[ti] > 0
        clicked[rel_rows] = np.where(has, store.rel_ids[ti, k], ti)
    noise_rows = np.flatnonzero(is_noise)
    if len(noise_rows):
        picks = np.searchsorted(store.noise_cum, v[noise_rows] * store.noise_cum[-1], side="right")
        clicked[noise_rows] = np.minimum(picks, T - 1)
    key = click_q.astype(np.int64) * T + clicked
    uniq, counts = np.unique(key, return_counts=True)
    kq = uniq // T
    kt = uniq % T
    totals = np.bincount(kq, weights=counts, minlength=n_q)
    share = counts / totals[kq]
    keep = (share >= cm.min_share) & (counts >= cm.min_clicks)
    labels: dict[int, list[tuple[int, int]]] = {}
    for q_, t_, c_ in zip(kq[keep].tolist(), kt[keep].tolist(), counts[keep].tolist()):
        labels.setdefault(q_, []).append((t_, c_))
    for lst in labels.values():
        lst.sort(key=lambda x: (-x[1], x[0]))
    return labels, totals


def _simulate_store(store: _Store, target: int, seed: int, loc_index: int, cm: ClickModel) -> pd.DataFrame:
    """``target`` distinct labelled queries of one store (fewer only if generation stalls)."""
    from .schema import normalize_queries

    ss = np.random.SeedSequence([int(seed), 1000 + loc_index])
    gen_seed, click_seed = ss.spawn(2)
    rng = np.random.default_rng(gen_seed)
    rnd = random.Random(int(rng.integers(0, 2**63 - 1)))
    queries: list[_Query] = []
    intents_parts: list[np.ndarray] = []
    batch = int(target * 1.35) + 20
    for attempt in range(8):
        qs, its = _generate_searches(store, batch, rng, rnd, with_conflicts=(attempt == 0))
        queries.extend(qs)
        intents_parts.append(its)
        intents = np.concatenate(intents_parts)
        # one row per normalised query: case/width/space variants are the same query
        norm = normalize_queries(pd.Series([q.text for q in queries], dtype=object))
        qid, uniques = pd.factorize(norm, sort=False)
        qid = np.asarray(qid, dtype=np.int64)
        n_q = len(uniques)
        first = np.full(n_q, len(qid), dtype=np.int64)
        np.minimum.at(first, qid, np.arange(len(qid)))
        n_attr_q = np.array([queries[i].n_attributes for i in first], dtype=np.int64)
        click_rng = np.random.default_rng(click_seed)
        labels, totals = _click_labels(store, qid, intents, n_attr_q, cm, click_rng)
        valid = [k for k in range(n_q) if k in labels]
        if len(valid) >= target:
            break
        rate = max(len(valid) / max(len(queries), 1), 0.05)
        batch = int((target - len(valid)) / rate * 1.3) + 20
    kept = valid[:target]
    # per-query aggregates: most frequent intent, number of searches, flags of the first search
    T = len(store.type_ids)
    ikey = qid * T + intents
    iu, ic = np.unique(ikey, return_counts=True)
    order = np.lexsort((iu % T, -ic, iu // T))
    iu_sorted = iu[order]
    q_of = iu_sorted // T
    firsts = np.flatnonzero(np.r_[True, q_of[1:] != q_of[:-1]])
    top_intent = np.empty(n_q, dtype=np.int64)
    top_intent[q_of[firsts]] = iu_sorted[firsts] % T
    searches = np.bincount(qid, minlength=n_q)
    conflict_any: dict[int, str] = {}
    for i, q in enumerate(queries):
        if q.conflict_word and qid[i] not in conflict_any:
            conflict_any[int(qid[i])] = q.conflict_word
    ids = store.type_ids
    rows: dict[str, list[Any]] = {
        "query": [], "locale": [], "product_types": [], "weight": [], "intent": [], "sim_language": [],
        "sim_kind": [], "sim_n_attributes": [], "sim_conflict_word": [], "sim_misspelled": [],
        "sim_accents_dropped": [], "sim_loanword": [], "sim_searches": [], "sim_clicks": [],
    }
    for k in kept:
        q = queries[first[k]]
        rows["query"].append(q.text)
        rows["locale"].append(store.locale)
        rows["product_types"].append([ids[t] for t, _ in labels[k]])
        rows["weight"].append(1.0)
        rows["intent"].append(ids[top_intent[k]])
        rows["sim_language"].append(q.language)
        rows["sim_kind"].append(q.kind)
        rows["sim_n_attributes"].append(q.n_attributes)
        rows["sim_conflict_word"].append(conflict_any.get(k, ""))
        rows["sim_misspelled"].append(q.misspelled)
        rows["sim_accents_dropped"].append(q.accents_dropped)
        rows["sim_loanword"].append(q.loanword)
        rows["sim_searches"].append(int(searches[k]))
        rows["sim_clicks"].append(int(totals[k]))
    df = pd.DataFrame(rows)
    df.attrs["dropped_no_label"] = int(n_q - len(valid))
    df.attrs["searches"] = len(queries)
    return df


# =====================================================================================
# The whole shop
# =====================================================================================


def _split_of(norm: pd.Series, locales: pd.Series, seed: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """Split by a hash of (seed, locale, normalised query): stable and leak-free."""
    cut1 = fractions[0] / sum(fractions)
    cut2 = (fractions[0] + fractions[1]) / sum(fractions)
    out = np.empty(len(norm), dtype=object)
    prefix = f"{int(seed)}\x1f".encode()
    for i, (loc, q) in enumerate(zip(locales.tolist(), norm.tolist())):
        h = hashlib.blake2b(prefix + loc.encode() + b"\x1f" + q.encode("utf-8"), digest_size=8).digest()
        x = int.from_bytes(h, "big") / 2**64
        out[i] = "train" if x < cut1 else ("valid" if x < cut2 else "test")
    return out


@dataclass
class SimulationReport:
    """What :func:`simulate` did (for the datasheet)."""

    preset: str
    seed: int
    planned: dict[str, int]
    rows: dict[str, dict[str, int]]  # split -> locale -> rows
    searches: dict[str, int]
    dropped_no_label: dict[str, int]
    dropped_unseen_labels: dict[str, int]  # split -> labels removed (type not in train)
    dropped_unseen_rows: dict[str, int]  # split -> rows left without labels
    label_cardinality: float
    multi_label_share: float
    intent_in_labels: float
    ambiguous_examples: list[dict[str, Any]]
    conflict_examples: dict[str, dict[str, list[str]]]
    n_labels_train: int
    flags: dict[str, float]
    click_model: dict[str, Any]
    query_model: dict[str, Any]


def _simulate(preset: str | Preset = "quick", seed: int = 0, *, taxonomy: Taxonomy | None = None,
              click_model: ClickModel | None = None,
              query_model: QueryModel | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, Any], SimulationReport]:
    from .schema import normalize_queries

    p = _preset(preset)
    seed = check_seed(seed, "the simulator's seed (--seed)")
    tax = taxonomy or load_taxonomy()
    cm = click_model or ClickModel()
    qm = query_model or QueryModel()
    planned = planned_counts(p)
    priors = store_priors(tax, seed, qm)
    frames: list[pd.DataFrame] = []
    searches: dict[str, int] = {}
    dropped_no_label: dict[str, int] = {}
    for li, loc in enumerate(LOCALES):
        store = _Store(loc, tax, priors[loc], qm, cm)
        df = _simulate_store(store, planned[loc], seed, li, cm)
        searches[loc] = df.attrs["searches"]
        dropped_no_label[loc] = df.attrs["dropped_no_label"]
        df.attrs = {}
        frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    norm = normalize_queries(data["query"])
    data["_split"] = _split_of(norm, data["locale"], seed, p.split)
    splits: dict[str, pd.DataFrame] = {}
    train = data[data["_split"] == "train"].drop(columns="_split").reset_index(drop=True)
    train_labels = {t for labels in train["product_types"] for t in labels}
    splits["train"] = train
    dropped_labels: dict[str, int] = {"train": 0}
    dropped_rows: dict[str, int] = {"train": 0}
    for name in ("valid", "test"):
        part = data[data["_split"] == name].drop(columns="_split").reset_index(drop=True)
        before = part["product_types"].map(len).sum()
        part["product_types"] = [[t for t in labels if t in train_labels] for labels in part["product_types"]]
        dropped_labels[name] = int(before - part["product_types"].map(len).sum())
        empty = part["product_types"].map(len) == 0
        dropped_rows[name] = int(empty.sum())
        splits[name] = part[~empty].reset_index(drop=True)
    report = _report(p, seed, planned, splits, searches, dropped_no_label, dropped_labels, dropped_rows,
                     len(train_labels), cm, qm)
    return splits, _taxonomy_dict(tax, priors), report


def _report(p: Preset, seed: int, planned: dict[str, int], splits: dict[str, pd.DataFrame], searches: dict[str, int],
            dropped_no_label: dict[str, int], dropped_labels: dict[str, int], dropped_rows: dict[str, int],
            n_labels_train: int, cm: ClickModel, qm: QueryModel) -> SimulationReport:
    allrows = pd.concat([splits[s] for s in SPLIT_NAMES], ignore_index=True)
    card = allrows["product_types"].map(len)
    intent_in = [i in labels for i, labels in zip(allrows["intent"], allrows["product_types"])]
    amb = allrows[(allrows["sim_kind"] == "brand_only") & (card >= 2)].sort_values(
        "sim_searches", ascending=False, kind="stable"
    )
    ambiguous_examples = [
        {"query": r.query, "locale": r.locale, "product_types": list(r.product_types)} for r in amb.head(8).itertuples()
    ]
    conflict: dict[str, dict[str, list[str]]] = {}
    bare = allrows[allrows["sim_conflict_word"] != ""]
    bare = bare[bare["query"] == bare["sim_conflict_word"]]
    for r in bare.itertuples():
        conflict.setdefault(r.sim_conflict_word, {})[r.locale] = list(r.product_types)
    rows = {s: {loc: int(n) for loc, n in splits[s]["locale"].value_counts().reindex(list(LOCALES), fill_value=0).items()}
            for s in SPLIT_NAMES}
    flags = {
        name: round(float(allrows[col].mean()), 4)
        for name, col in (("misspelled", "sim_misspelled"), ("accents_dropped", "sim_accents_dropped"),
                          ("loanword", "sim_loanword"))
    }
    flags["conflict_word"] = round(float((allrows["sim_conflict_word"] != "").mean()), 4)
    flags["brand_only"] = round(float((allrows["sim_kind"] == "brand_only").mean()), 4)
    cm_d = asdict(cm)
    cm_d["relation_weights"] = dict(cm.relation_weights)
    cm_d["intent_beta"] = list(cm.intent_beta)
    return SimulationReport(
        preset=p.name, seed=int(seed), planned=planned, rows=rows, searches=searches,
        dropped_no_label=dropped_no_label, dropped_unseen_labels=dropped_labels, dropped_unseen_rows=dropped_rows,
        label_cardinality=round(float(card.mean()), 4), multi_label_share=round(float((card > 1).mean()), 4),
        intent_in_labels=round(float(np.mean(intent_in)), 4), ambiguous_examples=ambiguous_examples,
        conflict_examples=conflict, n_labels_train=n_labels_train, flags=flags, click_model=cm_d,
        query_model=asdict(qm),
    )


def _taxonomy_dict(tax: Taxonomy, priors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out = tax.to_dict()
    out["simulated"] = True
    out["summary"] = tax.summary()
    out["locale_words"] = {
        w: {loc: t for loc in LOCALES if (t := lx.conflict_type(w, loc, LOCALES[loc])) is not None and t in tax.types}
        for w in lx.CONFLICT_WORDS
    }
    out["local_forms"] = {
        loc: {t: list(forms) for t, forms in table.items() if t in tax.types}
        for loc, table in lx.LOCAL_FORMS.items()
    }
    type_ids = list(tax.types)
    out["top_types_per_locale"] = {
        loc: [type_ids[i] for i in np.argsort(-p, kind="stable")[:10]] for loc, p in priors.items()
    }
    return out


def simulate(preset: str = "quick", seed: int = 0) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Generate the SIMULATED store: ``({"train", "valid", "test"} -> DataFrame, taxonomy dict)``.

    Columns: ``query``, ``locale``, ``product_types`` (non-empty list of type ids, from
    simulated clicks), ``weight`` (1.0), ``intent`` (the clean intended type; analysis
    only) and ``sim_*`` analysis columns (``sim_language``, ``sim_kind``,
    ``sim_n_attributes``, ``sim_conflict_word``, ``sim_misspelled``,
    ``sim_accents_dropped``, ``sim_loanword``, ``sim_searches``, ``sim_clicks``).
    The taxonomy dict is the content of ``taxonomy.json``. Deterministic in ``seed``.
    """
    splits, tax, _ = _simulate(preset, seed)
    return splits, tax


# =====================================================================================
# Files
# =====================================================================================


def _datasheet(r: SimulationReport, tax: Mapping[str, Any], fmt: str) -> str:
    total = {s: sum(r.rows[s].values()) for s in SPLIT_NAMES}
    lines = [
        f"# Datasheet: q2pt SIMULATED global shop (preset `{r.preset}`, seed {r.seed})",
        "",
        "**This dataset is SIMULATED.** No query, click or label comes from a real shop or real users.",
        f"It was generated by `q2pt.data.simulate` (simulator version {SIMULATOR_VERSION}) to develop, test and",
        "demonstrate q2pt offline. Numbers measured on it describe this simulation, not real traffic.",
        "",
        "## Contents",
        "",
        f"- Files: `train.{fmt}`, `valid.{fmt}`, `test.{fmt}`, `taxonomy.json`, `simulated.json`, this file.",
        "- Columns: `query`, `locale`, `product_types` (list of type ids, from simulated clicks; q2pt loads them as",
        "  `department > group > type` paths, the store's tree, unless `data.simulated_tree` is false),",
        "  `weight` (1.0),",
        "  `intent` (the clean intended type; analysis only, do not train on it) and analysis columns",
        "  `sim_language`, `sim_kind` (product / brand_only / brand_model / conflict), `sim_n_attributes`,",
        "  `sim_conflict_word`, `sim_misspelled`, `sim_accents_dropped`, `sim_loanword`, `sim_searches`, `sim_clicks`.",
        (f"- Rows: train {total['train']:,}, valid {total['valid']:,}, test {total['test']:,} "
        f"(total {sum(total.values()):,})."),
        (f"- Taxonomy: {tax['summary']['n_types']} product types in {tax['summary']['n_departments']} departments, "
        f"{tax['summary']['n_locale_restricted']} sold only in some stores, "
        f"{tax['summary']['n_related_links']} related-type links; {r.n_labels_train} types occur as train labels."),
        f"- Labels per query: {r.label_cardinality:.2f} on average; {100 * r.multi_label_share:.1f}% of queries have",
        f"  more than one label; the clean intent is among the labels of {100 * r.intent_in_labels:.1f}% of queries.",
        "",
        "## Stores",
        "",
        "| locale | languages | planned | searches | train | valid | test |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for loc in LOCALES:
        lines.append(
            f"| {loc} | {', '.join(LOCALES[loc])} | {r.planned[loc]:,} | {r.searches[loc]:,} | "
            f"{r.rows['train'][loc]:,} | {r.rows['valid'][loc]:,} | {r.rows['test'][loc]:,} |"
        )
    sizes = {loc: sum(r.rows[s][loc] for s in SPLIT_NAMES) for loc in LOCALES}
    big, small = max(sizes, key=sizes.__getitem__), min(sizes, key=sizes.__getitem__)
    cm, qm = r.click_model, r.query_model
    lines += [
        "",
        (f"Largest store: {big} ({sizes[big]:,} queries); smallest: {small} ({sizes[small]:,}); "
        f"ratio {sizes[big] / max(sizes[small], 1):.1f}x."),
        "",
        "## How it was made",
        "",
        f"- Generator: `q2pt.data.simulate`, preset `{r.preset}`, seed {r.seed}; the same preset and seed give",
        "  byte-identical files. Word lists: `q2pt.data.lexicon`; product types: `q2pt.data.taxonomy`.",
        ("- Store priors: taxonomy priors x Dirichlet perturbation per department (concentration "
        f"{qm['dept_concentration']}) and per type ({qm['type_concentration']}) x hand-set tilts per store; "
        "types with `locales_only` are sold only there."),
        ("- Queries: the intent's surface form in the store's language plus 0-4 attributes (P = "
        f"{', '.join(str(x) for x in qm['n_attributes_p'])}) in that language's word order; bare brands "
        f"{qm['brand_only']:.1%}, brand + model number {qm['brand_model']:.1%}; locale-dependent words "
        f"{qm['conflict_rate']:.1%} of searches per word (at least {qm['conflict_min']}); misspellings, missing "
        "accents, English loanwords and store-specific words at per-language rates (see lexicon.LANGUAGE_RULES)."),
        (f"- Clicks: 2 + Poisson({cm['extra_clicks_mean']}) per search; share on the intent ~ Beta"
        f"{tuple(cm['intent_beta'])} per query, sharpened by {cm['specificity_gain']} per attribute; noise "
        f"share ~ {cm['noise']} x Gamma(2, 0.5) on types drawn with prob ~ prior^{cm['noise_temperature']}; the "
        f"rest on related types (weights {cm['relation_weights']})."),
        (f"- Label rule (as the click-log converter): a type is a label when its click share >= {cm['min_share']} "
        f"and its clicks >= {cm['min_clicks']}, after aggregating all searches of the same (query, locale). "
        f"Queries with no type passing the rule were dropped: {sum(r.dropped_no_label.values()):,}."),
        "- Split: 80/10/10 by a hash of (seed, locale, normalised query) (NFKC, case-folded, whitespace collapsed),",
        "  so no (normalised query, locale) is in two splits.",
        (f"- Valid/test labels of types never seen in train were removed: valid {r.dropped_unseen_labels['valid']:,} "
        f"labels ({r.dropped_unseen_rows['valid']:,} rows left empty and dropped), test "
        f"{r.dropped_unseen_labels['test']:,} labels ({r.dropped_unseen_rows['test']:,} rows dropped)."),
        "",
        "## Measured traits",
        "",
        (f"- Share of queries with a misspelling: {r.flags['misspelled']:.1%}; typed without accents: "
        f"{r.flags['accents_dropped']:.1%}; with an injected English/loan word: {r.flags['loanword']:.1%}; "
        f"with a locale-dependent word: {r.flags['conflict_word']:.1%}; bare brand: {r.flags['brand_only']:.1%}."),
    ]
    if r.conflict_examples:
        lines += ["- Locale-dependent words (labels of the bare word per store):"]
        for word in sorted(r.conflict_examples):
            per = r.conflict_examples[word]
            shown = "; ".join(f"{loc}: {', '.join(per[loc])}" for loc in sorted(per))
            lines.append(f"  - `{word}` -> {shown}")
    if r.ambiguous_examples:
        lines += ["- Ambiguous bare-brand queries (several labels), e.g.:"]
        for ex in r.ambiguous_examples[:5]:
            lines.append(f"  - `{ex['query']}` ({ex['locale']}): {', '.join(ex['product_types'])}")
    lines += [
        "",
        "## Known limitations",
        "",
        "- Simulated: the vocabulary is limited to the taxonomy names and the lexicon's word lists; real shoppers",
        "  use many more words, product names and spellings. Grammar is simplified (little gender/case agreement).",
        "- Labels come from a simple click model (independent clicks, no position bias, no purchases); real click",
        "  labels have other biases.",
        "- Store differences are hand-set (priors, tilts, a dozen locale-dependent words), not measured.",
        "- Model numbers are random strings; they carry no signal beyond the brand.",
        "- Results on this data do not transfer to real traffic without validation on real data.",
        "",
    ]
    return "\n".join(lines)


def write_simulated(out_dir: str | Path, preset: str = "quick", seed: int = 0, fmt: str = "parquet", *,
                    overwrite: bool = False) -> dict[str, Any]:
    """Generate the SIMULATED store and write it to ``out_dir`` atomically.

    Writes ``train/valid/test.<fmt>`` (parquet, jsonl, csv or tsv), ``taxonomy.json``,
    ``simulated.json`` (marks the folder as simulated for :func:`q2pt.data.load_dataset`)
    and ``DATASHEET.md``. An existing folder is replaced only if it holds an earlier
    simulated dataset (it has ``simulated.json``) or ``overwrite`` is true; anything else
    raises :class:`ConfigError`. Returns a summary: ``out_dir``, ``files``, ``rows``.
    """
    from q2pt.io import atomic_path

    from .io import write_table
    from .schema import FORMAT_EXT, fingerprint

    out = Path(out_dir).expanduser().resolve()
    if fmt not in FORMAT_EXT:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMAT_EXT)}")
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out} is a file; the simulated dataset is a folder")
        if any(out.iterdir()) and not overwrite and not (out / "simulated.json").is_file():
            raise ConfigError(f"{out} exists and is not a simulated dataset; choose another folder or pass --overwrite")
    splits, tax, report = _simulate(preset, seed)
    ext = FORMAT_EXT[fmt]
    manifest = {
        "simulated": True,
        "preset": report.preset,
        "seed": int(seed),
        "version": _version(),
        "fingerprint": fingerprint(splits),
        "rows": {s: len(splits[s]) for s in SPLIT_NAMES},
        "taxonomy": tax,
    }
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for s in SPLIT_NAMES:
            write_table(splits[s], tmp / f"{s}{ext}", fmt)
        (tmp / "taxonomy.json").write_text(json.dumps(tax, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "simulated.json").write_text(
            json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (tmp / "DATASHEET.md").write_text(_datasheet(report, tax, fmt), encoding="utf-8")
    return {
        "out_dir": str(out),
        "files": [f"{s}{ext}" for s in SPLIT_NAMES] + ["taxonomy.json", "simulated.json", "DATASHEET.md"],
        "rows": {s: len(splits[s]) for s in SPLIT_NAMES},
        "preset": report.preset,
        "seed": int(seed),
        "fingerprint": manifest["fingerprint"],
    }


def _version() -> str:
    """The version string ``q2pt.data`` stores in a simulated cache manifest."""
    from q2pt import __version__

    return f"{__version__}/{SIMULATOR_VERSION}"
