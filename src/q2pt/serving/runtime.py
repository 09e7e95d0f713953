"""Inference runtimes behind one interface: PyTorch (the model's networks) or ONNX Runtime.

A :class:`Runtime` answers ``predict(queries, resolutions) -> (n, n_labels)`` probabilities
in the model's ``classes_`` order. Both runtimes share everything but the forward pass:

* locale resolution (:meth:`Runtime.resolve`): which network, locale token and threshold a
  request's locale gets -- unified models predict a locale they never saw locale-agnostically
  (no locale token, global threshold) and say so; non-unified models use ``fallback_locale``
  or raise :class:`~q2pt.errors.UnknownLocaleError`;
* tokenization, in Python, with each network's encoder (``Encoder.tokenize``; the encoders
  keep an LRU cache of token ids per query string);
* mapping a non-unified network's own labels onto the model's label columns (labels a
  locale's network does not know get ``NaN``: not scored, never listed).

Only ``_forward(key, batch)`` differs: :class:`TorchRuntime` runs the network under
``torch.inference_mode``; :class:`OnnxRuntime` runs an exported graph
(:mod:`q2pt.serving.onnx_export`) with ``onnxruntime``.

Runtimes are not thread-safe for concurrent ``predict`` calls on one network; the server
runs all inference on one worker thread.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from q2pt.errors import ConfigError, ModelLoadError, UnknownLocaleError, require

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.models import Q2PTModel

logger = logging.getLogger(__name__)

UNIFIED_KEY = "*"
RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True)
class Resolution:
    """How one request locale is served.

    ``locale_used``: the locale whose network / locale token / threshold is used (None:
    locale-agnostic); ``key``: the network key (``"*"`` for unified models);
    ``token_locale``: the locale passed to ``tokenize`` (None: no locale token);
    ``warning``: a message for the client when the request's locale was not served as is.
    """

    locale: str
    locale_used: str | None
    key: str
    token_locale: str | None
    warning: str | None = None


def set_threads(threads: int | None) -> None:
    """Set PyTorch's intra-op threads (``None``/0: leave the default)."""
    if threads:
        torch = require("torch", "torch")
        torch.set_num_threads(int(threads))


class Runtime:
    """Common part of the runtimes: model metadata, locale resolution, tokenization, label
    mapping. Subclasses implement :meth:`_forward`."""

    name: ClassVar[str] = ""
    #: the model folder this runtime was loaded from (set by load_runtime)
    model_dir: str | None = None

    def __init__(self, model: "Q2PTModel", *, fallback_locale: str | None = None) -> None:
        self.manifest: dict[str, Any] = dict(getattr(model, "manifest", {}) or {})
        self.variant: str = str(getattr(model, "variant", None) or self.manifest.get("variant", ""))
        self.classes: list[str] = list(model.classes_)
        self.locales: list[str] = list(model.locales_)
        self.thresholds: dict[str, float] = {k: float(v) for k, v in (model.thresholds_ or {}).items()}
        self.unified: bool = self.variant != "non-unified"
        self.encoder_spec: str = _encoder_spec(self.manifest)
        self._tokenizers: dict[str, Any] = {k: net.encoder for k, net in model.networks.items()}
        self._columns: dict[str, np.ndarray | None] = {
            k: _label_columns(self.classes, _network_labels(model, k, net)) for k, net in model.networks.items()
        }
        if not self.unified and UNIFIED_KEY in self._tokenizers:
            raise ModelLoadError("non-unified model holds a unified ('*') network")
        if self.unified and set(self._tokenizers) != {UNIFIED_KEY}:
            raise ModelLoadError(f"unified model must hold exactly one network '*', got {sorted(self._tokenizers)}")
        if fallback_locale is not None and fallback_locale not in self.locales:
            raise ConfigError(
                f"--fallback-locale {fallback_locale!r} is not a locale of the model "
                f"(model locales: {', '.join(self.locales)})"
            )
        self.fallback_locale = fallback_locale
        self._known = set(self.locales)

    # ------------------------------------------------------------------ metadata
    def describe(self) -> dict[str, Any]:
        """Runtime details for ``GET /v1/model``."""
        return {"name": self.name}

    def threshold_for(self, locale_used: str | None) -> tuple[float, str]:
        """The calibrated threshold of a served locale (its own, else the global one)."""
        if locale_used is not None and locale_used in self.thresholds:
            return self.thresholds[locale_used], "locale"
        if "global" in self.thresholds:
            return self.thresholds["global"], "global"
        return 0.5, "global"

    # --------------------------------------------------------------- resolution
    def resolve(self, locale: str) -> Resolution:
        """How ``locale`` is served (see :class:`Resolution`); raises
        :class:`UnknownLocaleError` for a non-unified model without a fallback locale."""
        known = locale in self._known
        if self.variant == "unified-aware":
            if known:
                return Resolution(locale, locale, UNIFIED_KEY, locale)
            return Resolution(locale, None, UNIFIED_KEY, None, _agnostic_warning(locale))
        if self.unified:  # unified-agnostic: the locale only picks the threshold
            if known:
                return Resolution(locale, locale, UNIFIED_KEY, None)
            return Resolution(locale, None, UNIFIED_KEY, None, _agnostic_warning(locale))
        if known:
            return Resolution(locale, locale, locale, None)
        if self.fallback_locale is not None:
            fb = self.fallback_locale
            return Resolution(
                locale, fb, fb, None,
                f"locale {locale!r} is not served by this non-unified model; "
                f"the fallback locale {fb!r}'s network and threshold were used",
            )
        raise UnknownLocaleError(
            f"unknown locale {locale!r}: this non-unified model serves "
            f"{', '.join(self.locales)} (start the server with --fallback-locale to serve others)"
        )

    # ---------------------------------------------------------------- inference
    def predict(self, queries: Sequence[str], resolutions: Sequence[Resolution]) -> np.ndarray:
        """Probabilities ``(n, len(classes))`` in ``classes`` order (NaN: a label the
        query's network does not score)."""
        n = len(queries)
        if len(resolutions) != n:
            raise ValueError(f"got {n} queries but {len(resolutions)} resolutions")
        out = np.full((n, len(self.classes)), np.nan, dtype=np.float32)
        if n == 0:
            return out
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(resolutions):
            groups.setdefault(r.key, []).append(i)
        for key, rows in groups.items():
            qs = [queries[i] for i in rows]
            if self.variant == "unified-aware":
                locs: list[str | None] | None = [resolutions[i].token_locale for i in rows]
            else:
                locs = None
            batch = self._tokenizers[key].tokenize(qs, locs)
            probs = self._forward(key, batch)
            cols = self._columns[key]
            idx = np.asarray(rows)
            if cols is None:
                out[idx] = probs
            else:
                out[np.ix_(idx, cols)] = probs
        return out

    def _forward(self, key: str, batch: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def warmup(self) -> None:
        """Run one prediction through every network (first-call allocations, lazy init)."""
        if self.unified:
            res = [self.resolve(self.locales[0])] if self.locales else [Resolution("", None, UNIFIED_KEY, None)]
        else:
            res = [self.resolve(key) for key in self._tokenizers]
        self.predict(["warm up"] * len(res), res)


class TorchRuntime(Runtime):
    """The model's PyTorch networks, in eval mode under ``torch.inference_mode``."""

    name = "torch"

    def __init__(self, model: "Q2PTModel", *, fallback_locale: str | None = None) -> None:
        super().__init__(model, fallback_locale=fallback_locale)
        self._torch = require("torch", "torch")
        self._nets = dict(model.networks)
        for net in self._nets.values():
            net.eval()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "torch": self._torch.__version__, "threads": self._torch.get_num_threads()}

    def _forward(self, key: str, batch: dict[str, Any]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return self._nets[key].scores(batch).float().numpy()


class OnnxRuntime(Runtime):
    """Exported ONNX graphs (one per network) run with ``onnxruntime``; tokenization stays in
    Python with the model's encoders."""

    name = "onnx"

    def __init__(
        self,
        model: "Q2PTModel",
        onnx_path: str | os.PathLike | None = None,
        *,
        fallback_locale: str | None = None,
        threads: int | None = None,
        quantize: str | None = None,
    ) -> None:
        super().__init__(model, fallback_locale=fallback_locale)
        from q2pt.serving import onnx_export

        ort = require("onnxruntime", "onnx")
        self._ort = ort
        tmp: tempfile.TemporaryDirectory[str] | None = None
        if onnx_path is None:
            # export now, into a temporary folder that lives only while the sessions load
            tmp = tempfile.TemporaryDirectory(prefix="q2pt-onnx-")
            logger.info("exporting the model to ONNX for serving (use 'q2pt export onnx' to do it once)")
            target = onnx_export.export_target(tmp.name, self.variant)
            exported = onnx_export.export_onnx(model, target, quantize=quantize, verify=False)
            onnx_path = exported.path
        elif quantize:
            raise ConfigError("--quantize applies when the server exports the model itself; "
                              "quantize with 'q2pt export onnx --quantize int8' instead")
        try:
            files = onnx_export.onnx_files(onnx_path, self.variant, list(self._tokenizers))
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = int(threads)
                opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3  # errors only (the exported Loop triggers harmless warnings)
            self._sessions: dict[str, Any] = {}
            self._inputs: dict[str, list[str]] = {}
            self._meta: dict[str, dict[str, str]] = {}
            for key, file in files.items():
                try:
                    sess = ort.InferenceSession(str(file), sess_options=opts, providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own exception types
                    raise ModelLoadError(f"cannot load ONNX file {file}: {exc}") from exc
                meta = dict(sess.get_modelmeta().custom_metadata_map)
                onnx_export.check_metadata(meta, file, self._net_labels(key))
                self._sessions[key] = sess
                self._inputs[key] = [i.name for i in sess.get_inputs()]
                self._meta[key] = meta
            self.path = str(onnx_path) if tmp is None else None
        finally:
            if tmp is not None:
                tmp.cleanup()
        self.threads = threads
        self.quantized = any(m.get("q2pt.quantize") for m in self._meta.values())

    def _net_labels(self, key: str) -> list[str]:
        cols = self._columns[key]
        return list(self.classes) if cols is None else [self.classes[c] for c in cols]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "onnxruntime": self._ort.__version__,
            "path": self.path,
            "quantize": next((m.get("q2pt.quantize") for m in self._meta.values() if m.get("q2pt.quantize")), None),
            "threads": self.threads,
        }

    def _forward(self, key: str, batch: dict[str, Any]) -> np.ndarray:
        feeds = {name: _to_numpy(batch[name]) for name in self._inputs[key]}
        return np.asarray(self._sessions[key].run(None, feeds)[0], dtype=np.float32)


def load_runtime(
    model_dir: str | os.PathLike,
    runtime: str = "torch",
    *,
    onnx_path: str | os.PathLike | None = None,
    fallback_locale: str | None = None,
    threads: int | None = None,
    quantize: str | None = None,
) -> Runtime:
    """Load a model folder and wrap it in a runtime (``"torch"`` or ``"onnx"``).

    Raises :class:`ModelLoadError` for a missing/corrupt model or ONNX file and
    :class:`ConfigError` for a bad option (unknown runtime, fallback locale not in the model).
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if onnx_path is not None and runtime != "onnx":
        raise ConfigError("--onnx needs --runtime onnx")
    set_threads(threads)
    from q2pt.models import load_model

    model = load_model(model_dir)
    if runtime == "torch":
        rt: Runtime = TorchRuntime(model, fallback_locale=fallback_locale)
    else:
        rt = OnnxRuntime(model, onnx_path, fallback_locale=fallback_locale, threads=threads, quantize=quantize)
    rt.model_dir = str(model_dir)
    return rt


# ---------------------------------------------------------------------- helpers
def _agnostic_warning(locale: str) -> str:
    return (
        f"locale {locale!r} was not seen in training: predicted locale-agnostically "
        "(locale_used is null) with the global threshold"
    )


def _encoder_spec(manifest: dict[str, Any]) -> str:
    enc = manifest.get("encoder")
    if isinstance(enc, dict):
        return str(enc.get("spec") or enc.get("config", {}).get("kind") or "")
    return str(enc or "")


def _network_labels(model: Any, key: str, net: Any) -> list[str] | None:
    """The labels a network scores, in its output order (None: the model's ``classes_``)."""
    labels = (getattr(model, "network_labels_", None) or {}).get(key)
    return list(labels) if labels is not None else None


def _label_columns(classes: list[str], labels: list[str] | None) -> np.ndarray | None:
    if labels is None or labels == classes:
        return None
    index = {c: i for i, c in enumerate(classes)}
    missing = [x for x in labels if x not in index]
    if missing:
        raise ModelLoadError(f"network labels not in the model's labels: {missing[:5]}")
    return np.asarray([index[x] for x in labels], dtype=np.int64)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
