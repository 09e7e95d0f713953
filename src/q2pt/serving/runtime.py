"""Inference runtimes behind one interface: PyTorch (the model's networks) or ONNX Runtime.

A :class:`Runtime` is the model's :class:`~q2pt.inference.InferenceCore` -- locale
resolution, tokenization with each network's encoder, mapping a network's labels onto the
model's label columns (labels it does not score are ``NaN``: never listed), thresholds --
with its forward pass injected: :class:`TorchRuntime` runs the networks under
``torch.inference_mode``; :class:`OnnxRuntime` runs the exported graphs
(:mod:`q2pt.serving.onnx_export`) with ``onnxruntime``. The library
(:meth:`q2pt.models.Q2PTModel.infer`) uses the same core, so a query is resolved, scored and
its types selected the same way everywhere.

Runtimes are not thread-safe for concurrent ``predict`` calls on one network; the server
runs all inference on one worker thread.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

from q2pt.errors import ConfigError, require
from q2pt.inference import Resolution, torch_forward
from q2pt.model_card import MODEL_CARD, render_model_card
from q2pt.model_folder import folder_state
from q2pt.serving import onnx_export

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.models import Q2PTModel

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")


def set_threads(threads: int | None) -> None:
    """Set PyTorch's intra-op threads (``None``/0: leave the default)."""
    if threads:
        torch = require("torch", "torch")
        torch.set_num_threads(int(threads))


class _ForwardSlot:
    """The forward pass a runtime's core calls, set by the runtime once it has one. The core
    holds this, not the runtime's bound method: a runtime and its core in a reference cycle
    outlived a reload until Python's cycle collector happened to run (a swapped-out model
    stayed in memory, several of them after a few reloads)."""

    __slots__ = ("fn",)

    def __init__(self) -> None:
        self.fn: Callable[[str, dict[str, Any]], np.ndarray] | None = None

    def __call__(self, key: str, batch: dict[str, Any]) -> np.ndarray:
        if self.fn is None:
            raise RuntimeError("the runtime has no forward pass yet")
        return self.fn(key, batch)


class Runtime:
    """A model's inference core with a forward pass (subclasses set ``self._forward.fn`` to a
    function that does not hold the runtime)."""

    name: ClassVar[str] = ""
    #: the model folder this runtime was loaded from (set by load_runtime)
    model_dir: str | None = None
    real_dir: str | None = None  # model_dir with its symlinks resolved when it was loaded (a deploy switches them)
    #: the model's card (MODEL_CARD.md, read when it was loaded; else rendered from its manifest)
    card: str = ""
    #: when it started serving (set by the server)
    loaded_at: str | None = None

    def __init__(self, model: "Q2PTModel", *, fallback_locale: str | None = None) -> None:
        self.manifest: dict[str, Any] = dict(model.manifest or {})
        self.fingerprint: str | None = model.fingerprint
        self.variant: str = model.variant
        self.encoder_spec: str = model.encoder
        self._forward = _ForwardSlot()
        self.core = model.inference(fallback_locale, forward=self._forward)  # the model's core, this forward pass

    # the model's facts, as the core holds them
    @property
    def classes(self) -> list[str]:
        return self.core.classes

    @property
    def locales(self) -> list[str]:
        return self.core.locales

    @property
    def thresholds(self) -> dict[str, float]:
        return self.core.thresholds

    @property
    def unified(self) -> bool:
        return self.core.unified

    @property
    def fallback_locale(self) -> str | None:
        return self.core.fallback_locale

    # ------------------------------------------------------------------ metadata
    def describe(self) -> dict[str, Any]:
        """Runtime details for ``GET /v1/model``."""
        return {"name": self.name}

    def threshold_for(self, locale_used: str | None) -> tuple[float, str]:
        """The calibrated threshold of a served locale (its own, else the global one)."""
        return self.core.threshold_for(locale_used)

    def resolve(self, locale: str) -> Resolution:
        """How ``locale`` is served (see :meth:`q2pt.inference.InferenceCore.resolve`)."""
        return self.core.resolve(locale)

    # ---------------------------------------------------------------- inference
    def predict(self, queries: Sequence[str], resolutions: Sequence[Resolution]) -> np.ndarray:
        """Probabilities ``(n, len(classes))`` in ``classes`` order (NaN: a label the
        query's network does not score)."""
        return self.core.scores(queries, resolutions)

    def warmup(self) -> None:
        """Run one prediction through every network (first-call allocations, lazy init)."""
        self.core.warmup()


class TorchRuntime(Runtime):
    """The model's PyTorch networks, in eval mode under ``torch.inference_mode``."""

    name = "torch"

    def __init__(self, model: "Q2PTModel", *, fallback_locale: str | None = None) -> None:
        super().__init__(model, fallback_locale=fallback_locale)
        self._torch = require("torch", "torch")
        for net in model.networks.values():
            net.eval()
        self._forward.fn = torch_forward(dict(model.networks))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "torch": self._torch.__version__, "threads": self._torch.get_num_threads()}


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
        export_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(model, fallback_locale=fallback_locale)
        tmp: tempfile.TemporaryDirectory[str] | None = None
        if onnx_path is None:
            # export now: into export_dir (kept, e.g. for other worker processes to load), else
            # into a temporary folder that lives only while the sessions load
            if export_dir is None:
                tmp = tempfile.TemporaryDirectory(prefix="q2pt-onnx-")
                export_dir = tmp.name
            logger.info("exporting the model to ONNX for serving (use 'q2pt export onnx' to do it once)")
            target = onnx_export.export_target(export_dir, self.variant)
            exported = onnx_export.export_onnx(model, target, quantize=quantize, verify=False, overwrite=True)
            onnx_path = exported.path
        elif quantize:
            raise ConfigError("--quantize applies when the server exports the model itself; "
                              "quantize with 'q2pt export onnx --quantize int8' instead")
        try:
            self._sessions = onnx_export.load_sessions(model, onnx_path, threads=threads)
            self.path = str(onnx_path) if tmp is None else None
        finally:
            if tmp is not None:
                tmp.cleanup()
        self.threads = threads
        self.quantize: str | None = self._sessions.quantize  # the graphs' quantization (None: float32)
        self.quantized = self.quantize is not None
        self._forward.fn = self._sessions.forward

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "onnxruntime": self._sessions.version,
            "path": self.path,
            "quantize": self._sessions.quantize,
            "threads": self.threads,
        }


def load_runtime(
    model_dir: str | os.PathLike,
    runtime: str = "torch",
    *,
    onnx_path: str | os.PathLike | None = None,
    fallback_locale: str | None = None,
    threads: int | None = None,
    quantize: str | None = None,
    export_dir: str | os.PathLike | None = None,
    onnx_fingerprint: str | None = None,
    onnx_quantize: str | None = None,
) -> Runtime:
    """Load a model folder and wrap it in a runtime (``"torch"`` or ``"onnx"``). The ONNX
    runtime without ``onnx_path`` exports the model at start-up (``quantize``), into
    ``export_dir`` when given (kept there: ``runtime.path``), else into a temporary folder.
    ``onnx_fingerprint``: the fingerprint of the model ``onnx_path`` was exported from; when
    the folder now holds another model, the file is ignored and the model exported, quantized as
    the file was (``onnx_quantize``: the file's quantization; None: float32).

    Raises :class:`ModelLoadError` for a missing/corrupt model or ONNX file and
    :class:`ConfigError` for a bad option (unknown runtime), :class:`UnknownLocaleError` for a fallback locale
    that is not one of a non-unified model's locales.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if onnx_path is not None and runtime != "onnx":
        raise ConfigError("--onnx needs --runtime onnx")
    set_threads(threads)
    from q2pt.models import load_model

    real_dir = os.path.realpath(model_dir)  # once: a deploy may switch a symlink at any time
    model = load_model(real_dir)  # the model and its card from the same folder
    card = Path(real_dir) / MODEL_CARD
    try:  # the card of the model loaded, read now: GET /v1/model/card describes what is served
        card_text = card.read_text(encoding="utf-8") if card.is_file() else None
    except (OSError, UnicodeDecodeError):
        card_text = None
    state = folder_state(Path(real_dir))
    if state is None or state[2] != model.fingerprint:
        card_text = None  # the folder was replaced since the load: the card from the loaded manifest
    if onnx_path is not None and onnx_fingerprint is not None and model.fingerprint != onnx_fingerprint:
        # the file was exported from the folder's earlier model (a multi-worker server's shared
        # start-up export, and the folder was replaced since): export this model instead
        quantize = quantize or onnx_quantize  # served as the file was: an int8 file stays int8
        logger.warning("%s holds another model than the ONNX file %s was exported from: exporting it (quantize: %s)",
                       model_dir, onnx_path, quantize or "none")
        onnx_path = None
    if runtime == "torch":
        rt: Runtime = TorchRuntime(model, fallback_locale=fallback_locale)
    else:
        rt = OnnxRuntime(model, onnx_path, fallback_locale=fallback_locale, threads=threads, quantize=quantize,
                         export_dir=export_dir)
    rt.model_dir = str(model_dir)
    rt.real_dir = real_dir
    rt.card = card_text if card_text is not None else render_model_card(rt.manifest)
    return rt
