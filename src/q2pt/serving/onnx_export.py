"""Export a q2pt model to ONNX, optionally int8-quantize it, and measure what that costs.

Layout of an export (``q2pt export onnx --model MODEL_DIR --out OUT``):

* **unified models** (``unified-aware``, ``unified-agnostic``): ``OUT`` is one ONNX file
  (if ``OUT`` is an existing folder, ``OUT/model.onnx``);
* **non-unified models**: ``OUT`` is a folder with one ``<locale>.onnx`` per locale and an
  ``index.json`` (``{"variant", "files": {locale: file}}``).

Each graph takes the tensors of its encoder's ``tokenize`` (same names: ``ids`` +
``lengths`` for ``use``, ``ids`` + ``offsets`` for ``ngram``, ``input_ids`` +
``attention_mask``... for ``hf:``; every axis dynamic) and returns ``probabilities``
``(batch, n_labels)`` = the network's scores (``Q2PTNet.scores``: sigmoid, or softmax for
``model.output softmax``), labels in the order stored in the
graph's metadata (``q2pt.labels``, JSON; also ``q2pt.variant``, ``q2pt.network``,
``q2pt.inputs``, ``q2pt.encoder``, ``q2pt.quantize``, the calibrated ``q2pt.thresholds`` and
``q2pt.type_thresholds``, and ``q2pt.model_fingerprint``: the model folder it was exported from,
checked when it is served). Tokenization stays in Python
(``Encoder.tokenize``): serve with ``q2pt serve --runtime onnx --onnx OUT``. A hierarchical
model's graph returns each node's own score; the parent-at-least-its-child lift
(``model.tree_scores consistent``) and the choice of the deepest confident types are q2pt's
Python side (:class:`q2pt.inference.InferenceCore`, which ``q2pt serve --runtime onnx`` uses), and
the graph's metadata carries what they need besides the thresholds: ``q2pt.tree`` (the tree's
JSON), ``q2pt.tree_scores`` and ``q2pt.level_thresholds``. In
``q2pt.level_thresholds`` a locale's ``null`` at a level means its own pairs there never reached
the precision target: it is cut at the level's global threshold, which is not an answer at the
target there.

The graphs are traced with PyTorch's TorchScript-based exporter (opset 17). Its
``index_add`` conversion is wrong when an index repeats (it scatters without reduction),
so during export ``aten::index_add`` is mapped to ``ScatterND(reduction="add")`` instead.

``quantize="int8"`` applies ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
activations quantized on the fly). :func:`evaluate_exports` measures R@P of PyTorch, the
fp32 graph and the int8 graph on a dataset split, so the cost of quantization is a
measured number.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from q2pt.data.io import check_target
from q2pt.errors import ConfigError, ModelLoadError, require
from q2pt.inference import DEFAULT_BATCH_SIZE, UNIFIED, InferenceCore
from q2pt.io import atomic_path, folder_lock, write_json

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.data import Dataset
    from q2pt.models import Q2PTModel

logger = logging.getLogger(__name__)

OPSET = 17
OUTPUT_NAME = "probabilities"
FORMAT_VERSION = "1"
QUANTIZE_MODES = ("int8",)
INDEX_FILE = "index.json"
UNIFIED_FILE = "model.onnx"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")

#: queries traced through the graph and used to check it against PyTorch: varied lengths,
#: scripts and a query with a repeated token (exercises index_add with duplicate indices)
SAMPLE_QUERIES = [
    "red running shoes",
    "x",
    "lego set for kids 6 years old",
    "wireless noise cancelling headphones black",
    "rote laufschuhe damen größe 39",
    "chaussures chaussures chaussures",
    "スマホケース",
    "детские книги",
]


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how close the graphs are to PyTorch."""

    path: Path  # the file (unified) or folder (non-unified) to pass to --onnx
    files: dict[str, Path]  # network key ("*" or locale) -> ONNX file
    quantize: str | None = None
    max_abs_diff: float | None = None  # |ONNX - PyTorch| on the sample queries (verify=True)
    n_checked: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # bytes per file


# ----------------------------------------------------------------------- layout
def onnx_files(path: str | os.PathLike, variant: str, keys: Sequence[str]) -> dict[str, Path]:
    """The ONNX file of each network key under an export ``path`` (see the module doc).

    Raises ModelLoadError naming a missing file."""
    path = Path(path)
    if variant != "non-unified":
        file = path / UNIFIED_FILE if path.is_dir() else path
        if not file.is_file():
            raise ModelLoadError(f"ONNX file not found: {file}")
        return {UNIFIED: file}
    if not path.is_dir():
        raise ModelLoadError(
            f"ONNX export of a non-unified model must be a folder with one <locale>.onnx per locale: {path}"
        )
    files = {}
    for key in keys:
        file = path / f"{_safe_name(key)}.onnx"
        if not file.is_file():
            raise ModelLoadError(f"ONNX file not found for locale {key!r}: {file}")
        files[key] = file
    return files


def export_target(folder: str | os.PathLike, variant: str) -> Path:
    """Where to export a model of ``variant`` inside ``folder``: ``folder/model.onnx``
    (unified) or ``folder/onnx`` (non-unified: a folder of graphs)."""
    return Path(folder) / (UNIFIED_FILE if variant != "non-unified" else "onnx")


def check_metadata(meta: Mapping[str, str], file: str | os.PathLike, labels: Sequence[str],
                   fingerprint: str | None = None) -> None:
    """Refuse an ONNX file that was not exported by q2pt from a model with these labels, or
    (where both the file and the model have one) from a model with another fingerprint: a
    weekly retrain keeps the labels, and its scores would be served under the new thresholds."""
    if "q2pt.labels" not in meta:
        raise ModelLoadError(f"{file}: not a q2pt ONNX export (no q2pt.labels metadata)")
    if str(meta.get("q2pt.format", "")) > FORMAT_VERSION:
        raise ModelLoadError(f"{file}: ONNX export format {meta.get('q2pt.format')} is newer than supported ({FORMAT_VERSION})")
    try:
        stored = json.loads(meta["q2pt.labels"])
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{file}: corrupt q2pt.labels metadata: {exc}") from exc
    if list(stored) != list(labels):
        raise ModelLoadError(f"{file}: exported from a different model (its labels differ from the model's)")
    exported_from = meta.get("q2pt.model_fingerprint")
    if exported_from and fingerprint and exported_from != fingerprint:
        raise ModelLoadError(f"{file}: exported from a different model (fingerprint {exported_from[:12]}, this model "
                             f"{fingerprint[:12]}); export this model again ('q2pt export onnx')")


def _safe_name(key: str) -> str:
    if not _SAFE_NAME.match(key):
        raise ConfigError(f"locale {key!r} cannot be used as a file name for its ONNX graph")
    return key


@dataclass
class OnnxSessions:
    """onnxruntime sessions of an export, one per network key, checked against the model."""

    path: Path
    sessions: dict[str, Any]
    inputs: dict[str, list[str]]
    meta: dict[str, dict[str, str]]
    version: str

    @property
    def quantize(self) -> str | None:
        return next((m.get("q2pt.quantize") for m in self.meta.values() if m.get("q2pt.quantize")), None)

    def forward(self, key: str, batch: Mapping[str, Any]) -> np.ndarray:
        """Network ``key``'s probabilities for a tokenized batch (the inference core's forward)."""
        feeds = {name: _to_numpy(batch[name]) for name in self.inputs[key]}
        return np.asarray(self.sessions[key].run(None, feeds)[0], dtype=np.float32)


def load_sessions(model: "Q2PTModel", path: str | os.PathLike, *, threads: int | None = None) -> OnnxSessions:
    """Open the ONNX graphs of an export of ``model`` (refused with ModelLoadError when a file
    is missing, corrupt, or exported from another model)."""
    ort = require("onnxruntime", "onnx")
    files = onnx_files(path, model.variant, list(model.networks))
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only (the exported Loop triggers harmless warnings)
    out = OnnxSessions(Path(path), {}, {}, {}, ort.__version__)
    for key, file in files.items():
        try:
            sess = ort.InferenceSession(str(file), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"cannot load ONNX file {file}: {exc}") from exc
        meta = dict(sess.get_modelmeta().custom_metadata_map)
        check_metadata(meta, file, model.labels_of(key), model.fingerprint)
        out.sessions[key], out.inputs[key], out.meta[key] = sess, [i.name for i in sess.get_inputs()], meta
    return out


def onnx_core(model: "Q2PTModel", path: str | os.PathLike, *, threads: int | None = None) -> "InferenceCore":
    """The model's inference core with an ONNX export as its forward pass."""
    sessions = load_sessions(model, path, threads=threads)
    return model.inference(forward=sessions.forward)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


# ----------------------------------------------------------------------- export
def check_export_target(model: Any, out: str | os.PathLike, overwrite: bool = False) -> None:
    """Where :func:`export_onnx` would write ``model``'s export: ConfigError, before any work, for
    a file or folder it would not replace (without ``overwrite``; a folder that is not an earlier
    export), or a ``.onnx`` file for a non-unified model's graphs."""
    out = Path(out)
    if _variant(model) != "non-unified":
        check_target(out / UNIFIED_FILE if out.is_dir() else out, overwrite, directory=False)
        return
    if out.suffix == ".onnx":
        raise ConfigError(f"a non-unified model exports one graph per locale: give --out a folder, not {out}")
    check_target(out, overwrite)
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX_FILE).is_file():
        raise ConfigError(f"{out} is not an earlier ONNX export (no {INDEX_FILE}): it is not replaced; "
                          "choose another --out")


def export_onnx(
    model: "Q2PTModel",
    out: str | os.PathLike,
    *,
    quantize: str | None = None,
    verify: bool = True,
    opset: int = OPSET,
    sample_queries: Sequence[str] | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export every network of ``model`` to ONNX under ``out`` (layout: module doc).

    ``quantize="int8"`` writes dynamically int8-quantized graphs. ``verify`` runs the
    written graphs with onnxruntime on sample queries and records the largest absolute
    difference from PyTorch's probabilities (``ExportResult.max_abs_diff``).
    Writes are atomic (a folder or file appears complete or not at all). An existing target
    (the ``.onnx`` file, or a non-unified model's folder) is replaced only with ``overwrite``,
    and a folder only when it is an earlier export (it has ``index.json``): ConfigError otherwise.
    """
    require("onnx", "onnx")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError(f"unknown quantization {quantize!r}: expected one of {', '.join(QUANTIZE_MODES)}")
    out = Path(out)
    variant = _variant(model)
    keys = list(model.networks)
    samples = list(sample_queries or SAMPLE_QUERIES)
    check_export_target(model, out, overwrite)
    if variant != "non-unified":
        target = out / UNIFIED_FILE if out.is_dir() else out
        with folder_lock(target, "ONNX export"), atomic_path(target) as tmp:
            _export_network(model, UNIFIED, tmp, variant, quantize, opset, samples)
        files = {UNIFIED: target}
        path = target
    else:
        with folder_lock(out, "ONNX export"), atomic_path(out) as tmp:
            tmp.mkdir()
            for key in keys:
                _export_network(model, key, tmp / f"{_safe_name(key)}.onnx", variant, quantize, opset, samples)
            write_json(tmp / INDEX_FILE, {
                "format": FORMAT_VERSION, "variant": variant, "quantize": quantize,
                "files": {k: f"{_safe_name(k)}.onnx" for k in keys},
            })
        files = {k: out / f"{_safe_name(k)}.onnx" for k in keys}
        path = out
    result = ExportResult(path=path, files=files, quantize=quantize,
                          sizes={k: f.stat().st_size for k, f in files.items()})
    if verify:
        result.max_abs_diff, result.n_checked = verify_export(model, path, samples)
    return result


def verify_export(
    model: "Q2PTModel", path: str | os.PathLike, queries: Sequence[str] | None = None
) -> tuple[float, int]:
    """Largest |ONNX - PyTorch| probability over ``queries`` in every model locale (and,
    for unified models, locale-agnostically); returns (max diff, number of predictions)."""
    queries = list(queries or SAMPLE_QUERIES)
    torch_core, onnx = model.inference(), onnx_core(model, path)
    locales = list(torch_core.locales) + (["__unseen__"] if torch_core.unified else [])
    qs = [q for _ in locales for q in queries]
    res = [torch_core.resolve(loc) for loc in locales for _ in queries]
    a = torch_core.scores(qs, res)
    b = onnx.scores(qs, res)
    diff = np.abs(np.nan_to_num(a, nan=0.0) - np.nan_to_num(b, nan=0.0))
    return float(diff.max()) if diff.size else 0.0, len(qs)


class _Probabilities:
    """Builds a torch module ``(*token tensors) -> net.scores(batch)`` (probabilities) for tracing."""

    @staticmethod
    def build(net: Any, names: Sequence[str]) -> Any:
        require("torch", "torch")
        import torch

        class Probabilities(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, *tensors: Any) -> Any:
                return self.net.scores(dict(zip(names, tensors)))

        return Probabilities().eval()


def _export_network(
    model: "Q2PTModel", key: str, dest: Path, variant: str, quantize: str | None, opset: int,
    samples: Sequence[str],
) -> None:
    torch = require("torch", "torch")
    onnx = require("onnx", "onnx")
    net = model.networks[key]
    was_training = net.training
    net.eval()
    encoder = net.encoder
    if variant == "unified-aware" and model.locales_:
        # trace with a locale token on some queries and none on others
        locs = [model.locales_[i % len(model.locales_)] if i % 2 == 0 else None for i in range(len(samples))]
        batch = encoder.tokenize(list(samples), locs)
    else:
        batch = encoder.tokenize(list(samples), None)
    names = list(batch)
    tensors = tuple(batch[n] for n in names)
    for n, t in zip(names, tensors):
        if not hasattr(t, "shape"):
            raise ConfigError(f"encoder {encoder.kind!r} tokenize() returned a non-tensor {n!r}: cannot export to ONNX")
    wrapper = _Probabilities.build(net, names)
    dynamic_axes: dict[str, dict[int, str]] = {
        n: {i: f"{n}_dim{i}" for i in range(t.dim())} for n, t in zip(names, tensors)
    }
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    labels = model.labels_of(key)
    meta = {
        "q2pt.format": FORMAT_VERSION,
        "q2pt.variant": variant,
        "q2pt.network": key,
        "q2pt.labels": json.dumps(labels, ensure_ascii=False),
        "q2pt.inputs": json.dumps(names),
        "q2pt.encoder": str(getattr(encoder, "spec", encoder.kind)),
    }
    if model.fingerprint:  # the model folder it was exported from (absent: a model never saved)
        meta["q2pt.model_fingerprint"] = model.fingerprint
    if quantize:
        meta["q2pt.quantize"] = quantize
    # what a reader of the file alone needs to decide as q2pt does: the calibrated thresholds
    meta["q2pt.thresholds"] = json.dumps(model.thresholds_)
    meta["q2pt.type_thresholds"] = json.dumps(model.type_thresholds_, ensure_ascii=False)
    if model.tree_ is not None:  # and, for paths, the tree and its score rule
        meta["q2pt.tree"] = json.dumps(model.tree_.to_json(), ensure_ascii=False)
        meta["q2pt.tree_scores"] = model.config.model.tree_scores
        meta["q2pt.level_thresholds"] = json.dumps(model.level_thresholds_)
    try:
        with tempfile.TemporaryDirectory(prefix="q2pt-export-") as tmpdir:
            fp32 = Path(tmpdir) / "fp32.onnx"
            with _index_add_as_scatter_add(torch), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(
                    wrapper, tensors, str(fp32), dynamo=False, input_names=names,
                    output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, opset_version=opset,
                    do_constant_folding=True,
                )
            src = fp32
            if quantize == "int8":
                qz = require("onnxruntime.quantization", "onnx")
                src = Path(tmpdir) / "int8.onnx"
                with _quiet_root_logger():  # quantize_dynamic logs a pre-processing hint on every call
                    qz.quantize_dynamic(str(fp32), str(src), weight_type=qz.QuantType.QInt8)
            proto = onnx.load(str(src))
            del proto.metadata_props[:]
            for k, v in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = k, v
            onnx.save(proto, str(dest))
    finally:
        net.train(was_training)


class _index_add_as_scatter_add:
    """Context manager: export ``aten::index_add`` (dim 0) as ``ScatterND(reduction="add")``,
    which sums repeated indices as PyTorch does (the stock conversion does not)."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def __enter__(self) -> None:
        torch = self.torch
        helper = torch.onnx.symbolic_helper

        def index_add(g: Any, self_: Any, dim: Any, index: Any, source: Any, alpha: Any) -> Any:
            d = helper._get_const(dim, "i", "dim")
            if d != 0:
                raise ConfigError(f"ONNX export supports index_add along dim 0 only (got {d})")
            a = helper._maybe_get_const(alpha, "f")
            if not helper._is_value(a) and float(a) != 1.0:
                source = g.op("Mul", source, g.op("Constant", value_t=torch.tensor(float(a))))
            idx = g.op("Unsqueeze", index, g.op("Constant", value_t=torch.tensor([1], dtype=torch.long)))
            return g.op("ScatterND", self_, idx, source, reduction_s="add")

        torch.onnx.register_custom_op_symbolic("aten::index_add", index_add, 16)

    def __exit__(self, *exc: Any) -> None:
        self.torch.onnx.unregister_custom_op_symbolic("aten::index_add", 16)


class _quiet_root_logger:
    """Temporarily raise the root logger's level to ERROR, and drop the handler that a
    module-level ``logging.warning()`` call installs on an unconfigured root logger
    (``quantize_dynamic`` does that, which would duplicate every later log line)."""

    def __enter__(self) -> None:
        root = logging.getLogger()
        self._level = root.level
        self._handlers = list(root.handlers)
        root.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if handler not in self._handlers:
                root.removeHandler(handler)
        root.setLevel(self._level)


def _variant(model: Any) -> str:
    v = getattr(model, "variant", None) or (getattr(model, "manifest", {}) or {}).get("variant")
    if not v:
        raise ModelLoadError("model has no variant")
    return str(v)


# --------------------------------------------------------------------- evaluation
def evaluate_exports(
    model: "Q2PTModel",
    dataset: "Dataset",
    onnx_paths: Mapping[str, str | os.PathLike],
    *,
    split: str = "test",
    precision: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """R@P (global and per locale) of PyTorch and each ONNX export on ``split``.

    ``onnx_paths`` maps a name (e.g. ``"onnx-fp32"``, ``"onnx-int8"``) to an export path.
    Returns ``{"split", "precision", "n_queries", "runtimes": {name: {"global": r, "pr_auc": a,
    "locales": {LOC: r}, "max_abs_diff_vs_torch": d, "answers_differ_vs_torch": n}}}`` (``"torch"``
    included; ``n``: queries whose served types, every type at or above its calibrated threshold
    with a tree's ancestors, differ from PyTorch's).
    """
    from q2pt import metrics
    from q2pt.data.labels import label_lists, multi_hot

    if split not in dataset.splits:
        raise ConfigError(f"dataset has no {split!r} split")
    df = dataset.splits[split]
    if precision is None:
        precision = float(((model.manifest or {}).get("config") or {}).get("train", {}).get("precision_target", 0.8))
    runtimes: dict[str, InferenceCore] = {"torch": model.inference()}
    for name, path in onnx_paths.items():
        runtimes[name] = onnx_core(model, path)
    base = runtimes["torch"]
    queries = df["query"].astype(str).tolist()
    locales = df["locale"].astype(str).tolist()
    # the labels as the model was trained on them (data.label_depth), a tree's with their
    # ancestors: the rows q2pt evaluate judges
    truth = label_lists(model.labels_as_trained(df, source=f"the {split} split")["product_types"])
    if model.tree_ is not None:
        truth = [model.tree_.close(t) for t in truth]
    y_sparse, n_missing = multi_hot(truth, base.classes)
    y_true = y_sparse.toarray()
    n_missing = np.asarray(n_missing)
    keep = [i for i, loc in enumerate(locales) if base.unified or loc in base.locales]
    queries = [queries[i] for i in keep]
    locales = [locales[i] for i in keep]
    y_true, n_missing = y_true[keep], n_missing[keep]
    res = [base.resolve(loc) for loc in locales]
    scores: dict[str, np.ndarray] = {}
    answers: dict[str, list[frozenset[str]]] = {}  # what each runtime serves: the types over their thresholds
    for name, rt in runtimes.items():
        raw = rt.scores(queries, res, batch_size)
        scores[name] = np.nan_to_num(raw, nan=0.0)
        answers[name] = [frozenset(t for t, _ in row) for row in rt.select(raw, res)]
    out: dict[str, Any] = {"split": split, "precision": precision, "n_queries": len(queries), "runtimes": {}}
    for name, s in scores.items():
        ev = metrics.evaluate(y_true, s, locales, precision=precision, n_missing=n_missing)
        differ = sum(a != b for a, b in zip(answers[name], answers["torch"]))
        out["runtimes"][name] = {
            "global": ev["global"]["r_at_p"],
            "pr_auc": ev["global"]["pr_auc"],
            "locales": {loc: e["r_at_p"] for loc, e in ev["locales"].items()},
            "max_abs_diff_vs_torch": float(np.abs(s - scores["torch"]).max()) if s.size else 0.0,
            "answers_differ_vs_torch": int(differ),
        }
    return out


def format_evaluation(result: Mapping[str, Any]) -> str:
    """A markdown table of :func:`evaluate_exports`'s result with deltas vs PyTorch."""
    runs = result["runtimes"]
    base = runs["torch"]["global"]
    p = result["precision"]
    lines = [
        f"R@P{round(p * 100):d} on the {result['split']} split ({result['n_queries']} queries)",
        "",
        f"| runtime | R@P{round(p * 100):d} (global) | delta vs torch | worst locale delta | PR-AUC | max abs prob diff | "
        "answers differ |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        g = r["global"]
        delta = (g - base) if (g is not None and base is not None) else None
        loc_deltas = [
            v - runs["torch"]["locales"][k]
            for k, v in r["locales"].items()
            if v is not None and runs["torch"]["locales"].get(k) is not None
        ]
        worst = min(loc_deltas) if loc_deltas else None
        lines.append(
            f"| {name} | {_f(g)} | {_f(delta, '+.4f')} | {_f(worst, '+.4f')} | {_f(r.get('pr_auc'))} | "
            f"{r['max_abs_diff_vs_torch']:.2e} | {r.get('answers_differ_vs_torch', 'n/a')} |"
        )
    lines += ["", "answers differ: queries whose served types (at the model's calibrated thresholds; a tree's "
              "per level, ancestors included) are not those PyTorch serves."]
    return "\n".join(lines)


def _f(x: Any, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)

