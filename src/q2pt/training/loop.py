"""The one step loop: :func:`train_network` trains one network with early stopping on
valid R@P (or PR-AUC, ``train.stop_metric``), checkpoints and DDP hooks (:class:`TrainHooks`)."""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from q2pt.errors import ConfigError, require
from q2pt.inference import UNIFIED, torch_forward
from q2pt.metrics import stop_metric_label
from q2pt.training.checkpoints import Checkpointer, LoopState, StageCheckpoint, StageResult
from q2pt.training.optim import make_optimizers, optimizer_from_tensors, set_learning_rates
from q2pt.training.tokens import PreparedSplit, TokenCache
from q2pt.weights import clone_state, load_network_state, unpack_state

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

if TYPE_CHECKING:  # pragma: no cover

    from q2pt.config import TrainSection
    from q2pt.network import Q2PTNet

logger = logging.getLogger(__name__)


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


def score_split(net: Any, tokens: TokenCache, batch_size: int) -> np.ndarray:
    """Scores ``(n, L)`` of a cached split, by the inference core's forward pass
    (:func:`q2pt.inference.torch_forward`: ``net.scores`` in evaluation mode)."""
    forward = torch_forward({UNIFIED: net})
    out = [forward(UNIFIED, tokens.take(np.arange(start, min(start + batch_size, tokens.n))))
           for start in range(0, tokens.n, batch_size)]
    if not out:
        return np.zeros((0, net.n_labels), dtype=np.float32)
    return np.concatenate(out)


def stop_metric(cfg: "TrainSection", hierarchical: bool) -> str:
    """The metric early stopping watches (``train.stop_metric`` resolved): "r_at_p" or "pr_auc"."""
    if cfg.stop_metric == "auto":
        return "pr_auc" if hierarchical else "r_at_p"
    return cfg.stop_metric


def valid_metric(net: Any, valid: PreparedSplit | None, cfg: "TrainSection",
                 column_levels: np.ndarray | None = None, *, name: str) -> float | None:
    """The early-stopping metric ``name`` on valid (:func:`stop_metric`: "r_at_p", pooled R@P at
    the precision target, or "pr_auc", the area under the precision-recall curve); None when
    there is no valid data with positives. With ``column_levels`` (a hierarchical model's level of each output) and
    ``train.tree_stopping`` "mean_of_levels": the mean of each level's metric over its own
    outputs (levels with validation positives)."""
    from q2pt.metrics import pr_auc, recall_at_precision

    if valid is None or valid.n == 0:
        return None
    y_true = valid.targets.toarray()
    missing = int(valid.n_missing.sum())
    if y_true.sum() == 0:
        return None
    scores = score_split(net, valid.tokens, cfg.eval_batch_size)

    def metric(y: np.ndarray, s: np.ndarray, n_missing: int) -> float:
        if name == "pr_auc":
            return pr_auc(y, s, n_missing=n_missing)
        return recall_at_precision(y, s, cfg.precision_target, n_missing=n_missing).recall

    if column_levels is not None and cfg.tree_stopping == "mean_of_levels":
        values = []
        for level in np.unique(column_levels):
            cols = column_levels == level
            if y_true[:, cols].sum():
                values.append(metric(y_true[:, cols], scores[:, cols], 0))
        return float(np.mean(values)) if values else None
    value = metric(y_true, scores, missing)
    return None if math.isnan(value) else float(value)


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
    column_levels: np.ndarray | None = None,
    column_parents: np.ndarray | None = None,
) -> StageResult:
    """Train one network with early stopping on valid R@P or PR-AUC (:func:`stop_metric`);
    leaves the best weights in ``net``.

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
        column_levels: a hierarchical model's level of each output (``train.tree_stopping``).
        column_parents: whether each output is a parent of other outputs
            (``train.ancestor_loss_weight``).
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

        load_network_state(net, resume.net, resume.net_metadata, source=resume.source)
        for opt, (tensors, index) in zip(optimizers, resume.optimizers):
            optimizer_from_tensors(opt, tensors, index)
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
    label_weights = None
    if column_parents is not None and cfg.ancestor_loss_weight != 1.0:
        label_weights = torch.from_numpy(np.where(column_parents, cfg.ancestor_loss_weight, 1.0).astype(np.float32))
    use_dropout = train.has_agnostic and cfg.locale_dropout > 0
    show = _progress_enabled(progress, hooks)
    done = state.stopped_early or (cfg.max_steps is not None and state.step >= cfg.max_steps)
    total_steps = max_epochs * steps_per_epoch
    metric_name = stop_metric(cfg, column_levels is not None)
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    def evaluate_now() -> bool:
        """Evaluate on valid, update best/patience; True to stop."""
        metric = valid_metric(net, valid, cfg, column_levels, name=metric_name)
        state.last_eval_step = state.step
        epoch_f = round(state.epoch + state.batch / steps_per_epoch, 4)
        record = {"step": state.step, "epoch": epoch_f, f"valid_{metric_name}": metric}
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
                "%s step %d (epoch %.2f): valid %s %s (best %s)",
                stage_label(stage), state.step, epoch_f, stop_metric_label(metric_name, cfg.precision_target),
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
                loss = train_step(
                    model, optimizers, train, idx, drop, targets, weights, shard=hooks.shard, world_size=hooks.world_size,
                    output=net.output, label_weights=label_weights,
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
        metric=metric_name,
        best_metric=state.best_metric,
        best_step=state.best_step,
        best_epoch=state.best_epoch,
        steps=state.step,
        epochs=state.epoch,
        stopped_early=state.stopped_early,
        history=state.history,
    )


def train_step(
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
    label_weights: Any = None,
) -> float:
    """One optimiser step on the global batch ``idx`` (this rank's ``shard`` of it).

    Loss: binary cross-entropy on logits, averaged over labels (``output`` "softmax":
    cross-entropy of the softmax against the label set, each true type 1/k), weighted by the examples'
    weights and divided by the weight of the whole global batch (times ``world_size``,
    which DDP's gradient averaging undoes). Rows where ``drop`` is set are shown without
    their locale token. A rank without rows still runs forward and backward (DDP needs
    every rank's gradients). Returns this rank's share of the batch loss.
    """

    idx = np.asarray(idx, dtype=np.int64)
    total = float(weights[torch.from_numpy(idx)].sum())
    local = np.asarray(shard(idx), dtype=np.int64) if shard is not None else idx
    logits = model(train.tokens.take(train.rows(local, drop)))
    y = torch.from_numpy(targets[local].toarray())
    w = weights[torch.from_numpy(local)]
    per_example = example_loss(logits, y, output, label_weights)
    loss = (per_example * w).sum() * (world_size / max(total, 1e-12))
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()
    return float(loss.detach()) / world_size


def example_loss(logits: Any, y: Any, output: str = "sigmoid", label_weights: Any = None) -> Any:
    """Each example's loss: binary cross-entropy averaged over the labels (``label_weights``:
    a weighted mean, ``train.ancestor_loss_weight``), or with ``output`` "softmax" the
    cross-entropy of the softmax against the label set (each of its k types 1/k)."""
    import torch.nn.functional as F

    if output == "softmax":
        target = y / y.sum(dim=1, keepdim=True).clamp_min(1.0)
        return -(F.log_softmax(logits, dim=1) * target).sum(dim=1)
    pair = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    if label_weights is None:
        return pair.mean(dim=1)
    return (pair * label_weights).sum(dim=1) / label_weights.sum()


def epoch_permutation(stage_seed: Sequence[int], epoch: int, n: int) -> np.ndarray:
    """The order of the rows in an epoch: a function of the seeds and the epoch only."""
    return np.random.default_rng([*stage_seed, epoch, 0]).permutation(n)


def stage_label(stage: str) -> str:
    return "unified model" if stage == UNIFIED else f"locale {stage}"
