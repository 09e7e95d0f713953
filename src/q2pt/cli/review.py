"""``q2pt compare`` (two models on the same rows: the release gate) and ``q2pt explain``
(which words made a product type's score): thin wrappers over :mod:`q2pt.comparison` and
:mod:`q2pt.explain`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from q2pt.cli.arg_types import positive_int
from q2pt.cli.train import (
    DEFAULT_MAX_QUERY_CHARS,
    THREADS_HELP,
    _check_threads,
    _need_torch,
    _setup_logging,
    torch_threads,
)
from q2pt.errors import ConfigError, DataError

log = logging.getLogger("q2pt.cli")

#: exit status of ``q2pt compare --fail-if-worse`` when B is worse than allowed
GATE_FAILED_EXIT = 1


def register(subparsers: Any) -> None:
    """Add the compare and explain commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    c = subparsers.add_parser(
        "compare",
        help="compare two models on the same labelled rows (per-locale R@P, paired CIs, release gate)",
        formatter_class=fmt,
        description=(
            "Score MODEL_A and MODEL_B on the same rows and report, globally and per locale, both R@P\n"
            "figures and the difference B - A with a paired bootstrap 95% CI, recall as deployed (each\n"
            "locale at its calibrated threshold), how often their predicted sets agree, the product types\n"
            "whose recall changed most and every threshold's change.\n\n"
            "  q2pt compare models/last-week models/candidate --data data/ --fail-if-worse 1\n\n"
            "--fail-if-worse POINTS: exit status 1 when B's R@P is below A's by more than POINTS (R@P\n"
            "points, 0-100) globally or in any locale with at least --min-positives positive pairs;\n"
            "bad input exits 2, a model folder that cannot be loaded 3. Product type paths are cut as the\n"
            "models were trained (both must agree)."
        ),
    )
    c.add_argument("model_a", metavar="MODEL_A", help="the reference model folder (e.g. the one in production)")
    c.add_argument("model_b", metavar="MODEL_B", help="the candidate model folder")
    c.add_argument("--data", required=True, metavar="FILE_OR_DIR",
                   help="a dataset folder or file (its --split), or a labelled file without a split column")
    c.add_argument("--split", default="test", choices=("train", "valid", "test"),
                   help="which split of a dataset (default test)")
    c.add_argument("--precision", type=float, default=0.8, help="target precision (default 0.8)")
    c.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="paired bootstrap resamples for the CIs (default 1000; 0: none)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    c.add_argument("--min-positives", type=int, default=20, metavar="N",
                   help="locales with fewer positive pairs are reported but not gated (default 20)")
    c.add_argument("--min-support", type=int, default=5, metavar="N",
                   help="types with at least N positive pairs in the rows are listed by their recall change (default 5)")
    c.add_argument("--types", type=int, default=10, metavar="N",
                   help="list the N product types whose recall changed most (default 10)")
    c.add_argument("--fail-if-worse", type=float, metavar="POINTS",
                   help="exit 1 when B is worse than A by more than POINTS of R@P (globally or in a gated locale)")
    c.add_argument("--fallback-locale", metavar="LOCALE", help="non-unified models: network for unseen locales")
    c.add_argument("--batch-size", type=int, default=512)
    c.add_argument("--threads", type=int, default=0, metavar="N", help=THREADS_HELP)
    c.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    c.add_argument("--out", metavar="FILE", help="also write the report to FILE (.json: JSON, else markdown)")
    c.add_argument("--overwrite", action="store_true", help="replace --out FILE if it exists")
    c.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    c.set_defaults(func=cmd_compare)

    x = subparsers.add_parser(
        "explain",
        help="which words (and the locale token) made a query's product type score",
        formatter_class=fmt,
        description=(
            "Each word's contribution to a product type's score, by occlusion: the score of the query\n"
            "minus the score of the query without that word (and, for a unified-aware model, without\n"
            "its locale token). Positive: the word pushes the type up.\n\n"
            "  q2pt explain --model runs/model --locale de_DE 'rote laufschuhe kinder'\n"
            "  q2pt explain --model runs/model --locale de_DE 'rote laufschuhe' \\\n"
            "      --type 'shoes > athletic_shoes > running_shoes' --json"
        ),
    )
    x.add_argument("--model", required=True, metavar="MODEL_DIR")
    x.add_argument("--locale", required=True, metavar="LOCALE")
    x.add_argument("query", metavar="QUERY")
    x.add_argument("--type", metavar="PRODUCT_TYPE",
                   help="the product type to explain (default: the best-scored; for a tree, the type it predicts)")
    x.add_argument("--fallback-locale", metavar="LOCALE", help="non-unified models: network for unseen locales")
    x.add_argument("--max-query-chars", type=positive_int, default=DEFAULT_MAX_QUERY_CHARS, metavar="N",
                   help=f"refuse a longer query, as predict does (default {DEFAULT_MAX_QUERY_CHARS}; each word is "
                        "scored once more)")
    x.add_argument("--threads", type=int, default=0, metavar="N", help=THREADS_HELP)
    x.add_argument("--json", action="store_true", help="print JSON")
    x.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    x.set_defaults(func=cmd_explain)


# ----------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> int:
    _setup_logging(args.quiet)
    if not 0.0 < args.precision <= 1.0:
        raise ConfigError(f"--precision must be in (0, 1], got {args.precision}")
    for flag, value in (("--bootstrap", args.bootstrap), ("--min-positives", args.min_positives),
                        ("--min-support", args.min_support), ("--types", args.types), ("--seed", args.seed)):
        if value < 0:
            raise ConfigError(f"{flag} must be at least 0, got {value}")
    if args.fail_if_worse is not None and not args.fail_if_worse >= 0:
        raise ConfigError(f"--fail-if-worse takes R@P points (0 or more), got {args.fail_if_worse}")
    if args.out:
        from q2pt.data.io import check_target
        from q2pt.io import check_writable

        check_writable(args.out, "comparison report")
        check_target(Path(args.out), args.overwrite, directory=False)  # before the models load
    _need_torch()
    _check_threads(args.threads)
    with torch_threads(args.threads):
        return _compare(args)


def _compare(args: argparse.Namespace) -> int:
    from q2pt.comparison import compare_folders, format_comparison
    from q2pt.io import atomic_path

    result = compare_folders(
        args.model_a, args.model_b, args.data, split=args.split, fail_if_worse=args.fail_if_worse,
        precision=args.precision, bootstrap=args.bootstrap, seed=args.seed, min_positives=args.min_positives,
        min_support=args.min_support, top_types=args.types, fallback_locale=args.fallback_locale,
        batch_size=args.batch_size,
    )
    markdown = format_comparison(result)
    print(json.dumps(result, ensure_ascii=False) if args.json else markdown)
    if args.out:
        body = json.dumps(result, ensure_ascii=False, indent=2) if args.out.endswith(".json") else markdown
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(body + "\n", encoding="utf-8")
        log.info("wrote the comparison to %s", args.out)
    failures = (result.get("gate") or {}).get("failures")
    if failures:
        log.error("release gate failed: %s", "; ".join(failures))
        return GATE_FAILED_EXIT
    return 0


# ----------------------------------------------------------------------------- explain


def cmd_explain(args: argparse.Namespace) -> int:
    _setup_logging(args.quiet)
    _need_torch()
    _check_threads(args.threads)
    from q2pt.data.schema import row_problems
    from q2pt.explain import explain
    from q2pt.model_folder import parent_label_map
    from q2pt.models import load_model

    problems = row_problems([args.query], [args.locale], "QUERY argument", max_query_chars=args.max_query_chars)
    if problems:  # as predict and the server's /v1/explain refuse them
        raise DataError("the QUERY argument cannot be explained", problems)
    with torch_threads(args.threads):
        model = load_model(args.model)
        result = explain(model.inference(args.fallback_locale), args.query, args.locale, args.type,
                         parent_label_map(model.manifest))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(format_explanation(result))
    return 0


def format_explanation(result: dict[str, Any]) -> str:
    """A plain-text explanation: the score, then one line per word with a bar."""
    verdict = "predicted" if result["predicted"] else "not predicted"
    if result["predicted"] and result["score"] < result["threshold"]:  # a tree: a descendant is confident
        verdict = "predicted: a type under it is confident"
    used = result["locale_used"] or "none: locale-agnostic"
    lines = [f"{result['product_type']}: score {result['score']:.4f} (threshold {result['threshold']:.4f}, {verdict}) "
             f"for {result['query']!r} in {result['locale']} (locale used: {used})"]
    rows = [(w["word"], w["contribution"]) for w in result["words"]]
    if result["locale_token"] is not None:
        rows.append((f"[locale {result['locale_token']['token']}]", result["locale_token"]["contribution"]))
    width = max(len(r[0]) for r in rows)
    # bars relative to the largest contribution, but never to less than 0.05 of score: contributions
    # of a millionth (printed +0.0000) drew full bars
    scale = max(max(abs(c) for _, c in rows), 0.05)
    for word, c in rows:
        bar = ("+" if c >= 0 else "-") * max(0, round(20 * abs(c) / scale))
        lines.append(f"  {word.ljust(width)}  {c:+.4f}  {bar}")
    lines += [f"  warning: {w}" for w in result["warnings"]]
    lines.append("(contribution = score - score without the word; occlusion)")
    return "\n".join(lines)
