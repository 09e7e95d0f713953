"""Training and prediction throughput with 1 and 2 processes on this machine.

    python bench/scale.py                      # ngram encoder, simulated 'quick' store
    python bench/scale.py --encoder use --train-steps 40 --predict-rows 100000

Prints a markdown table (and writes it as JSON with --json):

* training: steady-state examples/s of the training loop (steps 10..N of one network,
  no evaluation inside the timed window; process start-up and tokenisation excluded),
  for one process with 1 and with all cores' torch threads, and for 2 DDP processes
  (gloo, one thread each) launched with torchrun. Same global batch in every row.
* prediction: end-to-end rows/s of ``q2pt.streaming.stream_predict`` on a Parquet file of
  ``--predict-rows`` queries (sampled, with replacement, from the SIMULATED store), in this
  process with 1 and with all cores' torch threads, and with 2 worker processes (their
  start-up -- importing torch, loading the model -- included).

Numbers depend on the machine and on what else runs on it: the table records the CPU
count and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP_STEPS = 10


def train_worker(args: argparse.Namespace) -> int:
    """One training process (alone, or one rank under torchrun): time steps WARMUP..N."""
    import torch

    from q2pt import distributed
    from q2pt.config import resolve_config
    from q2pt.data import load_dataset
    from q2pt.models import Q2PTModel

    torch.set_num_threads(args.threads)
    overrides = {
        "train.batch_size": args.batch_size, "train.max_steps": args.train_steps, "train.max_epochs": 1,
        "train.threads": args.threads, "data.preset": args.preset,
    }
    config = resolve_config(None, overrides, args.encoder, flags={"model.variant": args.variant})
    stamps: dict[int, float] = {}

    def after_step(stage: str, step: int) -> None:
        stamps[step] = time.perf_counter()

    with distributed.session() as env:
        with env.main_first():
            dataset = load_dataset(None, preset=args.preset, seed=0)
        steps_per_epoch = -(-len(dataset.train) // args.batch_size)
        if args.train_steps > steps_per_epoch:
            raise SystemExit(f"--train-steps must be at most {steps_per_epoch} (one epoch of the {args.preset} store)")
        model = Q2PTModel(config=config)
        distributed.fit(model, dataset, env, out_dir=args.model_out, progress=False, after_step=after_step)
        if env.is_main:
            last = max(stamps)  # the loop may stop before calling after_step on its last step
            timed = last - WARMUP_STEPS
            seconds = stamps[last] - stamps[WARMUP_STEPS]
            Path(args.result).write_text(json.dumps({
                "examples_per_s": timed * args.batch_size / seconds, "seconds": seconds, "steps": timed,
                "world_size": env.world_size, "n_train": len(dataset.train),
            }))
    return 0


def run_train(args: argparse.Namespace, work: Path, nproc: int, threads: int, tag: str) -> dict:
    result = work / f"train-{tag}.json"
    worker = [__file__, "--train-worker", "--result", str(result), "--model-out", str(work / f"model-{tag}"),
              "--threads", str(threads), "--encoder", args.encoder, "--variant", args.variant,
              "--preset", args.preset, "--batch-size", str(args.batch_size), "--train-steps", str(args.train_steps)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if nproc == 1:
        cmd = [sys.executable, *worker]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *worker]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"training run {tag} failed")
    out = json.loads(result.read_text())
    out["wall_s"] = time.perf_counter() - t0
    return out


def make_input(path: Path, rows: int, preset: str) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from q2pt.data import load_dataset

    data = load_dataset(None, preset=preset, seed=0)
    frame = data.test if len(data.test) else data.train
    pick = np.random.default_rng(0).integers(0, len(frame), rows)
    queries = frame["query"].to_numpy(dtype=object)[pick]
    locales = frame["locale"].to_numpy(dtype=object)[pick]
    table = pa.table({"id": np.arange(rows, dtype=np.int64), "query": pa.array(queries.tolist(), pa.string()),
                      "locale": pa.array(locales.tolist(), pa.string())})
    pq.write_table(table, path, row_group_size=100_000)


def run_predict(args: argparse.Namespace, model: Path, src: Path, work: Path, workers: int, threads: int) -> dict:
    from q2pt.streaming import stream_predict

    out = work / f"pred-{workers}-{threads}"
    shutil.rmtree(out, ignore_errors=True)
    finished: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    result = stream_predict(model, src, out, chunk_size=args.chunk_size, workers=workers,
                            threads=threads if workers == 0 else None, progress=False,
                            on_part=lambda k, rows: finished.append((time.perf_counter(), rows)))
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    # steady state: after the first round of parts (one per process), until the last part
    first = max(1, workers)
    steady = float("nan")
    if len(finished) > first:
        steady = sum(r for _, r in finished[first:]) / (finished[-1][0] - finished[first - 1][0])
    return {"rows_per_s": result.rows / seconds, "steady_rows_per_s": steady, "seconds": seconds,
            "rows": result.rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="ngram")
    p.add_argument("--variant", default="unified-aware")
    p.add_argument("--preset", default="quick", help="simulated store to train on / sample queries from")
    p.add_argument("--batch-size", type=int, default=212, help="global batch (even: 2 ranks x 106)")
    p.add_argument("--train-steps", type=int, default=120)
    p.add_argument("--predict-rows", type=int, default=400_000)
    p.add_argument("--chunk-size", type=int, default=50_000)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-predict", action="store_true")
    # internal: one training process
    p.add_argument("--train-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--model-out", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_worker:
        return train_worker(args)

    import torch

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="q2pt-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_train or not args.skip_predict:
            from q2pt.data import load_dataset

            load_dataset(None, preset=args.preset, seed=0)  # generate the simulated store once
        model = work / "model-1x1"
        if not args.skip_train:
            for nproc, threads in ((1, 1), (1, cores), (2, max(1, cores // 2))):
                tag = f"{nproc}x{threads}"
                r = run_train(args, work, nproc, threads, tag)
                setup = "single process" if nproc == 1 else "DDP (gloo), torchrun"
                rows.append({"task": f"train ({args.encoder}, {args.variant})", "setup": setup, "processes": nproc,
                             "threads": threads, "throughput": r["examples_per_s"], "unit": "examples/s",
                             "wall_s": r["wall_s"]})
        else:
            run_train(args, work, 1, 1, "1x1")
        if not args.skip_predict:
            src = work / "queries.parquet"
            make_input(src, args.predict_rows, args.preset)
            for workers, threads, setup in ((0, 1, "in-process"), (0, cores, "in-process (intra-op threads)"),
                                            (2, 1, "2 worker processes")):
                r = run_predict(args, model, src, work, workers, threads)
                rows.append({"task": f"predict ({args.encoder}, stream)", "setup": setup,
                             "processes": max(1, workers), "threads": threads, "throughput": r["rows_per_s"],
                             "steady": r["steady_rows_per_s"], "unit": "queries/s", "wall_s": r["seconds"]})
    load_after = os.getloadavg()
    print(f"q2pt scale benchmark: {platform.processor() or platform.machine()}, {cores} CPU cores, "
          f"torch {torch.__version__}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"simulated '{args.preset}' store\n")
    print("| task | setup | processes | torch threads / process | throughput | steady state | wall time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        steady = r.get("steady")
        steady_text = "" if steady is None or steady != steady else f"{steady:,.0f} {r['unit']}"
        print(f"| {r['task']} | {r['setup']} | {r['processes']} | {r['threads']} | "
              f"{r['throughput']:,.0f} {r['unit']} | {steady_text} | {r['wall_s']:.1f} |")
    notes = []
    if not args.skip_train:
        notes.append(f"training: global batch {args.batch_size}, steps {WARMUP_STEPS}..{args.train_steps} "
                     "timed (the throughput is the steady state)")
    if not args.skip_predict:
        notes.append(f"prediction: {args.predict_rows:,} queries in parts of {args.chunk_size:,} rows; throughput "
                     "end to end (start-up included), steady state after each process's first part")
    print("\n" + "; ".join(notes))
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": cores, "load_before": load_before, "load_after": load_after,
                                               "args": {k: v for k, v in vars(args).items() if k != "json"},
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
