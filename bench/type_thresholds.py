#!/usr/bin/env python
"""Do per-(locale, product type) thresholds help? Recall and precision as deployed on test,
with each locale's threshold against per-(locale, type) thresholds (calibrated on validation
where a (locale, type) has at least N positive validation queries; the locale's otherwise).

    python bench/type_thresholds.py simulated [--preset quick]
    python bench/type_thresholds.py real DATA_FILE [--folds 0,1,2,3,4] [--depth 1]

One unified-aware ``use`` model per fold at the experiment's budget for user data (as
``bench/real_tuning.py``: up to 20 epochs, patience 2, batch 64, one thread; real data split
as that script splits it). Prints per fold and in the mean: the global recall as deployed and
the precision it reached on test, for the locale thresholds and for the per-type thresholds
at each ``--min-positives``, and how many (locale, type) pairs got their own threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))


def deployed(y: np.ndarray, scores: np.ndarray, missing: np.ndarray, cut: np.ndarray) -> tuple[float, float]:
    pred = scores >= cut
    tp = float((pred & (y == 1)).sum())
    return tp / (y.sum() + missing.sum()), tp / max(1.0, float(pred.sum()))


def cuts(locales: list[str], classes: list[str], thresholds: dict, type_thresholds: dict | None) -> np.ndarray:
    base = np.asarray([thresholds.get(loc, thresholds["global"]) for loc in locales], dtype=np.float64)
    cut = np.repeat(base[:, None], len(classes), axis=1)
    if type_thresholds:
        col = {c: j for j, c in enumerate(classes)}
        for i, loc in enumerate(locales):
            for t, v in type_thresholds.get(loc, {}).items():
                cut[i, col[t]] = v
    return cut


def main(argv: list[str] | None = None) -> int:
    from q2pt.config import resolve_config
    from q2pt.data import from_frames, load_configured
    from q2pt.data.labels import label_lists, multi_hot
    from q2pt.metrics import calibrate_type_thresholds
    from q2pt.models import Q2PTModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("simulated")
    s.add_argument("--preset", default="quick")
    r = sub.add_parser("real")
    r.add_argument("data", metavar="DATA_FILE")
    r.add_argument("--folds", default="0,1,2,3,4")
    r.add_argument("--depth", type=int, default=1)
    for p in (s, r):
        p.add_argument("--min-positives", default="5,10,20")
        p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    mins = [int(x) for x in args.min_positives.split(",")]
    overrides = {"train.max_epochs": 20, "train.patience": 2, "train.batch_size": 64, "train.threads": args.threads}

    runs = []
    if args.kind == "simulated":
        ds = load_configured(resolve_config(overrides={"data.preset": args.preset}).data)
        runs.append((f"simulated {args.preset}", ds))
    else:
        from real_tuning import fold_splits

        with open(args.data, encoding="utf-8") as fh:
            frame = pd.DataFrame([json.loads(line) for line in fh if line.strip()])
        frame["weight"] = 1.0
        for k in [int(x) for x in args.folds.split(",")]:  # the paths cut at load, as q2pt does (data.label_depth)
            runs.append((f"fold {k}", from_frames(fold_splits(frame, k, 5, 0, None), source=args.data, validate=False,
                                                  label_depth=args.depth)))

    print(f"# per-(locale, type) thresholds vs locale thresholds, as deployed on test ({args.kind})")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.platform()}, {os.cpu_count()} CPUs\n")
    header = "| run | locale thresholds: recall / precision | " + " | ".join(
        f"type thresholds (>= {m} positives): recall / precision (pairs)" for m in mins) + " |"
    print(header)
    print("|---|" + "---|" * (len(mins) + 1), flush=True)
    table = []
    for name, ds in runs:
        model = Q2PTModel(config=resolve_config(overrides=overrides)).fit(ds, progress=False)
        classes = list(model.classes_)
        valid = ds.valid[ds.valid["locale"].astype(str).isin(model.locales_)]
        vy, _ = multi_hot(label_lists(valid["product_types"]), classes)
        vs = model.predict_proba(valid["query"].astype(str).tolist(), valid["locale"].astype(str).tolist())
        test = ds.test
        locs = test["locale"].astype(str).tolist()
        ty, tm = multi_hot(label_lists(test["product_types"]), classes)
        ty = ty.toarray()
        ts = model.predict_proba(test["query"].astype(str).tolist(), locs)
        row = [deployed(ty, ts, tm, cuts(locs, classes, model.thresholds_, None))]
        pairs = []
        for m in mins:
            tt = calibrate_type_thresholds(vy.toarray(), vs, valid["locale"].astype(str).tolist(), classes, 0.8, m)
            pairs.append(sum(len(v) for v in tt.values()))
            row.append(deployed(ty, ts, tm, cuts(locs, classes, model.thresholds_, tt)))
        table.append(row)
        cells = [f"{row[0][0]:.4f} / {row[0][1]:.3f}"] + [f"{r:.4f} / {p:.3f} ({n})"
                                                           for (r, p), n in zip(row[1:], pairs)]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    mean = np.asarray(table).mean(axis=0)
    print("| **mean** | " + " | ".join(f"{r:.4f} / {p:.3f}" for r, p in mean) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
