"""Quality on real queries: every model and baseline, K-fold cross-validation, three regimes.

    python bench/real_quality.py DATA_FILE [--out DIR] [--folds 5] [--regimes top,level2,small]
                                 [--small-per-locale 60] [--jobs 2] [-- EXTRA q2pt experiment FLAGS]

DATA_FILE is one labelled file in q2pt's data format whose product types are category paths
(``a > b > c``), e.g. the development set ``../shared/data/cikm-qc/queries.jsonl`` (real
third-party data: it is read from the path given, never copied into the project). Everything
runs through the command line a user has:

1. ``q2pt data split DATA_FILE --folds K --out OUT/splits`` (leak-free, per locale), and the
   same with ``--train-per-locale N`` into ``OUT/splits-small`` (the small-store regime: N
   training queries per locale, the rest of each fold's training part moved to its test);
2. per regime, ``q2pt experiment --data SPLITS --folds K --data.label_depth D --out OUT/REGIME``:
   ``top`` (depth 1), ``level2`` (depth 2), ``small`` (depth 1, the small splits);
3. the table: per regime and model, global R@P80 pooled and global recall as deployed (each
   locale at its threshold calibrated on validation, with the precision reached on test), mean
   and standard deviation over the folds, training time; then R@P80 per locale; then the
   default model's margins over the baselines and non-unified.

Experiments are resumable: rerunning with the same ``--out`` skips finished runs. ``--jobs 2``
runs two regimes at once (each with one torch thread: on 2 cores that beats two threads each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REGIMES = {"top": (1, "splits"), "level2": (2, "splits"), "small": (1, "splits-small")}
#: the models the targets compare (README / issue): the default vs the frozen-embedding baselines
DEFAULT_MODEL = "unified-aware"


def q2pt(*args: str, log: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "q2pt", *args]
    print("$ q2pt " + shlex.join(args), flush=True)
    if log is None:
        subprocess.run(cmd, check=True)
        return
    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"failed (exit {proc.returncode}): q2pt {shlex.join(args)}; see {log}")


def file_digest(data: str) -> str:
    import hashlib

    return hashlib.sha256(Path(data).read_bytes()).hexdigest()


def split(data: str, out: Path, folds: int, seed: int, small: int, names: set[str]) -> None:
    """Write the splits ``names`` ("splits", "splits-small") unless OUT already holds them for
    the same file and parameters."""
    digest = file_digest(data)
    for name, per_locale in (("splits", None), ("splits-small", small)):
        if name not in names:
            continue
        stamp = {"source_sha256": digest, "folds": folds, "seed": seed, "train_per_locale": per_locale}
        stamp_file = out / f"{name}.json"
        if (out / name / "fold-0").is_dir() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
            continue
        extra = [] if per_locale is None else ["--train-per-locale", str(per_locale)]
        q2pt("data", "split", data, "--folds", str(folds), "--seed", str(seed), "--out", str(out / name),
             "--overwrite", *extra)
        stamp_file.write_text(json.dumps(stamp), encoding="utf-8")


def run_regime(regime: str, out: Path, folds: int, threads: int, extra: list[str], also: list[str]) -> float:
    depth, splits = REGIMES[regime]
    start = time.time()
    common = ["--data", str(out / splits), "--folds", str(folds), "--data.label_depth", str(depth),
              "--train.threads", str(threads), "--no-progress"]
    q2pt("experiment", *common, "--out", str(out / regime), *extra, log=out / f"{regime}.log")
    for spec in also:  # the default variant with another encoder, e.g. use+e5 (frozen e5 as an extra input)
        q2pt("experiment", *common, "--out", str(out / f"{regime}-{spec}"), "--encoder", spec, *extra,
             "--experiment.variants", '["unified-aware"]', "--experiment.baselines", "[]",
             log=out / f"{regime}-{spec}.log")
    return time.time() - start


def fmt(stats: dict | None, digits: int = 3) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    sd = stats.get("std")
    return f"{stats['mean']:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{stats['mean']:.{digits}f}"


def tables(out: Path, regimes: list[str], also: list[str]) -> str:
    lines: list[str] = []
    margins: list[str] = []
    for regime in regimes:
        path = out / regime / "results.json"
        if not path.is_file():
            lines.append(f"\n{regime}: no results ({path} missing)")
            continue
        res = json.loads(path.read_text(encoding="utf-8"))
        models = dict(res["models"])
        for spec in also:
            other = out / f"{regime}-{spec}" / "results.json"
            if other.is_file():
                for name, m in json.loads(other.read_text(encoding="utf-8"))["models"].items():
                    models[f"{name} ({spec})"] = {**m, "label": f"{m.get('label', name)}, encoder {spec}"}
        depth = REGIMES[regime][0]
        lines += [
            "",
            f"### {regime} (label depth {depth}, {res['k']} folds; mean ± sd over folds)",
            "",
            "| model | global R@P80 pooled | global recall as deployed | precision reached | train s |",
            "|---|---|---|---|---:|",
        ]
        for name, m in models.items():
            t = (m.get("train_seconds") or {}).get("mean")
            lines.append(
                f"| {m.get('label', name)} | {fmt(m['global_r_at_p'])} | {fmt(m['global_deployed_recall'])} | "
                f"{fmt(m['global_deployed_precision'])} | {'-' if t is None else f'{t:.0f}'} |"
            )
        locales = res.get("locales") or []
        sizes = res.get("train_sizes") or {}
        lines += ["", "R@P80 per locale (mean over folds; train queries per locale in the header):", ""]
        heads = [f"{loc} ({(sizes.get(loc) or {}).get('mean') or 0:.0f})" for loc in locales]
        lines.append("| model | " + " | ".join(heads) + " |")
        lines.append("|---|" + "---:|" * len(locales))
        for name, m in models.items():
            cells = [fmt(m["locales"].get(loc, {}).get("r_at_p"), 2).split(" ±")[0] for loc in locales]
            lines.append(f"| {m.get('label', name)} | " + " | ".join(cells) + " |")
        if DEFAULT_MODEL in models:
            ref = models[DEFAULT_MODEL]
            for name, m in models.items():
                if name == DEFAULT_MODEL:
                    continue
                for key, what in (("global_r_at_p", "pooled"), ("global_deployed_recall", "as deployed")):
                    a, b = (ref.get(key) or {}).get("values") or [], (m.get(key) or {}).get("values") or []
                    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
                    if diffs:
                        mean = sum(diffs) / len(diffs)
                        wins = sum(d > 0 for d in diffs)
                        margins.append(
                            f"| {regime} | {m.get('label', name)} | {what} | {100 * mean:+.1f} | {wins}/{len(diffs)} |")
    if margins:
        lines += ["", f"### {DEFAULT_MODEL} minus each other model (points, mean of per-fold differences)", "",
                  "| regime | model | global figure | difference | folds won |", "|---|---|---|---:|---:|", *margins]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        tv = torch.__version__
    except ImportError:  # pragma: no cover
        tv = "-"
    return f"{os.cpu_count()} cores, {cpu}, torch {tv}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s DATA_FILE [options] [-- EXTRA q2pt experiment FLAGS]",
                                 epilog="after --: more q2pt experiment flags, given to every run "
                                        "(e.g. -- --train.max_epochs 2)")
    ap.add_argument("data", metavar="DATA_FILE", help="one labelled file whose product types are category paths")
    ap.add_argument("--out", default="runs/real-quality", help="output folder (default runs/real-quality)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="split seed")
    ap.add_argument("--regimes", default="top,level2,small", help="comma-separated: top, level2, small")
    ap.add_argument("--small-per-locale", type=int, default=60, help="training queries per locale in the small regime")
    ap.add_argument("--jobs", type=int, default=1, help="regimes run at once (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per experiment (default 1)")
    ap.add_argument("--also", default="",
                    help="comma-separated encoders to run the default variant with as well, e.g. use+e5 (default: none)")
    ap.add_argument("--report-only", action="store_true", help="print the tables of finished runs and stop")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    args.extra = argv[cut + 1:]  # more q2pt experiment flags, after --
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    also = [e.strip() for e in args.also.split(",") if e.strip()]
    bad = [r for r in regimes if r not in REGIMES]
    if bad:
        ap.error(f"unknown regime(s) {', '.join(bad)}; valid: {', '.join(REGIMES)}")
    out = Path(args.out)
    if not Path(args.data).is_file():
        ap.error(f"{args.data}: no such file")
    if args.report_only:  # the tables of runs on this file: the splits' stamps say which file they are of
        stamps = [out / f"{REGIMES[r][1]}.json" for r in regimes]
        digest = file_digest(args.data)
        for stamp in stamps:
            if not stamp.is_file():
                ap.error(f"{out} holds no runs of the regimes {args.regimes} (no {stamp.name})")
            if json.loads(stamp.read_text(encoding="utf-8")).get("source_sha256") != digest:
                ap.error(f"{out}'s runs were split from another file than {args.data} ({stamp.name})")
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    walls: dict[str, float] = {}
    if not args.report_only:
        split(args.data, out, args.folds, args.seed, args.small_per_locale, {REGIMES[r][1] for r in regimes})
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {r: pool.submit(run_regime, r, out, args.folds, args.threads, list(args.extra), also) for r in regimes}
            for r, f in futures.items():
                walls[r] = f.result()
    print(f"\n## Quality on {args.data} (not the simulated store; for the cikm-qc dev set: REAL third-party "
          "relevance judgments, not exhaustive)")
    if args.report_only:
        print(f"\nThe finished runs in {out} (printed {started:%Y-%m-%d %H:%M} UTC; their date, machine and "
              "command are in each regime's report.md).")
    else:
        print(f"\nStarted {started:%Y-%m-%d %H:%M} UTC on {machine()}; load average at the end "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    print("Command: python bench/real_quality.py " + shlex.join(argv))
    if walls:
        print("Wall time per regime: " + ", ".join(f"{r} {w / 60:.1f} min" for r, w in walls.items()))
    print(tables(out, regimes, also))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
