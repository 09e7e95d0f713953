"""``q2pt experiment``: a thin wrapper over :func:`q2pt.experiments.run_experiment`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("q2pt.cli")

_STUDIES = ("data-size", "cold-start", "pretraining", "label-noise", "head", "locale-conflicts", "all")


def register(subparsers: Any) -> None:
    """Add the ``experiment`` command."""
    p = subparsers.add_parser(
        "experiment",
        help="compare the three variants and the baselines (or run a study) and write a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train the three variants (non-unified, unified-agnostic, unified-aware) and the baselines\n"
            "(fastText OVA, TF-IDF + logistic regression, frozen USE / USE + e5 embeddings + logistic\n"
            "regression; per locale and unified) on the same splits,\n"
            "evaluate them by R@P80 globally and per locale with bootstrap CIs, and write OUT/report.md,\n"
            "OUT/report.html (self-contained), OUT/results.json and OUT/figures/*.png.\n\n"
            "  q2pt experiment --preset demo --out runs/demo             # what make demo runs (SIMULATED data)\n"
            "  q2pt experiment --data DIR --out runs/mine                 # your data\n"
            "  q2pt experiment --preset quick --study cold-start --out runs/demo\n"
            "  q2pt experiment --data DIR --folds 5 --out runs/cv           # cross-validation\n\n"
            "Every model is judged twice: global R@P80 pooled (one threshold over all locales) and the\n"
            "global recall as deployed (each locale at its threshold calibrated on the validation split,\n"
            "with the precision reached on test).\n\n"
            "--folds K: DIR holds fold-0 ... fold-{K-1}, each a dataset folder (`q2pt data split FILE\n"
            "--folds K --out DIR` writes them); the main comparison runs on each fold into OUT/fold-i (a\n"
            "complete, resumable experiment output each) and OUT/report.md aggregates them (mean, sd, min,\n"
            "max over folds). --study is refused with --folds: run a study on one fold instead\n"
            "(--data DIR/fold-0 --out OUT/fold-0 --study NAME).\n\n"
            "Studies (--study, repeatable; all = main comparison + every study): data-size, cold-start,\n"
            "pretraining, label-noise, head, locale-conflicts. Runs already in OUT/results.json for the\n"
            "same data and configuration are skipped (--force redoes them).\n\n"
            "Settings: --config FILE (sections model, train, data, experiment) and overrides such as\n"
            "--train.max_epochs 5, --experiment.bootstrap 200, --experiment.data_size_locale se,\n"
            "--experiment.baselines '[]', --experiment.budget full."
        ),
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="PATH", help="dataset folder or file (default: the SIMULATED store)")
    src.add_argument("--preset", choices=("tiny", "demo", "quick", "full"), default=None,
                     help="size of the simulated store (default quick)")
    p.add_argument("--seed", type=int, default=None, help="seed of the simulated store (default 0)")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="cross-validation: --data DIR holds fold-0 ... fold-{K-1}; results per fold in OUT/fold-i "
                        "and aggregated in OUT")
    p.add_argument("--encoder", default="use", metavar="SPEC",
                   help="encoder of the variants: use, ngram, e5, hf:PATH, or specs joined with +")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for the report and results")
    p.add_argument("--study", action="append", choices=_STUDIES, metavar="NAME", default=[],
                   help=f"run a study ({', '.join(_STUDIES)}); repeatable")
    p.add_argument("--hf-model", metavar="PATH", help="Hugging Face encoder for the pretraining study")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file with model/train/data/experiment sections")
    p.add_argument("--force", action="store_true", help="redo runs already in OUT/results.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.set_defaults(func=cmd_experiment, accepts_overrides=True)


def _setup_logging(quiet: bool) -> None:
    """q2pt's log lines (progress notes, warnings) on stderr: the CLI's one shared handler."""
    from q2pt.cli import setup_logging

    setup_logging(quiet)


def cmd_experiment(args: argparse.Namespace) -> int:
    from q2pt.config import encoder_kind
    from q2pt.errors import ConfigError

    _setup_logging(args.quiet)
    try:
        encoder_kind(args.encoder)
    except ValueError as exc:
        raise ConfigError(f"--encoder: {exc}") from None
    from q2pt.experiments import ExperimentRequest, run_experiment
    from q2pt.io import check_writable

    if args.data and args.seed is not None:
        raise ConfigError("--seed seeds the simulated store; with --data it would change nothing (the data's own "
                          "split is used)")
    if Path(args.out).is_file():
        raise ConfigError(f"{args.out} is a file; the report folder is written there")
    check_writable(args.out, "report folder")
    req = ExperimentRequest(
        out=args.out, data=args.data, preset=args.preset or "quick", seed=args.seed or 0, encoder=args.encoder,
        studies=args.study, config=args.config, overrides=list(args.overrides or []), hf_model=args.hf_model,
        force=args.force, progress=not args.no_progress, folds=args.folds,
    )
    try:
        result = run_experiment(req)
    except KeyboardInterrupt:
        log.warning("the experiment stopped: the same command%s continues it (the runs finished are kept in %s; "
                    "the one in progress is trained again)", " without --force" if args.force else "", args.out)
        raise
    if "main" in (result.results.get("sections") or {}) or result.results.get("kind") == "folds":
        print(result.headline())
    print(f"report: {result.report_md} and {result.report_html}")
    return 0
