"""Per-language attribute words and query-writing rules of the SIMULATED global shop.

Everything the simulator (:mod:`q2pt.data.simulate`) needs besides the product-type
names of the taxonomy lives here:

* attribute words in the 12 languages (colours, materials, audiences, styles, sizes and
  units, packs, ages, power, model numbers), aligned by index with English so that an
  English loanword can replace a local word;
* brands, global and local (per locale), with their Japanese/Arabic spellings and the
  product groups they sell;
* word-order rules per language (which attributes go before the product word, German /
  Dutch / Swedish compounds such as ``herrenlaufschuhe``, Japanese written without
  spaces, Arabic noun-first order), number formats (decimal comma, Arabic-Indic digits)
  and the shoe-size system of each store;
* noise generators: keyboard typos, dropped/doubled/swapped letters, missing accents,
  transliteration (``ü`` -> ``ue``, katakana -> hiragana), Arabic spelling variants,
  full-width Latin in Japanese;
* store facts: traffic shares, language mix, product-type tilts, locale-dependent words
  (``pants``, ``chips``, ``football`` ...) and locale-only surface forms (de ``handy``).

All choices take a :class:`random.Random` and use only ``rnd.random()``, so a seeded
generator gives the same words on every platform.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "BRANDS",
    "CONFLICT_WORDS",
    "LANGUAGE_RULES",
    "LOCALE_SHARES",
    "Brand",
    "LanguageRules",
    "conflict_type",
    "drop_accents",
    "misspell",
    "render_slot",
]

LANGS: tuple[str, ...] = ("en", "fr", "es", "pt", "de", "it", "nl", "sv", "pl", "tr", "ar", "ja")


def pick(seq: Sequence[str], rnd: random.Random) -> str:
    """A uniformly chosen element (uses only ``rnd.random()``: stable across Python versions)."""
    return seq[int(rnd.random() * len(seq))]


def pick_first_biased(variants: str, rnd: random.Random, first: float = 0.6) -> str:
    """Pick from ``"a|b|c"``: the first variant with probability ``first``, else uniform."""
    parts = variants.split("|")
    if len(parts) == 1 or rnd.random() < first:
        return parts[0]
    return pick(parts[1:], rnd)


# =====================================================================================
# Stores
# =====================================================================================

#: Share of the shop's search traffic per store (normalised by the simulator). The
#: largest store has ~30x the queries of the smallest; pl and se are among the small.
LOCALE_SHARES: Mapping[str, float] = MappingProxyType(
    {
        "us": 0.220, "uk": 0.100, "de": 0.100, "jp": 0.080, "in": 0.065, "fr": 0.060,
        "ca": 0.050, "it": 0.045, "es": 0.045, "br": 0.040, "mx": 0.035, "au": 0.030,
        "ae": 0.025, "nl": 0.020, "tr": 0.020, "sa": 0.015, "sg": 0.012, "eg": 0.010,
        "pl": 0.007, "se": 0.007,
    }
)

#: Language mix of the bilingual stores (others use their one language).
LOCALE_LANGUAGE_MIX: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {"ca": {"en": 0.75, "fr": 0.25}, "ae": {"en": 0.55, "ar": 0.45}}
)

#: Stores writing decimals with a comma (1,5 l).
DECIMAL_COMMA: frozenset[str] = frozenset({"ca-fr", "br", "de", "fr", "it", "es", "nl", "se", "pl", "tr"})

#: Probability that an Arabic-language query writes numbers in Arabic-Indic digits.
ARABIC_DIGITS_PROB: Mapping[str, float] = MappingProxyType({"ae": 0.12, "sa": 0.3, "eg": 0.35})

#: Hand-set tilts of the product-type priors per store: (regex on "department:type", factor).
LOCALE_TILTS: Mapping[str, tuple[tuple[str, float], ...]] = MappingProxyType(
    {
        "us": ((r"^(sports_outdoors|automotive|tools_diy):", 1.3), (r":(american_football|baseball_glove|bbq_grill)$", 1.8)),
        "ca": ((r"^sports_outdoors:", 1.3), (r":(ice_hockey_stick|snow_\w+|winter_tires|engine_block_heater)$", 2.0)),
        "mx": ((r":(tortilla_press)$", 3.0), (r"^(phones|beauty):", 1.3)),
        "br": ((r"^(beauty|health_personal_care):", 1.5), (r":(flip_flops|soccer_ball)$", 1.8)),
        "uk": ((r"^garden:", 1.4), (r":(electric_kettle|tea)$", 2.0)),
        "de": ((r"^(tools_diy|automotive):", 1.6), (r":(bicycle|winter_tires)$", 1.5)),
        "fr": ((r"^(beauty|grocery):", 1.3), (r":(perfume|baking_mix)$", 1.6)),
        "it": ((r"^(kitchen|grocery):", 1.4), (r":(coffee|coffee_maker|pasta|olive_oil)$", 2.0)),
        "es": ((r"^(clothing|shoes):", 1.2), (r":(espadrilles|olive_oil)$", 2.5)),
        "nl": ((r":(bicycle|bike_helmet)$", 2.5), (r"^garden:", 1.3)),
        "se": ((r"^(sports_outdoors|furniture|home_decor):", 1.4), (r":(cross_country_skis|sled|snow_\w+)$", 1.8)),
        "pl": ((r"^(tools_diy|automotive|garden):", 1.4),),
        "tr": ((r"^(home_decor|kitchen|clothing):", 1.3), (r":(tea|prayer_rug|rug|okey_set)$", 1.8)),
        "ae": ((r"^(beauty|jewellery_watches):", 1.6), (r":(perfume|attar|abaya|prayer_rug|incense_burner)$", 2.5)),
        "sa": ((r"^(beauty|jewellery_watches):", 1.4), (r":(perfume|attar|abaya|thobe|prayer_rug|dates|miswak)$", 2.5)),
        "eg": ((r"^(phones|tv_audio_camera):", 1.6), (r":(prayer_rug|prayer_beads|tea)$", 1.8)),
        "in": ((r"^phones:", 2.2), (r":(mobile_phone|phone_charger|power_bank|wireless_earbuds|pressure_cooker|mangalsutra|cricket_bat)$", 2.0)),
        "jp": ((r"^(tv_audio_camera|computers|video_games|phones):", 1.8), (r":(rice_cooker|kotatsu|takoyaki_pan|natto|hanko)$", 2.5)),
        "au": ((r"^(sports_outdoors|garden):", 1.4), (r":(sunscreen|swimsuit|flip_flops|bbq_grill)$", 1.8)),
        "sg": ((r"^(tv_audio_camera|phones|beauty):", 1.4), (r":(sunscreen|face_serum|sheet_mask)$", 1.6)),
    }
)


# =====================================================================================
# Language rules
# =====================================================================================


@dataclass(frozen=True)
class LanguageRules:
    """How shoppers writing in one language assemble a query."""

    code: str
    pre: Mapping[str, float]  # P(slot is written before the product word)
    pre_order: tuple[str, ...]  # order of the words before the product (outermost first)
    post_order: tuple[str, ...]  # order of the words after the product
    compound_slots: frozenset[str] = frozenset()  # slots glued onto a one-word product
    compound_prob: float = 0.0
    no_space_prob: float = 0.0  # Japanese: whole query written without spaces
    accent_drop_prob: float = 0.0  # query typed without diacritics
    typo_prob: float = 0.06  # one misspelling in the query
    loan_product_prob: float = 0.0  # product word replaced by the English name
    loan_attr_prob: float = 0.0  # an attribute word replaced by its English form
    shuffle_prob: float = 0.1  # attribute order scrambled
    keyboard: str = "qwerty"
    script: str = "latin"


_NUM_SLOTS = (
    "size_screen", "capacity_storage", "size_volume", "size_weight", "size_length", "power", "pack",
)
_DEFAULT_PRE_ORDER = ("brand", *_NUM_SLOTS, "style", "colour", "material", "audience", "age", "model_number",
                      "size_apparel", "size_shoe")
_ROMANCE_POST = ("model_number", "material", "audience", "colour", "style", "brand", "size_apparel", "size_shoe",
                 *_NUM_SLOTS, "age")


def _pre(**overrides: float) -> Mapping[str, float]:
    base = {
        "brand": 0.5, "colour": 0.5, "material": 0.5, "audience": 0.5, "style": 0.5,
        "size_apparel": 0.05, "size_shoe": 0.05, "size_volume": 0.2, "size_weight": 0.2,
        "size_length": 0.2, "size_screen": 0.2, "capacity_storage": 0.15, "pack": 0.15,
        "power": 0.2, "age": 0.05, "model_number": 0.1,
    }
    base.update(overrides)
    return MappingProxyType(base)


LANGUAGE_RULES: Mapping[str, LanguageRules] = MappingProxyType(
    {
        "en": LanguageRules(
            "en",
            _pre(brand=0.85, colour=0.75, material=0.85, audience=0.75, style=0.9, size_volume=0.45,
                 size_weight=0.35, size_length=0.45, size_screen=0.65, capacity_storage=0.3, pack=0.3,
                 power=0.4, age=0.1, model_number=0.15),
            _DEFAULT_PRE_ORDER,
            ("model_number", "material", "colour", "audience", "size_apparel", "size_shoe", *_NUM_SLOTS, "age",
             "brand", "style"),
            typo_prob=0.07,
        ),
        "fr": LanguageRules(
            "fr", _pre(brand=0.5, colour=0.05, material=0.03, audience=0.0, style=0.1, size_screen=0.1),
            _DEFAULT_PRE_ORDER, _ROMANCE_POST, accent_drop_prob=0.22, loan_product_prob=0.05,
            loan_attr_prob=0.05, keyboard="azerty",
        ),
        "es": LanguageRules(
            "es", _pre(brand=0.4, colour=0.03, material=0.03, audience=0.0, style=0.05, size_screen=0.1),
            _DEFAULT_PRE_ORDER, _ROMANCE_POST, accent_drop_prob=0.3, loan_product_prob=0.05, loan_attr_prob=0.06,
        ),
        "pt": LanguageRules(
            "pt", _pre(brand=0.35, colour=0.03, material=0.03, audience=0.0, style=0.05, size_screen=0.1),
            _DEFAULT_PRE_ORDER, _ROMANCE_POST, accent_drop_prob=0.3, loan_product_prob=0.05, loan_attr_prob=0.06,
        ),
        "it": LanguageRules(
            "it", _pre(brand=0.45, colour=0.03, material=0.03, audience=0.0, style=0.05, size_screen=0.1),
            _DEFAULT_PRE_ORDER, _ROMANCE_POST, accent_drop_prob=0.15, loan_product_prob=0.05, loan_attr_prob=0.06,
        ),
        "de": LanguageRules(
            "de",
            _pre(brand=0.85, colour=0.45, material=0.4, audience=0.6, style=0.6, size_screen=0.5, size_volume=0.3,
                 pack=0.3, power=0.4),
            _DEFAULT_PRE_ORDER,
            ("model_number", "material", "colour", "audience", "size_apparel", "size_shoe", *_NUM_SLOTS, "age",
             "brand", "style"),
            compound_slots=frozenset({"audience", "material"}), compound_prob=0.35, accent_drop_prob=0.12,
            loan_product_prob=0.06, loan_attr_prob=0.05, keyboard="qwertz",
        ),
        "nl": LanguageRules(
            "nl",
            _pre(brand=0.8, colour=0.5, material=0.55, audience=0.55, style=0.6, size_screen=0.4, pack=0.2),
            _DEFAULT_PRE_ORDER,
            ("model_number", "material", "colour", "audience", "size_apparel", "size_shoe", *_NUM_SLOTS, "age",
             "brand", "style"),
            compound_slots=frozenset({"audience"}), compound_prob=0.3, accent_drop_prob=0.05,
            loan_product_prob=0.07, loan_attr_prob=0.06,
        ),
        "sv": LanguageRules(
            "sv",
            _pre(brand=0.8, colour=0.55, material=0.5, audience=0.5, style=0.6, size_screen=0.4),
            _DEFAULT_PRE_ORDER,
            ("model_number", "material", "colour", "audience", "size_apparel", "size_shoe", *_NUM_SLOTS, "age",
             "brand", "style"),
            compound_slots=frozenset({"audience", "material"}), compound_prob=0.4, accent_drop_prob=0.15,
            loan_product_prob=0.06, loan_attr_prob=0.06,
        ),
        "pl": LanguageRules(
            "pl", _pre(brand=0.4, colour=0.35, material=0.4, audience=0.25, style=0.4, size_screen=0.2),
            _DEFAULT_PRE_ORDER, _ROMANCE_POST, accent_drop_prob=0.35, loan_product_prob=0.05, loan_attr_prob=0.05,
            keyboard="qwerty",
        ),
        "tr": LanguageRules(
            "tr",
            _pre(brand=0.85, colour=0.8, material=0.85, audience=0.8, style=0.8, size_screen=0.6, size_volume=0.4,
                 pack=0.2),
            _DEFAULT_PRE_ORDER,
            ("model_number", "material", "colour", "audience", "size_apparel", "size_shoe", *_NUM_SLOTS, "age",
             "brand", "style"),
            accent_drop_prob=0.35, loan_product_prob=0.04, loan_attr_prob=0.04, keyboard="turkish_q",
        ),
        "ar": LanguageRules(
            "ar", _pre(brand=0.25, colour=0.05, material=0.05, audience=0.05, style=0.1, size_screen=0.1),
            _DEFAULT_PRE_ORDER,
            ("model_number", "material", "brand", "audience", "colour", "style", "size_apparel", "size_shoe",
             *_NUM_SLOTS, "age"),
            accent_drop_prob=0.3, typo_prob=0.05, loan_product_prob=0.04, loan_attr_prob=0.04, keyboard="",
            script="arabic",
        ),
        "ja": LanguageRules(
            "ja",
            _pre(brand=0.9, colour=0.45, material=0.7, audience=0.5, style=0.85, size_screen=0.5, size_volume=0.3,
                 size_apparel=0.1),
            _DEFAULT_PRE_ORDER,
            ("model_number", "audience", "colour", "material", "size_apparel", "size_shoe", *_NUM_SLOTS, "age",
             "brand", "style"),
            no_space_prob=0.35, typo_prob=0.03, loan_product_prob=0.01, loan_attr_prob=0.0, keyboard="",
            script="japanese",
        ),
    }
)


# =====================================================================================
# Attribute words, aligned by index with English ("a|b" = variants, first most common)
# =====================================================================================

COLOURS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": ("black", "white", "red", "blue", "green", "grey|gray", "pink", "yellow", "brown", "beige",
               "navy|navy blue", "silver", "gold", "purple"),
        "fr": ("noir|noire", "blanc|blanche", "rouge", "bleu|bleue", "vert|verte", "gris|grise", "rose",
               "jaune", "marron", "beige", "bleu marine|marine", "argent|argenté", "doré|or", "violet|violette"),
        "es": ("negro|negra|negras", "blanco|blanca", "rojo|roja", "azul", "verde", "gris", "rosa",
               "amarillo|amarilla", "marrón|café", "beige", "azul marino", "plateado|plata", "dorado|dorada",
               "morado|morada"),
        "pt": ("preto|preta", "branco|branca", "vermelho|vermelha", "azul", "verde", "cinza", "rosa",
               "amarelo|amarela", "marrom", "bege", "azul marinho", "prata|prateado", "dourado|dourada", "roxo|roxa"),
        "de": ("schwarz|schwarze|schwarzer", "weiß|weiss|weiße", "rot|rote", "blau|blaue", "grün|grüne",
               "grau|graue", "rosa", "gelb|gelbe", "braun|braune", "beige", "navy|dunkelblau", "silber",
               "gold", "lila"),
        "it": ("nero|nera|neri|nere", "bianco|bianca|bianchi", "rosso|rossa", "blu", "verde", "grigio|grigia",
               "rosa", "giallo|gialla", "marrone", "beige", "blu navy|blu scuro", "argento", "oro", "viola"),
        "nl": ("zwart|zwarte", "wit|witte", "rood|rode", "blauw|blauwe", "groen|groene", "grijs|grijze",
               "roze", "geel|gele", "bruin|bruine", "beige", "donkerblauw|navy", "zilver", "goud", "paars|paarse"),
        "sv": ("svart|svarta", "vit|vita", "röd|röda", "blå", "grön|gröna", "grå", "rosa", "gul|gula",
               "brun|bruna", "beige", "marinblå", "silver", "guld", "lila"),
        "pl": ("czarny|czarna|czarne", "biały|biała|białe", "czerwony|czerwona|czerwone",
               "niebieski|niebieska|niebieskie", "zielony|zielona|zielone", "szary|szara|szare",
               "różowy|różowa|różowe", "żółty|żółta|żółte", "brązowy|brązowa|brązowe", "beżowy|beżowa|beżowe",
               "granatowy|granatowa|granatowe", "srebrny|srebrna|srebrne", "złoty|złota|złote",
               "fioletowy|fioletowa|fioletowe"),
        "tr": ("siyah", "beyaz", "kırmızı", "mavi", "yeşil", "gri", "pembe", "sarı", "kahverengi", "bej",
               "lacivert", "gümüş", "altın", "mor"),
        "ar": ("أسود|اسود", "أبيض|ابيض", "أحمر|احمر", "أزرق|ازرق", "أخضر|اخضر", "رمادي", "وردي|زهري",
               "أصفر|اصفر", "بني", "بيج", "كحلي", "فضي", "ذهبي", "بنفسجي|موف"),
        "ja": ("黒|ブラック", "白|ホワイト", "赤|レッド", "青|ブルー", "緑|グリーン", "グレー|灰色", "ピンク",
               "黄色|イエロー", "茶色|ブラウン", "ベージュ", "ネイビー|紺", "シルバー", "ゴールド", "紫|パープル"),
    }
)


@dataclass(frozen=True)
class SlotWord:
    """An attribute value in one language: forms before / after the product word and
    the prefix used in compounds (de ``leder`` + ``jacke`` -> ``lederjacke``)."""

    pre: str = ""
    post: str = ""
    prefix: str = ""


def _sw(pre: str = "", post: str = "", prefix: str = "") -> SlotWord:
    return SlotWord(pre, post or pre, prefix)


def _po(post: str) -> SlotWord:
    """A value that only goes after the product word."""
    return SlotWord("", post, "")


# cotton, leather, wool, wood, stainless steel, glass, plastic, silk, linen, bamboo
MATERIALS: Mapping[str, tuple[SlotWord, ...]] = MappingProxyType(
    {
        "en": tuple(_sw(x) for x in ("cotton", "leather", "wool|wool blend", "wooden|wood", "stainless steel|steel",
                                     "glass", "plastic", "silk", "linen", "bamboo")),
        "fr": tuple(_po(x) for x in ("en coton|coton", "en cuir|cuir", "en laine|laine", "en bois|bois",
                                     "inox|en inox", "en verre|verre", "en plastique|plastique", "en soie|soie",
                                     "en lin|lin", "en bambou|bambou")),
        "es": tuple(_po(x) for x in ("de algodón|algodón", "de cuero|de piel|cuero", "de lana|lana",
                                     "de madera|madera", "de acero inoxidable|inox", "de vidrio|de cristal",
                                     "de plástico|plastico", "de seda|seda", "de lino|lino", "de bambú|bambú")),
        "pt": tuple(_po(x) for x in ("de algodão|algodão", "de couro|couro", "de lã|lã", "de madeira|madeira",
                                     "inox|de aço inox", "de vidro|vidro", "de plástico|plástico", "de seda|seda",
                                     "de linho|linho", "de bambu|bambu")),
        "it": tuple(_po(x) for x in ("in cotone|cotone", "in pelle|pelle", "in lana|lana", "in legno|legno",
                                     "in acciaio inox|inox", "in vetro|vetro", "in plastica|plastica",
                                     "in seta|seta", "in lino|lino", "in bambù|bambù")),
        "de": (
            SlotWord("baumwolle", "baumwolle|aus baumwolle", "baumwoll"),
            SlotWord("leder", "leder|aus leder|echtleder", "leder"),
            SlotWord("wolle", "wolle|aus wolle", "woll"),
            SlotWord("holz", "holz|aus holz|massivholz", "holz"),
            SlotWord("edelstahl", "edelstahl", "edelstahl"),
            SlotWord("glas", "glas|aus glas", "glas"),
            SlotWord("kunststoff|plastik", "kunststoff|aus plastik", "plastik"),
            SlotWord("seide", "seide|aus seide", "seiden"),
            SlotWord("leinen", "leinen", "leinen"),
            SlotWord("bambus", "bambus", "bambus"),
        ),
        "nl": (
            SlotWord("katoenen", "katoen", ""), SlotWord("leren", "leer|leder", ""), SlotWord("wollen", "wol", ""),
            SlotWord("houten", "hout", ""), SlotWord("rvs", "rvs", ""), SlotWord("glazen", "glas", ""),
            SlotWord("plastic", "plastic|kunststof", ""), SlotWord("zijden", "zijde", ""),
            SlotWord("linnen", "linnen", ""), SlotWord("bamboe", "bamboe", ""),
        ),
        "sv": (
            SlotWord("bomull", "bomull", "bomulls"), SlotWord("läder", "läder|skinn", "läder"),
            SlotWord("ull", "ull", "ull"), SlotWord("trä", "trä", "trä"), SlotWord("rostfritt stål", "rostfri", ""),
            SlotWord("glas", "glas", "glas"), SlotWord("plast", "plast", "plast"), SlotWord("siden", "siden", "siden"),
            SlotWord("linne", "linne", "linne"), SlotWord("bambu", "bambu", "bambu"),
        ),
        "pl": tuple(_sw(x) for x in ("bawełniany|bawełniana|bawełniane", "skórzany|skórzana|skórzane|ze skóry",
                                     "wełniany|wełniana", "drewniany|drewniana|drewniane",
                                     "ze stali nierdzewnej|nierdzewny", "szklany|szklana|szklane",
                                     "plastikowy|plastikowa|plastikowe", "jedwabny|jedwabna", "lniany|lniana",
                                     "bambusowy|bambusowa")),
        "tr": tuple(_sw(x) for x in ("pamuklu|pamuk", "deri|hakiki deri", "yün", "ahşap", "paslanmaz çelik|çelik",
                                     "cam", "plastik", "ipek", "keten", "bambu")),
        "ar": tuple(_po(x) for x in ("قطن|قطني", "جلد|جلد طبيعي", "صوف", "خشب|خشبي", "ستانلس ستيل|استانلس",
                                     "زجاج|زجاجي", "بلاستيك", "حرير", "كتان", "بامبو")),
        "ja": tuple(_sw(x) for x in ("綿|コットン", "革|レザー|本革", "ウール", "木製|天然木", "ステンレス",
                                     "ガラス", "プラスチック", "シルク", "リネン", "竹")),
    }
)

AUDIENCE_KEYS: tuple[str, ...] = ("men", "women", "kids", "baby", "boys", "girls")
AUDIENCE_WEIGHTS: tuple[float, ...] = (0.34, 0.36, 0.14, 0.06, 0.05, 0.05)

AUDIENCES: Mapping[str, tuple[SlotWord, ...]] = MappingProxyType(
    {
        "en": (SlotWord("mens|men's|men", "for men|men"), SlotWord("womens|women's|ladies|women", "for women|womens"),
               SlotWord("kids|kid's|childrens", "for kids|kids"), SlotWord("baby|infant", "for baby|baby"),
               SlotWord("boys", "for boys|boys"), SlotWord("girls", "for girls|girls")),
        "fr": (_po("homme|pour homme"), _po("femme|pour femme"), _po("enfant|enfants|pour enfant"),
               _po("bébé|bebe"), _po("garçon|garcon"), _po("fille")),
        "es": (_po("hombre|para hombre|caballero"), _po("mujer|para mujer|dama"), _po("niños|infantil|para niños"),
               _po("bebé|bebe"), _po("niño"), _po("niña")),
        "pt": (_po("masculino|masculina|homem"), _po("feminino|feminina|mulher"), _po("infantil|criança"),
               _po("bebê|bebe"), _po("menino"), _po("menina")),
        "it": (_po("uomo|da uomo"), _po("donna|da donna"), _po("bambino|bambini|per bambini"),
               _po("neonato|neonata"), _po("bambino|ragazzo"), _po("bambina|ragazza")),
        "de": (SlotWord("herren", "herren|für herren", "herren"), SlotWord("damen", "damen|für damen", "damen"),
               SlotWord("kinder", "kinder|für kinder", "kinder"), SlotWord("baby", "baby", "baby"),
               SlotWord("jungen", "jungen", "jungen"), SlotWord("mädchen|maedchen", "mädchen", "mädchen")),
        "nl": (SlotWord("heren", "heren", "heren"), SlotWord("dames", "dames", "dames"),
               SlotWord("kinder|kinderen", "kinderen|kinder", "kinder"), SlotWord("baby", "baby", "baby"),
               SlotWord("jongens", "jongens", "jongens"), SlotWord("meisjes", "meisjes", "meisjes")),
        "sv": (SlotWord("herr", "herr|herrar", "herr"), SlotWord("dam", "dam", "dam"), SlotWord("barn", "barn", "barn"),
               SlotWord("baby", "baby", "baby"), SlotWord("pojk", "pojke", "pojk"), SlotWord("flick", "flicka", "flick")),
        "pl": (_sw("męskie|męska|męski|dla mężczyzn"), _sw("damskie|damska|damski|dla kobiet"),
               _sw("dziecięce|dla dzieci"), _sw("niemowlęce|dla niemowląt"), _sw("chłopięce|dla chłopca"),
               _sw("dziewczęce|dla dziewczynki")),
        "tr": (_sw("erkek"), _sw("kadın|bayan"), _sw("çocuk"), _sw("bebek"), _sw("erkek çocuk"), _sw("kız çocuk")),
        "ar": (_po("رجالي|للرجال"), _po("نسائي|حريمي|للنساء"), _po("أطفال|للأطفال|اطفال"), _po("بيبي|للرضع"),
               _po("ولادي|أولاد"), _po("بناتي|بنات")),
        "ja": (_sw("メンズ|男性用"), _sw("レディース|女性用"), _sw("キッズ|子供用"), _sw("ベビー"),
               _sw("男の子"), _sw("女の子")),
    }
)

# modern, vintage, retro, minimalist, classic, boho, industrial, scandinavian
STYLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": ("modern", "vintage", "retro", "minimalist", "classic", "boho", "industrial", "scandinavian"),
        "fr": ("moderne", "vintage", "rétro", "minimaliste", "classique", "bohème", "industriel", "scandinave"),
        "es": ("moderno", "vintage", "retro", "minimalista", "clásico", "boho", "industrial", "nórdico"),
        "pt": ("moderno", "vintage", "retrô", "minimalista", "clássico", "boho", "industrial", "escandinavo"),
        "de": ("modern", "vintage", "retro", "minimalistisch", "klassisch", "boho", "industrial|industrie",
               "skandinavisch"),
        "it": ("moderno", "vintage", "retrò", "minimal", "classico", "boho", "industriale", "scandinavo"),
        "nl": ("modern", "vintage", "retro", "minimalistisch", "klassiek", "boho", "industrieel", "scandinavisch"),
        "sv": ("modern", "vintage", "retro", "minimalistisk", "klassisk", "boho", "industriell", "skandinavisk"),
        "pl": ("nowoczesny", "vintage", "retro", "minimalistyczny", "klasyczny", "boho", "industrialny",
               "skandynawski"),
        "tr": ("modern", "vintage", "retro", "minimalist", "klasik", "bohem", "endüstriyel", "iskandinav"),
        "ar": ("مودرن|حديث", "فينتاج", "ريترو", "بسيط", "كلاسيك", "بوهو", "صناعي", "اسكندنافي"),
        "ja": ("モダン", "ヴィンテージ|ビンテージ", "レトロ", "シンプル", "クラシック", "ボヘミアン", "インダストリアル",
               "北欧"),
    }
)

#: Words shoppers add that name no attribute (price, deals...), per language.
EXTRA_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": ("cheap", "best", "sale", "new", "set", "deals"),
        "fr": ("pas cher", "promo", "soldes", "lot", "neuf"),
        "es": ("barato|barata", "oferta", "rebajas", "set", "nuevo"),
        "pt": ("barato|barata", "promoção", "kit", "original", "novo"),
        "de": ("günstig", "angebot", "set", "neu", "kaufen"),
        "it": ("economico", "offerta", "set", "nuovo", "prezzo"),
        "nl": ("goedkoop", "aanbieding", "set", "kopen"),
        "sv": ("billig|billiga", "rea", "set", "köpa"),
        "pl": ("tanie|tani", "promocja", "zestaw", "allegro", "cena"),
        "tr": ("fiyat|fiyatları", "modelleri", "ucuz", "indirim", "set"),
        "ar": ("رخيص", "عروض", "سعر", "اصلي", "جديد"),
        "ja": ("安い", "おしゃれ", "人気", "セール", "おすすめ"),
    }
)
LOCALE_EXTRA_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"in": ("combo", "under 500", "below 1000", "online"), "us": ("under 50",), "uk": ("uk",), "mx": ("mercado",)}
)
ENGLISH_LOAN_EXTRAS: tuple[str, ...] = ("sale", "set", "original", "premium", "outlet", "pro", "mini")


# =====================================================================================
# Sizes, units, numbers
# =====================================================================================

APPAREL_SIZES: tuple[str, ...] = ("xs", "s", "m", "l", "xl", "xxl", "3xl")
APPAREL_PREFIX: Mapping[str, str] = MappingProxyType(
    {"en": "size", "fr": "taille", "es": "talla", "pt": "tamanho|tam", "de": "größe|gr", "it": "taglia",
     "nl": "maat", "sv": "storlek|strl", "pl": "rozmiar", "tr": "beden", "ar": "مقاس", "ja": "サイズ"}
)
SHOE_PREFIX: Mapping[str, str] = MappingProxyType(
    {"en": "size", "fr": "pointure|taille", "es": "talla|número", "pt": "tamanho|número|n", "de": "größe|gr",
     "it": "numero|n", "nl": "maat", "sv": "storlek|strl", "pl": "rozmiar", "tr": "numara", "ar": "مقاس",
     "ja": ""}
)
#: Shoe-size system of each store: (sizes, step) -- US, UK, EU, Brazil, Mexico (cm), Japan (cm).
SHOE_SYSTEM: Mapping[str, str] = MappingProxyType(
    {"us": "us", "ca": "us", "uk": "uk", "au": "uk", "in": "uk", "sg": "uk", "mx": "mx", "br": "br", "jp": "jp"}
)
_SHOE_SIZES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "us": ("5", "6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12", "13"),
        "uk": ("3", "4", "5", "5.5", "6", "7", "7.5", "8", "9", "10", "11", "12"),
        "eu": ("35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47"),
        "br": ("33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44"),
        "mx": ("22", "23", "23.5", "24", "25", "25.5", "26", "26.5", "27", "28", "29"),
        "jp": ("22", "22.5", "23", "23.5", "24", "24.5", "25", "25.5", "26", "26.5", "27", "27.5", "28", "29"),
    }
)
SCREEN_UNIT: Mapping[str, str] = MappingProxyType(
    {"en": "inch|in|\"", "fr": "pouces|pouce", "es": "pulgadas", "pt": "polegadas", "de": "zoll", "it": "pollici",
     "nl": "inch", "sv": "tum", "pl": "cali", "tr": "inç|inch", "ar": "بوصة|انش", "ja": "インチ|型"}
)
_SCREEN_RANGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"phone|smartphone", ("5.5", "6.1", "6.5", "6.7", "6.9")),
    (r"tablet|reader|ipad", ("8", "10", "10.9", "11", "12.9", "13")),
    (r"laptop|notebook|chromebook", ("13", "13.3", "14", "15.6", "16", "17")),
    (r"monitor|display", ("22", "24", "27", "32", "34")),
    (r"tv|television|projector", ("32", "40", "43", "50", "55", "65", "75", "85")),
    (r"watch", ("1.4", "1.7", "1.9")),
)
_SCREEN_DEFAULT: tuple[str, ...] = ("7", "10", "13", "15", "24", "32")
#: Types sold in small (ml / g) or large (l / kg) quantities; others get either.
_SMALL_QUANTITY = re.compile(
    r"nail_polish|perfume|attar|serum|mascara|eyeliner|lip|foundation|concealer|cream|lotion|moisturizer|cleanser|"
    r"sunscreen|mouthwash|toothpaste|shampoo|conditioner|hair_dye|deodorant|sanitizer|gel|glue|tea|coffee|chocolate|"
    r"honey|natto|baby_food|treats|fish_food|vitamins|shoe_polish|car_wax|face_powder|blush|eyeshadow|air_freshener|"
    r"candle|shower|soap|ink|flea|pet_shampoo|dates|cereal|tuna"
)
_LARGE_QUANTITY = re.compile(
    r"motor_oil|wall_paint|bottled_water|potting_soil|fertilizer|cat_litter|dog_food|cat_food|rice|pressure_cooker|"
    r"saucepan|rice_cooker|kettle|dumbbell|aquarium|watering_can|planter|bbq|cooler|storage|suitcase|backpack|"
    r"roof_box|baby_bath|mixing_bowl|wok|olive_oil|baby_formula|frozen_fries|bin"
)

VOLUME_UNITS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"en": ("ml", "l|litre|liter"), "fr": ("ml", "l|litres"), "es": ("ml", "l|litros"), "pt": ("ml", "l|litros"),
     "de": ("ml", "l|liter"), "it": ("ml", "l|litri"), "nl": ("ml", "l|liter"), "sv": ("ml", "l|liter"),
     "pl": ("ml", "l|litry"), "tr": ("ml", "lt|litre"), "ar": ("مل", "لتر"), "ja": ("ml", "l|リットル")}
)
WEIGHT_UNITS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"en": ("g", "kg"), "fr": ("g", "kg"), "es": ("g|gr", "kg|kilos"), "pt": ("g", "kg|quilos"),
     "de": ("g|gramm", "kg|kilo"), "it": ("g|gr", "kg"), "nl": ("gram|g", "kg|kilo"), "sv": ("g", "kg"),
     "pl": ("g", "kg"), "tr": ("gr|g", "kg|kilo"), "ar": ("جرام|غرام", "كيلو|كجم"), "ja": ("g", "kg|キロ")}
)
LENGTH_UNITS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"en": ("cm", "m"), "fr": ("cm", "m"), "es": ("cm", "m|metros"), "pt": ("cm", "m|metros"), "de": ("cm", "m|meter"),
     "it": ("cm", "m|metri"), "nl": ("cm", "m|meter"), "sv": ("cm", "m|meter"), "pl": ("cm", "m"),
     "tr": ("cm", "m|metre"), "ar": ("سم", "متر"), "ja": ("cm|センチ", "m|メートル")}
)
POWER_UNITS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"en": ("w|watt", "v|volt"), "fr": ("w|watts", "v"), "es": ("w|watts", "v|voltios"), "pt": ("w", "v|volts"),
     "de": ("watt|w", "v|volt"), "it": ("w|watt", "v|volt"), "nl": ("watt|w", "v|volt"), "sv": ("w|watt", "v|volt"),
     "pl": ("w|wat", "v"), "tr": ("w|watt", "v|volt"), "ar": ("واط|وات", "فولت"), "ja": ("w|ワット", "v|ボルト")}
)
#: Imperial units used in the stores that still use them.
IMPERIAL_LOCALES: frozenset[str] = frozenset({"us"})

PACK_NUMBERS: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12, 20, 24, 50, 100)
_TR_SUFFIX = {2: "li", 3: "lü", 4: "lü", 5: "li", 6: "lı", 8: "li", 10: "lu", 12: "li", 20: "li", 24: "lü",
              50: "li", 100: "lü"}
PACK_TEMPLATES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": ("pack of {n}", "{n} pack", "{n}-pack", "set of {n}", "{n} pcs", "{n} count"),
        "fr": ("lot de {n}", "{n} pièces", "pack de {n}", "x{n}"),
        "es": ("pack de {n}", "paquete de {n}", "{n} piezas", "{n} unidades"),
        "pt": ("kit com {n}", "kit {n}", "{n} unidades", "{n} peças"),
        "de": ("{n}er pack", "{n} stück", "{n}er set", "{n} stk"),
        "it": ("confezione da {n}", "{n} pezzi", "set da {n}", "{n} pz"),
        "nl": ("{n} stuks", "{n}-pack", "set van {n}"),
        "sv": ("{n}-pack", "{n} st", "{n}-p"),
        "pl": ("{n} szt", "zestaw {n} szt", "{n}-pak", "{n} sztuk"),
        "tr": ("{n}'{tr}", "{n} adet", "{n}'{tr} paket", "{n}'{tr} set"),
        "ar": ("عبوة {n}", "{n} قطع", "طقم {n}", "{n} حبات"),
        "ja": ("{n}個セット", "{n}個入り", "{n}点セット", "{n}枚組"),
    }
)
AGES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 12)
AGE_TEMPLATES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "en": ("{n}+", "ages {n}+", "for {n} year olds", "{n} years"),
        "fr": ("{n} ans", "dès {n} ans", "{n} ans et plus"),
        "es": ("{n} años", "+{n} años", "para {n} años"),
        "pt": ("{n} anos", "+{n} anos", "para {n} anos"),
        "de": ("ab {n} jahren", "{n} jahre", "ab {n}"),
        "it": ("{n} anni", "da {n} anni", "{n}+ anni"),
        "nl": ("{n} jaar", "vanaf {n} jaar", "{n}+"),
        "sv": ("{n} år", "från {n} år", "{n}+"),
        "pl": ("{n} {pl}", "od {n} {pl}", "{n}+"),
        "tr": ("{n} yaş", "{n}+ yaş", "{n} yaş üstü"),
        "ar": ("{n} {ar}", "عمر {n}+", "من عمر {n}"),
        "ja": ("{n}歳", "{n}歳から", "{n}才"),
    }
)
_MODEL_PREFIXES: tuple[str, ...] = ("a", "s", "x", "g", "gt", "rx", "sm", "wh", "kd", "hd", "mx", "z", "v", "tx",
                                    "dr", "ex", "pro", "fx", "qn", "mt")
_MODEL_SUFFIXES: tuple[str, ...] = ("", "", "", "", "x", "s", "m5", "pro", "plus", "ii", "e")

_ARABIC_DIGITS = str.maketrans("0123456789.", "٠١٢٣٤٥٦٧٨٩٫")


def format_number(text: str, locale: str, language: str, rnd: random.Random) -> str:
    """Write a plain number (``"1.5"``) the way the store writes it (``"1,5"``, ``"١٫٥"``)."""
    key = "ca-fr" if (locale == "ca" and language == "fr") else locale
    if key in DECIMAL_COMMA:
        text = text.replace(".", ",")
    if language == "ar" and rnd.random() < ARABIC_DIGITS_PROB.get(locale, 0.0):
        text = text.translate(_ARABIC_DIGITS)
    return text


def _num_unit(number: str, units: str, locale: str, language: str, rnd: random.Random) -> str:
    """``number`` + a unit from ``"a|b"`` (``"1"`` takes the first, abbreviated, unit)."""
    unit = units.split("|")[0] if number == "1" else pick_first_biased(units, rnd)
    n = format_number(number, locale, language, rnd)
    if language == "ja":
        return n + unit  # 500ml, 27cm, 55インチ
    if len(unit) <= 2 and unit.isascii() and rnd.random() < 0.55:
        return n + unit  # 500ml, 2kg, 1000w
    return f"{n} {unit}"


def _ar_years(n: int) -> str:
    return "سنوات" if 3 <= n <= 10 else "سنة"


def _pl_years(n: int) -> str:
    return "rok" if n == 1 else ("lata" if 2 <= n <= 4 else "lat")


def screen_sizes(type_id: str) -> tuple[str, ...]:
    for pattern, sizes in _SCREEN_RANGES:
        if re.search(pattern, type_id):
            return sizes
    return _SCREEN_DEFAULT


def _quantity_is_small(type_id: str, rnd: random.Random) -> bool:
    """Whether to write a small quantity (ml, g) rather than a large one (l, kg)."""
    if _SMALL_QUANTITY.search(type_id):
        return rnd.random() < 0.93
    if _LARGE_QUANTITY.search(type_id):
        return rnd.random() < 0.07
    return rnd.random() < 0.5


def model_number(rnd: random.Random) -> str:
    """A made-up model number such as ``sm-a536`` or ``kd55x``."""
    prefix = pick(_MODEL_PREFIXES, rnd)
    digits = str(int(10 ** (1 + rnd.random() * 3)))
    sep = "-" if rnd.random() < 0.4 else ""
    return f"{prefix}{sep}{digits}{pick(_MODEL_SUFFIXES, rnd)}"


def render_slot(slot: str, language: str, locale: str, rnd: random.Random, type_id: str = "") -> tuple[str, str]:
    """Words for one numeric/format slot and where they go: ``(text, "pre"|"post"|"")``.

    The position is ``""`` when the language rules decide it. Word slots (brand, colour,
    material, audience, style) are rendered by the simulator, which also handles
    compounds and loanwords.
    """
    if slot == "size_apparel":
        size = pick_first_biased("m|l|s|xl|xxl|xs|3xl", rnd, first=0.3)
        r = rnd.random()
        if language == "ja":
            return (f"{size}サイズ" if r < 0.6 else size), ""
        if language == "en" and r < 0.12:
            return pick(("small", "medium", "large", "xl", "xxl"), rnd), "post"
        if r < 0.5:
            return size, "post"
        return f"{pick_first_biased(APPAREL_PREFIX[language], rnd)} {size}", "post"
    if slot == "size_shoe":
        system = SHOE_SYSTEM.get(locale, "eu")
        size = format_number(pick(_SHOE_SIZES[system], rnd), locale, language, rnd)
        if system == "jp":
            return (f"{size}cm" if rnd.random() < 0.7 else f"{size}センチ"), "post"
        if system == "uk" and rnd.random() < 0.3:
            return f"uk {size}", "post"
        if rnd.random() < 0.35:
            return size, "post"
        prefix = pick_first_biased(SHOE_PREFIX[language], rnd) if SHOE_PREFIX[language] else ""
        return (f"{prefix} {size}".strip()), "post"
    if slot == "size_screen":
        size = pick(screen_sizes(type_id), rnd)
        unit = pick_first_biased(SCREEN_UNIT[language], rnd)
        if unit == '"':
            return format_number(size, locale, language, rnd) + '"', ""
        return _num_unit(size, unit, locale, language, rnd), ""  # a screen size is never "1"
    if slot == "capacity_storage":
        size = pick(("16gb", "32gb", "64gb", "128gb", "256gb", "512gb", "1tb", "2tb", "4tb"), rnd)
        if language == "ar" and rnd.random() < 0.3:
            return size.replace("gb", " جيجا").replace("tb", " تيرا"), ""
        if rnd.random() < 0.3:
            size = size[:-2] + " " + size[-2:]
        return size, ""
    if slot == "size_volume":
        if locale in IMPERIAL_LOCALES and rnd.random() < 0.5:
            return _num_unit(pick(("8", "12", "16", "20", "32", "64"), rnd), "oz", locale, language, rnd), ""
        small, big = VOLUME_UNITS[language]
        if _quantity_is_small(type_id, rnd):
            return _num_unit(pick(("50", "100", "200", "250", "330", "500", "750"), rnd), small,
                             locale, language, rnd), ""
        return _num_unit(pick(("1", "1.5", "2", "3", "5", "10"), rnd), big, locale,
                         language, rnd), ""
    if slot == "size_weight":
        if locale in IMPERIAL_LOCALES and rnd.random() < 0.5:
            return _num_unit(pick(("1", "2", "5", "10", "25", "50"), rnd), "lb|lbs|pound", locale,
                             language, rnd), ""
        small, big = WEIGHT_UNITS[language]
        if _quantity_is_small(type_id, rnd):
            return _num_unit(pick(("100", "200", "250", "500"), rnd), small, locale, language,
                             rnd), ""
        return _num_unit(pick(("1", "2", "2.5", "5", "10", "20"), rnd), big, locale, language,
                         rnd), ""
    if slot == "size_length":
        if locale in IMPERIAL_LOCALES and rnd.random() < 0.6:
            if rnd.random() < 0.6:
                return _num_unit(pick(("6", "10", "12", "18", "24", "36", "48"), rnd), "inch|in",
                                 locale, language, rnd), ""
            return _num_unit(pick(("3", "4", "6", "8", "10", "25"), rnd), "ft|foot", locale,
                             language, rnd), ""
        small, big = LENGTH_UNITS[language]
        if rnd.random() < 0.65:
            return _num_unit(pick(("20", "30", "40", "50", "60", "80", "100", "120", "140", "160", "180", "200"), rnd),
                             small, locale, language, rnd), ""
        return _num_unit(pick(("1", "1.5", "2", "3", "5", "10"), rnd), big, locale, language,
                         rnd), ""
    if slot == "power":
        watts, volts = POWER_UNITS[language]
        if rnd.random() < 0.7:
            return _num_unit(pick(("500", "800", "1000", "1200", "1500", "2000", "2200"), rnd),
                             watts, locale, language, rnd), ""
        return _num_unit(pick(("12", "18", "20", "36", "220"), rnd), volts, locale, language,
                         rnd), ""
    if slot == "pack":
        n = PACK_NUMBERS[int(rnd.random() * len(PACK_NUMBERS))]
        text = pick(PACK_TEMPLATES[language], rnd).format(n=format_number(str(n), locale, language, rnd),
                                                          tr=_TR_SUFFIX[n])
        return text, ""
    if slot == "age":
        n = AGES[int(rnd.random() * len(AGES))]
        text = pick(AGE_TEMPLATES[language], rnd).format(
            n=format_number(str(n), locale, language, rnd), pl=_pl_years(n), ar=_ar_years(n)
        )
        return text, ""
    if slot == "model_number":
        return model_number(rnd), ""
    raise KeyError(f"render_slot does not render {slot!r}")


# =====================================================================================
# Brands
# =====================================================================================


@dataclass(frozen=True)
class Brand:
    """A brand shoppers type; ``locales`` None means sold everywhere."""

    name: str  # Latin spelling ("a|b" variants)
    groups: tuple[str, ...]
    locales: tuple[str, ...] | None = None
    ja: str = ""  # Japanese spelling (katakana/kanji), "" = Latin only
    ar: str = ""  # Arabic spelling, "" = Latin only
    popularity: float = 1.0

    def form(self, language: str, rnd: random.Random) -> str:
        """How a shopper writing ``language`` types this brand."""
        if language == "ja" and self.ja and rnd.random() < 0.8:
            return pick_first_biased(self.ja, rnd, 0.75)
        if language == "ar" and self.ar and rnd.random() < 0.55:
            return pick_first_biased(self.ar, rnd, 0.7)
        return pick_first_biased(self.name, rnd, 0.85)


def _b(name: str, groups: str, locales: str | None = None, ja: str = "", ar: str = "", pop: float = 1.0) -> Brand:
    return Brand(name, tuple(groups.split()), tuple(locales.split()) if locales else None, ja, ar, pop)


#: Brand groups -> regex over "department:type" of the product types a brand of the group sells.
BRAND_GROUP_PATTERNS: Mapping[str, str] = MappingProxyType(
    {
        "fashion": r"^clothing:|^bags_luggage:(handbag|wallet|card_holder|coin_purse|tote_bag|crossbody_bag|clutch_bag|belt_bag|backpack)$",
        "outerwear": r":(jacket|coat|waistcoat|snow_boots|hoodie|sweater)$",
        "denim": r":(jeans|shorts|jacket|t_shirt|shirt)$",
        "underwear": r":(underwear_briefs|thong_underwear|undershirt|bra|socks|pajamas|t_shirt|leggings)$",
        "sportswear": r":(t_shirt|hoodie|shorts|leggings|jacket|socks|swimsuit|sweater|polo_shirt|backpack|belt_bag|duffel_bag)$",
        "swimwear": r":(swimsuit|shorts|t_shirt|flip_flops)$",
        "shoes": r"^shoes:",
        "sport_shoes": r":(sneakers|running_shoes|hiking_boots|sandals|flip_flops|slippers|snow_boots|shoe_insoles)$",
        "sports": r"^sports_outdoors:",
        "outdoor": r":(jacket|coat|hiking_boots|snow_boots|tent|sleeping_bag|camp_bed|hiking_backpack|backpack|flashlight)$",
        "bikes": r":(bicycle|bike_helmet|kick_scooter)$",
        "phones": r"^phones:",
        "phone_acc": r":(phone_charger|charging_cable|power_bank|wireless_charger|usb_hub|phone_case|screen_protector|car_phone_holder|memory_card|usb_flash_drive)$",
        "smartwatches": r":(smartwatch|fitness_tracker|watch_strap)$",
        "computers": r"^computers:",
        "computers_core": r":(laptop|desktop_computer|tablet|computer_monitor|computer_mouse|computer_keyboard)$",
        "peripherals": r":(computer_mouse|computer_keyboard|webcam|mouse_pad|gaming_mouse|gaming_keyboard|gaming_headset|racing_wheel|headphones|microphone)$",
        "printers": r":(printer|printer_ink|printer_paper|label_maker|paper_shredder)$",
        "tv": r":(television|projector|streaming_device|soundbar|home_theater|tv_wall_mount|computer_monitor)$",
        "audio": r":(headphones|wireless_earbuds|bluetooth_speaker|soundbar|home_theater|turntable|radio|microphone)$",
        "cameras": r":(digital_camera|camera_lens|action_camera|instant_camera|tripod|camera_drone|dash_cam)$",
        "games": r"^video_games:",
        "appliances": r":(coffee_maker|electric_kettle|toaster|rice_cooker|pressure_cooker|kitchen_scale)$",
        "personal_appliances": r":(hair_dryer|hair_straightener|electric_shaver|beard_trimmer|electric_toothbrush)$",
        "hair_tools": r":(hair_dryer|hair_straightener)$",
        "kitchen": r"^kitchen:",
        "home": r"^home_decor:",
        "furniture": r"^furniture:",
        "makeup": r":(lipstick|lip_gloss|mascara|eyeliner|eyeshadow|foundation|concealer|face_powder|blush|makeup_brushes|false_eyelashes|nail_polish|nail_polish_remover)$",
        "skincare": r":(face_moisturizer|face_serum|face_cleanser|sunscreen|sheet_mask|body_lotion)$",
        "haircare": r":(shampoo|conditioner|hair_dye)$",
        "bodycare": r":(shower_gel|body_lotion|deodorant|bar_soap|hand_sanitizer)$",
        "fragrance": r":(perfume|attar|deodorant)$",
        "shaving": r":(razor|shaving_cream|electric_shaver|beard_trimmer)$",
        "oral": r":(toothbrush|electric_toothbrush|toothpaste|dental_floss|mouthwash)$",
        "health": r"^health_personal_care:",
        "toys": r"^toys_games:",
        "dolls": r":(doll|dollhouse)$",
        "toy_vehicles": r":(toy_car|remote_control_car|toy_train)$",
        "puzzles": r":(board_game|jigsaw_puzzle|puzzle_cube)$",
        "baby": r"^baby:",
        "diapers": r":(diapers|baby_wipes|training_pants)$",
        "baby_food": r":(baby_formula|baby_food)$",
        "food": r"^grocery:",
        "snacks": r":(potato_crisps|cookies|chocolate)$",
        "coffee": r":(coffee|coffee_maker|french_press)$",
        "tea": r":tea$",
        "water": r":bottled_water$",
        "cereal": r":breakfast_cereal$",
        "pasta": r":pasta$",
        "dates": r":dates$",
        "tools": r"^tools_diy:",
        "garden": r"^garden:",
        "bbq": r":bbq_grill$",
        "auto": r"^automotive:",
        "tyres": r":(car_tires|winter_tires)$",
        "motor_oil": r":motor_oil$",
        "car_racks": r":roof_box$",
        "pets": r"^pet_supplies:",
        "pet_food": r":(dog_food|cat_food|dog_treats|fish_food)$",
        "office": r"^office_stationery:",
        "writing": r":(pencil|ballpoint_pen|fountain_pen|highlighter|permanent_marker|eraser|pencil_case|correction_tape)$",
        "paper": r":(paper_notebook|planner|legal_pad|sticky_notes)$",
        "calculators": r":calculator$",
        "watches": r":(wristwatch|watch_strap)$",
        "jewelry": r"^jewellery_watches:(?!wristwatch|pocket_watch|watch_strap)",
        "luggage": r"^bags_luggage:(suitcase|duffel_bag|garment_bag|toiletry_bag|packing_cubes|backpack|laptop_bag|passport_holder|luggage_tag)$",
        "bags": r"^bags_luggage:",
    }
)

BRANDS: tuple[Brand, ...] = (
    # ---- global --------------------------------------------------------------------
    _b("nike", "sport_shoes sportswear sports", ja="ナイキ", ar="نايكي|نايك", pop=3.0),
    _b("adidas", "sport_shoes sportswear sports", ja="アディダス", ar="اديداس|أديداس", pop=2.5),
    _b("puma", "sport_shoes sportswear", ja="プーマ", ar="بوما", pop=1.2),
    _b("new balance", "sport_shoes", ja="ニューバランス", ar="نيو بالانس", pop=1.0),
    _b("asics", "sport_shoes", ja="アシックス", ar="اسيكس", pop=0.9),
    _b("converse", "shoes", ja="コンバース", ar="كونفرس", pop=0.7),
    _b("vans", "shoes", ja="バンズ|ヴァンズ", ar="فانز", pop=0.7),
    _b("skechers", "sport_shoes", ja="スケッチャーズ", ar="سكيتشرز", pop=0.8),
    _b("crocs", "shoes", ja="クロックス", ar="كروكس", pop=0.7),
    _b("zara", "fashion", ja="ザラ", ar="زارا", pop=1.2),
    _b("h&m|h and m|hm", "fashion", ja="エイチアンドエム", ar="اتش اند ام", pop=1.0),
    _b("levi's|levis", "denim", ja="リーバイス", ar="ليفايس", pop=0.9),
    _b("uniqlo", "fashion underwear", ja="ユニクロ", ar="يونيكلو", pop=1.0),
    _b("tommy hilfiger", "fashion", ja="トミーヒルフィガー", ar="تومي هيلفيغر", pop=0.6),
    _b("calvin klein|ck", "underwear denim fragrance", ja="カルバンクライン", ar="كالفن كلاين", pop=0.6),
    _b("under armour", "sportswear", ja="アンダーアーマー", ar="اندر ارمور", pop=0.6),
    _b("the north face|north face", "outdoor outerwear", ja="ノースフェイス|ザノースフェイス", ar="نورث فيس", pop=0.8),
    _b("columbia", "outdoor outerwear", ja="コロンビア", ar="كولومبيا", pop=0.5),
    _b("michael kors", "bags watches", ja="マイケルコース", ar="مايكل كورس", pop=0.5),
    _b("apple", "phones computers_core smartwatches", ja="アップル", ar="ابل|آبل", pop=3.0),
    _b("iphone", "phones", ja="アイフォン|iphone", ar="ايفون", pop=1.5),
    _b("samsung", "phones tv audio smartwatches", ja="サムスン|ギャラクシー", ar="سامسونج|سامسونغ", pop=2.5),
    _b("sony", "tv audio cameras games", ja="ソニー", ar="سوني", pop=1.5),
    _b("lg", "tv appliances", ja="lg|エルジー", ar="ال جي", pop=1.0),
    _b("xiaomi|redmi", "phones audio smartwatches", ja="シャオミ", ar="شاومي", pop=1.2),
    _b("huawei", "phones smartwatches", ja="ファーウェイ", ar="هواوي", pop=0.9),
    _b("lenovo", "computers_core", ja="レノボ", ar="لينوفو", pop=0.8),
    _b("hp", "computers printers", ja="hp|ヒューレットパッカード", ar="اتش بي", pop=1.0),
    _b("dell", "computers_core", ja="デル", ar="ديل", pop=0.8),
    _b("asus", "computers_core games", ja="エイスース|asus", ar="اسوس", pop=0.7),
    _b("logitech", "peripherals", ja="ロジクール", ar="لوجيتك", pop=0.7),
    _b("canon", "cameras printers", ja="キヤノン|キャノン", ar="كانون", pop=0.7),
    _b("jbl", "audio", ja="jbl", ar="جي بي ال", pop=0.8),
    _b("bose", "audio", ja="ボーズ", ar="بوز", pop=0.6),
    _b("anker", "phone_acc audio", ja="アンカー", ar="انكر", pop=0.8),
    _b("garmin", "smartwatches cameras", ja="ガーミン", ar="جارمين", pop=0.5),
    _b("nintendo|switch", "games", ja="任天堂|ニンテンドー", ar="نينتندو", pop=1.0),
    _b("playstation|ps5", "games", ja="プレイステーション|プレステ", ar="بلايستيشن|بلاي ستيشن", pop=1.0),
    _b("philips", "appliances personal_appliances oral tv", ja="フィリップス", ar="فيليبس", pop=1.0),
    _b("braun", "shaving hair_tools", ja="ブラウン", ar="براون", pop=0.6),
    _b("dyson", "hair_tools", ja="ダイソン", ar="دايسون", pop=0.8),
    _b("bosch", "tools garden appliances", ja="ボッシュ", ar="بوش", pop=1.0),
    _b("makita", "tools garden", ja="マキタ", ar="ماكيتا", pop=0.8),
    _b("black and decker|black+decker", "tools garden", ja="ブラックアンドデッカー", ar="بلاك اند ديكر", pop=0.5),
    _b("karcher|kärcher", "garden", ja="ケルヒャー", ar="كارشر", pop=0.6),
    _b("stanley", "tools", ja="スタンレー", ar="ستانلي", pop=0.5),
    _b("tefal", "kitchen appliances", ja="ティファール", ar="تيفال", pop=0.8),
    _b("pyrex", "kitchen", ja="パイレックス", ar="بايركس", pop=0.4),
    _b("tupperware", "kitchen", ja="タッパーウェア", ar="تابروير", pop=0.4),
    _b("victorinox", "kitchen", ja="ビクトリノックス", ar="فيكتورينوكس", pop=0.4),
    _b("ikea", "furniture home kitchen", ja="イケア", ar="ايكيا", pop=1.2),
    _b("lego", "toys", ja="レゴ", ar="ليغو|ليجو", pop=1.5),
    _b("barbie", "dolls", ja="バービー", ar="باربي", pop=0.7),
    _b("hot wheels", "toy_vehicles", ja="ホットウィール", ar="هوت ويلز", pop=0.5),
    _b("fisher-price|fisher price", "baby toys", ja="フィッシャープライス", ar="فيشر برايس", pop=0.5),
    _b("pampers", "diapers", ja="パンパース", ar="بامبرز", pop=0.9),
    _b("l'oreal|loreal", "makeup haircare skincare", ja="ロレアル", ar="لوريال", pop=0.9),
    _b("nivea", "skincare bodycare", ja="ニベア", ar="نيفيا", pop=0.8),
    _b("maybelline", "makeup", ja="メイベリン", ar="ميبيلين", pop=0.6),
    _b("dior", "fragrance makeup", ja="ディオール", ar="ديور", pop=0.6),
    _b("chanel", "fragrance makeup", ja="シャネル", ar="شانيل", pop=0.6),
    _b("gillette", "shaving", ja="ジレット", ar="جيليت", pop=0.5),
    _b("colgate", "oral", ja="コルゲート", ar="كولجيت", pop=0.4),
    _b("oral-b|oral b", "oral", ja="オーラルb|ブラウンオーラルb", ar="اورال بي", pop=0.5),
    _b("casio", "watches calculators", ja="カシオ", ar="كاسيو", pop=0.6),
    _b("pandora", "jewelry", ja="パンドラ", ar="باندورا", pop=0.5),
    _b("swarovski", "jewelry", ja="スワロフスキー", ar="سواروفسكي", pop=0.4),
    _b("samsonite", "luggage", ja="サムソナイト", ar="سامسونايت", pop=0.5),
    _b("nestle|nestlé", "cereal coffee snacks water baby_food", ja="ネスレ", ar="نستله", pop=0.6),
    _b("nescafe|nescafé", "coffee", ja="ネスカフェ", ar="نسكافيه", pop=0.5),
    _b("royal canin", "pet_food", ja="ロイヤルカナン", ar="رويال كانين", pop=0.6),
    _b("purina", "pet_food", ja="ピュリナ", ar="بورينا", pop=0.5),
    _b("michelin", "tyres", ja="ミシュラン", ar="ميشلان", pop=0.5),
    _b("castrol", "motor_oil", ja="カストロール", ar="كاسترول", pop=0.4),
    _b("coleman", "outdoor", ja="コールマン", ar="كولمان", pop=0.5),
    _b("weber", "bbq", ja="ウェーバー", ar="ويبر", pop=0.4),
    _b("yamaha", "audio", ja="ヤマハ", ar="ياماها", pop=0.5),
    _b("faber-castell|faber castell", "writing", ja="ファーバーカステル", ar="فابر كاستل", pop=0.4),
    _b("pilot", "writing", ja="パイロット", ar="بايلوت", pop=0.4),
    _b("moleskine", "paper", ja="モレスキン", pop=0.3),
    # ---- local ---------------------------------------------------------------------
    _b("kitchenaid", "kitchen", "us ca", pop=0.8),
    _b("carhartt", "outerwear denim", "us ca", pop=0.6),
    _b("crayola", "writing toys", "us ca", pop=0.6),
    _b("cuisinart", "kitchen", "us ca", pop=0.6),
    _b("yeti", "outdoor", "us ca au", pop=0.6),
    _b("dewalt", "tools", "us ca uk", pop=0.7),
    _b("craftsman", "tools", "us", pop=0.4),
    _b("hanes", "underwear", "us", pop=0.5),
    _b("nerf", "toys", "us ca uk", pop=0.5),
    _b("ninja", "appliances", "us uk ca", pop=0.6),
    _b("hershey's|hersheys", "snacks", "us ca", pop=0.4),
    _b("roots", "fashion", "ca", pop=0.6),
    _b("canada goose", "outerwear", "ca", pop=0.6),
    _b("lululemon", "sportswear", "ca us", pop=0.7),
    _b("tim hortons", "coffee", "ca", pop=0.5),
    _b("bauer", "sports", "ca", pop=0.5),
    _b("arc'teryx|arcteryx", "outdoor outerwear", "ca", pop=0.4),
    _b("bimbo", "snacks", "mx", pop=0.6),
    _b("cuadra", "shoes bags", "mx", pop=0.5),
    _b("flexi", "shoes", "mx", pop=0.6),
    _b("andrea", "shoes", "mx", pop=0.5),
    _b("mabe", "appliances", "mx", pop=0.6),
    _b("la costeña|la costena", "food", "mx", pop=0.4),
    _b("havaianas", "shoes", "br", pop=1.0),
    _b("tramontina", "kitchen tools garden", "br", pop=0.9),
    _b("natura", "fragrance makeup skincare bodycare", "br", pop=0.8),
    _b("o boticário|boticario", "fragrance makeup bodycare", "br", pop=0.8),
    _b("brastemp", "appliances", "br", pop=0.7),
    _b("positivo", "computers_core", "br", pop=0.5),
    _b("mondial", "appliances", "br", pop=0.6),
    _b("multilaser", "phone_acc peripherals", "br", pop=0.5),
    _b("hering", "fashion", "br", pop=0.5),
    _b("melissa", "shoes", "br", pop=0.4),
    _b("barbour", "outerwear", "uk", pop=0.5),
    _b("clarks", "shoes", "uk in au", pop=0.7),
    _b("russell hobbs", "appliances", "uk au", pop=0.6),
    _b("dr martens|doc martens", "shoes", "uk us au", pop=0.6),
    _b("joules", "fashion", "uk", pop=0.4),
    _b("ted baker", "fashion", "uk", pop=0.4),
    _b("morphy richards", "appliances", "uk in", pop=0.5),
    _b("hunter", "shoes", "uk", pop=0.4),
    _b("cadbury", "snacks", "uk au in", pop=0.5),
    _b("twinings", "tea", "uk", pop=0.4),
    _b("miele", "appliances", "de nl", pop=0.8),
    _b("zwilling", "kitchen", "de", pop=0.6),
    _b("wmf", "kitchen", "de", pop=0.7),
    _b("fissler", "kitchen", "de", pop=0.5),
    _b("tchibo", "coffee", "de", pop=0.5),
    _b("jack wolfskin", "outdoor outerwear", "de", pop=0.6),
    _b("haribo", "snacks", "de", pop=0.5),
    _b("playmobil", "toys", "de fr", pop=0.6),
    _b("ravensburger", "puzzles", "de", pop=0.5),
    _b("birkenstock", "shoes", "de", pop=0.5),
    _b("hugo boss|boss", "fashion fragrance", "de", pop=0.5),
    _b("siemens", "appliances", "de", pop=0.6),
    _b("einhell", "tools garden", "de", pop=0.5),
    _b("staedtler", "writing", "de", pop=0.4),
    _b("melitta", "coffee", "de", pop=0.4),
    _b("lacoste", "fashion", "fr", pop=0.7),
    _b("seb", "kitchen appliances", "fr", pop=0.6),
    _b("moulinex", "kitchen appliances", "fr", pop=0.7),
    _b("le creuset", "kitchen", "fr uk", pop=0.4),
    _b("petit bateau", "fashion baby", "fr", pop=0.5),
    _b("kiabi", "fashion", "fr", pop=0.5),
    _b("l'occitane|loccitane", "skincare bodycare fragrance", "fr", pop=0.4),
    _b("la roche-posay|la roche posay", "skincare", "fr", pop=0.5),
    _b("bic", "writing shaving", "fr", pop=0.4),
    _b("opinel", "kitchen", "fr", pop=0.3),
    _b("smoby", "toys", "fr", pop=0.4),
    _b("bonne maman", "snacks", "fr", pop=0.3),
    _b("bialetti", "kitchen", "it", pop=0.7),
    _b("smeg", "appliances", "it uk", pop=0.6),
    _b("de'longhi|delonghi", "appliances", "it", pop=0.8),
    _b("alessi", "kitchen", "it", pop=0.4),
    _b("barilla", "pasta", "it", pop=0.5),
    _b("lavazza", "coffee", "it", pop=0.6),
    _b("benetton", "fashion", "it", pop=0.5),
    _b("geox", "shoes", "it", pop=0.6),
    _b("diadora", "sport_shoes sportswear", "it", pop=0.4),
    _b("kappa", "sportswear", "it", pop=0.4),
    _b("chicco", "baby", "it es", pop=0.6),
    _b("kartell", "furniture", "it", pop=0.3),
    _b("mango", "fashion", "es", pop=0.7),
    _b("desigual", "fashion", "es", pop=0.5),
    _b("cecotec", "appliances", "es", pop=0.8),
    _b("camper", "shoes", "es", pop=0.5),
    _b("taurus", "appliances", "es", pop=0.5),
    _b("pikolinos", "shoes", "es", pop=0.3),
    _b("joma", "sportswear sport_shoes", "es", pop=0.4),
    _b("gazelle", "bikes", "nl", pop=0.5),
    _b("hema", "home office", "nl", pop=0.5),
    _b("douwe egberts", "coffee", "nl", pop=0.4),
    _b("g-star|g star", "denim", "nl", pop=0.4),
    _b("bugaboo", "baby", "nl", pop=0.4),
    _b("tony's chocolonely|tonys", "snacks", "nl", pop=0.3),
    _b("fjällräven|fjallraven", "outdoor outerwear", "se", pop=0.6),
    _b("husqvarna", "garden", "se", pop=0.6),
    _b("electrolux", "appliances", "se", pop=0.6),
    _b("thule", "car_racks luggage", "se", pop=0.4),
    _b("haglöfs|haglofs", "outdoor", "se", pop=0.4),
    _b("björn borg|bjorn borg", "underwear sportswear", "se", pop=0.4),
    _b("marabou", "snacks", "se", pop=0.3),
    _b("inglot", "makeup", "pl", pop=0.5),
    _b("wittchen", "bags", "pl", pop=0.5),
    _b("reserved", "fashion", "pl", pop=0.6),
    _b("amica", "appliances", "pl", pop=0.5),
    _b("kross", "bikes", "pl", pop=0.5),
    _b("ziaja", "skincare bodycare", "pl", pop=0.4),
    _b("4f", "sportswear", "pl", pop=0.5),
    _b("wedel", "snacks", "pl", pop=0.3),
    _b("arçelik|arcelik", "appliances", "tr", pop=0.8),
    _b("vestel", "tv appliances", "tr", pop=0.7),
    _b("beko", "appliances", "tr uk", pop=0.6),
    _b("koton", "fashion", "tr", pop=0.6),
    _b("lc waikiki|lcw", "fashion", "tr eg", pop=0.7),
    _b("mavi", "denim", "tr", pop=0.5),
    _b("defacto", "fashion", "tr eg", pop=0.5),
    _b("karaca", "kitchen home", "tr", pop=0.5),
    _b("english home", "home", "tr", pop=0.4),
    _b("korkmaz", "kitchen", "tr", pop=0.4),
    _b("arzum", "appliances", "tr", pop=0.4),
    _b("ülker|ulker", "snacks", "tr", pop=0.4),
    _b("bateel", "dates snacks", "ae sa", ar="بتيل", pop=0.4),
    _b("al ain", "water", "ae", ar="العين", pop=0.4),
    _b("nova", "water", "sa", ar="نوفا", pop=0.4),
    _b("ajmal", "fragrance", "ae sa", ar="أجمل|اجمل", pop=0.6),
    _b("arabian oud", "fragrance", "sa ae", ar="العربية للعود", pop=0.6),
    _b("rasasi", "fragrance", "ae sa", ar="الرصاصي", pop=0.5),
    _b("lattafa", "fragrance", "ae sa", ar="لطافة", pop=0.5),
    _b("swiss arabian", "fragrance", "ae", ar="سويس أرابيان", pop=0.4),
    _b("al saif gallery", "kitchen", "sa", ar="السيف غاليري|السيف", pop=0.4),
    _b("el araby|elaraby", "tv appliances", "eg", ar="العربي", pop=0.6),
    _b("fresh", "appliances", "eg", ar="فريش", pop=0.5),
    _b("tornado", "appliances", "eg", ar="تورنيدو", pop=0.5),
    _b("cottonil", "underwear", "eg", ar="كوتونيل", pop=0.5),
    _b("edita", "snacks", "eg", ar="إيديتا|ايديتا", pop=0.4),
    _b("tata", "tea", "in", pop=0.6),
    _b("boat", "audio smartwatches", "in", pop=0.9),
    _b("noise", "audio smartwatches", "in", pop=0.6),
    _b("micromax", "phones", "in", pop=0.4),
    _b("fabindia", "fashion home", "in", pop=0.4),
    _b("bajaj", "appliances personal_appliances", "in", pop=0.5),
    _b("prestige", "kitchen appliances", "in", pop=0.7),
    _b("hawkins", "kitchen", "in", pop=0.5),
    _b("amul", "snacks", "in", pop=0.5),
    _b("titan", "watches", "in", pop=0.5),
    _b("himalaya", "skincare bodycare", "in", pop=0.5),
    _b("lakme", "makeup", "in", pop=0.5),
    _b("bata", "shoes", "in", pop=0.5),
    _b("campus", "sport_shoes", "in", pop=0.5),
    _b("godrej", "furniture appliances", "in", pop=0.4),
    _b("muji", "home paper writing fashion", "jp", ja="無印良品|無印", pop=0.8),
    _b("panasonic", "tv appliances personal_appliances cameras", "jp", ja="パナソニック", pop=1.0),
    _b("sharp", "tv appliances calculators", "jp", ja="シャープ", pop=0.7),
    _b("zojirushi", "appliances", "jp", ja="象印", pop=0.6),
    _b("tiger", "appliances", "jp", ja="タイガー", pop=0.5),
    _b("iris ohyama", "appliances home furniture", "jp", ja="アイリスオーヤマ", pop=0.7),
    _b("nitori", "furniture home", "jp", ja="ニトリ", pop=0.6),
    _b("shiseido", "makeup skincare", "jp", ja="資生堂", pop=0.5),
    _b("wacoal", "underwear", "jp", ja="ワコール", pop=0.4),
    _b("mizuno", "sports sport_shoes sportswear", "jp", ja="ミズノ", pop=0.5),
    _b("bandai", "toys", "jp", ja="バンダイ", pop=0.5),
    _b("takara tomy", "toys", "jp", ja="タカラトミー", pop=0.4),
    _b("pentel", "writing", "jp", ja="ぺんてる", pop=0.3),
    _b("sanrio", "toys home writing", "jp", ja="サンリオ", pop=0.4),
    _b("ugg", "shoes", "au us uk", pop=0.7),
    _b("rm williams|r.m. williams", "shoes", "au", pop=0.4),
    _b("blundstone", "shoes", "au", pop=0.5),
    _b("breville", "appliances", "au", pop=0.7),
    _b("sunbeam", "appliances", "au", pop=0.5),
    _b("bonds", "underwear baby", "au", pop=0.6),
    _b("rip curl", "swimwear sportswear", "au", pop=0.5),
    _b("billabong", "swimwear", "au", pop=0.4),
    _b("kathmandu", "outdoor", "au", pop=0.4),
    _b("charles & keith|charles and keith", "shoes bags", "sg", pop=0.7),
    _b("love bonito", "fashion", "sg", pop=0.4),
    _b("pedro", "shoes bags", "sg", pop=0.4),
    _b("irvins", "snacks", "sg", pop=0.3),
)


# =====================================================================================
# Words whose product type depends on the store
# =====================================================================================

#: English query words that name different product types in different stores.
#: Keys: a locale, or "non_en" (every store that writes no English).
CONFLICT_WORDS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "football": {"us": "american_football", "ca": "american_football", "uk": "soccer_ball",
                     "au": "soccer_ball", "in": "soccer_ball", "sg": "soccer_ball", "ae": "soccer_ball",
                     "non_en": "soccer_ball"},
        "pants": {"us": "trousers", "ca": "trousers", "uk": "underwear_briefs", "au": "underwear_briefs"},
        "chips": {"us": "potato_crisps", "ca": "potato_crisps", "au": "potato_crisps", "uk": "frozen_fries",
                  "in": "frozen_fries"},
        "jumper": {"uk": "sweater", "au": "sweater", "us": "pinafore_dress"},
        "trainers": {"uk": "sneakers", "au": "sneakers", "in": "sneakers", "sg": "sneakers", "us": "training_pants",
                     "ca": "training_pants"},
        "biscuits": {"uk": "cookies", "au": "cookies", "in": "cookies", "sg": "cookies", "us": "baking_mix",
                     "ca": "baking_mix"},
        "purse": {"us": "handbag", "ca": "handbag", "uk": "wallet", "au": "wallet"},
        "torch": {"uk": "flashlight", "au": "flashlight", "in": "flashlight", "sg": "flashlight", "us": "blowtorch"},
        "vest": {"uk": "undershirt", "au": "undershirt", "us": "waistcoat", "ca": "waistcoat"},
        "thongs": {"au": "flip_flops", "us": "thong_underwear", "uk": "thong_underwear"},
        "cot": {"uk": "baby_crib", "au": "baby_crib", "in": "baby_crib", "us": "camp_bed", "ca": "camp_bed"},
        "dummy": {"uk": "pacifier", "au": "pacifier", "us": "mannequin"},
    }
)

#: Extra surface forms used only in some stores: locale -> type id -> forms. Pseudo-
#: anglicisms and loanwords of the local language (de "handy" is a mobile phone).
LOCAL_FORMS: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "de": {"mobile_phone": ("handy", "smartphone"), "projector": ("beamer",), "sneakers": ("sneaker",),
               "laptop": ("notebook",), "hoodie": ("pulli",)},
        "fr": {"sneakers": ("baskets", "sneakers"), "mobile_phone": ("smartphone", "portable")},
        "it": {"mobile_phone": ("smartphone", "cellulare"), "sneakers": ("sneakers",)},
        "es": {"mobile_phone": ("smartphone", "móvil")},
        "mx": {"mobile_phone": ("celular",), "sneakers": ("tenis",)},
        "br": {"mobile_phone": ("celular", "smartphone"), "sneakers": ("tênis",)},
        "nl": {"mobile_phone": ("mobiel", "smartphone")},
        "pl": {"sneakers": ("adidasy",), "mobile_phone": ("smartfon",)},
        "jp": {"hoodie": ("トレーナー",), "mobile_phone": ("スマホ",)},
        "tr": {"mobile_phone": ("telefon",)},
        "in": {"mobile_phone": ("mobile",), "trousers": ("pant",)},
    }
)

#: Generic words that name several types in one language (shoppers leave them ambiguous).
AMBIGUOUS_FORMS: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "en": {"case": ("phone_case", "suitcase", "laptop_bag", "pencil_case", "console_carrying_case"),
               "charger": ("phone_charger", "wireless_charger", "controller_charger"),
               "cover": ("phone_case", "car_seat_covers"),
               "stand": ("laptop_stand", "tv_stand"),
               "cable": ("charging_cable", "jumper_cables"),
               "mouse": ("computer_mouse", "gaming_mouse"),
               "watch": ("wristwatch", "smartwatch", "pocket_watch"),
               "speaker": ("bluetooth_speaker", "soundbar", "home_theater"),
               "bag": ("handbag", "backpack", "tote_bag", "laptop_bag", "duffel_bag"),
               "ball": ("soccer_ball", "basketball", "american_football"),
               "boots": ("ankle_boots", "knee_high_boots", "rain_boots", "snow_boots", "hiking_boots"),
               "mat": ("yoga_mat", "mouse_pad", "changing_mat", "car_floor_mats", "doormat"),
               "oil": ("olive_oil", "motor_oil"),
               "keyboard": ("computer_keyboard", "gaming_keyboard"),
               "camera": ("digital_camera", "action_camera", "instant_camera", "dash_cam")},
        "de": {"hülle": ("phone_case", "laptop_bag", "console_carrying_case"),
               "ladekabel": ("charging_cable", "phone_charger"),
               "tasche": ("handbag", "laptop_bag", "tote_bag", "crossbody_bag"),
               "öl": ("olive_oil", "motor_oil"),
               "matte": ("yoga_mat", "changing_mat", "car_floor_mats", "mouse_pad"),
               "kamera": ("digital_camera", "action_camera", "dash_cam", "webcam")},
        "fr": {"housse": ("car_seat_covers", "laptop_bag", "phone_case", "console_carrying_case"),
               "sac": ("handbag", "backpack", "tote_bag"),
               "huile": ("olive_oil", "motor_oil"),
               "tapis": ("rug", "yoga_mat", "mouse_pad", "doormat", "prayer_rug")},
        "es": {"funda": ("phone_case", "laptop_bag", "car_seat_covers", "console_carrying_case"),
               "bolsa": ("handbag", "tote_bag"),
               "aceite": ("olive_oil", "motor_oil"),
               "alfombra": ("rug", "prayer_rug", "car_floor_mats")},
        "pt": {"capa": ("phone_case", "car_seat_covers", "laptop_bag"), "óleo": ("olive_oil", "motor_oil"),
               "tapete": ("rug", "yoga_mat", "doormat", "mouse_pad")},
        "it": {"olio": ("olive_oil", "motor_oil"), "tappeto": ("rug", "yoga_mat", "prayer_rug")},
        "nl": {"hoesje": ("phone_case", "laptop_bag"), "olie": ("olive_oil", "motor_oil"),
               "mat": ("yoga_mat", "doormat", "changing_mat")},
        "sv": {"olja": ("olive_oil", "motor_oil"), "matta": ("rug", "yoga_mat", "doormat")},
        "pl": {"etui": ("phone_case", "pencil_case", "laptop_bag"), "olej": ("olive_oil", "motor_oil"),
               "mata": ("yoga_mat", "changing_mat", "car_floor_mats")},
        "tr": {"kılıf": ("phone_case", "laptop_bag", "car_seat_covers"), "yağ": ("olive_oil", "motor_oil"),
               "halı": ("rug", "prayer_rug")},
        "ar": {"زيت": ("olive_oil", "motor_oil"), "سجادة": ("rug", "prayer_rug")},
        "ja": {"ケース": ("phone_case", "suitcase", "pencil_case", "console_carrying_case"),
               "オイル": ("olive_oil", "motor_oil"),
               "マット": ("yoga_mat", "doormat", "changing_mat", "car_floor_mats", "mouse_pad")},
    }
)


def conflict_type(word: str, locale: str, languages: Sequence[str]) -> str | None:
    """The type ``word`` means in ``locale`` (None if the store has no meaning for it)."""
    table = CONFLICT_WORDS.get(word)
    if table is None:
        return None
    if locale in table:
        return table[locale]
    if "en" not in languages:
        return table.get("non_en")
    return None


# =====================================================================================
# Noise: misspellings, accents, transliteration, scripts
# =====================================================================================

_KEYBOARD_ROWS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "qwerty": ("qwertyuiop", "asdfghjkl", "zxcvbnm"),
        "qwertz": ("qwertzuiop", "asdfghjkl", "yxcvbnm"),
        "azerty": ("azertyuiop", "qsdfghjklm", "wxcvbn"),
        "turkish_q": ("qwertyuıopğü", "asdfghjklşi", "zxcvbnmöç"),
    }
)


def _neighbours(rows: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            near = []
            for dc in (-1, 1):
                if 0 <= c + dc < len(row):
                    near.append(row[c + dc])
            for rr, cols in ((r - 1, (c, c + 1)), (r + 1, (c - 1, c))):
                if 0 <= rr < len(rows):
                    near.extend(rows[rr][cc] for cc in cols if 0 <= cc < len(rows[rr]))
            out[ch] = "".join(near)
    return out


_NEIGHBOURS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {name: MappingProxyType(_neighbours(rows)) for name, rows in _KEYBOARD_ROWS.items()}
)

_SPECIAL_FOLD = str.maketrans({"ł": "l", "ı": "i", "ß": "ss", "ø": "o", "æ": "ae", "œ": "oe", "đ": "d"})
_GERMAN_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
_ARABIC_FOLD = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ة": "ه", "ى": "ي"})


def drop_accents(text: str, language: str, rnd: random.Random | None = None) -> str:
    """The query as typed without diacritics: ``é`` -> ``e``, ``ł`` -> ``l``, ``ı`` -> ``i``;
    German also as ``ue``/``oe``/``ae`` (transliteration); Arabic hamza/taa-marbuta folded."""
    if language == "ja":
        return text
    if language == "ar":
        return text.translate(_ARABIC_FOLD)
    if language == "de" and rnd is not None and rnd.random() < 0.5:
        text = text.translate(_GERMAN_TRANSLIT)
    text = text.translate(_SPECIAL_FOLD)
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def katakana_to_hiragana(text: str) -> str:
    return "".join(chr(ord(ch) - 0x60) if "ァ" <= ch <= "ヶ" else ch for ch in text)


def to_fullwidth(text: str) -> str:
    """ASCII letters/digits as full-width forms (as typed with a Japanese IME); NFKC undoes it."""
    return "".join(chr(ord(ch) + 0xFEE0) if ch.isascii() and ch.isalnum() else ch for ch in text)


def _latin_typo(word: str, keyboard: str, rnd: random.Random) -> str:
    """One typo; retried when it happens to leave the word unchanged (swapping "nn")."""
    for _ in range(4):
        out = _one_typo(word, keyboard, rnd)
        if out != word:
            return out
    return word[:-1]


def _one_typo(word: str, keyboard: str, rnd: random.Random) -> str:
    n = len(word)
    i = int(rnd.random() * n)
    op = rnd.random()
    neigh = _NEIGHBOURS.get(keyboard, _NEIGHBOURS["qwerty"])
    if op < 0.35 and word[i] in neigh:  # neighbouring key
        return word[:i] + pick(neigh[word[i]], rnd) + word[i + 1:]
    if op < 0.6:  # dropped letter
        return word[:i] + word[i + 1:]
    if op < 0.75:  # doubled letter
        return word[:i] + word[i] + word[i:]
    if i == n - 1:
        i -= 1
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swapped neighbours


def misspell(query: str, rules: LanguageRules, rnd: random.Random) -> str:
    """One realistic misspelling of a query in ``rules.code``'s script.

    Latin: keyboard-neighbour typo, dropped / doubled / swapped letter in a word of 4+
    letters. Arabic: dropped or swapped letter, or a spelling variant (hamza, taa
    marbuta, alef maqsura). Japanese: long-vowel mark dropped, katakana typed as
    hiragana, or a character dropped. Returns the query unchanged if nothing fits.
    """
    words = query.split(" ")
    if rules.script == "japanese":
        r = rnd.random()
        if "ー" in query and r < 0.4:
            i = query.index("ー")
            return query[:i] + query[i + 1:]
        if r < 0.75 and any("ァ" <= ch <= "ヶ" for ch in query):
            return katakana_to_hiragana(query)
        long_words = [k for k, w in enumerate(words) if len(w) >= 4]
        if not long_words:
            return query
        k = long_words[int(rnd.random() * len(long_words))]  # = pick(): the same draw
        w = words[k]
        j = int(rnd.random() * len(w))
        words[k] = w[:j] + w[j + 1:]
        return " ".join(words)
    min_len = 3 if rules.script == "arabic" else 4
    candidates = [k for k, w in enumerate(words) if len(w) >= min_len and w.isalpha()]
    if not candidates:
        return query
    k = candidates[int(rnd.random() * len(candidates))]
    w = words[k]
    if rules.script == "arabic":
        folded = w.translate(_ARABIC_FOLD)
        if folded != w and rnd.random() < 0.5:
            words[k] = folded
        else:
            words[k] = _latin_typo(w, "", rnd) if rnd.random() < 0.7 else w[:-1]
    else:
        words[k] = _latin_typo(w, rules.keyboard, rnd)
    return " ".join(words)


def has_script(text: str, script: str) -> bool:
    """True if ``text`` holds characters of ``script`` ("arabic" or "japanese")."""
    if script == "arabic":
        return any("\u0600" <= ch <= "\u06ff" for ch in text)
    if script == "japanese":
        return any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)
    raise ValueError(script)


@dataclass(frozen=True)
class LexiconCheck:
    """Result of :func:`check_lexicon` (used by the tests)."""

    problems: list[str] = field(default_factory=list)


def check_lexicon() -> LexiconCheck:
    """Internal consistency of the word tables: every language present, aligned lengths."""
    problems: list[str] = []
    for name, table, n in (("COLOURS", COLOURS, len(COLOURS["en"])), ("MATERIALS", MATERIALS, len(MATERIALS["en"])),
                           ("AUDIENCES", AUDIENCES, len(AUDIENCE_KEYS)), ("STYLES", STYLES, len(STYLES["en"]))):
        for lang in LANGS:
            if lang not in table:
                problems.append(f"{name}: no {lang}")
            elif len(table[lang]) != n:
                problems.append(f"{name}[{lang}]: {len(table[lang])} entries, expected {n}")
    tables: tuple[tuple[str, Mapping[str, Any]], ...] = (("APPAREL_PREFIX", APPAREL_PREFIX), ("SHOE_PREFIX", SHOE_PREFIX), ("SCREEN_UNIT", SCREEN_UNIT),
                        ("VOLUME_UNITS", VOLUME_UNITS), ("WEIGHT_UNITS", WEIGHT_UNITS), ("LENGTH_UNITS", LENGTH_UNITS),
                        ("POWER_UNITS", POWER_UNITS), ("PACK_TEMPLATES", PACK_TEMPLATES),
                        ("AGE_TEMPLATES", AGE_TEMPLATES), ("EXTRA_WORDS", EXTRA_WORDS),
                        ("LANGUAGE_RULES", LANGUAGE_RULES))
    for name, per_lang in tables:
        for lang in LANGS:
            if lang not in per_lang:
                problems.append(f"{name}: no {lang}")
    for b in BRANDS:
        unknown = [g for g in b.groups if g not in BRAND_GROUP_PATTERNS]
        if unknown:
            problems.append(f"brand {b.name}: unknown groups {unknown}")
    return LexiconCheck(problems)
