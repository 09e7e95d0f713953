"""One training recipe on one fold of a real labelled file: the script behind the tuning notes.

    python bench/real_tuning.py DATA_FILE --fold 0 [--depth 1] [--small 60] [KEY=VALUE ...]
    python bench/real_tuning.py ../shared/data/cikm-qc/queries.jsonl --fold 3 train.head_lr=3e-3

Trains one unified-aware q2pt model through the library (``q2pt.models.Q2PTModel``) with the
experiment's budget for user data (up to 20 epochs, patience 2, batch 64, one torch thread)
plus the ``section.key=value`` overrides given, and prints one JSON line: the test split's
global R@P80 (pooled) and the training time; ``--deployed 20,100`` adds, for each N given, the
test recall and precision as deployed (each locale at its own threshold calibrated on valid where
it has at least N validation positives, the global threshold elsewhere). The figures beside the ``use`` defaults in
``src/q2pt/config.py`` are the mean of ``--fold 0`` ... ``--fold 4`` of this script.

Its splits are its own (fast, no files written): per locale, a permutation seeded by
``--seed`` is cut into 5 parts; fold k tests on part k; valid is the first 1/8 of the rest,
train the remainder (``--small N``: train keeps N queries per locale, the others go to test).
The file must have no duplicate (locale, normalized query) rows (the cikm-qc set has none;
otherwise use ``q2pt data split``). The data is read from the path given and never copied.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import numpy as np
import pandas as pd


def fold_splits(frame: pd.DataFrame, k: int, folds: int, seed: int, small: int | None) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    parts: dict[str, list[pd.DataFrame]] = {"train": [], "valid": [], "test": []}
    for _, group in frame.groupby("locale"):
        order = rng.permutation(len(group))
        part = np.arange(len(group)) % folds
        test, rest = group.iloc[order[part == k]], group.iloc[order[part != k]]
        n_valid = len(rest) // 8
        valid, train = rest.iloc[:n_valid], rest.iloc[n_valid:]
        if small:
            test, train = pd.concat([test, train.iloc[small:]]), train.iloc[:small]
        parts["train"].append(train)
        parts["valid"].append(valid)
        parts["test"].append(test)
    return {name: pd.concat(frames).reset_index(drop=True) for name, frames in parts.items()}


#: the experiment's budget for user data, on one torch thread: what every fold here trains with
BUDGET = {"train.max_epochs": 20, "train.patience": 2, "train.batch_size": 64, "train.threads": 1}


def fold_arguments(ap: argparse.ArgumentParser) -> None:
    """The data file and fold options shared by the real-data tuning scripts."""
    ap.add_argument("data", metavar="DATA_FILE")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=1, help="label depth (levels of ' > ' paths kept)")
    ap.add_argument("--small", type=int, default=None, help="training queries per locale (small-store regime)")


def cut_paths(paths: list[str], depth: int) -> list[str]:
    """A query's category paths cut to ``depth`` levels, without repeats."""
    from q2pt.data.labels import truncate_path

    return sorted({truncate_path(p, depth) for p in paths})


def scored(model: Any, frame: pd.DataFrame, columns: np.ndarray | None = None,
           depth: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """A split's label matrix, the model's scores, the positives outside its labels and the
    locales, over the model's ``columns`` (None: all); ``depth``: the true paths cut to it."""
    from q2pt.data.labels import label_lists, multi_hot

    columns = np.arange(len(model.classes_)) if columns is None else columns
    locales = frame["locale"].astype(str).tolist()
    scores = model.predict_proba(frame["query"].astype(str).tolist(), locales)[:, columns]
    paths = [cut_paths(types, depth) if depth else types for types in label_lists(frame["product_types"])]
    y, missing = multi_hot(paths, [model.classes_[j] for j in columns])
    return y.toarray(), scores, missing, locales


def read_fold(data: str, k: int, folds: int, seed: int, small: int | None) -> dict[str, pd.DataFrame]:
    """The file's rows, their paths as read (``from_frames(..., label_depth=D)`` cuts them, as
    ``q2pt experiment`` does), split as fold ``k``."""
    with open(data, encoding="utf-8") as fh:
        frame = pd.DataFrame([json.loads(line) for line in fh if line.strip()])
    frame["weight"] = 1.0
    return fold_splits(frame, k, folds, seed, small)


def main(argv: list[str] | None = None) -> int:
    from q2pt.config import parse_value, resolve_config
    from q2pt.data import from_frames
    from q2pt.metrics import evaluate_as_deployed, recall_at_precision
    from q2pt.models import Q2PTModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    fold_arguments(ap)
    ap.add_argument("--deployed", default="", metavar="N[,N...]",
                    help="also print recall and precision as deployed on test, each locale at its own threshold "
                         "calibrated on valid when it has at least N validation positives (else the global one), "
                         "for each N given (a large N: the global threshold alone)")
    ap.add_argument("--judge-depth", type=int, default=None, metavar="J",
                    help="judge a tree on its level-J types (the true paths cut to J levels) instead of its "
                         "deepest level: e.g. --depth 3 --judge-depth 2 trains on three levels, judged on two")
    ap.add_argument("--save-scores", metavar="FILE.npz", default=None,
                    help="also write the valid and test labels, scores and locales (the judged columns) to "
                         "FILE.npz, to study blends of several runs without training again")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.judge_depth is not None and not 1 <= args.judge_depth <= args.depth:
        ap.error(f"--judge-depth {args.judge_depth}: give a level from 1 to --depth ({args.depth})")
    # the full paths, cut by q2pt at load time (data.label_depth) as `q2pt experiment` does
    splits = read_fold(args.data, args.fold, args.folds, args.seed, args.small)
    dataset = from_frames(splits, source=args.data, validate=False, label_depth=args.depth)
    overrides = dict(BUDGET)
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = parse_value(value)
    config = resolve_config(overrides=overrides)
    if args.judge_depth is not None and config.model.hierarchy == "flat":
        ap.error("--judge-depth judges a tree's levels: model.hierarchy flat trains a flat model")
    start = time.time()
    model = Q2PTModel(config=config).fit(dataset, progress=False)
    seconds = time.time() - start
    test = splits["test"]
    columns = np.arange(len(model.classes_))
    depth = args.depth  # a flat model: judged on its own labels (the paths cut to --depth)
    if args.judge_depth is not None and (model.tree_ is None or args.judge_depth > model.tree_.depth):
        ap.error(f"--judge-depth {args.judge_depth}: the model learnt "
                 f"{'no tree' if model.tree_ is None else f'a tree of {model.tree_.depth} levels'}")
    if model.tree_ is not None:  # a tree: judged on its deepest level's types alone (the true paths cut to it)
        depth = args.judge_depth or model.tree_.depth
        columns = np.flatnonzero([model.tree_.level.get(c, 1) == depth for c in model.classes_])
    yt, st, mt, lt = scored(model, test, columns, depth)
    r = recall_at_precision(yt, st, 0.8, n_missing=int(mt.sum())).recall
    out = {"fold": args.fold, "depth": args.depth, "judged_depth": depth, "small": args.small, "overrides": args.overrides,
           "test_r_at_p80_pooled": round(r, 4), "train_seconds": round(seconds, 1)}
    if args.deployed or args.save_scores:
        yv, sv, mv, lv = scored(model, splits["valid"], columns, depth)
    if args.save_scores:
        np.savez_compressed(args.save_scores, y_valid=yv, s_valid=sv, m_valid=mv, l_valid=np.array(lv),
                            y_test=yt, s_test=st, m_test=mt, l_test=np.array(lt),
                            classes=np.array([model.classes_[j] for j in columns]))
    if args.deployed:
        for n in (int(x) for x in args.deployed.split(",")):
            d = evaluate_as_deployed(yv, sv, lv, yt, st, lt, 0.8, min_positives=n, valid_missing=mv,
                                     test_missing=mt)["global"]
            out[f"deployed_min{n}"] = [round(d["recall"], 4), round(d["precision"], 4)]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
