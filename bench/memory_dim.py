"""The query memory's key width (``model.memory_dim``) on one fold of a real labelled file.

    python bench/memory_dim.py DATA_FILE --fold 0 [--depth 1] [--small 60] [--dims 0,64,128,256]

Splits and trains as ``bench/real_tuning.py`` does (one unified-aware model, the experiment's
budget for user data, one torch thread; ``--depth 2`` trains a flat level-2 model), then
rebuilds the trained network's memory at each width of ``--dims`` (0: the full embeddings)
with the library's :func:`q2pt.training.memory.build_memory` and prints one JSON line with the
test split's R@P80 (pooled) per width. One network serves every width, so the widths differ
only by the memory. The data is read from the path given and never copied.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv: list[str] | None = None) -> int:
    from q2pt.config import resolve_config
    from q2pt.data import from_frames
    from q2pt.data.labels import label_lists, multi_hot
    from q2pt.metrics import recall_at_precision
    from q2pt.models import Q2PTModel
    from q2pt.training.memory import build_memory
    from real_tuning import BUDGET, fold_arguments, read_fold

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    fold_arguments(ap)
    ap.add_argument("--dims", default="0,64,128,256")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    splits = read_fold(args.data, args.fold, args.folds, args.seed, args.small)  # cut at load, as q2pt does
    dataset = from_frames(splits, source=args.data, validate=False, label_depth=args.depth)
    overrides = dict(BUDGET)
    if args.depth > 1:
        overrides["model.hierarchy"] = "flat"
    config = resolve_config(overrides=overrides)
    model = Q2PTModel(config=config).fit(dataset, progress=False)
    test = dataset.test
    y, missing = multi_hot(label_lists(test["product_types"]), model.classes_)
    net = model.networks["*"]
    out: dict = {"fold": args.fold, "depth": args.depth, "small": args.small}
    for dim in (int(d) for d in args.dims.split(",")):
        n = build_memory(net, dataset.train, model.network_labels_["*"], locale_aware=True,
                         max_queries=config.model.memory_max_queries, dim=dim, seed=config.train.seed)
        scores = model.predict_proba(test["query"].tolist(), test["locale"].tolist())
        r = recall_at_precision(y.toarray(), scores, 0.8, n_missing=int(missing.sum())).recall
        out[f"dim_{dim}"] = round(r, 4)
    out["memory_queries"] = n
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
