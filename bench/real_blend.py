"""The mean of several runs' scores (a small ensemble), judged as one model: the script behind the
ensemble row of the README's *Real queries* notes.

    python bench/real_blend.py RUN_A_f{k}.npz [RUN_B_f{k}.npz ...] [--folds 5] [--deployed 200]

Each pattern names the ``--save-scores`` files of ``bench/real_tuning.py`` runs, ``{k}`` standing
for the fold; the members of a fold must be of the same fold and columns. Per fold, the members'
valid and test probabilities are averaged, then judged as ``real_tuning.py`` judges one run: test
R@P80 pooled, and recall and precision as deployed (each locale at its own threshold calibrated on
valid where it has at least ``--deployed`` validation positives, else the global one). Prints one
JSON line per fold and the mean over folds. Reads only the files given.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def judge(members: list[dict[str, np.ndarray]], min_positives: int) -> dict[str, float]:
    from q2pt.metrics import evaluate_as_deployed, recall_at_precision

    first = members[0]
    for m in members[1:]:
        if not np.array_equal(m["classes"], first["classes"]) or not np.array_equal(m["l_test"], first["l_test"]):
            raise SystemExit("the members of a fold are not of the same fold and columns")
    sv = np.mean([m["s_valid"] for m in members], axis=0)
    st = np.mean([m["s_test"] for m in members], axis=0)
    pooled = recall_at_precision(first["y_test"], st, 0.8, n_missing=int(first["m_test"].sum())).recall
    dep = evaluate_as_deployed(first["y_valid"], sv, list(first["l_valid"]), first["y_test"], st, list(first["l_test"]),
                               0.8, min_positives=min_positives, valid_missing=first["m_valid"],
                               test_missing=first["m_test"])["global"]
    return {"pooled": round(float(pooled), 4), "deployed_recall": round(float(dep["recall"]), 4),
            "deployed_precision": round(float(dep["precision"]), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("patterns", nargs="+", metavar="RUN_f{k}.npz")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--deployed", type=int, default=200, metavar="N")
    args = ap.parse_args(argv)
    rows = []
    for k in range(args.folds):
        members = [dict(np.load(p.replace("{k}", str(k)))) for p in args.patterns]
        row = {"fold": k, **judge(members, args.deployed)}
        rows.append(row)
        print(json.dumps(row))
    mean = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0] if key != "fold"}
    print(json.dumps({"mean": mean, "members": args.patterns}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
