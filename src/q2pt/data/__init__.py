"""q2pt's data layer. :func:`load_dataset` is the one entry point every command uses.

A dataset is a directory with ``train``/``valid``/``test`` files (Parquet, JSONL, CSV or
TSV) or one file with a ``split`` column; ``None`` means the built-in *simulated* store,
generated deterministically and cached (see :func:`simulated_cache_dir`).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from q2pt.errors import ConfigError, DataError, Problem

from . import schema
from .io import read_locale_languages
from .labels import cut_names_digest, union_cut_names
from .schema import DataProblem, normalize_query

__all__ = [
    "Dataset",
    "DataProblem",
    "load_dataset",
    "load_configured",
    "load_labelled",
    "from_frames",
    "simulated_cache_dir",
    "ensure_simulated",
    "normalize_query",
]

log = logging.getLogger("q2pt.data")

_CACHE_MANIFEST = "simulated.json"
DEFAULT_LABEL_SEPARATOR = " > "  # = q2pt.data.labels.DEFAULT_SEPARATOR (config.DataSection.label_separator)


@dataclass
class Dataset:
    """A dataset in memory (see docs/ARCHITECTURE.md, "Data contract").

    ``splits`` maps "train", "valid", "test" to frames with ``query`` (str), ``locale``
    (str), ``product_types`` (non-empty list of str) and ``weight`` (float); simulated
    data adds ``intent`` and ``sim_*`` analysis columns. Treat the frames as read-only:
    ``labels`` and ``locales`` are computed once.
    """

    splits: dict[str, pd.DataFrame]
    source: str
    simulated: bool
    fingerprint: str
    taxonomy: dict | None = None
    warnings: list[Problem] = field(default_factory=list)  # validation warnings, kept for reports
    #: store -> the languages its shoppers write in (``locales.json`` in the dataset folder;
    #: the simulated store's own map); empty: not given
    locale_languages: dict[str, list[str]] = field(default_factory=dict)
    #: the ``data`` config settings :func:`load_dataset` read it with (path, or preset and seed;
    #: label_depth and label_separator; simulated_tree), which a model trained on it records
    #: (:meth:`q2pt.models.Q2PTModel.fit`); empty: built from frames
    loaded_with: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> pd.DataFrame:
        return self.splits["train"]

    @property
    def valid(self) -> pd.DataFrame:
        return self.splits["valid"]

    @property
    def test(self) -> pd.DataFrame:
        return self.splits["test"]

    @cached_property
    def labels(self) -> list[str]:
        """Sorted union of the product types in train (the label space)."""
        return sorted({lab for labs in self.train[schema.LABELS].tolist() for lab in labs})

    @cached_property
    def cut_names(self) -> dict[str, list[str]]:
        """Loaded with ``data.label_depth``: cut type -> the names of the levels cut away below
        it in the training split's own paths (its ``cut_names`` column; ``{}``: nothing cut)."""
        return union_cut_names(self.train)

    @cached_property
    def cut_names_sha256(self) -> str:
        """The digest of the training split's cut names per locale (:func:`cut_names_digest`):
        what a training run's identity records of them (the fingerprint sees the cut paths alone)."""
        return cut_names_digest(self.train)

    @cached_property
    def locales(self) -> list[str]:
        """Sorted locales present in any split."""
        found: set[str] = set()
        for df in self.splits.values():
            found.update(df[schema.LOCALE].unique().tolist())
        return sorted(found)

    def __repr__(self) -> str:
        rows = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"Dataset(source={self.source!r}, simulated={self.simulated}, {rows}, fingerprint={self.fingerprint})"


# --------------------------------------------------------------------------- simulated store
def simulated_cache_dir(preset: str = "quick", seed: int = 0) -> Path:
    """``$Q2PT_CACHE/simulated/<preset>-seed<seed>`` (default cache ``~/.cache/q2pt``)."""
    base = os.environ.get("Q2PT_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "q2pt"
    return root / "simulated" / f"{preset}-seed{int(seed)}"


def _simulator_version(sim: Any) -> str:
    from q2pt import __version__

    return f"{__version__}/{getattr(sim, 'SIMULATOR_VERSION', getattr(sim, '__version__', '0'))}"


def _cache_complete(folder: Path, version: str) -> dict | None:
    """The cache manifest if ``folder`` holds a complete cache of this simulator version."""
    try:
        manifest = json.loads((folder / _CACHE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("version") != version:
        return None
    if not all((folder / f"{s}.parquet").is_file() for s in schema.SPLITS):
        return None
    return manifest


def _check_preset(sim: Any, preset: str) -> None:
    presets = getattr(sim, "PRESETS", None)
    if presets is not None and preset not in presets:
        raise ConfigError(f"unknown simulated preset {preset!r}; choose one of {', '.join(sorted(presets))}")


def ensure_simulated(preset: str = "quick", seed: int = 0) -> Path:
    """Generate the simulated store for (preset, seed) into the cache unless a complete
    copy is there already; return its directory (train/valid/test.parquet + simulated.json)."""
    from q2pt.data import simulate as sim  # lazy: the simulator is large
    from q2pt.io import atomic_path, write_json

    from .io import write_dataset
    from .validate import validate_frames

    _check_preset(sim, preset)
    folder = simulated_cache_dir(preset, seed)
    version = _simulator_version(sim)
    if _cache_complete(folder, version) is not None:
        return folder
    log.info("generating the simulated store (preset %s, seed %s) into %s", preset, seed, folder)
    frames, taxonomy = sim.simulate(preset, seed)
    source = f"simulated:{preset}:seed={seed}"
    report = validate_frames(frames, source=source)
    report.raise_for_errors()  # a simulator bug; never expected
    splits = {s: frames[s] for s in schema.SPLITS}
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder) as tmp:
        write_dataset(splits, tmp, "parquet")
        write_json(
            tmp / _CACHE_MANIFEST,
            {
                "simulated": True,
                "preset": preset,
                "seed": int(seed),
                "version": version,
                "fingerprint": schema.fingerprint(splits),
                "rows": {s: len(df) for s, df in splits.items()},
                "taxonomy": _jsonable(taxonomy),
            },
        )
    return folder


def _jsonable(obj: Any) -> Any:
    """``obj`` if it survives JSON, else its JSON form with unknown objects as strings."""
    return json.loads(json.dumps(obj, default=str))


# --------------------------------------------------------------------------- loading
def _from_checked(
    report: Any,
    frames: Mapping[str, pd.DataFrame] | None,
    source: str,
    simulated: bool,
    taxonomy: dict | None,
    label_depth: int | None = None,
    label_separator: str = DEFAULT_LABEL_SEPARATOR,
    simulated_tree: bool = True,
) -> Dataset:
    report.raise_for_errors()
    assert frames is not None
    if report.warnings:
        log.warning("%s: %s%s", source, report.counts_line(),
                    f" (on the product types as given, before data.label_depth {label_depth} cuts them)"
                    if label_depth is not None else "")
    splits = {s: frames[s] for s in schema.SPLITS}
    given = [s for s in schema.SPLITS if schema.CUT_NAMES in splits[s].columns]
    if given:  # made here, from the paths before a cut (data.label_depth), never read from a file
        log.warning("%s: column %r of split(s) %s ignored (q2pt makes it when data.label_depth cuts the paths)",
                    source, schema.CUT_NAMES, ", ".join(given))
        splits = {s: f.drop(columns=[schema.CUT_NAMES]) if s in given else f for s, f in splits.items()}
    if simulated and simulated_tree and taxonomy:
        splits = _simulated_paths(splits, taxonomy, label_separator)
    if label_depth is not None:
        splits = _truncate_splits(splits, label_depth, label_separator, source)
    return Dataset(
        splits=splits,
        source=source,
        simulated=simulated,
        fingerprint=schema.fingerprint(splits),
        taxonomy=taxonomy,
        warnings=list(report.warnings),
    )


def _simulated_paths(splits: Mapping[str, pd.DataFrame], taxonomy: Mapping[str, Any],
                     sep: str) -> dict[str, pd.DataFrame]:
    """The simulated store's product types (and ``intent``) as ``department > group > type``
    paths (``department > type`` for a type in no group): the store's tree
    (``data.simulated_tree``)."""
    paths = {str(t["id"]): sep.join([str(t["department"])] + ([str(t["group"])] if t.get("group") else [])
                                    + [str(t["id"])])
             for t in taxonomy.get("types", []) if isinstance(t, Mapping) and "id" in t and "department" in t}
    if not paths:
        return dict(splits)

    def path(t: str) -> str:
        return paths.get(t, t)

    out = {}
    for name, frame in splits.items():
        frame = frame.copy()
        frame[schema.LABELS] = pd.Series([[path(t) for t in ts] for ts in frame[schema.LABELS].tolist()],
                                         index=frame.index, dtype=object)
        if "intent" in frame.columns:
            frame["intent"] = [path(t) if isinstance(t, str) else t for t in frame["intent"].tolist()]
        out[name] = frame
    return out


def load_dataset(
    path: str | os.PathLike | None,
    *,
    preset: str = "quick",
    seed: int = 0,
    validate: bool = True,
    max_query_chars: int = schema.DEFAULT_MAX_QUERY_CHARS,
    label_depth: int | None = None,
    label_separator: str = DEFAULT_LABEL_SEPARATOR,
    simulated_tree: bool = True,
) -> Dataset:
    """Load a dataset: a directory with train/valid/test files, one file with a ``split``
    column, or ``None`` for the built-in simulated store (``preset``, ``seed``).

    Simulated data (the built-in store, or a folder ``q2pt data simulate`` wrote) has a
    tree: its product types become ``department > group > type`` paths (``department > type``
    for a type in no group) unless ``simulated_tree`` is False (``data.simulated_tree``; bare
    type ids, as before q2pt 0.2).

    Every row is checked (see :mod:`q2pt.data.validate`); invalid data raises a
    :class:`~q2pt.errors.DataError` with every problem (file, 1-based row, field).
    ``validate=False`` skips only the checks between rows (duplicates, leakage, labels
    unseen in train). Warnings are logged and kept in ``Dataset.warnings``.

    ``label_depth`` (a training config's ``data.label_depth``): every product type path
    is cut to its first N levels, split on ``label_separator`` (see
    :mod:`q2pt.data.labels`), after the checks and before the fingerprint is computed
    (so the fingerprint says which depth was used; the training split's ``cut_names`` column,
    the names of the levels cut away, is not in it); the checks and their warnings are
    about the labels as given. To load what a config names, use :func:`load_configured`.
    """
    from .io import read_raw_dataset
    from .validate import check_raw_dataset

    if path is None:
        folder = ensure_simulated(preset, seed)
        manifest = json.loads((folder / _CACHE_MANIFEST).read_text(encoding="utf-8"))
        raw = read_raw_dataset(folder)
        report, frames = check_raw_dataset(raw, max_query_chars=max_query_chars, cross_checks=validate)
        taxonomy = manifest.get("taxonomy")
        ds = _from_checked(
            report, frames, f"simulated:{preset}:seed={int(seed)}", True,
            taxonomy if isinstance(taxonomy, dict) else None, label_depth, label_separator, simulated_tree,
        )
        ds.locale_languages = _taxonomy_languages(ds.taxonomy)
        ds.loaded_with = {"path": None, "preset": preset, "seed": int(seed), "simulated_tree": bool(simulated_tree),
                          **_cut_with(label_depth, label_separator)}
        return ds
    path = Path(path)
    raw = read_raw_dataset(path)
    report, frames = check_raw_dataset(raw, max_query_chars=max_query_chars, cross_checks=validate)
    simulated, taxonomy = _simulated_marker(path)
    ds = _from_checked(report, frames, str(path), simulated, taxonomy, label_depth, label_separator, simulated_tree)
    ds.locale_languages = {**_taxonomy_languages(taxonomy), **read_locale_languages(path)}
    ds.loaded_with = {"path": os.path.abspath(path), **_cut_with(label_depth, label_separator)}
    if simulated:
        ds.loaded_with["simulated_tree"] = bool(simulated_tree)
    return ds


def _cut_with(label_depth: int | None, label_separator: str) -> dict[str, Any]:
    """How the paths were cut (the separator only matters when they were)."""
    out: dict[str, Any] = {"label_depth": label_depth}
    if label_depth is not None:
        out["label_separator"] = label_separator
    return out


def _taxonomy_languages(taxonomy: dict | None) -> dict[str, list[str]]:
    """The simulated store's map (its taxonomy's ``locales``)."""
    locales = (taxonomy or {}).get("locales")
    if not isinstance(locales, dict):
        return {}
    return {str(k): [str(x) for x in v] for k, v in locales.items() if isinstance(v, list) and v}


def load_configured(data: Any, **options: Any) -> Dataset:
    """Load the dataset a config's ``data`` section names (a :class:`q2pt.config.DataSection`
    or a mapping with its keys: path, preset, seed, label_depth, label_separator), e.g.
    ``load_configured(config.data)`` or ``load_configured(model.config.data)`` for the data a
    model was trained on. ``options`` go to :func:`load_dataset` (``validate``, ...)."""
    get = data.get if isinstance(data, Mapping) else (lambda key, default=None: getattr(data, key, default))
    return load_dataset(
        get("path"), preset=get("preset") or "quick", seed=int(get("seed") or 0),
        label_depth=get("label_depth"), label_separator=get("label_separator") or DEFAULT_LABEL_SEPARATOR,
        simulated_tree=bool(get("simulated_tree", True)), **options,
    )


def load_labelled(
    path: str | os.PathLike, *, label_depth: int | None = None, label_separator: str = DEFAULT_LABEL_SEPARATOR,
    split: str = "test",
) -> tuple[pd.DataFrame, str]:
    """The frame to evaluate on: a dataset's ``split`` (train, valid or test; default test),
    or every row of a labelled file without a ``split`` column. Returns (frame, description).

    ``label_depth``/``label_separator``: product type paths cut as at training time (a
    model's ``config.data``; see :mod:`q2pt.data.labels`)."""
    from .io import one_table_dataset, read_table
    from .validate import check_raw_dataset

    if split not in ("train", "valid", "test"):
        raise ConfigError(f"split must be train, valid or test, got {split!r}")
    cut: dict[str, Any] = {"label_depth": label_depth, "label_separator": label_separator}
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        return getattr(load_dataset(path, validate=False, **cut), split), f"{path} ({split} split)"
    table = read_table(path)
    if "split" in table.frame.columns:
        return getattr(load_dataset(path, validate=False, **cut), split), f"{path} ({split} split)"
    # A plain labelled file: check its rows with the data layer's row checks (the table
    # stands in for every split; cross-split checks are off), report each problem once.
    if split != "test":  # (the default: every row of such a file is the one test set)
        log.warning("%s has no split column: every row is used, not a %s split", path, split)
    report, frames = check_raw_dataset(one_table_dataset(table, str(path)), cross_checks=False)
    errors = [p for p in report.errors]
    if errors:
        raise DataError(f"{path}: invalid data", errors)
    assert frames is not None
    frame = frames["train"]
    if label_depth is not None:
        from .labels import truncate_labels

        frame, changed = truncate_labels(frame, label_depth, label_separator)
        log.info("%s: product types cut to depth %d: %d labels changed", path, label_depth, changed)
    return frame, str(path)


def _truncate_splits(
    splits: Mapping[str, pd.DataFrame], depth: int, sep: str, source: str
) -> dict[str, pd.DataFrame]:
    """Every split's product types cut to ``depth`` levels; logs how many labels changed. The
    training split gets a ``cut_names`` column: each row's names of the levels cut away
    (``train.subtype_names``)."""
    from .labels import cut_level_names, label_lists, truncate_labels

    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ConfigError(f"data.label_depth must be a whole number of at least 1, got {depth!r}")
    if not isinstance(sep, str) or not sep:
        raise ConfigError(f"data.label_separator must be a non-empty string, got {sep!r}")
    out: dict[str, pd.DataFrame] = {}
    changed = total = 0
    before: set[str] = set()
    after: set[str] = set()
    for name, df in splits.items():
        before.update(lab for labs in df[schema.LABELS].tolist() for lab in labs)
        out[name], n = truncate_labels(df, depth, sep)
        if name == "train" and n:  # rows with the same paths share one (read-only) dict
            cache: dict[tuple[str, ...], dict[str, list[str]] | None] = {}
            column = []
            for labels in label_lists(df[schema.LABELS]):
                key = tuple(labels)
                if key not in cache:
                    cache[key] = cut_level_names([labels], depth, sep) or None
                column.append(cache[key])
            out[name][schema.CUT_NAMES] = column
        after.update(lab for labs in out[name][schema.LABELS].tolist() for lab in labs)
        changed += n
        total += int(df[schema.LABELS].map(len).sum()) if len(df) else 0
    log.info(
        "%s: product types cut to depth %d (separator %r): %d of %d labels changed; %d distinct product types -> %d",
        source, depth, sep, changed, total, len(before), len(after),
    )
    if changed and "train" in out:  # the checks counted unseen types on the paths as given: count them as cut
        seen = {lab for labs in out["train"][schema.LABELS].tolist() for lab in labs}
        unseen = {name: sum(lab not in seen for labs in out[name][schema.LABELS].tolist() for lab in labs)
                  for name in ("valid", "test") if name in out}
        log.info("%s: after the cut, (query, product type) pairs whose type is not in train: %s",
                 source, ", ".join(f"{name} {n}" for name, n in unseen.items()))
    return out


def _simulated_marker(path: Path) -> tuple[bool, dict | None]:
    """A dataset directory written by the simulator says so in ``simulated.json``."""
    if not path.is_dir():
        return False, None
    try:
        manifest = json.loads((path / _CACHE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, None
    if not isinstance(manifest, dict) or manifest.get("simulated") is not True:
        return False, None
    taxonomy = manifest.get("taxonomy")
    return True, taxonomy if isinstance(taxonomy, dict) else None


def from_frames(
    splits: Mapping[str, pd.DataFrame],
    *,
    source: str = "<memory>",
    simulated: bool = False,
    taxonomy: dict | None = None,
    validate: bool = True,
    max_query_chars: int = schema.DEFAULT_MAX_QUERY_CHARS,
    label_depth: int | None = None,
    label_separator: str = DEFAULT_LABEL_SEPARATOR,
) -> Dataset:
    """Build a checked :class:`Dataset` from in-memory frames (tests, notebooks, the simulator);
    ``label_depth`` as in :func:`load_dataset`."""
    from .validate import check_raw_dataset, frames_to_raw

    report, frames = check_raw_dataset(
        frames_to_raw(splits, source), max_query_chars=max_query_chars, cross_checks=validate
    )
    return _from_checked(report, frames, source, simulated, taxonomy, label_depth, label_separator)

