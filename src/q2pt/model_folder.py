"""Model folders on disk: the format version, the manifest, file hashes, safe names, and
the refusal to overwrite a folder that is not a model folder.

The folder layout and the manifest are described in :mod:`q2pt.models`, which writes and
reads them with these helpers.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from q2pt import __version__
from q2pt.errors import ConfigError, ModelLoadError
from q2pt.inference import UNIFIED
from q2pt.io import sha256_of_file

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "check_output_folder",
    "hash_files",
    "make_readable",
    "read_manifest",
    "safe_name",
    "versions",
]


#: Version of the model folder layout; load_model refuses newer ones.
#: 2: pretrained tensors stored as row deltas (version 1 folders, full tensors, still load).
FORMAT_VERSION = 2


MANIFEST = "manifest.json"


def versions() -> dict[str, str]:
    """The versions of the libraries a model folder was written with."""
    import safetensors
    import torch

    out = {"q2pt": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__,
           "numpy": np.__version__, "python": platform.python_version()}
    if "transformers" in sys.modules:  # an hf encoder is in use: record its version (no import)
        from importlib.metadata import PackageNotFoundError, version

        try:
            out["transformers"] = version("transformers")
        except PackageNotFoundError:  # pragma: no cover
            pass
    return out


def make_readable(root: Path) -> None:
    """Give written files the usual permissions (0666 less the umask): safetensors writes 0600."""
    umask = os.umask(0)
    os.umask(umask)
    for p in root.rglob("*"):
        if p.is_file():
            p.chmod(0o666 & ~umask)


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file of a model folder (but the manifest and checkpoints/)."""
    return {
        p.relative_to(root).as_posix(): sha256_of_file(p)
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


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a model folder, refused (ModelLoadError) when missing, corrupt,
    newer than this q2pt reads, or missing a required key."""
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


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def safe_name(stage: str) -> str:
    """A file-system safe, reversible-enough name for a stage / locale."""
    if stage == UNIFIED:
        return "_unified"
    return stage if _SAFE.match(stage) else "x" + stage.encode("utf-8").hex()
