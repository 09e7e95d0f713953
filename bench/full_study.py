#!/usr/bin/env python
"""The paper's comparison on the ``full`` simulated preset (~500,000 queries), with the report.

Trains the three variants (non-unified, unified-agnostic, unified-aware) and the four
baselines on the same splits of the SIMULATED full store through
:func:`q2pt.experiments.run_experiment` -- exactly ``q2pt experiment --preset full`` -- and
prints the headline table (global and per-locale R@P80 with 95% bootstrap CIs for every
variant and baseline), the unified-vs-non-unified gains and the infrastructure numbers,
then how long it took. Resumable: run it again with the same ``--out`` after an
interruption and finished models are not retrained.

    python bench/full_study.py --out runs/full                 # main comparison, USE encoder
    python bench/full_study.py --out runs/full --study all     # + every follow-up study
    python bench/full_study.py --out runs/full --train.max_epochs 5   # any q2pt override

The figures are measured on SIMULATED data: they describe the simulation, not a real shop.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/full-study", help="report folder (default runs/full-study)")
    parser.add_argument("--preset", default="full", choices=("tiny", "demo", "quick", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", default="use")
    parser.add_argument("--study", action="append", default=[], help="also run a study (or all)")
    parser.add_argument("--hf-model", help="Hugging Face encoder folder for the pretraining study")
    parser.add_argument("--force", action="store_true", help="retrain models already in OUT/results.json")
    args, overrides = parser.parse_known_args(argv)

    from q2pt.errors import Q2PTError
    from q2pt.experiments import ExperimentRequest, run_experiment

    logger = logging.getLogger("q2pt")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    req = ExperimentRequest(
        out=args.out, preset=args.preset, seed=args.seed, encoder=args.encoder, studies=args.study,
        overrides=overrides, hf_model=args.hf_model, force=args.force,
    )
    t0 = time.perf_counter()
    try:
        result = run_experiment(req)
    except Q2PTError as exc:
        print(f"full_study: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    elapsed = time.perf_counter() - t0
    results = result.results
    main_sec = (results.get("sections") or {}).get("main")
    if main_sec:
        print(f"## Headline: R@P80 per locale (SIMULATED {args.preset} store)\n")
        print("```")
        print(result.headline())
        print("```\n")
        gains = main_sec.get("gains") or []
        if gains:
            others = list(gains[0]["gains"])
            print("## Gain over non-unified (points of R@P80)\n")
            print("| locale | train | small | non-unified | " + " | ".join(others) + " |")
            print("|---|---:|---|---:|" + "---:|" * len(others))
            for g in gains:
                base = "-" if g["base"] is None else f"{g['base']:.3f}"
                cells = ["-" if g["gains"][o] is None else f"{100 * g['gains'][o]:+.1f}" for o in others]
                print(f"| {g['locale']} | {g['n_train']:,} | {'small' if g['small'] else ''} | {base} | "
                      + " | ".join(cells) + " |")
            print()
        print("## Infrastructure\n")
        print("| model | models | train time (s) | peak memory +MiB | size on disk (MiB) |")
        print("|---|---:|---:|---:|---:|")
        runs = results["runs"]
        for key in main_sec["runs"]:
            r = runs[key]
            i = r.get("infra") or {}
            size = i.get("model_bytes")
            print(f"| {r['label']} | {i.get('networks')} | {i.get('train_seconds', 0):.0f} | "
                  f"{i.get('train_peak_rss_increase_mb', 0):.0f} | "
                  f"{'-' if size is None else f'{size / 2**20:.1f}'} |")
        print()
    machine = results.get("machine") or {}
    print(f"wall time of this run: {elapsed / 60:.1f} min on {machine.get('cores')} cores "
          f"({machine.get('cpu_model')}); cached models were not retrained")
    print(f"report: {result.report_md} and {result.report_html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
