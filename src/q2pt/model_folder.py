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
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from q2pt import __version__
from q2pt.errors import ConfigError, ModelLoadError
from q2pt.inference import UNIFIED
from q2pt.io import interrupted_swap, sha256_of_file

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "check_output_folder",
    "hash_files",
    "make_readable",
    "model_fingerprint",
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


def model_fingerprint(folder: Path) -> str:
    """One id of a model folder's content: the sha256 of its manifest, which holds the sha256
    of every other file (checkpoints aside)."""
    return sha256_of_file(folder / MANIFEST)


def folder_state(folder: Path) -> tuple[int, int, str] | None:
    """What a load of ``folder`` must find unchanged from its start to its end: the folder's
    identity (device, inode: a save replaces the whole folder, a deploy may switch a symlink)
    and its manifest's sha256 (which holds every other file's). None where either is missing."""
    try:
        st = os.stat(folder)
        return st.st_dev, st.st_ino, model_fingerprint(folder)
    except OSError:
        return None


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


def check_train_target(out: Path, *, resume: bool, overwrite: bool, probe_lock: bool = True) -> None:
    """Before training into ``out``: it must be writable and not being written by another
    process (``probe_lock``: its write lock is tried; DDP ranks, which all look at once, do not),
    a model already there is replaced only with ``overwrite`` (``--overwrite``), and an
    interrupted run's checkpoints are continued with ``resume`` (``--resume``) or dropped with
    ``overwrite``, never silently."""
    import contextlib

    from q2pt.io import check_writable, folder_lock, restore_interrupted_swap

    check_writable(out, "model folder")
    # (no lock is held where the folder's parent does not exist yet: not made here for a probe)
    with folder_lock(out, "model folder") if probe_lock and out.parent.is_dir() else contextlib.nullcontext():
        restore_interrupted_swap(out)  # a model a killed save moved aside: back before anything is decided
    check_output_folder(out)  # a file, or a folder of other things: refused now, not after the data loaded
    finished = (out / MANIFEST).is_file()
    running = (out / "checkpoints" / "run.json").is_file()
    if finished and running and not (resume or overwrite):
        raise ConfigError(f"{out} holds a model and an interrupted training run over it: pass --resume (resume=True) "
                          "to finish the run, or --overwrite (overwrite=True) to start again")
    if finished and not (resume or overwrite):
        raise ConfigError(f"{out} holds a model already: pass --overwrite (overwrite=True) to replace it")
    if finished and resume and not overwrite and not running:
        raise ConfigError(f"{out} holds a finished model: there is no run to resume (pass --overwrite, overwrite=True, "
                          "to train again)")
    if running and not (resume or overwrite):  # (its checkpoints would go)
        raise ConfigError(f"{out} holds an interrupted training run: pass --resume (resume=True) to continue it, or "
                          "--overwrite (overwrite=True) to start again")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a model folder, refused (ModelLoadError) when missing, corrupt,
    newer than this q2pt reads, or missing a required key."""
    path = folder / MANIFEST
    if not folder.exists():
        aside = interrupted_swap(folder)
        if aside is not None:
            raise ModelLoadError(f"model folder {folder} does not exist: a save into it was killed, and its previous "
                                 f"model is in {aside} (the next train or save into {folder} puts it back; or move it)")
        raise ModelLoadError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a model folder (not a directory)")
    if not path.is_file():
        if (folder / "checkpoints" / "run.json").is_file():
            raise ModelLoadError(f"{path} is missing: {folder} holds an interrupted training run, not a model yet "
                                 f"(`q2pt train --resume --out {folder}` with the run's other options finishes it)")
        if (folder / "results.json").is_file() and (folder / "models").is_dir():
            models = sorted(p.name for p in (folder / "models").iterdir() if (p / MANIFEST).is_file())
            shown = ", ".join(models[:3]) + (" ..." if len(models) > 3 else "")
            raise ModelLoadError(f"{path} is missing: {folder} is an experiment's folder; its models are in "
                                 f"{folder / 'models'} ({shown or 'none finished'})")
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
    validate_manifest(manifest, path)
    return manifest


class NetworkEntry(BaseModel):
    """One network of a manifest's ``networks``."""

    model_config = ConfigDict(extra="allow")

    weights: str
    assets: str
    labels: list[str] | None = None
    encoder: dict[str, Any]
    pretrained_delta: dict[str, Any] | None = None


class ManifestSchema(BaseModel):
    """What the loader reads from ``manifest.json`` (other keys are informational)."""

    model_config = ConfigDict(extra="allow")

    format_version: StrictInt
    variant: Literal["non-unified", "unified-agnostic", "unified-aware"]
    encoder: dict[str, Any]
    locales: list[str]
    labels: list[str] = Field(min_length=1)
    config: dict[str, Any]
    thresholds: dict[str, float]
    networks: dict[str, NetworkEntry] = Field(min_length=1)
    files: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> "ManifestSchema":
        for name, values in (("labels", self.labels), ("locales", self.locales)):
            seen = sorted({v for v in values if values.count(v) > 1})
            if seen:
                raise ValueError(f"{name}: duplicate entries {seen[:5]}")
        unknown = sorted(set(self.thresholds) - {"global", *self.locales})
        if unknown:
            raise ValueError(f"thresholds: for locales the model does not have: {unknown[:5]}")
        bad = sorted(k for k, v in self.thresholds.items() if not 0.0 <= v <= 1.0)
        if bad:
            raise ValueError(f"thresholds: not between 0 and 1: {bad[:5]}")
        keys = set(self.networks)
        if self.variant == "non-unified" and keys != set(self.locales):
            raise ValueError("networks: a non-unified model has one network per locale")
        if self.variant != "non-unified" and keys != {UNIFIED}:
            raise ValueError(f"networks: a unified model has exactly one network {UNIFIED!r}")
        labels = set(self.labels)
        for key, entry in self.networks.items():
            if entry.labels is not None:
                if len(set(entry.labels)) != len(entry.labels) or not set(entry.labels) <= labels or not entry.labels:
                    raise ValueError(f"networks.{key}.labels: must be distinct labels of the model")
        return self


def parent_label_map(manifest: dict[str, Any] | None) -> dict[str, str]:
    """The renames (old -> new) a model was warm-started from its parent with, as applied (the
    manifest's ``parent.label_map``); {} for a model trained from scratch."""
    parent = (manifest or {}).get("parent")
    label_map = parent.get("label_map") if isinstance(parent, dict) else None
    return {str(k): str(v) for k, v in label_map.items()} if isinstance(label_map, dict) else {}


def validate_manifest(manifest: dict[str, Any], path: Path) -> ManifestSchema:
    """The manifest checked against :class:`ManifestSchema`; ModelLoadError naming the field."""
    try:
        return ManifestSchema.model_validate(manifest)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(x) for x in err["loc"]) or "manifest"
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ModelLoadError(f"{path} is corrupt ({'; '.join(problems)})") from None


def network_paths(key: str) -> tuple[str, str]:
    """Where a network's weights and encoder assets are, by the format (not by the manifest)."""
    base = "" if key == UNIFIED else f"models/{safe_name(key)}/"
    return f"{base}model.safetensors", f"{base}encoder"


def check_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file the loader reads -- each network's weights and every file of its encoder
    assets, at the paths the format fixes -- must be listed in the manifest's ``files`` and
    match its sha256; every listed file must be inside the folder and match. ModelLoadError
    naming the file otherwise."""
    mpath = folder / MANIFEST
    files: dict[str, str] = manifest["files"]
    for rel in files:  # (a listed file may be a symlink, e.g. into a download cache: its sha256 is checked)
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ModelLoadError(f"{mpath} is corrupt (files: {rel!r} is outside the model folder)")
    required: list[str] = []
    for key, entry in manifest["networks"].items():
        weights, assets = network_paths(key)
        if entry.get("weights") != weights or entry.get("assets") != assets:
            raise ModelLoadError(
                f"{mpath} is corrupt (networks.{key}: weights and assets must be {weights} and {assets})")
        required.append(weights)
        asset_dir = folder / assets
        if asset_dir.is_dir():
            required += [p.relative_to(folder).as_posix() for p in sorted(asset_dir.rglob("*")) if p.is_file()]
    for rel in required:
        if rel not in files:
            raise ModelLoadError(f"{folder / rel} is not listed in {mpath} (every file the loader reads is hashed)")
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file():
            raise ModelLoadError(f"missing file {path} (listed in {mpath})")
        if sha256_of_file(path) != digest:
            raise ModelLoadError(f"{path} is corrupt (its sha256 does not match {mpath})")


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def safe_name(stage: str) -> str:
    """A file-system safe, reversible-enough name for a stage / locale."""
    if stage == UNIFIED:
        return "_unified"
    return stage if _SAFE.match(stage) else "x" + stage.encode("utf-8").hex()
