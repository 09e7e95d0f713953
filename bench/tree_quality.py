#!/usr/bin/env python
"""One hierarchical model against flat models trained for each level, on real category paths.

    python bench/tree_quality.py DATA_FILE [--folds 0,1,2,3,4] [--threads 1]

Per fold (split as ``bench/real_tuning.py`` splits it: 5 per locale, valid = 1/8 of the rest),
four unified-aware ``use`` models at the experiment's budget for user data (up to 20 epochs,
patience 2, batch 64): **tree** (``model.hierarchy tree`` on the full paths: one output per
node, every level learned) and **flat** models of level 1, level 2 and the leaf (the full
paths), each trained on labels cut to its level (``data.label_depth``). Every model is judged
on the fold's test queries at its level(s):

* level 1 and level 2: R@P80 (pooled) over that level's types, true paths cut to the level;
* leaf: R@P80 over the full paths seen in training (the flat leaf model's label space), the
  true full paths as positives (a path never seen in training is a miss for every model);
* coverage: the share of test queries that get some type (the tree model: its deepest
  confident types, backing off to parents; a flat model: any type over its locale's
  threshold) at a threshold that reached precision 0.8 on validation
  (``InferenceCore.reached``: a tree's level thresholds; a flat model's locale or global
  threshold unless calibration fell back to the best-F1 one); *answered*: the share that get
  any type at all, at whatever threshold the model predicts with.

Prints one row per fold and the mean with the fold spread (min-max). The data is read from
the path given and never copied.
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

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))


def level_rap(model, test: pd.DataFrame, depth: int | None, columns: list[str] | None = None) -> float:
    """R@P80 of ``model`` on ``test`` with true paths cut to ``depth`` (None: full), over the
    model's types at that depth (or ``columns``)."""
    from q2pt.data.labels import label_lists, multi_hot, truncate_label_lists
    from q2pt.metrics import recall_at_precision

    truth = label_lists(test["product_types"])
    if depth is not None:
        truth, _ = truncate_label_lists(truth, depth)
    scores = model.predict_proba(test["query"].astype(str).tolist(), test["locale"].astype(str).tolist())
    classes = list(model.classes_)
    if columns is None:
        if model.tree_ is not None:
            columns = [c for c in classes if model.tree_.level_of(c) == depth]
        else:
            columns = classes
    idx = [classes.index(c) for c in columns]
    y, missing = multi_hot(truth, columns)
    return float(recall_at_precision(y.toarray(), scores[:, idx], 0.8, n_missing=int(missing.sum())).recall)


def coverage(model, test: pd.DataFrame) -> tuple[float, float]:
    """(coverage, answered): the share of test queries given some type at a threshold that
    reached the precision target on validation, and the share given any type at all."""
    inference = model.infer(test["query"].astype(str).tolist(), test["locale"].astype(str).tolist())
    picked = inference.select()
    ok, column = inference.core.reached(inference.resolutions), inference.core.column_of
    covered = [any(ok[i, column[t]] for t, _ in row) for i, row in enumerate(picked)]
    return float(np.mean(covered)), float(np.mean([bool(row) for row in picked]))


def main(argv: list[str] | None = None) -> int:
    from q2pt.config import resolve_config
    from q2pt.data import from_frames
    from q2pt.models import Q2PTModel
    from real_tuning import fold_splits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", metavar="DATA_FILE")
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="append one JSON line per fold to this file")
    ap.add_argument("--tree-only", action="store_true", help="train only the tree model (flat columns: -)")
    ap.add_argument("--tree-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the tree model only, e.g. train.tree_stopping=mean_of_levels")
    args = ap.parse_args(argv)
    from q2pt.config import parse_value

    tree_over = {k: parse_value(v) for k, _, v in (x.partition("=") for x in args.tree_set)}

    with open(args.data, encoding="utf-8") as fh:
        frame = pd.DataFrame([json.loads(line) for line in fh if line.strip()])
    frame["product_types"] = frame["product_types"].map(lambda v: list(dict.fromkeys(v)))
    frame["weight"] = 1.0
    base = {"train.max_epochs": 20, "train.patience": 2, "train.batch_size": 64, "train.threads": args.threads}
    print(f"# one hierarchical model vs flat models per level (real data {args.data}, unified-aware / use)")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.platform()}, {os.cpu_count()} CPUs, "
          f"{args.threads} torch thread(s)\n")
    print("| fold | level 1: tree / flat-1 | level 2: tree / flat-2 | leaf: tree / flat-leaf | "
          "coverage: tree / flat-leaf | answered: tree / flat-leaf | train s: tree / flat-1 / flat-2 / flat-leaf |")
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for k in [int(x) for x in args.folds.split(",")]:
        splits = fold_splits(frame, k, 5, 0, None)
        test = splits["test"]
        models, secs = {}, {}
        plan = [("tree", None)] + ([] if args.tree_only else [("flat-1", 1), ("flat-2", 2), ("flat-leaf", None)])
        for name, depth in plan:
            # a flat model of level N learns the paths cut to N levels (data.label_depth, at load)
            ds = from_frames(splits, source=args.data, validate=False, label_depth=depth)
            over = {"model.hierarchy": "flat"} if name != "tree" else {"model.hierarchy": "tree", **tree_over}
            t0 = time.perf_counter()
            model = Q2PTModel(config=resolve_config(overrides={**base, **over}))
            models[name] = model.fit(ds, progress=False)
            secs[name] = time.perf_counter() - t0
        nan = float("nan")
        tree = models["tree"]
        leaf_cols = sorted({c for ts in splits["train"]["product_types"] for c in ts} & set(tree.classes_))
        flat = {name: models.get(name) for name in ("flat-1", "flat-2", "flat-leaf")}
        row = {
            "fold": k,
            "l1": (level_rap(tree, test, 1), level_rap(flat["flat-1"], test, 1) if flat["flat-1"] else nan),
            "l2": (level_rap(tree, test, 2), level_rap(flat["flat-2"], test, 2) if flat["flat-2"] else nan),
            "leaf": (level_rap(tree, test, None, leaf_cols),
                     level_rap(flat["flat-leaf"], test, None) if flat["flat-leaf"] else nan),
            "seconds": secs,
        }
        covers = (coverage(tree, test), coverage(flat["flat-leaf"], test) if flat["flat-leaf"] else (nan, nan))
        row["coverage"], row["answered"] = (covers[0][0], covers[1][0]), (covers[0][1], covers[1][1])
        rows.append(row)
        print(f"| {k} | {row['l1'][0]:.4f} / {row['l1'][1]:.4f} | {row['l2'][0]:.4f} / {row['l2'][1]:.4f} | "
              f"{row['leaf'][0]:.4f} / {row['leaf'][1]:.4f} | {row['coverage'][0]:.3f} / {row['coverage'][1]:.3f} | "
              f"{row['answered'][0]:.3f} / {row['answered'][1]:.3f} | "
              + " / ".join(f"{secs[n]:.0f}" if n in secs else "-" for n in ("tree", "flat-1", "flat-2", "flat-leaf"))
              + " |", flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
    if len(rows) > 1:
        def stat(key: str, i: int) -> str:
            v = np.asarray([r[key][i] for r in rows])
            return f"{v.mean():.4f} [{v.min():.4f}, {v.max():.4f}]"
        print("| **mean [min, max]** | " + " | ".join(f"{stat(key, 0)} / {stat(key, 1)}"
                                                      for key in ("l1", "l2", "leaf", "coverage", "answered")) + " | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
