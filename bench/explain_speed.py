#!/usr/bin/env python
"""How long an explanation takes: ``q2pt.explain.explain`` (occlusion, one batched forward
pass of words + 2 queries) on queries of a given length, in this process.

    python bench/explain_speed.py --model runs/model [--words 6] [--n 200] [--threads 2]

Queries: the test split of the model's training data (its manifest's config; the simulated
store for a model trained on it), cut or extended (words of the next queries appended) to
exactly ``--words`` words. Prints a markdown table per thread count: p50, p90, p99 and mean
milliseconds per explanation, and a plain prediction of the same query for scale.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone

import numpy as np


def queries_of(model, words: int, n: int) -> tuple[list[str], list[str]]:
    from q2pt.data import load_configured

    test = load_configured(model.config.data).test
    pool = [str(q).split() for q in test["query"]]
    locs = test["locale"].astype(str).tolist()
    out_q, out_l = [], []
    i = 0
    while len(out_q) < n and i < len(pool):
        q, j = list(pool[i]), i + 1
        while len(q) < words and j < len(pool):
            q += pool[j]
            j += 1
        out_q.append(" ".join(q[:words]))
        out_l.append(locs[i])
        i += 1
    return out_q, out_l


def main(argv: list[str] | None = None) -> int:
    import torch

    from q2pt.explain import explain
    from q2pt.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--words", type=int, default=6)
    ap.add_argument("--n", type=int, default=200, help="explanations timed per thread count (default 200)")
    ap.add_argument("--threads", default="2,1", help="torch thread counts, comma-separated (default 2,1)")
    args = ap.parse_args(argv)

    model = load_model(args.model)
    queries, locales = queries_of(model, args.words, args.n)
    print(f"# explain speed: {model.variant} / {model.encoder}, {len(model.classes_)} types; "
          f"{len(queries)} queries of {args.words} words")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.platform()}, {os.cpu_count()} CPUs, "
          f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| threads | explain p50 ms | p90 ms | p99 ms | mean ms | predict p50 ms (same query) |")
    print("|---:|---:|---:|---:|---:|---:|")
    core = model.inference()
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for q, loc in zip(queries[:10], locales[:10]):  # warm up
            explain(core, q, loc)
        times, plain = [], []
        for q, loc in zip(queries, locales):
            t0 = time.perf_counter()
            explain(core, q, loc)
            times.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            core.scores([q], core.resolve_all([loc]))
            plain.append((time.perf_counter() - t0) * 1000)
        t = np.asarray(times)
        print(f"| {threads} | {np.percentile(t, 50):.1f} | {np.percentile(t, 90):.1f} | {np.percentile(t, 99):.1f} | "
              f"{t.mean():.1f} | {np.percentile(plain, 50):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
