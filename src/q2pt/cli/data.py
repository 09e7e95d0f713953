"""``q2pt data {validate,stats,split,from-clicks,simulate}``: thin handlers over q2pt.data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from q2pt.cli.arg_types import label_separator, non_negative_int, positive_int

PRESETS = ("tiny", "demo", "quick", "full")  # q2pt.data.simulate.PRESETS (not imported here: it is large)
FORMATS = ("parquet", "jsonl", "csv", "tsv")


def _add_source(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "path", nargs="?", metavar="PATH",
        help=f"dataset directory (train/valid/test files) or one file with a 'split' column; {what}",
    )
    p.add_argument("--preset", choices=PRESETS, default="quick",
                   help="simulated store preset when PATH is omitted (default: quick)")
    p.add_argument("--seed", type=int, default=0, help="simulated store seed when PATH is omitted (default: 0)")


def _add_separator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-separator", default=" > ", metavar="SEP", type=label_separator,
                   help="separator of the levels of product type paths, as data.label_separator (default ' > '): "
                   "paths of several levels are reported as a tree")


def _add_taxonomy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--taxonomy", metavar="FILE", default=None,
                   help="a taxonomy file (one product-type path a line) whose paths join the tree of the labels")


def _add_max_chars(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-query-chars", type=positive_int, default=200, metavar="N",
        help="queries longer than N characters are an error (default: 200)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    group = subparsers.add_parser("data", help="validate, describe, build or simulate datasets",
                                  description="Validate, describe, build (from click logs) or simulate datasets.")
    sub = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser(
        "validate", help="check a dataset and report every problem (exit 2 on errors)",
        description="Check a dataset and report every problem with its file, 1-based data row and field. "
        "Exit code 2 when there are errors, 0 otherwise.",
    )
    _add_source(p, "omitted: the built-in simulated store")
    _add_max_chars(p)
    _add_separator(p)
    _add_taxonomy(p)
    p.add_argument("--max-problems", type=non_negative_int, default=50, metavar="N",
                   help="print at most N problems, 0 for all (counts by kind are always complete; default: 50)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.set_defaults(func=_logged(_validate))

    p = sub.add_parser("stats", help="per-locale query, label and product-type statistics",
                       description="Per-locale query counts, labels per query, product types per locale and how many "
                       "are shared with other locales.")
    _add_source(p, "omitted: the built-in simulated store")
    _add_max_chars(p)
    _add_separator(p)
    _add_taxonomy(p)
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.set_defaults(func=_logged(_stats))

    p = sub.add_parser(
        "split", help="split a labelled file into leak-free per-locale train/valid/test (or K folds)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Split a labelled file (query, locale, product_types[, weight]; no split column) into train, valid\n"
            "and test, per locale and without leakage. A dataset (directory, or file with a split column) is\n"
            "pooled and split again.\n\n"
            "Rows with the same locale and normalized query are merged into one row (the first row's query,\n"
            "the union of the product types, the largest weight) and never divided between splits. Each\n"
            "locale's queries are split on their own (seeded), so every locale with at least 3 queries is in\n"
            "every split. Writes DIR/train.EXT, valid.EXT, test.EXT and DIR/split.json (counts per split and\n"
            "locale, duplicates merged, seed, fractions, the source's sha256).\n\n"
            "--folds K: K-fold cross-validation per locale into DIR/fold-0 ... DIR/fold-{K-1}, each a dataset\n"
            "directory: fold i tests on the i-th 1/K of every locale's queries, valid is --valid OF THE REST\n"
            "and train the remainder (--test does not apply).\n\n"
            "--train-per-locale N (small stores): after splitting, each locale's train keeps N queries (seeded\n"
            "choice) and the train queries it drops move to test (counted in the report); valid is unchanged."
        ),
    )
    p.add_argument("file", metavar="FILE", help="labelled file (.parquet, .jsonl, .csv or .tsv), or a dataset to re-split")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write (with --folds: a folder of folds)")
    p.add_argument("--valid", type=float, default=0.1, metavar="FRAC",
                   help="share of each locale's queries in valid (with --folds: of those outside the fold's test; default: 0.1)")
    p.add_argument("--test", type=float, default=None, metavar="FRAC",
                   help="share of each locale's queries in test (default: 0.1; not with --folds)")
    p.add_argument("--seed", type=int, default=0, help="split seed, 0 or more (default: 0)")
    p.add_argument("--folds", type=int, metavar="K", help="K-fold cross-validation (K >= 2) instead of one split")
    p.add_argument("--train-per-locale", type=int, metavar="N",
                   help="keep N train queries per locale; the other train queries move to test")
    p.add_argument("--seen-by", action="append", default=[], metavar="MODEL_DIR",
                   help="the weekly retrain: the rows of FILE whose queries this model (or a model it was "
                        "warm-started from) trained or validated on go to train, so that valid and test hold new "
                        "queries only (repeatable; not with --folds or --train-per-locale)")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="output format (default: parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    _add_max_chars(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.set_defaults(func=_logged(_split))

    p = sub.add_parser(
        "from-clicks", help="turn a click log into a labelled dataset",
        description="Read a click log with rows (query, locale, product_type, clicks[, purchases]); give each "
        "(query, locale) the product types whose engagement (clicks + purchase-weight x purchases) is at least "
        "--min-clicks and whose share of the query's engagement is at least --min-share; split by normalized "
        "query within each locale. Reports how many rows, pairs and queries were dropped and why.",
    )
    p.add_argument("log", metavar="LOG", help="click log (.parquet, .jsonl, .csv or .tsv)")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    p.add_argument("--min-share", type=float, default=0.1, help="minimum share of the query's engagement (default: 0.1)")
    p.add_argument("--min-clicks", type=float, default=2.0, help="minimum engagement of a product type (default: 2)")
    p.add_argument("--purchase-weight", type=float, default=0.0,
                   help="engagement = clicks + W x purchases (default: 0, purchases ignored)")
    p.add_argument("--valid", "--valid-frac", dest="valid_frac", type=float, default=0.1, metavar="FRAC",
                   help="share of each locale's queries in valid (default: 0.1; as data split's --valid)")
    p.add_argument("--test", "--test-frac", dest="test_frac", type=float, default=0.1, metavar="FRAC",
                   help="share of each locale's queries in test (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="output format (default: parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    _add_max_chars(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.set_defaults(func=_logged(_from_clicks))

    p = sub.add_parser("simulate", help="write the simulated store (simulated data, not real)",
                       description="Write the built-in simulated store (simulated data, not real shop data).")
    p.add_argument("--preset", choices=PRESETS, default="quick", help="size preset (default: quick)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="file format (default: parquet)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DIR even if it is not an earlier simulated dataset")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.set_defaults(func=_logged(_simulate))


def _logged(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A data subcommand with q2pt's log lines on stderr (``-q``: warnings and errors only)."""

    def run(args: argparse.Namespace) -> int:
        from q2pt.cli import setup_logging

        setup_logging(args.quiet)
        return command(args)

    return run


def _source(args: argparse.Namespace) -> Path:
    from q2pt.data import ensure_simulated

    return Path(args.path) if args.path else ensure_simulated(args.preset, args.seed)


def _validate(args: argparse.Namespace) -> int:
    from q2pt.data.validate import validate_dataset

    report = validate_dataset(_source(args), max_query_chars=args.max_query_chars,
                              label_separator=args.label_separator, taxonomy=args.taxonomy)
    limit = None if args.max_problems <= 0 else args.max_problems
    if args.json:
        print(json.dumps(report.to_dict(max_problems=limit), ensure_ascii=False, indent=2))
    else:
        print(report.format(max_problems=len(report.problems) if limit is None else limit))
    return 0 if report.ok else 2


def _stats(args: argparse.Namespace) -> int:
    from q2pt.data import load_dataset
    from q2pt.data.stats import dataset_stats, format_stats

    ds = load_dataset(args.path, preset=args.preset, seed=args.seed, max_query_chars=args.max_query_chars)
    stats = dataset_stats(ds, args.label_separator, args.taxonomy)
    if args.json:
        stats["warnings"] = len(ds.warnings)
        print(json.dumps(stats, ensure_ascii=False, indent=2))
    else:
        print(format_stats(stats))
        if ds.warnings:
            print(f"\n{len(ds.warnings)} validation warnings (run 'q2pt data validate' for details)")
    return 0


def _split(args: argparse.Namespace) -> int:
    from q2pt.data.split import DEFAULT_TEST, REPORT_FILE, format_report, split_file
    from q2pt.errors import ConfigError
    from q2pt.io import check_writable

    if args.folds is not None and args.test is not None:
        raise ConfigError(
            "--test does not apply with --folds: each fold's test split is 1/K of every locale's queries "
            "(--valid is then a share of the rest)"
        )
    check_writable(args.out, "dataset folder")
    report = split_file(
        args.file, args.out, valid=args.valid, test=DEFAULT_TEST if args.test is None else args.test,
        seed=args.seed, folds=args.folds, train_per_locale=args.train_per_locale, fmt=args.format,
        overwrite=args.overwrite, max_query_chars=args.max_query_chars, seen_by=args.seen_by,
    )
    if args.json:
        print(json.dumps({**report, "out": str(args.out)}, ensure_ascii=False, indent=2))
    else:
        print(format_report(report))
        what = f"{args.folds} folds (fold-0 ... fold-{args.folds - 1})" if args.folds else "train, valid, test"
        print(f"wrote {args.out}: {what} ({args.format}; report in {Path(args.out) / REPORT_FILE})")
    return 0


def _from_clicks(args: argparse.Namespace) -> int:
    from q2pt.data.clicks import from_clicks
    from q2pt.io import check_writable

    check_writable(args.out, "dataset folder")
    report = from_clicks(
        args.log, args.out, fmt=args.format, overwrite=args.overwrite,
        min_share=args.min_share, min_clicks=args.min_clicks, purchase_weight=args.purchase_weight,
        valid_frac=args.valid_frac, test_frac=args.test_frac, seed=args.seed, max_query_chars=args.max_query_chars,
    )
    if args.json:
        print(json.dumps({**report.to_dict(), "out": str(args.out)}, ensure_ascii=False, indent=2))
    else:
        print(report.format())
        print(f"wrote {args.out} ({args.format}; report in {Path(args.out) / 'clicks_report.json'})")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from q2pt.io import check_writable

    check_writable(args.out, "dataset folder")
    from q2pt.data.simulate import write_simulated

    result = write_simulated(args.out, preset=args.preset, seed=args.seed, fmt=args.format, overwrite=args.overwrite)
    path = result.get("out_dir", args.out) if isinstance(result, dict) else result
    rows = result.get("rows") if isinstance(result, dict) else None
    counts = f": {', '.join(f'{k} {v}' for k, v in rows.items())} rows" if rows else ""
    print(
        f"wrote the simulated store (SIMULATED data; preset {args.preset}, seed {args.seed}, {args.format}) "
        f"to {path}{counts}"
    )
    return 0
