"""``q2pt experiment``: the paper's comparison and its follow-up studies, with a report.

:func:`run_experiment` is the library entry point (the CLI and ``bench/full_study.py`` call
it): it loads the data, resolves the settings and the training config, trains the three
variants and the baselines on the same splits (and/or runs studies), resumably, and renders
``report.md``, ``report.html``, ``results.json`` and the figures into the output folder.

Every model gets two global figures (see :mod:`.runner`): the *pooled* R@P (one threshold
over all locales) and the recall *as deployed* (each locale at its threshold calibrated on
the validation split, with the precision reached on test).

Cross-validation (``folds=K``, ``q2pt experiment --folds K --data DIR``): ``DIR`` holds
``fold-0`` ... ``fold-{K-1}``, each a normal dataset folder (``q2pt data split FILE --folds K
--out DIR`` writes them). The main comparison runs on each fold into ``OUT/fold-i`` -- each a
complete, resumable experiment output of its own -- and ``OUT/results.json``, ``report.md``
and ``report.html`` aggregate them: per model, mean, standard deviation, min and max over the
folds of the global pooled R@P, the global recall as deployed, each locale's R@P and the
training time. Studies are not run per fold: ``--study`` with ``--folds`` is refused (run a
study on one fold with ``--data DIR/fold-i --out OUT/fold-i``; it reuses that fold's main
comparison).

Modules: :mod:`.settings` (settings, budgets), :mod:`.runner` (runs, results file),
:mod:`.baselines` (fastText, TF-IDF, frozen USE / USE + e5 + LR), :mod:`.studies`, :mod:`.evaluation`,
:mod:`.resources` (time / memory / size measurement), :mod:`.estimate` (the time estimate),
:mod:`.figures`, :mod:`.report`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from q2pt.config import iter_overrides
from q2pt.errors import ConfigError, DataError

from .settings import BUDGETS, CONFIGS_DIR, STUDIES, ExperimentSettings, resolve_settings, split_overrides

__all__ = [
    "ExperimentRequest",
    "ExperimentResult",
    "run_experiment",
    "STUDIES",
    "BUDGETS",
    "ExperimentSettings",
    "build_command",
    "fold_dirs",
    "unused_folds",
    "FOLDS_FORMAT",
]

#: ``format_version`` of a cross-validation ``results.json`` (the aggregate over folds).
FOLDS_FORMAT = "folds-1"

logger = logging.getLogger("q2pt.experiments")


@dataclass
class ExperimentRequest:
    """What to run (the CLI's options as a value).

    Attributes:
        out: the report folder.
        data: a dataset path, or None for the simulated store (``preset``, ``seed``).
        encoder: encoder spec of the variants (default ``use``).
        studies: study names; ``["all"]`` = main comparison + every study; [] = main only.
        config: a config file (YAML/JSON; sections model, train, data, experiment) or a dict.
        overrides: ``--section.key VALUE`` arguments (``experiment.*`` included).
        hf_model: Hugging Face encoder for the pretraining study.
        force: redo cached runs (and replace results of other data).
        folds: K for cross-validation over ``data``'s ``fold-0`` ... ``fold-{K-1}`` (see the
            module doc); None: one dataset.
    """

    out: str | Path
    data: str | Path | None = None
    preset: str = "quick"
    seed: int = 0
    encoder: str = "use"
    studies: Sequence[str] = ()
    config: str | Path | Mapping[str, Any] | None = None
    overrides: Sequence[str] = ()
    hf_model: str | None = None
    force: bool = False
    progress: bool = True
    command: str | None = None
    folds: int | None = None


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` produced (with ``folds``: the aggregate, and each fold's
    own result in ``fold_results``)."""

    out_dir: Path
    results: dict[str, Any]
    report_md: Path
    report_html: Path
    sections: list[str] = field(default_factory=list)
    fold_results: list["ExperimentResult"] = field(default_factory=list)

    def headline(self) -> str:
        from .report import folds_headline_table, headline_table

        if self.results.get("kind") == "folds":
            return folds_headline_table(self.results)
        return headline_table(self.results)


def build_command(req: ExperimentRequest) -> str:
    """The ``q2pt experiment`` command line that reproduces ``req``."""
    parts = ["q2pt", "experiment"]
    if req.data is not None:
        parts += ["--data", str(req.data)]
    else:
        parts += ["--preset", req.preset, "--seed", str(req.seed)]
    if req.folds is not None:
        parts += ["--folds", str(req.folds)]
    parts += ["--encoder", req.encoder]
    for s in req.studies:
        parts += ["--study", s]
    if req.hf_model:
        parts += ["--hf-model", str(req.hf_model)]
    if req.config is not None and not isinstance(req.config, Mapping):
        parts += ["--config", str(req.config)]
    parts += list(req.overrides)
    parts += ["--out", str(req.out)]
    return shlex.join(parts)


def _study_list(studies: Sequence[str]) -> tuple[bool, list[str]]:
    """(run the main comparison?, studies to run, in order)."""
    names = list(dict.fromkeys(studies))
    if not names:
        return True, []
    if "all" in names:
        return True, list(STUDIES)
    bad = [n for n in names if n not in STUDIES]
    if bad:
        raise ConfigError(f"unknown study {', '.join(bad)}; choose from {', '.join(STUDIES)} or all")
    return False, names


def _check_not_set(file_data: Mapping[str, Any], train_over: Sequence[str]) -> None:
    """The experiment chooses the variant and the encoder itself, and its data from its own options:
    refuse them in the config."""
    model = file_data.get("model") or {}
    keys = [f"model.{k}" for k in ("variant", "encoder") if isinstance(model, Mapping) and k in model]
    keys += [key for key, _, _ in iter_overrides(train_over) if key in ("model.variant", "model.encoder")]
    if keys:
        raise ConfigError(
            f"{', '.join(sorted(set(keys)))} cannot be set for an experiment: it trains every variant "
            "(choose them with --experiment.variants) with the encoder given by --encoder"
        )
    # which data: the experiment's own options (a flag or file key here was silently not read)
    data = file_data.get("data") or {}
    where = [f"data.{k} (in the config file)" for k in ("preset", "seed") if isinstance(data, Mapping) and k in data]
    where += [key for key, _, _ in iter_overrides(train_over) if key in ("data.path", "data.preset", "data.seed")]
    if where:
        raise ConfigError(f"{', '.join(where)}: an experiment's data is set by --data PATH (or data.path in the "
                          "config file), or --preset and --seed for the simulated store")


def _load_file(req: ExperimentRequest) -> dict[str, Any]:
    from q2pt.config import load_config_file

    if isinstance(req.config, Mapping):
        return copy.deepcopy(dict(req.config))
    if req.config is not None:
        return load_config_file(req.config)
    return {}


def run_experiment(req: ExperimentRequest) -> ExperimentResult:
    """Run the main comparison and/or studies of ``req`` and render the report (see the module doc).
    The output folder's write lock is held throughout: a second experiment into it is refused
    naming the first's pid (two at once lost each other's runs from ``results.json``)."""
    from q2pt.io import folder_lock

    with folder_lock(req.out, "experiment folder"):
        if req.folds is not None:
            return _run_folds(req)
        return _run_one(req)


def _run_one(req: ExperimentRequest) -> ExperimentResult:
    from q2pt.data import load_dataset

    from .report import render_report
    from .runner import ExperimentRunner
    from .studies import run_study

    run_main, studies = _study_list(req.studies)
    if req.hf_model and "pretraining" not in studies:
        logger.warning("--hf-model is the Hugging Face encoder of the pretraining study, which this run does not "
                       "include (--study pretraining): not used. The main comparison trains with --encoder "
                       "(--encoder hf:%s for that model)", req.hf_model)
    file_data = _load_file(req)
    exp_file = file_data.pop("experiment", None) or {}
    exp_over, train_over = split_overrides(req.overrides)
    _check_not_set(file_data, train_over)
    data_path = req.data
    if data_path is None and (file_data.get("data") or {}).get("path"):
        data_path = file_data["data"]["path"]
    budget = exp_over.get("budget") or exp_file.get("budget") or (req.preset if data_path is None else "full")
    settings = resolve_settings(str(budget), exp_file, exp_over, {"hf_model": req.hf_model})
    if run_main and not studies and not settings.variants and not settings.baselines:
        raise ConfigError("nothing to run: experiment.variants and experiment.baselines are both empty "
                          "(name a variant or a baseline, or a study with --study)")
    # the budget's train layer sits under the user's config file
    layered: dict[str, Any] = {"train": dict(BUDGETS[str(settings.budget)]["train"])}
    for section, body in file_data.items():
        if isinstance(body, Mapping) and isinstance(layered.get(section), dict):
            layered[section].update(body)
        else:
            layered[section] = body
    layered.setdefault("data", {})
    layered["data"] = {**(layered["data"] or {}), "path": str(data_path) if data_path else None,
                       "preset": req.preset, "seed": req.seed}
    _hint_folds(data_path)
    dataset = load_dataset(data_path, preset=req.preset, seed=req.seed,
                           **_label_options(layered, train_over, req.encoder))
    if dataset.simulated:
        logger.info("experiment on SIMULATED data (%s, fingerprint %s)", dataset.source, dataset.fingerprint)
    else:
        logger.info("experiment on %s (fingerprint %s)", dataset.source, dataset.fingerprint)
    command = req.command or build_command(req)
    runner = ExperimentRunner(
        dataset, settings, req.out, config_file=layered, train_overrides=train_over, encoder=req.encoder,
        force=req.force, progress=req.progress, command=command,
    )
    done = []
    if run_main:
        runner.run_main()
        done.append("main")
    for name in studies:
        run_study(runner, name)
        done.append(name)
    paths = render_report(req.out, runner.store.data)
    return ExperimentResult(Path(req.out), runner.store.data, paths["markdown"], paths["html"], done)


# --------------------------------------------------------------------------- folds


def _label_options(layered: Mapping[str, Any], train_over: Sequence[str], encoder: str) -> dict[str, Any]:
    """``label_depth`` (and its separator) and ``simulated_tree`` of the training config's data
    section, for :func:`q2pt.data.load_dataset`; {} when unset (or unknown to this version's
    config), so the data loads as before."""
    from q2pt.config import parse_overrides, resolve_config

    cfg = resolve_config(copy.deepcopy(dict(layered)), {**parse_overrides(train_over), "model.encoder": encoder})
    options: dict[str, Any] = {}
    if not getattr(cfg.data, "simulated_tree", True):
        options["simulated_tree"] = False
    depth = getattr(cfg.data, "label_depth", None)
    if depth is None:
        return options
    options["label_depth"] = depth
    sep = getattr(cfg.data, "label_separator", None)
    if sep is not None:
        options["label_separator"] = sep
    return options


def _hint_folds(data_path: Any) -> None:
    """A folder of fold folders given without ``--folds``: say so instead of a missing-file error."""
    if data_path is None:
        return
    root = Path(data_path)
    if not root.is_dir() or not (root / "fold-0").is_dir():
        return
    if any(p.is_file() and p.name.split(".")[0] in ("train", "valid", "test") for p in root.iterdir()):
        return
    k = sum(1 for p in root.iterdir() if p.is_dir() and p.name.startswith("fold-"))
    raise ConfigError(f"{root} holds fold folders (fold-0 ...), not a dataset: pass --folds {k} to run the "
                      f"cross-validation, or --data {root / 'fold-0'} for one fold")


def fold_dirs(data_dir: str | Path, k: int) -> list[Path]:
    """``data_dir/fold-0`` ... ``data_dir/fold-{k-1}``; DataError naming every missing one."""
    root = Path(data_dir)
    expected = f"fold-0 ... fold-{k - 1}" if k > 1 else "fold-0"
    how = f"`q2pt data split FILE --folds {k} --out {root}` writes them"
    if not root.is_dir():
        raise DataError(f"--folds {k}: {root} is not a directory; it must hold the fold folders {expected} "
                        f"(each a dataset folder; {how})")
    dirs = [root / f"fold-{i}" for i in range(k)]
    missing = [d.name for d in dirs if not d.is_dir()]
    if missing:
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("fold-"))
        raise DataError(
            f"--folds {k}: {root} lacks {', '.join(missing)} (expected {expected}, each a dataset folder; {how}); "
            f"found: {', '.join(found) or 'no fold folders'}"
        )
    if unused_folds(root, k):
        logger.warning("%s has more than %d fold folders: only fold-0 ... fold-%d are used", root, k, k - 1)
    return dirs


def unused_folds(data_dir: str | Path, k: int) -> list[str]:
    """The fold folders of ``data_dir`` beyond the ``k`` a run uses (fold-k, fold-k+1, ...): their
    test queries are tested by none of the k folds."""
    out, i = [], k
    while (Path(data_dir) / f"fold-{i}").is_dir():
        out.append(f"fold-{i}")
        i += 1
    return out


def _check_folds_out(out: Path, force: bool) -> None:
    """OUT may be new, empty, or a cross-validation output (fold-i folders, its results and report)."""
    import json

    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; the cross-validation output is a folder")
    known = {"results.json", "report.md", "report.html", "figures", CONFIGS_DIR}
    stray = [p.name for p in out.iterdir()
             if not p.name.startswith(".") and p.name not in known and not p.name.startswith("fold-")]
    if stray:
        raise ConfigError(f"refusing to write the cross-validation to {out}: the folder holds other files "
                          f"({', '.join(sorted(stray)[:5])}); choose a new or empty folder")
    path = out / "results.json"
    if path.exists() and not force:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("format_version") != FOLDS_FORMAT:
            raise ConfigError(f"{path} is not a q2pt cross-validation results file (a single experiment's?); "
                              "choose another --out or pass --force to replace it")


def _run_folds(req: ExperimentRequest) -> ExperimentResult:
    """The main comparison on each fold into OUT/fold-i, then the aggregate (see the module doc)."""
    from q2pt import __version__
    from q2pt.io import write_json
    from q2pt.metrics import to_jsonable

    from .evaluation import aggregate_folds
    from .report import render_folds_report
    from .runner import _now

    k = req.folds
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"--folds must be a whole number of at least 2, got {k!r}")
    if list(req.studies):
        raise ConfigError(
            "--study cannot be combined with --folds: the studies run on one dataset, not per fold. Run the "
            "cross-validation without --study, then a study on one fold, e.g. --data DIR/fold-0 --out OUT/fold-0 "
            "--study NAME (it reuses that fold's main comparison)"
        )
    data_dir = req.data
    if data_dir is None:
        data_dir = (_load_file(req).get("data") or {}).get("path")
    if data_dir is None:
        raise ConfigError(f"--folds {k} needs --data DIR, a folder holding fold-0 ... fold-{k - 1} (not the "
                          "simulated store: write folds of it with `q2pt data split`)")
    dirs = fold_dirs(data_dir, k)
    out = Path(req.out)
    _check_folds_out(out, req.force)
    ours = {d.name for d in dirs}
    stale = sorted(p.name for p in out.glob("fold-*") if p.is_dir() and p.name not in ours) if out.is_dir() else []
    if stale:
        logger.warning("%s holds %d fold folder(s) of an earlier run that this cross-validation does not use (%s): "
                       "left as they are, not in its results", out, len(stale), ", ".join(stale[:5]))
    command = req.command or build_command(req)
    fold_results: list[ExperimentResult] = []
    for i, d in enumerate(dirs):
        logger.info("fold %d/%d: %s -> %s", i + 1, k, d, out / d.name)
        fold_req = dataclasses.replace(req, data=str(d), out=out / d.name, folds=None, studies=(), command=None)
        fold_req.command = build_command(fold_req)
        fold_results.append(_run_one(fold_req))
    agg = aggregate_folds([r.results for r in fold_results])
    first = fold_results[0].results
    main = (first.get("sections") or {}).get("main") or {}
    results: dict[str, Any] = {
        "format_version": FOLDS_FORMAT,
        "kind": "folds",
        "q2pt_version": __version__,
        "updated": _now(),
        "k": k,
        "command": command,
        "data_dir": str(data_dir),
        "unused_folds": unused_folds(data_dir, k),
        "split_report": str(Path(data_dir) / "split.json") if (Path(data_dir) / "split.json").is_file() else None,
        "simulated": any(bool((r.results.get("data") or {}).get("simulated")) for r in fold_results),
        "label_depth": (first.get("data") or {}).get("label_depth"),
        "precision": (main.get("settings") or {}).get("precision", 0.8),
        "settings": main.get("settings"),
        "encoder": main.get("encoder"),
        "machine": first.get("machine"),
        "folds": [
            {"name": d.name, "data_dir": str(d), "out_dir": str(r.out_dir), "report": str(r.report_md),
             "data": r.results.get("data"), "command": (r.results.get("sections") or {}).get("main", {}).get("command")}
            for d, r in zip(dirs, fold_results)
        ],
        "std": "sample standard deviation over the folds (ddof 1)",
        **agg,
    }
    results = to_jsonable(results)
    out.mkdir(parents=True, exist_ok=True)
    if (out / dirs[0].name / CONFIGS_DIR).is_dir():  # the folds train alike: the first fold's configs
        shutil.copytree(out / dirs[0].name / CONFIGS_DIR, out / CONFIGS_DIR, dirs_exist_ok=True)
    write_json(out / "results.json", results)
    paths = render_folds_report(out, results)
    return ExperimentResult(out, results, paths["markdown"], paths["html"], ["folds"], fold_results)
