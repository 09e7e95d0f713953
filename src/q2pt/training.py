"""The one training loop behind every q2pt variant.

:func:`fit_model` turns a :class:`~q2pt.data.Dataset` into trained networks for a
:class:`~q2pt.models.Q2PTModel`: one network over every locale for the unified variants,
one per locale (each over the labels seen in that locale's train split) for non-unified.
Each network is trained by :func:`train_network`, the only step loop:

* every split is tokenized once (:class:`TokenCache`); batches are rows gathered from it;
* each epoch's order is a permutation drawn from ``numpy.random.default_rng((seed, stage,
  epoch))`` (stateless, so resuming needs no generator state);
* Adam for dense parameters (separate encoder/head learning rates) and SparseAdam (a
  faster row-gather implementation, :class:`RowSparseAdam`) for
  ``encoder.sparse_parameters()``; the output bias starts at the label prior; loss: binary
  cross-entropy on logits, averaged over labels, weighted by the examples' ``weight``;
* unified-aware: each epoch a ``locale_dropout`` share of the training examples is shown
  without its locale token (the agnostic tokenization), which trains the mode used for
  locales unseen in training;
* R@P (``train.precision_target``) on valid after every epoch (or every ``eval_every``
  steps); early stopping after ``patience`` evaluations without improvement; the best
  weights are kept;
* checkpoints (safetensors tensors + JSON state, never pickle) every epoch or every
  ``checkpoint_every`` steps into ``OUT/checkpoints``; ``resume=True`` continues from the
  last one and ends with the same weights as an uninterrupted run (torch's RNG state is
  checkpointed; shuffles are derived from the seed). Weights are written like model
  folders (:func:`q2pt.models.pack_state`: pretrained tables as row deltas) and large
  optimiser moments row-sparse (only their non-zero rows), so that a checkpoint of a
  frozen or sparsely trained ``use`` table costs megabytes, not ~1 GB.

Distributed training (DDP) plugs in through :class:`TrainHooks`: ``wrap_model`` wraps the
network used for the training forward pass, ``shard`` keeps the rank's share of each
epoch's permutation, ``is_main`` gates every write and log, and ``sync_stop`` agrees on
early stopping across ranks.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from q2pt.errors import ConfigError, ModelLoadError, require
from q2pt.inference import UNIFIED, torch_forward
from q2pt.io import atomic_path, write_json

torch = require("torch", "torch")

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from scipy import sparse

    from q2pt.config import Config, TrainSection
    from q2pt.data import Dataset
    from q2pt.models import Q2PTModel, Q2PTNet

logger = logging.getLogger(__name__)

#: 2: weights packed with pretrained deltas, row-sparse optimiser moments (1 still resumes)
CHECKPOINT_FORMAT = 2
READABLE_CHECKPOINT_FORMATS = (1, 2)


# ----------------------------------------------------------------------------- tokens


class TokenCache:
    """A split tokenized once by an encoder; :meth:`take` gathers rows as a batch.

    Two tokenization layouts are gathered without re-tokenizing: *row-aligned* (every
    tensor has one row per query, e.g. padded ``input_ids``/``attention_mask``; padding is
    trimmed to the batch's longest query) and *flat* (token tensors concatenated over the
    queries, with per-query ``offsets`` or ``lengths``, e.g. EmbeddingBag inputs). An
    encoder may also define ``select_rows(batch, idx)`` itself. The gathering is checked
    once by comparing the encoder's output on gathered rows with its output on the same
    queries tokenized alone; if they differ, batches are tokenized on demand (correct,
    slower).
    """

    def __init__(self, encoder: Any, queries: Sequence[str], locales: Sequence[str] | None):
        self.encoder = encoder
        self.n = len(queries)
        self._queries = list(queries)
        self._locales = None if locales is None else list(locales)
        self._tokens: dict[str, Any] | None = None
        self._layout = "tokenize"
        self._parts: list[TokenCache] = []
        if self.n and callable(getattr(encoder, "join", None)):  # a composite: each part cached on its own
            self._parts = [TokenCache(part, self._queries, self._locales) for part in encoder.parts]
            self._layout = "parts"
        elif self.n:
            tokens = encoder.tokenize(self._queries, self._locales)
            layout = self._detect_layout(tokens)
            if layout is not None:
                self._tokens, self._layout = tokens, layout
                if not self._gather_matches():
                    logger.debug("%s: cannot gather cached tokens; tokenizing per batch", type(encoder).__name__)
                    self._tokens, self._layout = None, "tokenize"

    @property
    def layout(self) -> str:
        """"rows", "flat", "encoder" (the encoder's select_rows), "parts" (a composite encoder: one
        cache per part, joined) or "tokenize" (per batch)."""
        return self._layout

    def _detect_layout(self, tokens: Mapping[str, Any]) -> str | None:
        if callable(getattr(self.encoder, "select_rows", None)):
            return "encoder"
        if not tokens or not all(torch.is_tensor(v) and v.dim() >= 1 for v in tokens.values()):
            return None
        n = self.n
        if all(v.shape[0] == n for k, v in tokens.items() if k not in ("offsets", "lengths")) and not (
            "offsets" in tokens or "lengths" in tokens
        ):
            return "rows"
        flat_sizes = {v.shape[0] for k, v in tokens.items() if k not in ("offsets", "lengths") and v.shape[0] != n}
        if len(flat_sizes) > 1:
            return None
        total = flat_sizes.pop() if flat_sizes else n
        if "offsets" in tokens:
            offsets = tokens["offsets"]
            if offsets.dim() != 1 or offsets.shape[0] != n:
                return None
            starts = offsets.numpy().astype(np.int64)
            lengths = np.diff(np.append(starts, total))
        elif "lengths" in tokens:
            lengths = tokens["lengths"].numpy().astype(np.int64)
            if lengths.ndim != 1 or lengths.shape[0] != n or int(lengths.sum()) != total:
                return None
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        else:
            return None
        if (lengths < 0).any():
            return None
        self._starts, self._lengths, self._total = starts, lengths, total
        return "flat"

    def _gather_matches(self) -> bool:
        probe = np.arange(min(self.n, 4))[::-1].copy()  # reversed: order must follow idx
        gathered = self.take(probe)
        alone = self.encoder.tokenize(
            [self._queries[i] for i in probe], None if self._locales is None else [self._locales[i] for i in probe]
        )
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            with torch.inference_mode():
                a, b = self.encoder(gathered), self.encoder(alone)
        except Exception:  # a malformed gathered batch: fall back to tokenizing
            return False
        finally:
            self.encoder.train(was_training)
        return a.shape == b.shape and bool(torch.allclose(a, b, atol=1e-5, rtol=1e-4))

    def take(self, idx: np.ndarray) -> dict[str, Any]:
        """The batch of rows ``idx`` (ready for ``encoder.forward``)."""
        idx = np.asarray(idx, dtype=np.int64)
        tokens = self._tokens
        if self._layout == "parts":
            return self.encoder.join([part.take(idx) for part in self._parts])
        if self._layout == "tokenize" or tokens is None:
            queries = [self._queries[i] for i in idx]
            locales = None if self._locales is None else [self._locales[i] for i in idx]
            return self.encoder.tokenize(queries, locales)
        if self._layout == "encoder":
            return self.encoder.select_rows(tokens, idx)
        rows = torch.from_numpy(idx)
        if self._layout == "rows":
            out = {k: v.index_select(0, rows) for k, v in tokens.items()}
            mask = out.get("attention_mask")
            if mask is not None and mask.dim() == 2 and mask.shape[0] > 0:
                width = mask.shape[1]
                used = max(1, int(mask.sum(dim=1).max()))
                if used < width and not bool(mask[:, used:].any()):  # right padding: trim it
                    out = {k: (v[:, :used] if v.dim() >= 2 and v.shape[1] == width else v) for k, v in out.items()}
            return out
        # flat layout: gather each query's token segment
        lengths = self._lengths[idx]
        new_starts = np.zeros(len(idx), dtype=np.int64)
        if len(idx) > 1:
            np.cumsum(lengths[:-1], out=new_starts[1:])
        positions = np.repeat(self._starts[idx] - new_starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        pos = torch.from_numpy(positions)
        out = {}
        for k, v in tokens.items():
            if k == "offsets":
                out[k] = torch.from_numpy(new_starts)
            elif k == "lengths":
                out[k] = torch.from_numpy(lengths.copy())
            elif v.shape[0] == self._total:
                out[k] = v.index_select(0, pos)
            else:
                out[k] = v.index_select(0, rows)
        return out


# ----------------------------------------------------------------------------- labels


def label_lists(column: Any) -> list[list[str]]:
    """A ``product_types`` column (lists, arrays or tuples) as a list of lists of str."""
    return [list(v) if not isinstance(v, str) else [v] for v in column]


def multi_hot(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> tuple["sparse.csr_matrix", np.ndarray]:
    """Rows of labels -> (CSR 0/1 matrix over ``classes``, per-row count of labels outside)."""
    from scipy import sparse

    index = {c: i for i, c in enumerate(classes)}
    indptr = [0]
    indices: list[int] = []
    missing = np.zeros(len(labels), dtype=np.int64)
    for r, row in enumerate(labels):
        cols = sorted({index[x] for x in row if x in index})
        missing[r] = len(set(row)) - len(cols)
        indices.extend(cols)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    matrix = sparse.csr_matrix((data, indices, indptr), shape=(len(labels), len(classes)), dtype=np.float32)
    return matrix, missing


@dataclass
class PreparedSplit:
    """A split ready for the loop: cached tokens, targets, weights, locales.

    With ``has_agnostic`` (unified-aware training with locale dropout) ``tokens`` holds
    ``2n`` rows: row ``i`` is query ``i`` with its locale token, row ``n + i`` the same
    query without it, so that a batch mixing both is one gather and one forward pass.
    """

    tokens: TokenCache
    targets: Any  # scipy.sparse.csr_matrix (n, L) float32
    weights: np.ndarray  # (n,) float32
    locales: list[str]
    n_missing: np.ndarray  # (n,) positives outside the label space
    has_agnostic: bool = False

    @property
    def n(self) -> int:
        return int(self.weights.shape[0])

    def rows(self, idx: np.ndarray, drop: np.ndarray | None) -> np.ndarray:
        """Token rows of examples ``idx``: the agnostic copy where ``drop[idx]`` is set."""
        if drop is None or not self.has_agnostic:
            return idx
        return np.where(drop[idx], idx + self.n, idx)


def prepare_split(
    encoder: Any,
    frame: "pd.DataFrame",
    classes: Sequence[str],
    *,
    locale_aware: bool,
    with_agnostic: bool = False,
) -> PreparedSplit:
    """Tokenize a DataFrame split once and encode its labels over ``classes``."""
    queries = frame["query"].astype(str).tolist()
    locales = frame["locale"].astype(str).tolist()
    targets, missing = multi_hot(label_lists(frame["product_types"]), classes)
    if "weight" in frame.columns:
        weights = frame["weight"].to_numpy(dtype=np.float32, na_value=1.0)
    else:
        weights = np.ones(len(frame), dtype=np.float32)
    if locale_aware and with_agnostic:
        # the base Encoder contract: a None locale gets no locale token
        tokens = TokenCache(encoder, queries + queries, locales + [None] * len(queries))  # type: ignore[operator]
    else:
        tokens = TokenCache(encoder, queries, locales if locale_aware else None)
    return PreparedSplit(tokens, targets, weights, locales, missing, locale_aware and with_agnostic)


# ----------------------------------------------------------------------------- hooks


@dataclass
class TrainHooks:
    """Extension points of :func:`train_network` (e.g. for DistributedDataParallel).

    Attributes:
        wrap_model: returns the module used for the training forward pass (e.g.
            ``DistributedDataParallel(net)``); evaluation always uses the bare network.
        shard: keeps this rank's rows of each *global* batch (e.g. ``batch[rank::world]``).
            Every rank walks the same seeded permutation in global batches of
            ``train.batch_size``; the loss is normalised by the global batch's weight times
            ``world_size``, so that DDP's gradient averaging gives the single-process gradient.
        world_size: the number of ranks (1 for one process).
        is_main: whether this process writes checkpoints, shows progress and logs.
        sync_stop: combines the early-stopping decision across ranks (e.g. rank 0's
            decision broadcast); identity for one process.
        after_step: called after every optimiser step (and any checkpoint at that step)
            with ``(stage, global_step)``; used by tests to interrupt a run.
    """

    wrap_model: Callable[[Any], Any] = lambda net: net
    shard: Callable[[np.ndarray], np.ndarray] = lambda batch: batch
    world_size: int = 1
    is_main: bool = True
    sync_stop: Callable[[bool], bool] = lambda stop: stop
    after_step: Callable[[str, int], None] | None = None


# ----------------------------------------------------------------------------- state


@dataclass
class LoopState:
    """Where a stage's loop is; all of it goes in a checkpoint's JSON."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimiser steps so far
    best_metric: float | None = None
    best_step: int | None = None
    best_epoch: float | None = None
    bad_evals: int = 0
    last_eval_step: int | None = None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LoopState":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class StageResult:
    """What training one network produced."""

    stage: str
    best_metric: float | None
    best_step: int | None
    best_epoch: float | None
    steps: int
    epochs: int
    stopped_early: bool
    history: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {
            "best_valid_r_at_p": self.best_metric,
            "best_step": self.best_step,
            "best_epoch": self.best_epoch,
            "steps": self.steps,
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
            "history": self.history,
        }


@dataclass
class StageCheckpoint:
    """A stage's loop state and tensors, as loaded from a checkpoint."""

    state: LoopState
    net: dict[str, Any]  # as written by q2pt.models.pack_state (see net_metadata)
    best: dict[str, Any] | None
    optimizers: list[tuple[dict[str, Any], dict[str, Any]]]  # (tensors, index) per optimiser
    rng: Any
    net_metadata: dict[str, str] = field(default_factory=dict)  # safetensors metadata of net
    best_metadata: dict[str, str] = field(default_factory=dict)
    source: str = "checkpoint"  # the checkpoint folder, for error messages


# ----------------------------------------------------------------------------- optimisers


class RowSparseAdam(torch.optim.SparseAdam):
    """``torch.optim.SparseAdam``'s update (same state, same results up to float rounding),
    computed with row gathers into reused buffers instead of ``sparse_mask``.

    Embedding gradients are row-sparse (``sparse_dim() == 1``). For them torch's
    ``sparse_mask`` on the dense moment tensors, and fresh allocations for every
    intermediate, dominated a training step of the ngram encoder (on a 2**18 x 128 table,
    ``sparse_mask`` measured ~9x slower than ``index_select``). Here the touched rows are
    gathered once into buffers kept between steps, updated in place (``lerp_`` for the
    moving averages) and written back. Other gradients fall back to SparseAdam's own step.
    A test checks the parameters against torch's SparseAdam.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        self._scratch: dict[int, Any] = {}  # not state: rebuilt on demand, never checkpointed

    def _buffers(self, p: Any, rows: int) -> tuple[Any, Any, Any]:
        buf = self._scratch.get(id(p))
        if buf is None or buf.shape[1] < rows:
            buf = p.new_empty((3, max(rows, 1024)) + tuple(p.shape[1:]))
            self._scratch[id(p)] = buf
        return buf[0, :rows], buf[1, :rows], buf[2, :rows]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        row_sparse = all(
            p.grad is None or (p.grad.is_sparse and p.grad.sparse_dim() == 1)
            for group in self.param_groups
            for p in group["params"]
        )
        if not row_sparse or any(group.get("maximize", False) for group in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, lr = group["eps"], float(group["lr"])
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                grad = grad.coalesce()  # the update is non-linear: one value per row
                values = grad._values()
                if values.numel() == 0:
                    continue
                rows = grad._indices()[0]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                m, v, g2 = self._buffers(p, rows.numel())
                # m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2   (on the touched rows)
                torch.index_select(exp_avg, 0, rows, out=m)
                m.lerp_(values, 1 - beta1)
                exp_avg.index_copy_(0, rows, m)
                torch.index_select(exp_avg_sq, 0, rows, out=v)
                torch.mul(values, values, out=g2)
                v.lerp_(g2, 1 - beta2)
                exp_avg_sq.index_copy_(0, rows, v)
                step = state["step"]
                step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                # p <- p - step_size * m / (sqrt(v) + eps)
                m.div_(v.sqrt_().add_(eps)).mul_(-step_size)
                p.index_add_(0, rows, m)
        return loss


def make_optimizers(net: "Q2PTNet", cfg: "TrainSection") -> list[Any]:
    """Adam over dense parameters (encoder / head learning rates) + SparseAdam over the
    encoder's sparse parameters. Empty groups are left out."""
    encoder = net.encoder
    sparse_params = list(encoder.sparse_parameters()) if hasattr(encoder, "sparse_parameters") else []
    sparse_ids = {id(p) for p in sparse_params}
    enc_dense = [p for p in encoder.parameters() if p.requires_grad and id(p) not in sparse_ids]
    enc_ids = {id(p) for p in encoder.parameters()}
    head = [p for p in net.parameters() if p.requires_grad and id(p) not in enc_ids]
    enc_lr = cfg.encoder_lr or cfg.lr
    head_lr = cfg.head_lr or cfg.lr
    groups = []
    if enc_dense:
        groups.append({"params": enc_dense, "lr": enc_lr, "name": "encoder"})
    if head:
        groups.append({"params": head, "lr": head_lr, "name": "head"})
    optimizers: list[Any] = []
    if groups:
        optimizers.append(torch.optim.Adam(groups, lr=cfg.lr))
    trainable_sparse = [p for p in sparse_params if p.requires_grad]
    if trainable_sparse:
        optimizers.append(RowSparseAdam([{"params": trainable_sparse, "name": "sparse"}], lr=cfg.sparse_lr or enc_lr))
    for opt in optimizers:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def lr_factor(cfg: "TrainSection", step: int, total_steps: int, group: str) -> float:
    """The multiplier of a parameter group's learning rate at optimiser step ``step`` (from 0):
    0 for the encoder's groups during ``probe_steps``, a linear warm-up over ``warmup_steps``
    (counted from the end of the probe for the encoder), and the ``lr_decay`` schedule over
    ``total_steps``."""
    start = cfg.probe_steps if group in ("encoder", "sparse") else 0
    if step < start:
        return 0.0
    factor = 1.0
    if cfg.warmup_steps and step - start < cfg.warmup_steps:
        factor = (step - start + 1) / cfg.warmup_steps
    if cfg.lr_decay != "none" and total_steps > 0:
        progress = min(1.0, step / total_steps)
        factor *= 1.0 - progress if cfg.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def set_learning_rates(optimizers: Sequence[Any], cfg: "TrainSection", step: int, total_steps: int) -> None:
    """Set every group's rate for step ``step`` from its ``base_lr`` (see :func:`lr_factor`)."""
    if not (cfg.probe_steps or cfg.warmup_steps or cfg.lr_decay != "none"):
        return
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(cfg, step, total_steps, group.get("name", "head"))


#: optimiser state tensors with at least this many rows are stored row-sparse when at most
#: half of their rows are non-zero (Adam's moments of an embedding table: untouched rows are 0)
ROW_SPARSE_MIN_ROWS = 1024


def _optimizer_to_tensors(opt: Any, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimiser's state as safetensors tensors + a JSON index. Large tensors whose rows
    are mostly zero (moments of embedding rows never seen) keep only their non-zero rows:
    ``NAME.rows`` (int64) + ``NAME.values``, rebuilt exactly (bitwise) on load."""
    from q2pt.models import changed_rows

    sd = opt.state_dict()
    tensors: dict[str, Any] = {}
    index: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        entry = {}
        for key, value in st.items():
            if torch.is_tensor(value):
                name = f"{prefix}.{pid}.{key}"
                value = value.detach().cpu()
                if value.dim() >= 2 and value.shape[0] >= ROW_SPARSE_MIN_ROWS:
                    rows = changed_rows(value)
                    if 2 * rows.numel() <= value.shape[0]:
                        tensors[f"{name}.rows"] = rows
                        tensors[f"{name}.values"] = value.index_select(0, rows).contiguous()
                        entry[key] = {"row_sparse": name, "shape": list(value.shape)}
                        continue
                tensors[name] = value.contiguous()  # written right away: no copy needed
                entry[key] = {"tensor": name}
            else:
                entry[key] = {"value": value}
        index["state"][str(pid)] = entry
    return tensors, index


def _optimizer_tensor(tensors: Mapping[str, Any], ref: Mapping[str, Any]) -> Any:
    if "tensor" in ref:
        return tensors[ref["tensor"]]
    name = ref["row_sparse"]
    rows, values = tensors[f"{name}.rows"], tensors[f"{name}.values"]
    return torch.zeros(tuple(ref["shape"]), dtype=values.dtype).index_copy_(0, rows, values)


def _optimizer_from_tensors(opt: Any, tensors: Mapping[str, Any], index: Mapping[str, Any]) -> None:
    state = {}
    for pid, entry in index["state"].items():
        state[int(pid)] = {k: (_optimizer_tensor(tensors, v) if "value" not in v else v["value"]) for k, v in entry.items()}
    opt.load_state_dict({"state": state, "param_groups": index["param_groups"]})


def clone_state(net: Any) -> dict[str, Any]:
    """A detached, contiguous copy of a module's state_dict (no storage shared with ``net``),
    except tensors that *are* the encoder's shared pretrained values (a frozen ``use``
    table): those are immutable and kept by reference, not copied (262 MB each)."""
    from q2pt.models import pretrained_reference, same_storage

    shared = list(pretrained_reference(net)[0].values())
    out = {}
    for k, v in net.state_dict().items():
        if any(same_storage(v, ref) for ref in shared):
            out[k] = v.detach()
        else:
            out[k] = v.detach().cpu().contiguous().clone()
    return out


# ----------------------------------------------------------------------------- evaluation


def score_split(net: Any, tokens: TokenCache, batch_size: int) -> np.ndarray:
    """Scores ``(n, L)`` of a cached split, by the inference core's forward pass
    (:func:`q2pt.inference.torch_forward`: ``net.scores`` in evaluation mode)."""
    forward = torch_forward({UNIFIED: net})
    out = [forward(UNIFIED, tokens.take(np.arange(start, min(start + batch_size, tokens.n))))
           for start in range(0, tokens.n, batch_size)]
    if not out:
        return np.zeros((0, net.n_labels), dtype=np.float32)
    return np.concatenate(out)


def valid_r_at_p(net: Any, valid: PreparedSplit | None, cfg: "TrainSection") -> float | None:
    """Pooled R@P on valid (None when there is no valid data with positives)."""
    from q2pt.metrics import recall_at_precision

    if valid is None or valid.n == 0:
        return None
    y_true = valid.targets.toarray()
    missing = int(valid.n_missing.sum())
    if y_true.sum() == 0:
        return None
    scores = score_split(net, valid.tokens, cfg.eval_batch_size)
    result = recall_at_precision(y_true, scores, cfg.precision_target, n_missing=missing)
    return None if math.isnan(result.recall) else float(result.recall)


# ----------------------------------------------------------------------------- the loop


def _progress_enabled(progress: bool, hooks: TrainHooks) -> bool:
    return bool(progress and hooks.is_main and sys.stderr.isatty())


def train_network(
    net: "Q2PTNet",
    train: PreparedSplit,
    valid: PreparedSplit | None,
    cfg: "TrainSection",
    *,
    stage: str = UNIFIED,
    stage_seed: Sequence[int] = (0,),
    checkpointer: "Checkpointer | None" = None,
    resume: StageCheckpoint | None = None,
    progress: bool = True,
    hooks: TrainHooks | None = None,
) -> StageResult:
    """Train one network with early stopping on valid R@P; leaves the best weights in ``net``.

    Args:
        net: the network (encoder -> dropout -> head) to train in place.
        train, valid: prepared splits (``valid`` None or empty: no early stopping, the
            last weights are kept).
        cfg: the ``train`` section of the config.
        stage: the network's key ("*" unified, or the locale), for logs and checkpoints.
        stage_seed: seeds of this stage's shuffles and locale dropout draws.
        checkpointer: where to write checkpoints (None: no checkpoints).
        resume: a loaded checkpoint of this stage to continue from.
        progress: show a tqdm bar (only on a TTY and on the main process).
        hooks: DDP-style extension points (see :class:`TrainHooks`).
    """
    from tqdm.auto import tqdm

    hooks = hooks or TrainHooks()
    if train.n == 0:
        raise ConfigError(f"no training examples for {stage_label(stage)}")
    model = hooks.wrap_model(net)
    optimizers = make_optimizers(net, cfg)
    state = LoopState()
    best_state: dict[str, Any] | None = None
    if resume is not None:
        from q2pt.models import load_network_state, unpack_state

        load_network_state(net, resume.net, resume.net_metadata, source=resume.source)
        for opt, (tensors, index) in zip(optimizers, resume.optimizers):
            _optimizer_from_tensors(opt, tensors, index)
        if resume.best is not None:
            best_state = unpack_state(net, resume.best, resume.best_metadata, source=resume.source)
        torch.set_rng_state(resume.rng)
        state = resume.state
    net.train()

    bs = cfg.batch_size
    steps_per_epoch = max(1, math.ceil(train.n / bs))
    max_epochs = cfg.max_epochs
    if cfg.min_steps:
        max_epochs = max(max_epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    targets, weights = train.targets, torch.from_numpy(train.weights)
    use_dropout = train.has_agnostic and cfg.locale_dropout > 0
    show = _progress_enabled(progress, hooks)
    done = state.stopped_early or (cfg.max_steps is not None and state.step >= cfg.max_steps)
    total_steps = max_epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    def evaluate_now() -> bool:
        """Evaluate on valid, update best/patience; True to stop."""
        metric = valid_r_at_p(net, valid, cfg)
        state.last_eval_step = state.step
        epoch_f = round(state.epoch + state.batch / steps_per_epoch, 4)
        record = {"step": state.step, "epoch": epoch_f, "valid_r_at_p": metric}
        state.history.append(record)
        nonlocal best_state
        if metric is None:
            best_state = None  # no valid signal: keep the latest weights
            stop = False
        elif state.best_metric is None or metric > state.best_metric + 1e-12:
            state.best_metric, state.best_step, state.best_epoch = metric, state.step, epoch_f
            state.bad_evals = 0
            best_state = clone_state(net)
            stop = False
        else:
            state.bad_evals += 1
            stop = state.bad_evals >= cfg.patience and state.step >= max(cfg.min_steps, cfg.probe_steps)
        stop = hooks.sync_stop(stop)
        if hooks.is_main:
            best = "-" if state.best_metric is None else f"{state.best_metric:.4f}"
            logger.log(
                logging.INFO if stage == UNIFIED else logging.DEBUG,  # non-unified: one line per locale
                "%s step %d (epoch %.2f): valid R@P%g %s (best %s)",
                stage_label(stage), state.step, epoch_f, cfg.precision_target * 100,
                "-" if metric is None else f"{metric:.4f}", best,
            )
        if stop:
            state.stopped_early = True
        return stop

    def save_checkpoint() -> None:
        if checkpointer is not None and hooks.is_main:
            checkpointer.save_progress(stage, net, optimizers, state, best_state)

    while not done and state.epoch < max_epochs:
        perm = epoch_permutation(stage_seed, state.epoch, train.n)
        drop = None
        if use_dropout:
            drop = np.random.default_rng([*stage_seed, state.epoch, 1]).random(train.n) < cfg.locale_dropout
        bar = tqdm(
            total=steps_per_epoch, initial=state.batch, disable=not show, leave=False,
            desc=f"{stage_label(stage)} epoch {state.epoch + 1}/{max_epochs}", unit="batch",
        )
        try:
            for b in range(state.batch, steps_per_epoch):
                idx = perm[b * bs : (b + 1) * bs]
                set_learning_rates(optimizers, cfg, state.step, total_steps)
                loss = _train_step(
                    model, optimizers, train, idx, drop, targets, weights, shard=hooks.shard, world_size=hooks.world_size,
                    output=net.output,
                )
                state.step += 1
                state.batch = b + 1
                bar.update(1)
                if show:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if cfg.max_steps is not None and state.step >= cfg.max_steps:
                    done = True
                if cfg.eval_every and state.step % cfg.eval_every == 0 and evaluate_now():
                    done = True
                if not done and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    save_checkpoint()
                if hooks.after_step is not None:
                    hooks.after_step(stage, state.step)
                if done:
                    break
        finally:
            bar.close()
        if done:
            break
        state.epoch += 1
        state.batch = 0
        if not cfg.eval_every and evaluate_now():
            done = True
            break
        if not cfg.checkpoint_every and state.epoch < max_epochs:
            save_checkpoint()

    if state.last_eval_step != state.step and not state.stopped_early:
        evaluate_now()  # the final weights get their evaluation too
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return StageResult(
        stage=stage,
        best_metric=state.best_metric,
        best_step=state.best_step,
        best_epoch=state.best_epoch,
        steps=state.step,
        epochs=state.epoch,
        stopped_early=state.stopped_early,
        history=state.history,
    )


def _train_step(
    model: Any,
    optimizers: list[Any],
    train: PreparedSplit,
    idx: np.ndarray,
    drop: np.ndarray | None,
    targets: Any,
    weights: Any,
    *,
    shard: Callable[[np.ndarray], np.ndarray] | None = None,
    world_size: int = 1,
    output: str = "sigmoid",
) -> float:
    """One optimiser step on the global batch ``idx`` (this rank's ``shard`` of it).

    Loss: binary cross-entropy on logits, averaged over labels (``output`` "softmax":
    cross-entropy of the softmax against the label set, each true type 1/k), weighted by the examples'
    weights and divided by the weight of the whole global batch (times ``world_size``,
    which DDP's gradient averaging undoes). Rows where ``drop`` is set are shown without
    their locale token. A rank without rows still runs forward and backward (DDP needs
    every rank's gradients). Returns this rank's share of the batch loss.
    """
    import torch.nn.functional as F

    idx = np.asarray(idx, dtype=np.int64)
    total = float(weights[torch.from_numpy(idx)].sum())
    local = np.asarray(shard(idx), dtype=np.int64) if shard is not None else idx
    logits = model(train.tokens.take(train.rows(local, drop)))
    y = torch.from_numpy(targets[local].toarray())
    w = weights[torch.from_numpy(local)]
    if output == "softmax":
        # cross-entropy against the label set as a distribution (each true type 1/k)
        target = y / y.sum(dim=1, keepdim=True).clamp_min(1.0)
        per_example = -(F.log_softmax(logits, dim=1) * target).sum(dim=1)
    else:
        per_example = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=1)
    loss = (per_example * w).sum() * (world_size / max(total, 1e-12))
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()
    return float(loss.detach()) / world_size


def epoch_permutation(stage_seed: Sequence[int], epoch: int, n: int) -> np.ndarray:
    """The order of the rows in an epoch: a function of the seeds and the epoch only."""
    return np.random.default_rng([*stage_seed, epoch, 0]).permutation(n)


def stage_label(stage: str) -> str:
    return "unified model" if stage == UNIFIED else f"locale {stage}"


# ----------------------------------------------------------------------------- checkpoints

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def safe_name(stage: str) -> str:
    """A file-system safe, reversible-enough name for a stage / locale."""
    if stage == UNIFIED:
        return "_unified"
    return stage if _SAFE.match(stage) else "x" + stage.encode("utf-8").hex()


class Checkpointer:
    """Checkpoints of a training run in ``OUT/checkpoints`` (safetensors + JSON, no pickle).

    Network weights are written by :func:`q2pt.models.pack_state` (pretrained tables as
    row deltas, checked against the installed resource on resume).

    Layout::

        checkpoints/run.json               what the run is (config, data, labels): resume checks it
        checkpoints/done/<stage>.safetensors   best weights of each finished network
        checkpoints/done/<stage>.json          its training summary
        checkpoints/last/                  the network in progress (replaced atomically):
            state.json  net.safetensors  optim.safetensors  rng.safetensors
            best.safetensors (only when the best weights are not the current ones)
    """

    def __init__(self, folder: str | Path, run: Mapping[str, Any]):
        self.folder = Path(folder)
        self.run = json.loads(json.dumps(run))

    # -- writing
    def start(self) -> None:
        """Start a fresh run: remove old checkpoints, write run.json."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        write_json(self.folder / "run.json", {"format": CHECKPOINT_FORMAT, **self.run})

    def save_progress(
        self, stage: str, net: Any, optimizers: list[Any], state: LoopState, best: Mapping[str, Any] | None
    ) -> None:
        from safetensors.torch import save_file

        from q2pt.models import pack_state

        with atomic_path(self.folder / "last") as tmp:
            tmp.mkdir()
            tensors, metadata = pack_state(net)
            save_file(tensors, str(tmp / "net.safetensors"), metadata=metadata)
            del tensors
            # the best weights are often the current ones (while validation improves)
            best_is_current = best is not None and state.best_step == state.step
            if best is not None and not best_is_current:
                tensors, metadata = pack_state(net, best)
                save_file(tensors, str(tmp / "best.safetensors"), metadata=metadata)
                del tensors
            opt_tensors: dict[str, Any] = {}
            indexes = []
            for i, opt in enumerate(optimizers):
                tensors, index = _optimizer_to_tensors(opt, f"opt{i}")
                opt_tensors.update(tensors)
                indexes.append(index)
            save_file(opt_tensors, str(tmp / "optim.safetensors"))
            save_file({"torch": torch.get_rng_state().clone()}, str(tmp / "rng.safetensors"))
            state_json = {
                "format": CHECKPOINT_FORMAT,
                "stage": stage,
                "loop": state.to_json(),
                "has_best": best is not None,
                "best_is_current": best_is_current,
                "optimizers": indexes,
            }
            (tmp / "state.json").write_text(json.dumps(state_json, indent=1), encoding="utf-8")

    def save_done(self, stage: str, net: Any, result: StageResult) -> None:
        from safetensors.torch import save_file

        from q2pt.models import pack_state

        done = self.folder / "done"
        done.mkdir(parents=True, exist_ok=True)
        with atomic_path(done / f"{safe_name(stage)}.safetensors") as tmp:
            tensors, metadata = pack_state(net)
            save_file(tensors, str(tmp), metadata=metadata)
        write_json(done / f"{safe_name(stage)}.json", {"stage": stage, **result.summary()})
        last = self.folder / "last"
        if last.exists():
            shutil.rmtree(last)

    # -- reading
    def exists(self) -> bool:
        return (self.folder / "run.json").is_file()

    def check_run(self) -> None:
        """Refuse to resume a run made with another config, data or label space."""
        path = self.folder / "run.json"
        saved = _read_json(path)
        if saved.get("format") not in READABLE_CHECKPOINT_FORMATS:
            raise ModelLoadError(f"{path}: unsupported checkpoint format {saved.get('format')!r}")
        for key, value in self.run.items():
            if saved.get(key) != value:
                what = key.replace("_", " ")
                if key == "config" and isinstance(saved.get(key), dict):
                    old, new = _flatten(saved[key]), _flatten(value)
                    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
                    what = f"config ({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in changed[:5])})"
                raise ConfigError(
                    f"cannot resume: the checkpoint in {self.folder} was made with a different {what}; "
                    "train without --resume (or with the same settings and data)"
                )

    def done_stages(self) -> dict[str, tuple[dict[str, Any], dict[str, str], dict[str, Any]]]:
        """{stage: (best weights as packed tensors, their safetensors metadata, summary)} of
        the finished networks (load the weights with :func:`q2pt.models.load_network_state`)."""
        from q2pt.models import read_safetensors

        out = {}
        done = self.folder / "done"
        if not done.is_dir():
            return out
        for meta_path in sorted(done.glob("*.json")):
            meta = _read_json(meta_path)
            tensors, metadata = read_safetensors(meta_path.with_suffix(".safetensors"))
            out[meta["stage"]] = (tensors, metadata, meta)
        return out

    def load_progress(self) -> tuple[str, StageCheckpoint] | None:
        """The network in progress, or None."""
        from q2pt.models import read_safetensors

        last = self.folder / "last"
        if not (last / "state.json").is_file():
            return None
        meta = _read_json(last / "state.json")
        opt_tensors, _ = read_safetensors(last / "optim.safetensors")
        optimizers = [(opt_tensors, index) for index in meta["optimizers"]]
        net, net_metadata = read_safetensors(last / "net.safetensors")
        best, best_metadata = None, {}
        if meta.get("has_best"):
            if meta.get("best_is_current"):
                best, best_metadata = net, net_metadata
            else:
                best, best_metadata = read_safetensors(last / "best.safetensors")
        ckpt = StageCheckpoint(
            state=LoopState.from_json(meta["loop"]),
            net=net,
            best=best,
            optimizers=optimizers,
            rng=read_safetensors(last / "rng.safetensors")[0]["torch"],
            net_metadata=net_metadata,
            best_metadata=best_metadata,
            source=str(last),
        )
        return meta["stage"], ckpt


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelLoadError(f"{path} is corrupt (not valid JSON: {exc})") from None


# ----------------------------------------------------------------------------- variants


def _run_identity(config: "Config", dataset: "Dataset", classes: list[str], locales: list[str]) -> dict[str, Any]:
    cfg = config.to_dict()
    for key in ("num_threads", "checkpoint_every", "eval_batch_size"):  # do not change the result
        cfg["train"].pop(key, None)
    return {"config": cfg, "data_fingerprint": dataset.fingerprint, "labels": classes, "locales": locales}


def fit_model(
    model: "Q2PTModel",
    dataset: "Dataset",
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    hooks: TrainHooks | None = None,
) -> "Q2PTModel":
    """Train ``model`` (its variant, encoder and config) on ``dataset``; see the module docstring.

    Fills the model's networks, classes_, locales_, thresholds_ and manifest; with
    ``out_dir`` writes checkpoints to ``out_dir/checkpoints`` and saves the model folder.
    """
    from q2pt.models import build_network, validation_report

    hooks = hooks or TrainHooks()
    config = model.config
    cfg = config.train
    variant = config.model.variant
    train_df = dataset.train
    if len(train_df) == 0:
        raise ConfigError("the dataset has no training examples")
    valid_df = dataset.valid
    classes = sorted({x for row in label_lists(train_df["product_types"]) for x in row})
    locales = sorted(train_df["locale"].astype(str).unique().tolist())

    previous_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        checkpointer = None
        resumed_done: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, Any]]] = {}
        resumed_progress: tuple[str, StageCheckpoint] | None = None
        if out_dir is not None:
            from q2pt.models import check_output_folder

            check_output_folder(Path(out_dir))
            checkpointer = Checkpointer(Path(out_dir) / "checkpoints", _run_identity(config, dataset, classes, locales))
            if resume and checkpointer.exists():
                checkpointer.check_run()
                resumed_done = checkpointer.done_stages()
                resumed_progress = checkpointer.load_progress()
                logger.info("resuming from %s (%d network(s) finished)", checkpointer.folder, len(resumed_done))
            else:
                if resume:
                    logger.warning("no checkpoint in %s: training from the start", checkpointer.folder)
                if hooks.is_main:
                    checkpointer.start()

        if variant == "non-unified":
            stages = [(loc, train_df[train_df["locale"].astype(str) == loc], valid_df[valid_df["locale"].astype(str) == loc]) for loc in locales]
        else:
            stages = [(UNIFIED, train_df, valid_df[valid_df["locale"].astype(str).isin(locales)])]

        networks: dict[str, Any] = {}
        network_labels: dict[str, list[str]] = {}
        summaries: dict[str, Any] = {}
        for i, (stage, tr, va) in enumerate(stages):
            if stage == UNIFIED:
                stage_classes = classes
            else:
                stage_classes = sorted({x for row in label_lists(tr["product_types"]) for x in row})
            torch.manual_seed(cfg.seed)
            net = build_network(config, stage_classes, locales if variant == "unified-aware" else None)
            network_labels[stage] = stage_classes
            networks[stage] = net
            if stage in resumed_done:
                from q2pt.models import load_network_state

                weights, metadata, meta = resumed_done[stage]
                where = str(checkpointer.folder / "done") if checkpointer is not None else "checkpoint"
                load_network_state(net, weights, metadata, source=where)
                net.eval()
                summaries[stage] = {k: v for k, v in meta.items() if k != "stage"}
                continue
            aware = variant == "unified-aware"
            train_split = prepare_split(net.encoder, tr, stage_classes, locale_aware=aware, with_agnostic=aware and cfg.locale_dropout > 0)
            net.init_output_bias(train_split.targets.nnz / max(1, train_split.n * len(stage_classes)))
            valid_split = prepare_split(net.encoder, va, stage_classes, locale_aware=aware) if len(va) else None
            if valid_split is None and hooks.is_main:
                logger.warning("%s: no validation examples: no early stopping, keeping the last weights", stage_label(stage))
            stage_resume = None
            if resumed_progress is not None and resumed_progress[0] == stage:
                stage_resume = resumed_progress[1]
            result = train_network(
                net, train_split, valid_split, cfg, stage=stage, stage_seed=(cfg.seed, i),
                checkpointer=checkpointer, resume=stage_resume, progress=progress, hooks=hooks,
            )
            summaries[stage] = result.summary()
            if checkpointer is not None and hooks.is_main:
                checkpointer.save_done(stage, net, result)
            if stage != UNIFIED and hooks.is_main:
                best = "-" if result.best_metric is None else f"{result.best_metric:.4f}"
                logger.info(
                    "%s (%d/%d): %d train queries, %d labels, %d epochs; best valid R@P%g %s",
                    stage_label(stage), i + 1, len(stages), train_split.n, len(stage_classes), result.epochs,
                    cfg.precision_target * 100, best,
                )

        model._set_trained(
            networks=networks, network_labels=network_labels, classes=classes, locales=locales,
            dataset=dataset, training=summaries,
        )
        validation_report(model, valid_df)
    finally:
        torch.set_num_threads(previous_threads)
    if out_dir is not None and hooks.is_main:
        model.save(out_dir)
    return model
