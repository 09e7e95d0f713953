"""The q2pt classifier and its model folders.

:class:`Q2PTNet` is the network: encoder -> dropout -> head (``model.head_hidden`` hidden
layers, then one linear layer) giving one logit per product type; a sigmoid turns logits
into scores and training minimises binary cross-entropy (see :mod:`q2pt.training`), or, with
``model.output softmax``, a softmax over the types and cross-entropy (:meth:`Q2PTNet.scores`
is the one place that turns logits into scores).

:class:`Q2PTModel` is the scikit-learn style estimator over the paper's three variants:

``non-unified``
    one network per locale, each over the product types seen in that locale's training
    data; :meth:`Q2PTModel.predict_proba` maps each back to the global ``classes_`` order
    (zeros elsewhere). A locale outside training is refused (``UnknownLocaleError``)
    unless a ``fallback_locale`` is given.
``unified-agnostic``
    one network for every locale, which never sees the locale.
``unified-aware``
    one network; the encoder prepends the query's locale token (the paper's locale-aware
    conditioning). A locale unseen in training gets no token -- the locale-agnostic mode,
    trained by ``train.locale_dropout`` -- and a warning says so.

A model folder (:meth:`Q2PTModel.save`, :func:`load_model`)::

    MODEL_DIR/manifest.json          format_version, versions, variant, encoder, locales,
                                     labels, data, config, validation metrics, thresholds,
                                     sha256 of every other file
    MODEL_DIR/model.safetensors      unified: the network's state_dict
    MODEL_DIR/encoder/               unified: encoder assets
    MODEL_DIR/models/<LOC>/model.safetensors, models/<LOC>/encoder/   non-unified
    MODEL_DIR/checkpoints/           training checkpoints (kept when the model is saved)

It is written atomically (built in a temporary folder, then renamed) and never uses pickle.

Pretrained deltas: tensors that the encoder can rebuild from installed pretrained resources
(``Encoder.pretrained_state()``; the ``use`` encoder's 128k x 512 embedding table) are not
stored in full. :func:`pack_state` writes such a tensor ``NAME`` as two entries of the same
safetensors file, ``NAME#pretrained_delta.rows`` (int64 indexes of the rows that differ from
the pretrained value) and ``NAME#pretrained_delta.values`` (those rows), and records the
resource (package, version, sha256 of its weights file) in the file's metadata and in the
manifest. A frozen table costs nothing, a sparsely fine-tuned one only its touched rows.
:func:`load_network_state` rebuilds the tensor from the installed resource, and refuses
(``ModelLoadError``) when its sha256 differs from the recorded one. Training checkpoints use
the same encoding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from q2pt import __version__
from q2pt.config import Config, resolve_config
from q2pt.errors import ConfigError, ModelLoadError, require
from q2pt.inference import UNIFIED, Forward, Inference, InferenceCore, encoder_tokenizers, torch_forward
from q2pt.io import atomic_path

torch = require("torch", "torch")

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from q2pt.data import Dataset
    from q2pt.training import TrainHooks

logger = logging.getLogger(__name__)

#: Version of the model folder layout; load_model refuses newer ones.
#: 2: pretrained tensors stored as row deltas (version 1 folders, full tensors, still load).
FORMAT_VERSION = 2
#: output layers of a network (``model.output``)
OUTPUTS = ("sigmoid", "softmax")
MANIFEST = "manifest.json"
#: suffixes of the two safetensors entries of a tensor stored as a delta from its pretrained value
DELTA_ROWS = "#pretrained_delta.rows"
DELTA_VALUES = "#pretrained_delta.values"
#: safetensors metadata key: JSON {"tensors": [names], "resource": {package, version, file, sha256}}
DELTA_METADATA = "q2pt.pretrained_delta"

__all__ = [
    "Q2PTNet",
    "Q2PTModel",
    "load_model",
    "build_network",
    "FORMAT_VERSION",
    "pack_state",
    "unpack_state",
    "load_network_state",
    "read_safetensors",
]


class Q2PTNet(torch.nn.Module):
    """Encoder -> dropout -> head; ``forward`` returns logits ``(B, n_labels)``."""

    def __init__(
        self, encoder: Any, n_labels: int, dropout: float = 0.001, hidden: Sequence[int] = (), output: str = "sigmoid"
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

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.head(self.dropout(self.encoder(batch)))

    def probabilities(self, logits: Any) -> Any:
        """Scores in [0, 1] from logits: independent sigmoids, or a softmax over the labels."""
        return torch.softmax(logits, dim=-1) if self.output == "softmax" else torch.sigmoid(logits)

    def scores(self, batch: dict[str, Any]) -> Any:
        """``probabilities(forward(batch))``: what every prediction path returns."""
        return self.probabilities(self(batch))

    @torch.no_grad()
    def init_output_bias(self, prior: float) -> None:
        """Start every output at the label prior: bias = logit(prior).

        With hundreds of labels almost every (query, label) pair is negative; from a zero
        bias the first epochs are spent pushing every score down before any positive is
        learned. Starting at the prior skips that phase (the usual "prior initialisation"
        of many-class sigmoid outputs)."""
        if self.output == "softmax":
            self.head[-1].bias.zero_()  # a softmax starts uniform over the labels
            return
        p = min(max(float(prior), 1e-6), 0.5)
        self.head[-1].bias.fill_(float(np.log(p / (1.0 - p))))


def build_network(config: Config, classes: Sequence[str], locales: Sequence[str] | None) -> Q2PTNet:
    """A fresh network for ``config``: ``locales`` given -> a locale-aware encoder."""
    from q2pt.encoders import build_encoder

    encoder = build_encoder(config.model.encoder, locales=list(locales) if locales else None, **config.model.encoder_options)
    return Q2PTNet(encoder, len(classes), config.model.dropout, config.model.head_hidden, config.model.output)


class Q2PTModel:
    """Query -> product types classifier, in one of the three variants (see the module doc).

    Args:
        variant: "non-unified", "unified-agnostic" or "unified-aware" (default
            ``config.model.variant``, itself "unified-aware" by default).
        encoder: encoder spec ("use", "ngram", "hf:NAME_OR_PATH"); default
            ``config.model.encoder`` ("use").
        config: a resolved :class:`~q2pt.config.Config` (see
            :func:`~q2pt.config.resolve_config`); None: defaults with the encoder's
            overrides.

    Fitted attributes: ``classes_`` (ordered labels), ``locales_`` (training locales),
    ``thresholds_`` ({"global": t, LOC: t}), ``networks`` ({"*": net} or {LOC: net}),
    ``network_labels_`` (each network's labels), ``manifest``.
    """

    def __init__(self, variant: str | None = None, encoder: str | None = None, config: Config | None = None):
        if config is None:
            config = resolve_config(encoder=encoder, flags={"model.variant": variant})
        else:
            if not isinstance(config, Config):
                raise ConfigError(f"config must be a q2pt.config.Config, got {type(config).__name__}")
            if encoder is not None and encoder != config.model.encoder:
                raise ConfigError(
                    f"encoder {encoder!r} differs from the config's model.encoder {config.model.encoder!r}; "
                    "resolve the config with that encoder (resolve_config(encoder=...))"
                )
            if variant is not None and variant != config.model.variant:
                config = Config.from_dict(_with(config.to_dict(), "model", "variant", variant))
        self.config: Config = config
        self.variant: str = config.model.variant
        self.encoder: str = config.model.encoder
        self.classes_: list[str] = []
        self.locales_: list[str] = []
        self.thresholds_: dict[str, float] = {}
        self.networks: dict[str, Q2PTNet] = {}
        self.network_labels_: dict[str, list[str]] = {}
        self.manifest: dict[str, Any] = {}

    def __repr__(self) -> str:
        fitted = f", {len(self.classes_)} labels, {len(self.locales_)} locales" if self.networks else ""
        return f"Q2PTModel(variant={self.variant!r}, encoder={self.encoder!r}{fitted})"

    # ------------------------------------------------------------------ training
    def fit(
        self,
        dataset: "Dataset",
        *,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        hooks: "TrainHooks | None" = None,
    ) -> "Q2PTModel":
        """Train on ``dataset`` (train split; valid for early stopping and thresholds).

        With ``out_dir``: checkpoints go to ``out_dir/checkpoints`` and the model folder is
        saved to ``out_dir`` at the end; ``resume=True`` continues from the last checkpoint.
        """
        from q2pt.training import fit_model

        return fit_model(self, dataset, out_dir=out_dir, resume=resume, progress=progress, hooks=hooks)

    def _set_trained(
        self,
        *,
        networks: dict[str, Q2PTNet],
        network_labels: dict[str, list[str]],
        classes: list[str],
        locales: list[str],
        dataset: "Dataset",
        training: dict[str, Any],
    ) -> None:
        self.networks = networks
        self.network_labels_ = network_labels
        self.classes_ = list(classes)
        self.locales_ = list(locales)
        for net in networks.values():
            net.eval()
        first = next(iter(networks.values()))
        self.manifest = {
            "format_version": FORMAT_VERSION,
            "q2pt_version": __version__,
            "torch_version": torch.__version__,
            "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "variant": self.variant,
            "encoder": {
                "spec": self.encoder, "kind": first.encoder.kind, "config": first.encoder.get_config(),
                "pretrained_resource": first.encoder.pretrained_resource(),
            },
            "locales": self.locales_,
            "labels": self.classes_,
            "data": {
                "source": str(dataset.source),
                "fingerprint": dataset.fingerprint,
                "simulated": bool(dataset.simulated),
                "n_train": int(len(dataset.train)),
                "n_valid": int(len(dataset.valid)),
            },
            "config": self.config.to_dict(),
            "metrics": None,
            "thresholds": {},
            "training": training,
        }

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not self.networks:
            raise ModelLoadError("this model is not trained: call fit() or load_model() first")

    def predict_proba(
        self,
        queries: Sequence[str] | str,
        locales: Sequence[str] | str,
        *,
        fallback_locale: str | None = None,
        batch_size: int = 512,
    ) -> np.ndarray:
        """Scores ``(n, len(classes_))`` in ``classes_`` order, one row per query.

        ``locales`` is one locale per query, or one locale for all. A locale outside
        ``locales_``: unified models score locale-agnostically and log a warning;
        non-unified models raise UnknownLocaleError unless ``fallback_locale`` is given.
        """
        scores, _, _ = self.predict_details(queries, locales, fallback_locale=fallback_locale, batch_size=batch_size)
        return scores

    def labels_of(self, key: str) -> list[str]:
        """The labels network ``key`` scores, in its output order."""
        self._check_fitted()
        return list(self.network_labels_.get(key) or self.classes_)

    def inference(self, fallback_locale: str | None = None, *, forward: "Forward | None" = None) -> InferenceCore:
        """The model's :class:`~q2pt.inference.InferenceCore`: locale resolution, scoring and
        type selection, with ``forward`` as the forward pass (None: the PyTorch networks)."""
        self._check_fitted()
        return InferenceCore(
            variant=self.variant, classes=self.classes_, locales=self.locales_, thresholds=self.thresholds_,
            tokenizers=encoder_tokenizers(self.networks), forward=forward or torch_forward(self.networks),
            network_labels=self.network_labels_, fallback_locale=fallback_locale,
        )

    def infer(
        self,
        queries: Sequence[str] | str,
        locales: Sequence[str] | str,
        *,
        fallback_locale: str | None = None,
        batch_size: int = 512,
    ) -> "Inference":
        """Resolve and score queries: an :class:`Inference` (the core, each query's
        :class:`~q2pt.inference.Resolution`, and scores with NaN for labels not scored)."""
        core = self.inference(fallback_locale)
        queries = [queries] if isinstance(queries, str) else [str(q) for q in queries]
        locs = [locales] * len(queries) if isinstance(locales, str) else [str(x) for x in locales]
        if len(locs) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(locs)} locales")
        resolutions = core.resolve_all(locs)
        return Inference(core, resolutions, core.scores(queries, resolutions, batch_size))

    def predict_details(
        self,
        queries: Sequence[str] | str,
        locales: Sequence[str] | str,
        *,
        fallback_locale: str | None = None,
        batch_size: int = 512,
    ) -> tuple[np.ndarray, list[str], list[str | None]]:
        """Like :meth:`predict_proba`, plus per query a note ("" normally; says when the
        locale was unseen and how it was handled) and the locale whose calibrated threshold
        applies (None: the global threshold)."""
        result = self.infer(queries, locales, fallback_locale=fallback_locale, batch_size=batch_size)
        return result.probabilities(), result.notes, result.threshold_locales

    def threshold_for(self, locale: str | None) -> float:
        """The calibrated threshold of a locale (the global one for None or unknown)."""
        return self.inference().threshold_for(locale)[0]

    def predict(
        self,
        queries: Sequence[str] | str,
        locales: Sequence[str] | str,
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        fallback_locale: str | None = None,
        batch_size: int = 512,
    ) -> list[list[str]]:
        """Predicted product types per query (calibrated per-locale thresholds by default)."""
        result = self.infer(queries, locales, fallback_locale=fallback_locale, batch_size=batch_size)
        return [[t for t, _ in row] for row in result.select(threshold=threshold, top_k=top_k)]

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        frame: "pd.DataFrame",
        *,
        precision: float = 0.8,
        bootstrap: int = 0,
        seed: int = 0,
        fallback_locale: str | None = None,
        batch_size: int = 512,
    ) -> dict[str, Any]:
        """R@P, PR-AUC, thresholds and counts, globally and per locale, on a labelled frame.

        Product types outside ``classes_`` count as missed positives. Returns
        :func:`q2pt.metrics.evaluate`'s dict; each entry also has ``calibrated``: precision,
        recall and F1 when every query uses its locale's calibrated threshold (the
        operating point ``predict`` uses by default).
        """
        from q2pt.metrics import evaluate, precision_recall_at, to_jsonable
        from q2pt.training import label_lists, multi_hot

        self._check_fitted()
        queries = frame["query"].astype(str).tolist()
        locs = frame["locale"].astype(str).tolist()
        scores, _, tloc = self.predict_details(queries, locs, fallback_locale=fallback_locale, batch_size=batch_size)
        y, missing = multi_hot(label_lists(frame["product_types"]), self.classes_)
        y = y.toarray()
        result = evaluate(y, scores, locs, precision=precision, bootstrap=bootstrap, seed=seed, n_missing=missing)
        # Per-row thresholds as one rule: score - t_row + 0.5 >= 0.5  <=>  score >= t_row.
        cuts = np.asarray([self.threshold_for(loc) for loc in tloc], dtype=np.float64)
        shifted = scores.astype(np.float64) - cuts[:, None] + 0.5
        locs_arr = np.asarray(locs, dtype=object)

        def at_calibrated(rows: np.ndarray | slice) -> dict[str, Any]:
            p, r, f = precision_recall_at(y[rows], shifted[rows], 0.5, n_missing=int(missing[rows].sum()))
            return to_jsonable({"precision": p, "recall": r, "f1": f})

        result["global"]["calibrated"] = at_calibrated(slice(None))
        for loc, entry in result["locales"].items():
            rows = np.flatnonzero(locs_arr == loc)
            entry["calibrated"] = {"threshold": self.threshold_for(tloc[rows[0]]), **at_calibrated(rows)}
        return result

    # ------------------------------------------------------------------ saving
    def save(self, folder: str | Path) -> None:
        """Write the model folder atomically (see the module docstring)."""
        from safetensors.torch import save_file

        from q2pt.training import safe_name

        self._check_fitted()
        folder = Path(folder)
        check_output_folder(folder)
        manifest = json.loads(json.dumps(self.manifest))
        manifest["networks"] = {}
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            for stage, net in self.networks.items():
                base = "" if stage == UNIFIED else f"models/{safe_name(stage)}/"
                (tmp / base).mkdir(parents=True, exist_ok=True)
                tensors, metadata = pack_state(net)
                save_file(tensors, str(tmp / f"{base}model.safetensors"), metadata=metadata)
                del tensors
                net.encoder.save_assets(tmp / f"{base}encoder")
                manifest["networks"][stage] = {
                    "weights": f"{base}model.safetensors",
                    "assets": f"{base}encoder",
                    "labels": None if stage == UNIFIED else self.network_labels_[stage],
                    "encoder": net.encoder.get_config(),
                }
                if DELTA_METADATA in metadata:
                    manifest["networks"][stage]["pretrained_delta"] = json.loads(metadata[DELTA_METADATA])
            _readable(tmp)
            manifest["files"] = _hash_files(tmp)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            old_checkpoints = folder / "checkpoints"
            if old_checkpoints.is_dir():
                os.replace(old_checkpoints, tmp / "checkpoints")
        self.manifest = manifest


# ---------------------------------------------------------------------- pretrained deltas


def pretrained_reference(net: Any) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The network's tensors that its encoder rebuilds from pretrained resources
    (``{state_dict key: pretrained value}``, keys prefixed with ``encoder.``) and the
    identity of that resource (None when there are none)."""
    encoder = getattr(net, "encoder", None)
    getter = getattr(encoder, "pretrained_state", None)
    reference = dict(getter()) if callable(getter) else {}
    if not reference:
        return {}, None
    return {f"encoder.{k}": v for k, v in reference.items()}, encoder.pretrained_resource()


def same_storage(a: Any, b: Any) -> bool:
    """Whether two tensors view the same memory with the same layout (one is the other)."""
    return (
        a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
    )


_INT_OF_SIZE = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def _bits(t: Any) -> Any:
    """``t`` as a 2-D tensor of rows reinterpreted as the widest integers that tile a row
    (exact comparison: -0.0 differs from 0.0, NaN equals itself; int64 words compare ~2x
    faster than float32 elements)."""
    t = t.detach().reshape(t.shape[0], -1).contiguous()
    row_bytes = t.shape[1] * t.element_size()
    for size in (8, 4, 2, 1):
        if size >= t.element_size() and row_bytes % size == 0:
            try:
                return t.view(_INT_OF_SIZE[size]) if t.dtype != _INT_OF_SIZE[size] else t
            except RuntimeError:  # e.g. a storage offset not aligned to the wider type
                continue
    return t  # pragma: no cover - every row is a whole number of bytes


def changed_rows(value: Any, reference: Any | None = None) -> Any:
    """int64 indexes of the rows (first dimension) where ``value`` differs bitwise from
    ``reference`` (None: from all-zero rows, i.e. the rows with a bit set)."""
    if reference is not None and value.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(value.shape)} vs {tuple(reference.shape)}")
    if value.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    diff = _bits(value) != (0 if reference is None else _bits(reference))
    return diff.any(dim=1).nonzero().flatten().to(torch.int64)


def pack_state(net: Any, state: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """``(tensors, metadata)`` to write with ``safetensors.torch.save_file`` for a network's
    state (default: its current ``state_dict``).

    Every entry of the encoder's ``pretrained_state()`` becomes ``NAME#pretrained_delta.rows``
    (int64 row indexes) and ``NAME#pretrained_delta.values`` (the rows that differ from the
    pretrained value; zero rows for a frozen table); the metadata records which and the
    resource's identity (``DELTA_METADATA``). Other tensors are written as they are.
    """
    if state is None:
        state = net.state_dict()
    reference, resource = pretrained_reference(net)
    tensors: dict[str, Any] = {}
    packed: list[str] = []
    for name, value in state.items():
        value = value.detach().cpu()
        ref = reference.get(name)
        if ref is not None and value.dim() >= 1 and ref.shape == value.shape and ref.dtype == value.dtype:
            rows = torch.zeros(0, dtype=torch.int64) if same_storage(value, ref) else changed_rows(value, ref)
            tensors[name + DELTA_ROWS] = rows
            tensors[name + DELTA_VALUES] = value.index_select(0, rows).contiguous()
            packed.append(name)
        else:
            tensors[name] = value.contiguous()
    metadata = {"format": "pt"}
    if packed:
        metadata[DELTA_METADATA] = json.dumps({"tensors": packed, "resource": resource}, sort_keys=True)
    return tensors, metadata


def check_pretrained_resource(saved: Any, installed: Mapping[str, str] | None, where: str) -> None:
    """Refuse (ModelLoadError) to rebuild weights from a resource other than the one they
    were saved against (compared by sha256); the message names the package and both hashes."""
    if not isinstance(saved, Mapping) or not saved.get("sha256"):
        raise ModelLoadError(f"{where} is corrupt (pretrained deltas without the identity of their resource)")
    package, file = saved.get("package", "?"), saved.get("file", "weights")
    if installed is None:
        raise ModelLoadError(
            f"{where} stores weights as differences from the pretrained weights of {package} "
            f"{saved.get('version', '?')}, but this network's encoder has no pretrained weights to rebuild them from"
        )
    if installed.get("sha256") == saved["sha256"]:
        return
    raise ModelLoadError(
        f"{where} stores its weights as differences from the pretrained weights of {package} "
        f"{saved.get('version', '?')} ({file} sha256 {saved['sha256']}), but the installed "
        f"{installed.get('package', package)} {installed.get('version', '?')} has {installed.get('file', file)} "
        f"sha256 {installed.get('sha256')}: the model's weights cannot be rebuilt. "
        f"Install {package}=={saved.get('version', '?')} (or retrain the model)."
    )


def unpack_state(
    net: Any, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None, *, source: str = "state"
) -> dict[str, Any]:
    """A plain ``state_dict`` for ``net`` from tensors written by :func:`pack_state` (plain
    state dicts pass through). A delta without changed rows yields the pretrained tensor
    itself (shared, never to be modified); otherwise a copy with the saved rows applied.

    Raises ModelLoadError (naming ``source``) when the installed resource differs from the
    saved one, or a delta is malformed.
    """
    names = sorted(k[: -len(DELTA_ROWS)] for k in tensors if k.endswith(DELTA_ROWS))
    state = {k: v for k, v in tensors.items() if not (k.endswith(DELTA_ROWS) or k.endswith(DELTA_VALUES))}
    if not names:
        return state
    try:
        info = json.loads((metadata or {}).get(DELTA_METADATA, "null"))
    except ValueError:
        info = None
    reference, resource = pretrained_reference(net)
    check_pretrained_resource(info.get("resource") if isinstance(info, dict) else None, resource, source)
    for name in names:
        ref = reference.get(name)
        if ref is None:
            raise ModelLoadError(
                f"{source} stores {name} as a difference from pretrained weights, but this network's encoder "
                "has no pretrained value for it"
            )
        rows, values = tensors[name + DELTA_ROWS], tensors.get(name + DELTA_VALUES)
        n = ref.shape[0]
        if (
            values is None or rows.dtype != torch.int64 or rows.dim() != 1
            or tuple(values.shape) != (rows.shape[0], *ref.shape[1:])
            or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n))
        ):
            raise ModelLoadError(f"{source} is corrupt (malformed pretrained delta of {name})")
        if rows.numel() == 0:
            state[name] = ref
        else:
            state[name] = ref.detach().clone().index_copy_(0, rows, values.to(ref.dtype))
    return state


def load_network_state(
    net: Any, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None, *, source: str = "state"
) -> None:
    """Load a (packed or plain) state into ``net`` (strict). A frozen table equal to the
    shared pretrained one stays shared (the encoder's load hook); RuntimeError when the
    tensors do not fit the network, ModelLoadError as in :func:`unpack_state`."""
    net.load_state_dict(unpack_state(net, tensors, metadata, source=source))


def read_safetensors(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; ModelLoadError naming a missing or
    corrupt file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"missing file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ModelLoadError(f"{path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from None
    return tensors, metadata


# ---------------------------------------------------------------------- helpers


def _with(data: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    data[section][key] = value
    return data


def _versions() -> dict[str, str]:
    import safetensors

    out = {"q2pt": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__,
           "numpy": np.__version__, "python": platform.python_version()}
    if "transformers" in sys.modules:  # an hf encoder is in use: record its version (no import)
        from importlib.metadata import PackageNotFoundError, version

        try:
            out["transformers"] = version("transformers")
        except PackageNotFoundError:  # pragma: no cover
            pass
    return out


def _readable(root: Path) -> None:
    """Give written files the usual permissions (0666 less the umask): safetensors writes 0600."""
    umask = os.umask(0)
    os.umask(umask)
    for p in root.rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~umask)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): _sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST and "checkpoints" not in p.relative_to(root).parts
    }


def check_output_folder(folder: Path) -> None:
    """Refuse to replace an existing folder that is not a q2pt model / training output."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"cannot write the model to {folder}: it exists and is not a folder")
    names = {p.name for p in folder.iterdir()}
    if not names or MANIFEST in names or names <= {"checkpoints"}:
        return
    shown = ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
    raise ConfigError(
        f"refusing to write the model to {folder}: the folder exists and is not a q2pt model folder "
        f"(it holds {shown}); choose a new or empty folder"
    )


def validation_report(model: Q2PTModel, valid: "pd.DataFrame") -> None:
    """Validation metrics and calibrated per-locale thresholds into the model's manifest.

    Uses the valid rows of the training locales (the same rows for every variant).
    """
    from q2pt.metrics import evaluate, thresholds_or_default
    from q2pt.training import label_lists, multi_hot

    precision = model.config.train.precision_target
    rows = valid[valid["locale"].astype(str).isin(model.locales_)]
    thresholds: dict[str, float] = {"global": 0.5}
    details: dict[str, str] = {"global": "default 0.5: no validation data to calibrate on"}
    metrics = None
    if len(rows):
        queries = rows["query"].astype(str).tolist()
        locs = rows["locale"].astype(str).tolist()
        scores = model.predict_proba(queries, locs)
        y, missing = multi_hot(label_lists(rows["product_types"]), model.classes_)
        y = y.toarray()
        metrics = evaluate(y, scores, locs, precision=precision, n_missing=missing)
        thresholds, details = thresholds_or_default(y, scores, locs, precision, n_missing=missing)
    if metrics is None:
        logger.warning("no validation data: thresholds default to 0.5")
    model.thresholds_ = thresholds
    model.manifest["metrics"] = metrics
    model.manifest["thresholds"] = thresholds
    model.manifest["threshold_details"] = details


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not folder.exists():
        raise ModelLoadError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a model folder (not a directory)")
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: {folder} is not a q2pt model folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is corrupt (not valid JSON: {exc})") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path} is corrupt (not a JSON object)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelLoadError(f"{path} is corrupt (no integer format_version)")
    if version > FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} has format version {version}, newer than this q2pt {__version__} reads "
            f"(up to {FORMAT_VERSION}); upgrade q2pt to load it"
        )
    required = ["variant", "encoder", "locales", "labels", "config", "thresholds", "networks", "files"]
    missing = [k for k in required if k not in manifest]
    if missing:
        raise ModelLoadError(f"{path} is corrupt (missing {', '.join(missing)})")
    return manifest


def load_model(folder: str | Path) -> Q2PTModel:
    """Load a model folder written by :meth:`Q2PTModel.save`.

    Raises ModelLoadError naming the file for a missing folder or file, a corrupt file
    (invalid JSON, checksum mismatch, unreadable weights) or a newer format version.
    """
    from q2pt.encoders import encoder_from_config

    folder = Path(folder)
    manifest = _read_manifest(folder)
    mpath = folder / MANIFEST
    for rel, digest in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise ModelLoadError(f"missing file {path} (listed in {mpath})")
        if _sha256(path) != digest:
            raise ModelLoadError(f"{path} is corrupt (its sha256 does not match {mpath})")
    try:
        config = Config.from_dict(manifest["config"], source=str(mpath))
    except ConfigError as exc:
        raise ModelLoadError(f"{mpath} has an invalid config: {exc}") from None
    model = Q2PTModel(config=config)
    if manifest["variant"] != config.model.variant:
        raise ModelLoadError(f"{mpath} is corrupt (variant {manifest['variant']!r} differs from its config)")
    classes = list(manifest["labels"])
    networks: dict[str, Q2PTNet] = {}
    network_labels: dict[str, list[str]] = {}
    for stage, entry in manifest["networks"].items():
        labels = classes if entry.get("labels") is None else list(entry["labels"])
        assets = folder / entry["assets"]
        try:
            # load_pretrained=False: the weights follow (a frozen use table is still the shared one)
            encoder = encoder_from_config(entry["encoder"], assets, load_pretrained=False)
        except Exception as exc:
            raise ModelLoadError(f"cannot rebuild the encoder from {assets}: {exc}") from None
        delta = entry.get("pretrained_delta")
        if delta is not None:
            check_pretrained_resource(delta.get("resource") if isinstance(delta, dict) else None,
                                      encoder.pretrained_resource(), str(mpath))
        net = Q2PTNet(encoder, len(labels), config.model.dropout, config.model.head_hidden, config.model.output)
        wpath = folder / entry["weights"]
        tensors, metadata = read_safetensors(wpath)
        try:
            load_network_state(net, tensors, metadata, source=str(wpath))
        except RuntimeError as exc:
            raise ModelLoadError(f"{wpath} does not fit the network described in {mpath}: {exc}") from None
        del tensors
        net.eval()
        networks[stage] = net
        network_labels[stage] = labels
    model.networks = networks
    model.network_labels_ = network_labels
    model.classes_ = classes
    model.locales_ = list(manifest["locales"])
    model.thresholds_ = {k: float(v) for k, v in manifest["thresholds"].items()}
    model.manifest = manifest
    return model
