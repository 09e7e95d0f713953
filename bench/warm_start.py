#!/usr/bin/env python
"""Warm start against training from scratch: the weekly retrain, measured.

    python bench/warm_start.py simulated [--preset quick] [--new-types 0.1]
    python bench/warm_start.py real DATA_FILE [--fold 0]

``simulated``: the built-in store; a share ``--new-types`` of its product types (drawn with
``--seed``) is new this week: the parent model is trained on the rows without them, then the
new model is trained on all rows twice, from scratch and warm-started from the parent
(``Q2PTModel.warm_start_from``: ``q2pt train --init-from``).

``real``: a labelled JSONL file like the cikm-qc dev set (top-level types, ``--depth``), split
as ``bench/real_tuning.py`` splits it (fold ``--fold`` of 5 per locale; valid = 1/8 of the
rest); this week's data is new queries: the parent is trained on the first half of the
training queries of each locale, the new model on all of them.

Every model is unified-aware with the ``use`` encoder at the experiment's budget for user data
(up to 20 epochs, patience 2, batch 64), ``--threads`` torch threads. Prints a table: training
seconds, epochs, test R@P80 (pooled) with its 95% bootstrap CI, and whether the warm start
reached the scratch model's CI in at most half its time. The data is read from the path given
and never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))


def _fit(dataset, overrides: dict[str, Any], warm_from=None) -> tuple[Any, float]:
    from q2pt.config import resolve_config
    from q2pt.models import Q2PTModel

    model = Q2PTModel(config=resolve_config(overrides=overrides))
    warm = model.warm_start_from(warm_from) if warm_from is not None else None
    start = time.perf_counter()
    model.fit(dataset, progress=False, warm_start=warm)
    return model, time.perf_counter() - start


def _score(model, test: pd.DataFrame, bootstrap: int) -> dict[str, Any]:
    result = model.evaluate(test, bootstrap=bootstrap, top_types=0)["global"]
    return {"r_at_p80": result["r_at_p"], "ci": result.get("r_at_p_ci")}


def simulated_splits(args) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], str]:
    from q2pt.config import resolve_config
    from q2pt.data import load_configured

    ds = load_configured(resolve_config(overrides={"data.preset": args.preset}).data)
    types = sorted({t for ts in ds.train["product_types"] for t in ts})
    rng = np.random.default_rng(args.seed)
    new = set(rng.choice(types, size=max(1, round(args.new_types * len(types))), replace=False).tolist())
    full = {"train": ds.train, "valid": ds.valid, "test": ds.test}
    old = {k: v[v["product_types"].map(lambda ts: not (set(ts) & new))] for k, v in full.items() if k != "test"}
    old["test"] = ds.test
    return old, full, f"simulated store {args.preset}: {len(new)} of {len(types)} product types new"


def real_splits(args) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], str]:
    from real_tuning import fold_splits

    with open(args.data, encoding="utf-8") as fh:
        frame = pd.DataFrame([json.loads(line) for line in fh if line.strip()])
    frame["weight"] = 1.0  # the paths are cut at load (data.label_depth), as q2pt does
    full = fold_splits(frame, args.fold, 5, args.seed, None)
    halves = [g.iloc[: len(g) // 2] for _, g in full["train"].groupby("locale")]
    old = {"train": pd.concat(halves).reset_index(drop=True), "valid": full["valid"], "test": full["test"]}
    return old, full, (f"real data {args.data} (depth {args.depth}, fold {args.fold}): parent on "
                       f"{len(old['train'])} of {len(full['train'])} training queries")


def main(argv: list[str] | None = None) -> int:
    from q2pt.data import from_frames

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("simulated")
    s.add_argument("--preset", default="quick")
    s.add_argument("--new-types", type=float, default=0.1)
    r = sub.add_parser("real")
    r.add_argument("data", metavar="DATA_FILE")
    r.add_argument("--fold", type=int, default=0)
    r.add_argument("--depth", type=int, default=1)
    for p in (s, r):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)

    old, full, what = simulated_splits(args) if args.kind == "simulated" else real_splits(args)
    source = "simulated" if args.kind == "simulated" else args.data
    depth = args.depth if args.kind == "real" else None
    old_ds = from_frames(old, source=source, validate=False, label_depth=depth)
    full_ds = from_frames(full, source=source, validate=False, label_depth=depth)
    overrides = {"train.max_epochs": 20, "train.patience": 2, "train.batch_size": 64, "train.threads": args.threads}
    print(f"# warm start vs from scratch: {what}")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.platform()}, {os.cpu_count()} CPUs, "
          f"{args.threads} torch threads; unified-aware / use, batch 64, patience 2\n", flush=True)
    parent, t_parent = _fit(old_ds, overrides)
    scratch, t_scratch = _fit(full_ds, overrides)
    warm, t_warm = _fit(full_ds, overrides, warm_from=parent)
    rows = []
    for name, model, seconds in (("parent (old data)", parent, t_parent), ("from scratch", scratch, t_scratch),
                                 ("warm start", warm, t_warm)):
        tr = model.manifest["training"]["*"]
        rows.append({"model": name, "seconds": seconds, "epochs": tr["epochs"], "best_epoch": tr["best_epoch"],
                     **_score(model, full_ds.test, args.bootstrap)})
    print("| model | train s | epochs | best epoch | test R@P80 | 95% CI |\n|---|---:|---:|---:|---:|---|")
    for row in rows:
        ci = row["ci"]
        print(f"| {row['model']} | {row['seconds']:.0f} | {row['epochs']} | {row['best_epoch']} | "
              f"{row['r_at_p80']:.4f} | [{ci[0]:.4f}, {ci[1]:.4f}] |")
    s_row, w_row = rows[1], rows[2]
    reached = w_row["r_at_p80"] >= s_row["ci"][0]
    fast = t_warm <= 0.5 * t_scratch
    print(f"\nwarm start: R@P80 {w_row['r_at_p80']:.4f} vs scratch {s_row['r_at_p80']:.4f} (CI low "
          f"{s_row['ci'][0]:.4f}): {'reached' if reached else 'NOT reached'}; time {t_warm:.0f} s = "
          f"{t_warm / t_scratch:.2f}x scratch (target <= 0.5x): {'met' if fast else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
