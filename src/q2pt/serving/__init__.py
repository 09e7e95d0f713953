"""Serving q2pt models: an HTTP API (FastAPI), PyTorch and ONNX runtimes, a demo page.

* :func:`q2pt.serving.runtime.load_runtime` -- a model folder behind one inference interface
  (``"torch"`` or ``"onnx"``);
* :func:`q2pt.serving.app.create_app` -- the FastAPI app (routes, validation, problem+json
  errors, micro-batching, the demo page at ``/``);
* :func:`q2pt.serving.onnx_export.export_onnx` -- ONNX export (optionally int8-quantized)
  and :func:`~q2pt.serving.onnx_export.evaluate_exports` to measure its R@P cost.

The command line is ``q2pt serve`` and ``q2pt export onnx`` (:mod:`q2pt.cli.serve`).
Heavy dependencies (torch, fastapi, onnxruntime) are imported by the submodules, not here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServeSettings", "load_runtime", "export_onnx", "evaluate_exports"]

_LAZY = {
    "create_app": "q2pt.serving.app",
    "ServeSettings": "q2pt.serving.settings",
    "load_runtime": "q2pt.serving.runtime",
    "export_onnx": "q2pt.serving.onnx_export",
    "evaluate_exports": "q2pt.serving.onnx_export",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'q2pt.serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
