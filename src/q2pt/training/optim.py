"""Optimisers: Adam over dense parameters, a row-gather SparseAdam over embedding tables,
the learning-rate schedule (linear probe, warm-up, decay) and the optimiser state codec of
checkpoints (large moments row-sparse)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from q2pt.errors import require
from q2pt.weights import changed_rows

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

if TYPE_CHECKING:  # pragma: no cover

    from q2pt.config import TrainSection
    from q2pt.network import Q2PTNet

logger = logging.getLogger(__name__)


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


def optimizer_to_tensors(opt: Any, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimiser's state as safetensors tensors + a JSON index. Large tensors whose rows
    are mostly zero (moments of embedding rows never seen) keep only their non-zero rows:
    ``NAME.rows`` (int64) + ``NAME.values``, rebuilt exactly (bitwise) on load."""

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


def optimizer_tensor(tensors: Mapping[str, Any], ref: Mapping[str, Any]) -> Any:
    if "tensor" in ref:
        return tensors[ref["tensor"]]
    name = ref["row_sparse"]
    rows, values = tensors[f"{name}.rows"], tensors[f"{name}.values"]
    return torch.zeros(tuple(ref["shape"]), dtype=values.dtype).index_copy_(0, rows, values)


def optimizer_from_tensors(opt: Any, tensors: Mapping[str, Any], index: Mapping[str, Any]) -> None:
    state = {}
    for pid, entry in index["state"].items():
        state[int(pid)] = {k: (optimizer_tensor(tensors, v) if "value" not in v else v["value"]) for k, v in entry.items()}
    opt.load_state_dict({"state": state, "param_groups": index["param_groups"]})
