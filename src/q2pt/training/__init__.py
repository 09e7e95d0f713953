"""The one training loop behind every q2pt variant.

:func:`fit_networks` (:mod:`.fit`) turns a :class:`~q2pt.data.Dataset` into trained networks
for a :class:`~q2pt.models.Q2PTModel`: one network over every locale for the unified
variants, one per locale (each over the labels seen in that locale's train split) for
non-unified. Each network is trained by :func:`train_network` (:mod:`.loop`), the only step
loop:

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
  steps; ``train.stop_metric``: PR-AUC for a tree by default); early stopping after
  ``patience`` evaluations without improvement; the best weights are kept;
* checkpoints (safetensors tensors + JSON state, never pickle) every epoch or every
  ``checkpoint_every`` steps into ``OUT/checkpoints``; ``resume=True`` continues from the
  last one and ends with the same weights as an uninterrupted run (torch's RNG state is
  checkpointed; shuffles are derived from the seed). Weights are written like model
  folders (:func:`q2pt.weights.pack_state`: pretrained tables as row deltas) and large
  optimiser moments row-sparse (only their non-zero rows), so that a checkpoint of a
  frozen or sparsely trained ``use`` table costs megabytes, not ~1 GB.

Distributed training (DDP) plugs in through :class:`TrainHooks`: ``wrap_model`` wraps the
network used for the training forward pass, ``shard`` keeps the rank's share of each
epoch's permutation, ``is_main`` gates every write and log, and ``sync_stop`` agrees on
early stopping across ranks.

Modules: :mod:`.tokens` (token caches, prepared splits), :mod:`.optim` (optimisers, the
learning-rate schedule, the optimiser state codec), :mod:`.checkpoints` (loop state and
checkpoints), :mod:`.loop` (the step loop, DDP hooks), :mod:`.fit` (the variants).
"""

from q2pt.training.checkpoints import Checkpointer, LoopState, StageCheckpoint, StageResult
from q2pt.training.fit import TrainedNetworks, fit_networks
from q2pt.training.loop import TrainHooks, train_network, train_step
from q2pt.training.optim import RowSparseAdam, lr_factor, make_optimizers
from q2pt.training.tokens import PreparedSplit, TokenCache, prepare_split

__all__ = [
    "Checkpointer",
    "LoopState",
    "PreparedSplit",
    "RowSparseAdam",
    "StageCheckpoint",
    "StageResult",
    "TokenCache",
    "TrainHooks",
    "TrainedNetworks",
    "fit_networks",
    "lr_factor",
    "make_optimizers",
    "prepare_split",
    "train_network",
    "train_step",
]
