"""The q2pt network: encoder -> dropout -> head, one logit per product type.

:class:`Q2PTNet` turns a tokenized batch into logits; :meth:`Q2PTNet.scores` is the one place
that turns logits into scores (independent sigmoids, or a softmax over the types with
``model.output softmax``), blended with the query memory's vote when the network has one
(``model.memory_weight``; :meth:`Q2PTNet.set_memory`). :func:`build_network` makes a fresh one
for a config.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from q2pt.config import Config
from q2pt.errors import ConfigError, require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

__all__ = ["OUTPUTS", "Q2PTNet", "build_network", "memory_settings", "torch_threads"]


#: output layers of a network (``model.output``)
OUTPUTS = ("sigmoid", "softmax")


class Q2PTNet(torch.nn.Module):
    """Encoder -> dropout -> head; ``forward`` returns logits ``(B, n_labels)``."""

    def __init__(
        self, encoder: Any, n_labels: int, dropout: float = 0.001, hidden: Sequence[int] = (), output: str = "sigmoid",
        memory: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if n_labels < 1:
            raise ConfigError("a network needs at least one label")
        if output not in OUTPUTS:
            raise ConfigError(f"unknown output {output!r}; valid: {', '.join(OUTPUTS)}")
        self.output = output
        self.encoder = encoder
        self.n_labels = int(n_labels)
        self.dropout = torch.nn.Dropout(dropout)
        layers: list[Any] = []
        width = int(encoder.dim)
        for h in hidden:
            layers += [torch.nn.Linear(width, int(h)), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
            width = int(h)
        layers.append(torch.nn.Linear(width, self.n_labels))
        self.head = torch.nn.Sequential(*layers)
        memory = dict(memory or {})
        self.memory_weight = float(memory.get("weight", 0.0))
        self.memory_k = int(memory.get("k", 30))
        self.memory_temperature = float(memory.get("temperature", 0.05))
        # buffers once set (saved with the weights): the training queries' embeddings (N, dim),
        # unit vectors, and their label indexes (N, m) padded with n_labels
        self.register_buffer("memory_keys", None)
        self.register_buffer("memory_labels", None)
        self.register_buffer("memory_values", None)  # (N, m): each label's share of its query's weight
        self.register_buffer("memory_projection", None)  # (dim, d) when the keys are projected (memory_dim)

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.head(self.dropout(self.encoder(batch)))

    @property
    def has_memory(self) -> bool:
        return self.memory_keys is not None and self.memory_weight > 0.0

    def set_memory(self, keys: Any, labels: Any, values: Any = None, projection: Any = None) -> None:
        """Keep ``keys`` (N, d; L2-normalised here), ``labels`` (N, m int64, each row's label
        indexes padded with ``n_labels``), ``values`` (N, m: each label's share of the row's
        weight, default 1) and ``projection`` (dim, d, or None when d is the encoder's width: the
        map from an embedding to the keys' space) as buffers: they are saved with the weights."""
        keys = torch.as_tensor(keys, dtype=torch.float32)
        if projection is not None:
            projection = torch.as_tensor(projection, dtype=torch.float32)
            if projection.dim() != 2 or keys.dim() != 2 or projection.shape[1] != keys.shape[1]:
                raise ConfigError(f"query memory projection {tuple(projection.shape)} does not match its keys "
                                  f"{tuple(keys.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        values = torch.ones(labels.shape) if values is None else torch.as_tensor(values, dtype=torch.float32)
        if tuple(values.shape) != tuple(labels.shape):
            raise ConfigError(f"query memory values {tuple(values.shape)} do not match its labels {tuple(labels.shape)}")
        if keys.dim() != 2 or labels.dim() != 2 or keys.shape[0] != labels.shape[0] or keys.shape[0] < 1:
            raise ConfigError(f"a query memory needs (N, dim) keys and (N, m) labels, got {tuple(keys.shape)} "
                              f"and {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.n_labels):
            raise ConfigError("query memory labels out of range")
        keys = keys / keys.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.memory_keys = keys.contiguous()
        self.memory_labels = labels.contiguous()
        self.memory_values = values.contiguous()
        self.memory_projection = None if projection is None else projection.contiguous()

    def memory_scores(self, z: Any) -> Any:
        """The memory's vote for embeddings ``z`` (B, dim): per label, the softmax-weighted
        share of the ``memory_k`` nearest training queries that carry it."""
        if self.memory_projection is not None:
            z = z @ self.memory_projection
        z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sims = z @ self._memory_keys_t()  # (B, N)
        k = min(self.memory_k, int(self.memory_keys.shape[0]))
        top, idx = torch.topk(sims, k, dim=1)
        w = torch.softmax(top / self.memory_temperature, dim=1)  # (B, k)
        labels = self.memory_labels[idx]  # (B, k, m)
        m = labels.shape[2]
        votes = z.new_zeros(z.shape[0], self.n_labels + 1)
        votes = votes.scatter_add(1, labels.reshape(z.shape[0], k * m),
                                  (w.unsqueeze(2) * self.memory_values[idx]).reshape(z.shape[0], k * m))
        votes = votes[:, : self.n_labels]
        if self.output == "softmax":  # a distribution over the labels, as the network's own scores
            votes = votes / votes.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return votes

    def _memory_keys_t(self) -> Any:
        """The memory keys as one contiguous (dim, N) block, cached until the keys change.

        On torch's CPU builds ``z @ keys.t()`` on the saved (N, dim) layout runs several times
        slower at batch 1 than on a contiguous transpose, and batch 1 is what serving sees; the
        saved layout stays (N, dim)."""
        keys = self.memory_keys
        stamp = (id(keys), keys._version, keys.data_ptr(), keys.dtype)
        cached = self.__dict__.get("_keys_t")
        if cached is None or cached[0] != stamp:
            with torch.inference_mode(False):  # a normal tensor, also usable outside inference mode
                cached = (stamp, keys.detach().t().contiguous())
            self.__dict__["_keys_t"] = cached
        return cached[1]

    def probabilities(self, logits: Any) -> Any:
        """Scores in [0, 1] from logits: independent sigmoids, or a softmax over the labels."""
        return torch.softmax(logits, dim=-1) if self.output == "softmax" else torch.sigmoid(logits)

    def scores(self, batch: dict[str, Any]) -> Any:
        """``probabilities(forward(batch))``, blended with the query memory's vote when there is
        one: what every prediction path returns."""
        z = self.encoder(batch)
        p = self.probabilities(self.head(self.dropout(z)))
        if not self.has_memory:
            return p
        return (1.0 - self.memory_weight) * p + self.memory_weight * self.memory_scores(z)

    @torch.no_grad()
    def init_head_from_names(self, names: Sequence[str], scale: float) -> bool:
        """Start the output layer from the product types' names: row ``c`` of the last linear
        layer becomes ``scale`` times the unit embedding of name ``c`` by this network's encoder
        (locale-agnostic), less the mean of those unit embeddings, so that a query close to a
        type's name starts with a higher score for it. Only for a head without hidden layers
        (the embedding must be the layer's input); returns whether it was applied. The bias is
        left to :meth:`init_output_bias`."""
        if len(names) != self.n_labels:
            raise ConfigError(f"{len(names)} type names for a network of {self.n_labels} outputs")
        last = self.head[-1]
        if len(self.head) != 1 or not isinstance(last, torch.nn.Linear):
            return False
        unit = self.encoder.encode(names).float()
        unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
        last.weight.copy_((scale * (unit - unit.mean(dim=0, keepdim=True))).to(last.weight.dtype))
        return True

    @torch.no_grad()
    def init_output_bias(self, prior: float | np.ndarray) -> None:
        """Start every output at the label prior: bias = logit(prior) (one prior for all, or
        one per output).

        With hundreds of labels almost every (query, label) pair is negative; from a zero
        bias the first epochs are spent pushing every score down before any positive is
        learned. Starting at the prior skips that phase (the usual "prior initialisation"
        of many-class sigmoid outputs)."""
        last = self.head[-1]
        assert isinstance(last, torch.nn.Linear)
        if self.output == "softmax":
            last.bias.zero_()  # a softmax starts uniform over the labels
            return
        p = np.clip(np.asarray(prior, dtype=np.float64), 1e-6, 0.5)
        logit = np.log(p / (1.0 - p))
        if logit.ndim == 0:
            last.bias.fill_(float(logit))
        else:
            last.bias.copy_(torch.from_numpy(logit.astype(np.float32)))


def build_network(
    config: Config,
    classes: Sequence[str],
    locales: Sequence[str] | None,
    locale_languages: Mapping[str, Sequence[str]] | None = None,
) -> Q2PTNet:
    """A fresh network for ``config``: ``locales`` given -> a locale-aware encoder, whose
    locale tokens are seeded from each store's languages (``locale_languages``, over
    ``config.data.locale_languages``; see :meth:`q2pt.encoders.Encoder.seed_locale_tokens`)."""
    from q2pt.encoders import build_encoder

    languages = {**(locale_languages or {}), **config.data.locale_languages}
    encoder = build_encoder(config.model.encoder, locales=list(locales) if locales else None,
                            locale_languages=languages or None, **config.model.encoder_options)
    return Q2PTNet(encoder, len(classes), config.model.dropout, config.model.head_hidden, config.model.output,
                   memory_settings(config))


def memory_settings(config: Config) -> dict[str, Any]:
    """The query memory's settings of a network (``model.memory_*``)."""
    m = config.model
    return {"weight": m.memory_weight, "k": m.memory_k, "temperature": m.memory_temperature}


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` torch intra-op threads (0 or None: leave them), then restore."""
    previous = torch.get_num_threads()
    if n and n != previous:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
