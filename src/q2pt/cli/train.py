"""``q2pt train``, ``q2pt evaluate`` and ``q2pt predict``: thin wrappers over
:mod:`q2pt.models`, :mod:`q2pt.training` and :mod:`q2pt.predict`.

Heavy libraries (torch...) are imported inside the handlers, so that building the
parser (every ``q2pt`` invocation) stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

from q2pt.cli.arg_types import positive_int
from q2pt.errors import ConfigError, DataError

log = logging.getLogger("q2pt.cli")

DEFAULT_MAX_QUERY_CHARS = 200  # = q2pt.data.schema.DEFAULT_MAX_QUERY_CHARS (a test checks they agree)
# = q2pt.config.VARIANTS, repeated so that building the parser does not import pydantic
VARIANTS = ("non-unified", "unified-agnostic", "unified-aware")
THREADS_HELP = (
    "torch threads (default 0: torch's default, one per core, like train.threads; on a machine "
    "whose cores are busy with other jobs 1 is faster)"
)


def register(subparsers: Any) -> None:
    """Add the train, evaluate and predict commands."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser(
        "train",
        help="train a model (one of the three variants) and save it to a model folder",
        formatter_class=fmt,
        description=(
            "Train a query -> product type classifier and save it (manifest.json + safetensors).\n\n"
            "Configuration layers: defaults < per-encoder overrides < --config FILE < flags.\n"
            "Any key can be set with --section.key VALUE, e.g. --train.lr 1e-3 --train.max_epochs 5\n"
            "--model.head_hidden [256] --model.encoder_options.dim 64 --data.preset tiny.\n"
            "The use encoder's pretrained embedding table is frozen by default (one shared copy, small\n"
            "model folders); --model.encoder_options.embedding sparse (or dense) fine-tunes it too.\n"
            "Without --data the built-in SIMULATED store is used (data.preset, data.seed)."
        ),
    )
    p.add_argument("--data", metavar="PATH", help="dataset folder or file (default: the simulated store)")
    p.add_argument("--variant", choices=VARIANTS, help="model variant (default: unified-aware)")
    p.add_argument("--encoder", metavar="SPEC",
                   help="encoder: use, ngram, e5, hf:NAME_OR_PATH, or specs joined with + (default: use)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads: train.threads (default 0: torch's own)")
    p.add_argument("--out", metavar="MODEL_DIR", help="model folder to write (needed unless --print-config)")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON config file (sections model, train, data)")
    p.add_argument("--init-from", metavar="PARENT_DIR",
                   help="warm start from an earlier model folder, with its settings under --config and the flags "
                   "(same variant, encoder, network shape and label depth): kept product types and locales keep "
                   "their weights, new ones start fresh, removed ones are dropped")
    p.add_argument("--label-map", metavar="FILE",
                   help="with --init-from: renamed or merged product types, old -> new (JSON object, or CSV/TSV "
                   "with two columns old,new); a merged type starts at the mean of its old ones")
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL_DIR when it holds a model already")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--nproc", type=int, default=1, metavar="N",
        help="data-parallel training on N local processes (PyTorch DDP via torchrun; default 1)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.set_defaults(func=cmd_train, accepts_overrides=True)

    e = subparsers.add_parser(
        "evaluate",
        help="R@P per locale and globally on a dataset's test split or a labelled file",
        formatter_class=fmt,
        description=(
            "Evaluate a model: recall at precision (R@P), its threshold, PR-AUC and counts per locale\n"
            "and globally, plus precision/recall at the model's calibrated thresholds. Product types\n"
            "outside the model's label space count as missed positives."
        ),
    )
    e.add_argument("--model", required=True, metavar="MODEL_DIR")
    e.add_argument(
        "--data", required=True, metavar="FILE_OR_DIR",
        help="a dataset folder or single-file dataset (its test split), or a labelled file without a split column",
    )
    e.add_argument("--precision", type=float, default=0.8, help="target precision (default 0.8)")
    e.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples for 95%% CIs (default 0)")
    e.add_argument("--fallback-locale", metavar="LOCALE", help="non-unified models: network for unseen locales")
    e.add_argument("--batch-size", type=int, default=512)
    e.add_argument("--threads", type=int, default=0, metavar="N", help=THREADS_HELP)
    e.add_argument("--level", type=int, metavar="N",
                   help="hierarchical models: judge level N of the tree alone (its types; true paths cut to N levels)")
    e.add_argument("--types", type=int, default=10, metavar="N",
                   help="list the N product types that fail most, globally and per locale (default 10; 0: none)")
    e.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    e.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    e.set_defaults(func=cmd_evaluate)

    r = subparsers.add_parser(
        "predict",
        help="predict product types for queries or a file of queries",
        formatter_class=fmt,
        description=(
            "Predict the product types of queries.\n\n"
            "  q2pt predict --model M --locale de 'rote schuhe' 'tv 55 zoll'\n"
            "  q2pt predict --model M --input queries.parquet --out predictions.parquet\n\n"
            "Input files (parquet/jsonl/csv/tsv) need query and locale columns; the output has the same\n"
            "rows plus predicted_types, predicted_scores and note. By default a type is predicted when its\n"
            "score reaches the locale's calibrated threshold (stored in the model's manifest).\n"
            "Hierarchical models (unless --flat) predict the deepest confident types, backing off to the\n"
            "parent when no child is sure, and add predicted_levels and predicted_ancestors.\n"
            "A locale unseen in training: unified models predict locale-agnostically (the note says so);\n"
            "non-unified models refuse unless --fallback-locale LOCALE is given.\n\n"
            "Large Parquet files (millions of rows): --stream predicts in parts of --chunk-size rows with\n"
            "bounded memory, on --workers processes, and --resume finishes a killed run without redoing or\n"
            "losing rows (Parquet in and out). OUTPUT ending in .parquet gets one merged file, another\n"
            "OUTPUT (not .csv/.tsv/.jsonl/.json) a folder of parts;\n"
            "both carry an input_row column (the row's 0-based position in the input).\n"
            "  q2pt predict --model M --input big.parquet --out preds/ --stream --workers 2"
        ),
    )
    r.add_argument("--model", required=True, metavar="MODEL_DIR")
    r.add_argument("--locale", metavar="LOCALE", help="locale of the QUERY arguments")
    r.add_argument("queries", nargs="*", metavar="QUERY")
    r.add_argument("--input", metavar="FILE", help="file with query and locale columns")
    r.add_argument("--out", metavar="FILE", help="where to write the predictions (format from the extension)")
    r.add_argument("--top-k", type=int, metavar="K", help="at most K types per query")
    r.add_argument("--threshold", type=float, help="one score threshold instead of the calibrated ones")
    r.add_argument("--fallback-locale", metavar="LOCALE", help="non-unified models: network for unseen locales")
    r.add_argument("--max-depth", type=int, metavar="N",
                   help="hierarchical models: predict no type deeper than level N")
    r.add_argument("--no-backoff", action="store_true",
                   help="hierarchical models: only bottom types (no child among the model's types, or level --max-depth), "
                   "never a parent "
                   "when its children are unsure")
    r.add_argument("--flat", action="store_true",
                   help="hierarchical models: every type over its threshold, ancestors included (a flat model's answer)")
    r.add_argument("--max-query-chars", type=positive_int, default=DEFAULT_MAX_QUERY_CHARS, metavar="N",
                   help=f"longest query predicted, as in training data (default {DEFAULT_MAX_QUERY_CHARS}); "
                   "longer ones are refused, naming their rows")
    r.add_argument("--batch-size", type=int, default=512)
    r.add_argument("--json", action="store_true", help="QUERY mode: print JSON lines")
    # --- scale-out: streaming prediction (q2pt.streaming; added by the scale-out engineer) ---
    r.add_argument("--stream", action="store_true", help="Parquet input: predict in resumable parts (see above)")
    r.add_argument("--chunk-size", type=int, default=None, metavar="ROWS",
                   help="--stream: rows per part (default 100000; with --resume, the run's)")
    r.add_argument(
        "--workers", type=int, metavar="N",
        help="--stream: worker processes, each with a model copy and one torch thread; 0: this process "
        "(default: one per CPU core for 200000 rows or more, else 0)",
    )
    r.add_argument(
        "--threads", type=int, default=0, metavar="N",
        help=THREADS_HELP + "; with --stream it applies to --workers 0 (each worker process uses one thread)",
    )
    r.add_argument("--resume", action="store_true", help="--stream: finish an interrupted run into OUTPUT")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out FILE (--stream: discard an earlier run in OUTPUT)")
    # --- end scale-out ---
    r.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    r.set_defaults(func=cmd_predict)


def _setup_logging(quiet: bool) -> None:
    """q2pt's log lines (progress notes, warnings) on stderr: the CLI's one shared handler."""
    from q2pt.cli import setup_logging

    setup_logging(quiet)


def _need_torch() -> None:
    from q2pt.errors import require

    require("torch", "torch")
    require("safetensors", "torch")


def _check_threads(threads: int) -> None:
    if threads < 0:
        raise ConfigError(f"--threads must be 0 or more, got {threads}")


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (0: leave torch's default) for the block."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from q2pt.config import resolve_config

    _setup_logging(args.quiet)
    settings: Any = args.config
    if args.init_from:  # a warm start trains as its parent did, under this run's file and flags
        from q2pt.training.warm import inherited_settings

        settings = inherited_settings(args.init_from, args.config)
    config = resolve_config(
        settings, args.overrides, args.encoder,
        flags={"model.variant": args.variant, "data.path": args.data, "train.threads": args.threads},
    )
    from q2pt.encoders import check_encoder_options

    check_encoder_options(config.model.encoder, config.model.encoder_options)  # a typo: said before anything runs
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if not args.out:
        raise ConfigError("--out MODEL_DIR is needed: the model folder to write")
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    if args.label_map and not args.init_from:
        raise ConfigError("--label-map needs --init-from PARENT_DIR (it maps the parent's product types)")
    from q2pt import distributed
    from q2pt.model_folder import check_train_target

    # torchrun's workers start at once: the launching process tried the lock before them
    check_train_target(Path(args.out), resume=args.resume, overwrite=args.overwrite,
                       probe_lock=not distributed.launched_by_torchrun())
    if args.label_map:  # its own errors before the data loads (it is read again with the parent)
        from q2pt.training.warm import read_label_map

        read_label_map(args.label_map)
    _need_torch()
    from q2pt.data import load_configured
    from q2pt.metrics import format_table
    from q2pt.models import Q2PTModel

    if args.nproc > 1 and not distributed.launched_by_torchrun():
        if args.data and not Path(args.data).exists():  # one message here, not one per started process
            raise DataError(f"{args.data}: no such file or directory")
        return distributed.launch(args.nproc, _worker_args(args))
    with distributed.session() as env:
        if env.distributed:
            log.info("distributed training: %d processes, %s backend", env.world_size, env.backend)
        with env.main_first():  # rank 0 fills the simulated-data cache before the others read it
            dataset = load_configured(config.data)  # path, preset, seed, label_depth
        if dataset.simulated:
            log.info("training on SIMULATED data (%s)", dataset.source)
        model = Q2PTModel(config=config)
        warm = None
        if args.init_from:  # (refused before anything says training starts)
            warm = model.warm_start_from(args.init_from, args.label_map)
        log.info(
            "training a %s model with the %s encoder on %d queries (%d locales); output: %s",
            config.model.variant, config.model.encoder, len(dataset.train), dataset.train["locale"].nunique(), args.out,
        )
        if warm is not None:
            log.info("warm start from %s (%d product types, %d locales)", args.init_from, len(warm.parent.classes_),
                     len(warm.parent.locales_))
        try:
            distributed.fit(model, dataset, env, out_dir=args.out, resume=args.resume, overwrite=args.overwrite,
                            progress=not args.no_progress, warm_start=warm)
        except KeyboardInterrupt:
            if env.is_main:
                log.warning("the run stopped at its last checkpoint: the same command with --resume continues it")
            raise
        if env.is_main:
            metrics = model.manifest.get("metrics")
            if metrics:
                print(f"validation ({'simulated data, ' if dataset.simulated else ''}{dataset.source}):")
                print(format_table(metrics))
            print(f"model saved to {args.out}")
    return 0


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The ``q2pt`` arguments of each torchrun worker: this command without --nproc."""
    out = ["train", "--out", str(args.out)]
    for flag, value in (("--data", args.data), ("--variant", args.variant), ("--encoder", args.encoder),
                        ("--config", args.config), ("--init-from", args.init_from), ("--label-map", args.label_map)):
        if value is not None:
            out += [flag, str(value)]
    for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--no-progress", args.no_progress),
                     ("--quiet", args.quiet)):
        if on:
            out.append(flag)
    return out + list(args.overrides)


# ----------------------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    _setup_logging(args.quiet)
    if not 0.0 < args.precision <= 1.0:
        raise ConfigError(f"--precision must be in (0, 1], got {args.precision}")
    _need_torch()
    _check_threads(args.threads)
    with torch_threads(args.threads):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from q2pt.data import load_labelled
    from q2pt.diagnostics import format_type_table
    from q2pt.metrics import format_levels, format_table, to_jsonable
    from q2pt.models import load_model
    from q2pt.overlap import overlap_note, training_overlap

    model = load_model(args.model)
    data_cfg = model.config.data  # cut product types as the model's training data was
    depth, sep = getattr(data_cfg, "label_depth", None), getattr(data_cfg, "label_separator", " > ")
    if depth is not None:
        log.info("the model was trained with data.label_depth %d: evaluation labels are cut the same way", depth)
    frame, description = load_labelled(args.data, label_depth=depth, label_separator=sep)
    if len(frame) == 0:
        raise DataError(f"{description}: no rows to evaluate on")
    if args.types < 0:
        raise ConfigError(f"--types must be at least 0, got {args.types}")
    result = model.evaluate(
        frame, precision=args.precision, bootstrap=args.bootstrap,
        fallback_locale=args.fallback_locale, batch_size=args.batch_size, top_types=args.types, level=args.level,
    )
    result["model"] = {"path": str(args.model), "variant": model.variant, "encoder": model.encoder}
    overlap = training_overlap(model, frame)
    result["data"] = {"source": description, "n_queries": int(len(frame)), "training_overlap": overlap}
    overlap_note(overlap)
    if args.json:
        print(json.dumps(to_jsonable(result), ensure_ascii=False))
        return 0
    where = f" (level {args.level} of the tree)" if args.level else ""
    if model.tree_ is not None and not args.level:
        where = (" (every node of the tree pooled: each query's true types with their ancestors; per level and "
                 "at the leaves below; q2pt experiment judges the labelled types, as the leaf row when every "
                 "label is a leaf)")
    print(f"{model.variant} / {model.encoder} on {description}{where}:")
    print(format_table(result))
    rap = f"R@P{args.precision * 100:g}"
    print(f"{rap}: pooled, each row's pairs ranked under one threshold (the global row pools every locale; "
          f"'{rap} threshold' is where it is read). deployed R / P: as deployed, at the thresholds the model "
          "serves (each locale's own, calibrated on validation, else the global one; a tree's per level), with "
          "the precision they reach here.")
    if result.get("levels"):
        print()
        print(format_levels(result))
    types = result["types"]
    if args.types and types["failing"]:
        print()
        print(format_type_table(types["failing"], title="product types that fail most (misses + false alarms, "
                                "at the calibrated thresholds), all locales:"))
        for loc, entry in types["locales"].items():
            if entry["failing"]:
                print()
                print(format_type_table(entry["failing"], title=f"locale {loc}:"))
    return 0


# ----------------------------------------------------------------------------- predict


def cmd_predict(args: argparse.Namespace) -> int:
    _setup_logging(args.quiet)
    from q2pt.inference import check_threshold

    if args.input and args.queries:
        raise ConfigError("give either QUERY arguments (with --locale) or --input FILE, not both")
    if args.input and not args.out:
        raise ConfigError("--input needs --out FILE")
    if not args.input and not args.queries:
        raise ConfigError("nothing to predict: give QUERY arguments with --locale, or --input FILE --out FILE")
    if args.queries and args.out:
        raise ConfigError("--out writes the predictions of --input FILE; QUERY arguments print theirs (--json: JSON lines)")
    if args.input:
        from q2pt.predict import check_output_is_not_input

        check_output_is_not_input(args.input, args.out)
    if args.queries and not args.locale:
        raise ConfigError("--locale LOCALE is needed with QUERY arguments")
    if args.top_k is not None and args.top_k < 1:  # (argparse made it an int)
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_depth is not None and args.max_depth < 1:
        raise ConfigError(f"--max-depth must be at least 1, got {args.max_depth}")
    if args.flat and (args.max_depth is not None or args.no_backoff):
        raise ConfigError("--flat lists every confident type: it does not take --max-depth or --no-backoff")
    check_threshold(args.threshold)
    _check_threads(args.threads)
    if args.out:
        from q2pt.io import check_writable

        check_writable(args.out, "predictions")
    # --- scale-out: streaming prediction (q2pt.streaming) ---
    streaming = args.stream or args.resume or args.workers is not None
    if streaming and not args.input:
        raise ConfigError("--stream (--workers, --resume) needs --input FILE.parquet --out OUT")
    if args.chunk_size is not None and not streaming:
        raise ConfigError("--chunk-size sets the parts of --stream: add --stream, or leave it out")
    if not streaming and args.out and (Path(args.out).is_dir() or not Path(args.out).suffix):
        what = "is a folder" if Path(args.out).is_dir() else "has no file extension, so it would be a folder"
        raise ConfigError(f"--out {args.out} {what}: a folder of parts is written with --stream; without it, give "
                          "a file (.parquet, .jsonl, .csv or .tsv; the format follows the extension)")
    if not streaming and args.out:
        from q2pt.data.io import check_target

        check_target(Path(args.out), args.overwrite, directory=False)  # before the model loads
    _need_torch()
    if streaming:
        from q2pt.streaming import stream_predict

        result = stream_predict(  # (chunk_size None: the resumed run's, or the default)
            args.model, args.input, args.out, chunk_size=args.chunk_size, workers=args.workers,
            threads=args.threads or None, resume=args.resume, overwrite=args.overwrite, threshold=args.threshold,
            top_k=args.top_k, fallback_locale=args.fallback_locale, batch_size=args.batch_size, progress=True,
            max_query_chars=args.max_query_chars, **_hierarchy(args),
        )
        log.info(
            "wrote %d predictions to %s (%d part%s; %d rows predicted now%s, %.0f rows/s)",
            result.rows, result.output, result.parts, "" if result.parts == 1 else "s", result.rows_predicted,
            f", {result.parts_done_before} done before" if result.parts_done_before else "",
            result.rows_per_second if result.rows_predicted else 0.0,
        )
        return 0
    # --- end scale-out ---
    with torch_threads(args.threads):
        return _predict(args)


def _hierarchy(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_depth": args.max_depth, "backoff": not args.no_backoff, "flat": args.flat}


def _predict(args: argparse.Namespace) -> int:
    from q2pt.data.schema import row_problems
    from q2pt.models import load_model
    from q2pt.predict import as_records, format_predictions, predict_file, predict_rows

    model = load_model(args.model)
    if args.input:
        n = predict_file(
            model, args.input, args.out, threshold=args.threshold, top_k=args.top_k, overwrite=args.overwrite,
            fallback_locale=args.fallback_locale, batch_size=args.batch_size, progress=True,
            max_query_chars=args.max_query_chars, **_hierarchy(args),
        )
        log.info("wrote %d predictions to %s", n, args.out)
        return 0
    locales = [args.locale] * len(args.queries)
    problems = row_problems(args.queries, locales, "QUERY arguments", max_query_chars=args.max_query_chars)
    if problems:
        raise DataError(f"{len(problems)} QUERY argument(s) cannot be predicted", problems)
    preds = predict_rows(
        model, args.queries, locales, threshold=args.threshold, top_k=args.top_k,
        fallback_locale=args.fallback_locale, batch_size=args.batch_size, **_hierarchy(args),
    )
    if args.json:
        for record in as_records(args.queries, locales, preds):
            print(json.dumps(record, ensure_ascii=False))
    else:
        print(format_predictions(args.queries, preds))
    return 0
