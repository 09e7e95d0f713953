#!/usr/bin/env python
"""How many validation positives should a locale have before it gets its own threshold?
Recall and precision as deployed on test, on the simulated store, for each minimum N given.

    python bench/locale_thresholds.py [--preset demo] [--seeds 0,1,2] [--min-positives 20,50,100,200,100000]
                                      [--variants unified-aware,non-unified]

For each data seed and variant one model is trained with the defaults ``q2pt train`` gives
simulated data (flat labels, one torch thread); its validation scores (valid rows of its
training locales) are calibrated with :func:`q2pt.metrics.evaluate_as_deployed` at each N (a
locale with at least N validation positives: its own R@P80 threshold; the others: the global
one; a large N: the global threshold alone) and measured on test. Prints, per run and N: the
global recall / precision as deployed, how many locales had their own threshold, and the
spread of the locales' test precision (min-max over locales with at least 20 predicted
pairs). Real data: ``python bench/real_tuning.py FILE --fold K --deployed N,N...
[model.variant=non-unified]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main(argv: list[str] | None = None) -> int:
    from q2pt.config import resolve_config
    from q2pt.data import load_configured
    from q2pt.metrics import evaluate_as_deployed, own_thresholds
    from q2pt.models import Q2PTModel
    from real_tuning import scored

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--min-positives", default="20,50,100,200,100000")
    ap.add_argument("--variants", default="unified-aware,non-unified")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    mins = [int(x) for x in args.min_positives.split(",")]

    print(f"# locale thresholds from at least N validation positives, as deployed on test (simulated "
          f"{args.preset})")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.platform()}, {os.cpu_count()} CPUs\n")
    print("| seed | variant | " + " | ".join(f"N = {m}: recall / precision (own, locale precision)" for m in mins)
          + " |")
    print("|---|---|" + "---|" * len(mins), flush=True)
    table: dict[str, list[list[tuple[float, float]]]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        ds = load_configured({"preset": args.preset, "seed": seed, "simulated_tree": False})
        for variant in args.variants.split(","):
            config = resolve_config(overrides={"model.variant": variant, "data.preset": args.preset,
                                               "data.seed": seed, "train.threads": args.threads})
            model = Q2PTModel(config=config).fit(ds, progress=False)
            valid = ds.valid[ds.valid["locale"].astype(str).isin(model.locales_)]
            yv, sv, mv, lv = scored(model, valid)
            yt, st, mt, lt = scored(model, ds.test)
            cells, row = [], []
            for m in mins:
                d = evaluate_as_deployed(yv, sv, lv, yt, st, lt, 0.8, min_positives=m, valid_missing=mv,
                                         test_missing=mt)
                own = len(own_thresholds(d["threshold_details"]))
                locs = [e["precision"] for e in d["locales"].values() if (e.get("n_predicted") or 0) >= 20
                        and e.get("precision") is not None]
                g = d["global"]
                row.append((g["recall"], g["precision"]))
                spread = f"{min(locs):.2f}-{max(locs):.2f}" if locs else "-"
                cells.append(f"{g['recall']:.4f} / {g['precision']:.3f} ({own}, {spread})")
            table.setdefault(variant, []).append(row)
            print(f"| {seed} | {variant} | " + " | ".join(cells) + " |", flush=True)
    for variant, rows in table.items():
        mean = np.asarray(rows).mean(axis=0)
        print(f"| **mean** | {variant} | " + " | ".join(f"{r:.4f} / {p:.3f}" for r, p in mean) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
