"""``q2pt experiment``: the paper's comparison and its follow-up studies, with a report.

:func:`run_experiment` is the library entry point (the CLI and ``bench/full_study.py`` call
it): it loads the data, resolves the settings and the training config, trains the three
variants and the baselines on the same splits (and/or runs studies), resumably, and renders
``report.md``, ``report.html``, ``results.json`` and the figures into the output folder.

Modules: :mod:`.settings` (settings, budgets), :mod:`.runner` (runs, results file),
:mod:`.baselines` (fastText, TF-IDF), :mod:`.studies`, :mod:`.evaluation`,
:mod:`.resources` (time / memory / size measurement), :mod:`.figures`, :mod:`.report`.
"""

from __future__ import annotations

import copy
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from q2pt.errors import ConfigError

from .settings import BUDGETS, STUDIES, ExperimentSettings, resolve_settings, split_overrides

__all__ = [
    "ExperimentRequest",
    "ExperimentResult",
    "run_experiment",
    "STUDIES",
    "BUDGETS",
    "ExperimentSettings",
    "build_command",
]

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


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` produced."""

    out_dir: Path
    results: dict[str, Any]
    report_md: Path
    report_html: Path
    sections: list[str] = field(default_factory=list)

    def headline(self) -> str:
        from .report import headline_table

        return headline_table(self.results)


def build_command(req: ExperimentRequest) -> str:
    """The ``q2pt experiment`` command line that reproduces ``req``."""
    parts = ["q2pt", "experiment"]
    if req.data is not None:
        parts += ["--data", str(req.data)]
    else:
        parts += ["--preset", req.preset, "--seed", str(req.seed)]
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
    """The experiment chooses the variant and the encoder itself: refuse them in the config."""
    model = file_data.get("model") or {}
    keys = [f"model.{k}" for k in ("variant", "encoder") if isinstance(model, Mapping) and k in model]
    keys += [a[2:].partition("=")[0] for a in train_over
             if a.startswith("--") and a[2:].partition("=")[0] in ("model.variant", "model.encoder")]
    if keys:
        raise ConfigError(
            f"{', '.join(sorted(set(keys)))} cannot be set for an experiment: it trains every variant "
            "(choose them with --experiment.variants) with the encoder given by --encoder"
        )


def run_experiment(req: ExperimentRequest) -> ExperimentResult:
    """Run the main comparison and/or studies of ``req`` and render the report (see the module doc)."""
    from q2pt.config import load_config_file
    from q2pt.data import load_dataset

    from .report import render_report
    from .runner import ExperimentRunner
    from .studies import run_study

    run_main, studies = _study_list(req.studies)
    if isinstance(req.config, Mapping):
        file_data = copy.deepcopy(dict(req.config))
    elif req.config is not None:
        file_data = load_config_file(req.config)
    else:
        file_data = {}
    exp_file = file_data.pop("experiment", None) or {}
    exp_over, train_over = split_overrides(req.overrides)
    _check_not_set(file_data, train_over)
    data_path = req.data
    if data_path is None and (file_data.get("data") or {}).get("path"):
        data_path = file_data["data"]["path"]
    budget = exp_over.get("budget") or exp_file.get("budget") or (req.preset if data_path is None else "full")
    settings = resolve_settings(str(budget), exp_file, exp_over, {"hf_model": req.hf_model})
    # the budget's train layer sits under the user's config file
    layered: dict[str, Any] = {"train": dict(BUDGETS[settings.budget]["train"])}
    for section, body in file_data.items():
        if isinstance(body, Mapping) and isinstance(layered.get(section), dict):
            layered[section].update(body)
        else:
            layered[section] = body
    layered.setdefault("data", {})
    layered["data"] = {**(layered["data"] or {}), "path": str(data_path) if data_path else None,
                       "preset": req.preset, "seed": req.seed}
    dataset = load_dataset(data_path, preset=req.preset, seed=req.seed)
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
