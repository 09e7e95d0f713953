#!/usr/bin/env python
"""Latency and throughput of ``q2pt serve`` under concurrent load, PyTorch vs ONNX, plus a soak.

For each runtime it starts ``q2pt serve`` in a subprocess on a free loopback port and, from
this process, drives it with ``httpx.AsyncClient``:

1. **single**: ``--concurrency`` clients (default 50), each sending one ``POST /v1/predict``
   after the other for ``--duration`` seconds (closed loop: the server's saturation
   throughput; latency there is bounded below by clients / throughput, Little's law);
2. **single-paced**: the same clients, each sending ``--rate`` requests/s on a fixed
   schedule (open loop; default 4/s each, 200/s in all): latency at a load below saturation;
3. **batch**: ``--batch-concurrency`` clients sending ``POST /v1/predict/batch`` with
   ``--batch-size`` queries each for ``--duration`` seconds;
4. **soak** (first runtime only, ``--soak-seconds``, default 300; 0 skips): single-query load
   at ``--concurrency`` clients, with the server's resident memory (``/proc/PID/status``)
   sampled every ``--soak-sample`` seconds; reports errors and memory drift;
5. **swap** (``--swaps N``, default 4; 0 skips): paced single-query load (``--rate``) while
   ``POST /v1/admin/reload`` swaps the served model N times, alternating between ``--model``
   and ``--swap-model`` (default: the same folder, re-read); reports failed and 5xx requests,
   each reload's time, and the latency of requests in flight during a swap against the rest.

Every loop stops by itself (a deadline, and at most ``--max-requests`` per phase); everything
is on 127.0.0.1. The server and this client share the machine's cores: the numbers include
the client's own cost. Queries come from the test split of the model's training data (its
manifest's config) when that data can be loaded, else from the model's product-type names.

Prints markdown tables (and ``--json FILE`` writes the raw numbers)::

    python bench/serve_latency.py --model runs/use-model --soak-seconds 30
    python bench/serve_latency.py --model runs/m1 --swap-model runs/m2 --swaps 6 --runtimes torch --soak-seconds 0
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HOST = "127.0.0.1"

try:  # the client's event loop: uvloop when installed (it also makes httpx cheaper per request)
    import uvloop

    aio_run = uvloop.run
except ImportError:  # pragma: no cover
    aio_run = asyncio.run
TARGETS = {"p50_ms": 5.0, "p99_ms": 20.0, "batch_qps": 1000.0}


@dataclass
class Phase:
    runtime: str
    name: str
    concurrency: int
    batch_size: int
    seconds: float
    rate: float = 0.0  # requests/s per client (open loop); 0: closed loop (next request at once)
    requests: int = 0
    late: int = 0  # paced sends that left later than scheduled (the client could not keep up)
    server_cpu_s: float = 0.0  # CPU seconds the server process used during the phase
    client_cpu_s: float = 0.0  # CPU seconds this (client) process used during the phase
    errors: int = 0
    server_errors: int = 0  # 5xx answers (counted in errors too)
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    sent_at: list[float] = field(default_factory=list, repr=False)  # perf_counter at each send

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        rps = self.requests / self.seconds if self.seconds else 0.0
        return {
            "runtime": self.runtime, "phase": self.name, "concurrency": self.concurrency,
            "batch_size": self.batch_size, "offered_rps": self.rate * self.concurrency if self.rate else None,
            "late_sends": self.late, "seconds": round(self.seconds, 2), "requests": self.requests,
            "errors": self.errors, "server_errors": self.server_errors, "error_samples": self.error_samples[:5],
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean()),
            "requests_per_s": rps, "queries_per_s": rps * self.batch_size,
            "server_cpu_pct": 100.0 * self.server_cpu_s / self.seconds if self.seconds else 0.0,
            "client_cpu_pct": 100.0 * self.client_cpu_s / self.seconds if self.seconds else 0.0,
        }


# ----------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """``q2pt serve`` in a subprocess (loopback only), stopped on exit."""

    def __init__(self, model: str, runtime: str, onnx: str | None, extra: list[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "q2pt", "serve", "--model", model, "--host", HOST, "--port", str(self.port),
               "--runtime", runtime, "--log-level", "warning", *extra]
        if onnx:
            cmd += ["--onnx", onnx]
        self.cmd = cmd
        self.log = log
        self._logf = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"server not ready after {timeout:.0f} s")

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def cpu_seconds(self) -> float:
        """user + system CPU seconds of the server process so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()


# ----------------------------------------------------------------------- load
def measured(server: Server, phase: Phase, *args: Any, **kwargs: Any) -> Phase:
    """``run_phase(server.url, phase, *args, **kwargs)``, recording the CPU time the server and
    this client process spent on it."""
    s0, c0 = server.cpu_seconds(), time.process_time()
    aio_run(run_phase(server.url, phase, *args, **kwargs))
    phase.server_cpu_s = server.cpu_seconds() - s0
    phase.client_cpu_s = time.process_time() - c0
    return phase


async def run_phase(
    url: str, phase: Phase, items: list[dict[str, str]], duration: float, max_requests: int,
    on_tick: Any = None, tick_every: float = 5.0,
) -> Phase:
    """``phase.concurrency`` client loops until ``duration`` passes or ``max_requests`` are sent."""
    limits = httpx.Limits(max_connections=phase.concurrency, max_keepalive_connections=phase.concurrency)
    rng = random.Random(0)
    sent = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        start = time.perf_counter()
        deadline = start + duration

        async def worker(seed: int) -> None:
            nonlocal sent
            r = random.Random(seed)
            interval = 1.0 / phase.rate if phase.rate else 0.0
            next_send = start + r.random() * interval
            while time.perf_counter() < deadline and sent < max_requests:
                if interval:
                    wait = next_send - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    elif wait < -0.001:
                        phase.late += 1
                    next_send = max(next_send + interval, time.perf_counter() - interval)
                    if time.perf_counter() >= deadline:
                        break
                sent += 1
                if phase.batch_size == 1:
                    path, body = "/v1/predict", dict(r.choice(items), top_k=5)
                else:
                    path, body = "/v1/predict/batch", {"queries": r.sample(items, min(phase.batch_size, len(items))),
                                                       "top_k": 5}
                t0 = time.perf_counter()
                try:
                    resp = await client.post(path, json=body)
                    ok = resp.status_code == 200
                    phase.server_errors += resp.status_code >= 500
                    detail = f"HTTP {resp.status_code}: {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                phase.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
                phase.sent_at.append(t0)
                phase.requests += 1
                if not ok:
                    phase.errors += 1
                    if len(phase.error_samples) < 5:
                        phase.error_samples.append(detail)

        async def ticker() -> None:
            while time.perf_counter() < deadline and sent < max_requests:
                await asyncio.sleep(min(tick_every, max(0.0, deadline - time.perf_counter())))
                on_tick(time.perf_counter() - start)

        tasks = [worker(rng.randrange(1 << 30)) for _ in range(phase.concurrency)]
        if on_tick is not None:
            tasks.append(ticker())
        await asyncio.gather(*tasks)
        phase.seconds = time.perf_counter() - start
    return phase


async def run_swap_phase(url: str, phase: Phase, items: list[dict[str, str]], duration: float, max_requests: int,
                         models: list[str], swaps: int, token: str) -> dict[str, Any]:
    """:func:`run_phase` while ``swaps`` admin reloads, evenly spaced, cycle through ``models``."""
    windows: list[dict[str, Any]] = []

    async def swapper() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300.0,
                                     headers={"Authorization": f"Bearer {token}"}) as admin:
            gap = duration / (swaps + 1)
            for k in range(swaps):
                await asyncio.sleep(gap)
                target = models[(k + 1) % len(models)]
                t0 = time.perf_counter()
                resp = await admin.post("/v1/admin/reload", json={"model": target})
                t1 = time.perf_counter()
                windows.append({"model": target, "status": resp.status_code, "start": t0, "end": t1,
                                "seconds": round(t1 - t0, 3),
                                "server_load_seconds": resp.json().get("seconds") if resp.status_code == 200 else None})

    await asyncio.gather(run_phase(url, phase, items, duration, max_requests), swapper())
    lat = np.asarray(phase.latencies_ms)
    sent = np.asarray(phase.sent_at)
    during = np.zeros(lat.size, dtype=bool)
    for w in windows:  # a request overlapping a swap window
        during |= (sent <= w["end"]) & (sent + lat / 1000.0 >= w["start"])

    def pct(x: np.ndarray) -> dict[str, Any]:
        if x.size == 0:
            return {"requests": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
        return {"requests": int(x.size), "p50_ms": float(np.percentile(x, 50)), "p99_ms": float(np.percentile(x, 99)),
                "max_ms": float(x.max())}

    return {"swaps": [{k: v for k, v in w.items() if k not in ("start", "end")} for w in windows],
            "failed_swaps": sum(w["status"] != 200 for w in windows),
            "during_swaps": pct(lat[during]), "outside_swaps": pct(lat[~during])}


def query_pool(model: str, limit: int = 5000) -> tuple[list[dict[str, str]], str]:
    """(query, locale) items from the model's test split, else built from its type names."""
    manifest = json.loads((Path(model) / "manifest.json").read_text())
    try:
        from q2pt.data import load_dataset

        data = (manifest.get("config") or {}).get("data") or {}
        ds = load_dataset(data.get("path"), preset=data.get("preset", "quick"), seed=data.get("seed", 0))
        test = ds.test
        test = test[test["locale"].isin(manifest["locales"])]
        items = [{"query": q, "locale": loc} for q, loc in zip(test["query"], test["locale"])][:limit]
        if items:
            return items, f"{len(items)} test-split queries of {ds.source}"
    except Exception as exc:  # the bench still runs without the data
        print(f"(could not load the model's data: {exc}; using product-type names as queries)", file=sys.stderr)
    labels, locales = manifest["labels"], manifest["locales"]
    items = [{"query": lab.replace("_", " "), "locale": locales[i % len(locales)]} for i, lab in enumerate(labels)]
    return items, f"{len(items)} product-type names"


# ----------------------------------------------------------------------- report
def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def fmt_table(rows: list[dict[str, Any]]) -> str:
    out = ["| runtime | phase | clients | offered req/s | batch | requests | errors | p50 ms | p95 ms | p99 ms | req/s "
           "| queries/s | server CPU % | client CPU % |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        offered = f"{r['offered_rps']:.0f}" if r.get("offered_rps") else "max"
        out.append(f"| {r['runtime']} | {r['phase']} | {r['concurrency']} | {offered} | {r['batch_size']} | {r['requests']} | "
                   f"{r['errors']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                   f"{r['requests_per_s']:.0f} | {r['queries_per_s']:.0f} | {r['server_cpu_pct']:.0f} | "
                   f"{r['client_cpu_pct']:.0f} |")
    return "\n".join(out)


def fmt_soak(s: dict[str, Any]) -> str:
    return "\n".join([
        "| runtime | seconds | clients | requests | errors | p50 ms | p99 ms | RSS after warm-up MB | RSS end MB "
        "| RSS max MB | drift 2nd half MB | memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {s['runtime']} | {s['seconds']:.0f} | {s['concurrency']} | {s['requests']} | {s['errors']} | "
        f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['rss_start_mb']:.0f} | {s['rss_end_mb']:.0f} | "
        f"{s['rss_max_mb']:.0f} | {s['rss_drift_second_half_mb']:+.1f} | {s['memory_verdict']} |",
    ])


def _sample_rss(samples: list[tuple[float, float]], server: Server, t: float) -> None:
    samples.append((t, server.rss_mb()))


def memory_verdict(samples: list[tuple[float, float]]) -> tuple[float, str]:
    """Drift of RSS over the second half of the soak (first half: caches warming up)."""
    if len(samples) < 4:
        return float("nan"), "too short to judge"
    half = samples[len(samples) // 2:]
    drift = half[-1][1] - half[0][1]
    tolerance = max(16.0, 0.02 * half[0][1])
    return drift, "flat" if abs(drift) <= tolerance else f"GROWING (> {tolerance:.0f} MB)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder")
    ap.add_argument("--runtimes", default="torch,onnx", help="comma-separated: torch,onnx (default both)")
    ap.add_argument("--onnx", help="existing ONNX export of the model (default: exported once into a temp folder)")
    ap.add_argument("--concurrency", type=int, default=50, help="single-query clients (default 50)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per load phase (default 15)")
    ap.add_argument("--rate", type=float, default=4.0,
                    help="paced phase: requests/s per single-query client (default 4, i.e. 200/s at 50 clients; 0 skips it)")
    ap.add_argument("--batch-size", type=int, default=64, help="queries per batch request (default 64)")
    ap.add_argument("--batch-concurrency", type=int, default=4, help="batch clients (default 4)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load per runtime (default 3)")
    ap.add_argument("--max-requests", type=int, default=2_000_000, help="cap on requests per phase")
    ap.add_argument("--soak-seconds", type=float, default=300.0, help="soak length (default 300; 0: no soak)")
    ap.add_argument("--soak-sample", type=float, default=5.0, help="seconds between memory samples (default 5)")
    ap.add_argument("--swaps", type=int, default=4, help="model swaps under load (default 4; 0: no swap phase)")
    ap.add_argument("--swap-model", help="the other model folder of the swaps (default: --model, re-read)")
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="extra 'q2pt serve' argument (repeatable), e.g. --server-arg=--threads=2")
    ap.add_argument("--json", help="write all results to this JSON file")
    args = ap.parse_args(argv)

    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if not set(runtimes) <= {"torch", "onnx"} or not runtimes:
        ap.error("--runtimes: torch and/or onnx")
    manifest = json.loads((Path(args.model) / "manifest.json").read_text())
    items, source = query_pool(args.model)
    print(f"# q2pt serve latency: {manifest['variant']} model, encoder {manifest['encoder'].get('spec')}, "
          f"{len(manifest['labels'])} product types, {len(manifest['locales'])} locales")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average before "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; python {platform.python_version()}")
    print(f"queries: {source}; client: httpx.AsyncClient in this process, server: q2pt serve subprocess on {HOST}")
    print(f"server args: {' '.join(args.server_arg) or '(defaults: micro-batching on)'}\n")

    token = secrets.token_urlsafe(16)  # the admin route of the swap phase
    results: dict[str, Any] = {"model": args.model, "phases": [], "soak": None, "swap": None, "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="q2pt-bench-") as tmp:
        onnx_path = args.onnx
        if "onnx" in runtimes and not onnx_path:
            onnx_path = str(Path(tmp) / ("model.onnx" if manifest["variant"] != "non-unified" else "onnx"))
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "q2pt", "export", "onnx", "--model", args.model, "--out", onnx_path,
                            "--no-verify", "-q"], check=True, stdout=subprocess.DEVNULL)
            print(f"(exported the model to ONNX in {time.perf_counter() - t0:.1f} s)\n")
        for i, runtime in enumerate(runtimes):
            server = Server(args.model, runtime, onnx_path if runtime == "onnx" else None, args.server_arg,
                            Path(tmp) / f"server-{runtime}.log", env={"Q2PT_ADMIN_TOKEN": token})
            try:
                server.wait_ready()
                aio_run(run_phase(server.url, Phase(runtime, "warm-up", 8, 1, 0), items, args.warmup, args.max_requests))
                plan = [("single", args.concurrency, 1, 0.0)]
                if args.rate > 0:
                    plan.append(("single-paced", args.concurrency, 1, args.rate))
                plan.append(("batch", args.batch_concurrency, args.batch_size, 0.0))
                for name, conc, bs, rate in plan:
                    phase = measured(server, Phase(runtime, name, conc, bs, 0, rate), items, args.duration,
                                     args.max_requests)
                    results["phases"].append(phase.summary())
                    print(fmt_table([phase.summary()]).splitlines()[-1], flush=True)
                if i == 0 and args.soak_seconds > 0:
                    samples: list[tuple[float, float]] = [(0.0, server.rss_mb())]
                    phase = measured(server, Phase(runtime, "soak", args.concurrency, 1, 0), items, args.soak_seconds,
                                     10**9, on_tick=functools.partial(_sample_rss, samples, server),
                                     tick_every=args.soak_sample)
                    samples.append((phase.seconds, server.rss_mb()))
                    drift, verdict = memory_verdict(samples)
                    soak = phase.summary() | {
                        "rss_start_mb": samples[0][1], "rss_end_mb": samples[-1][1],
                        "rss_max_mb": max(s for _, s in samples), "rss_drift_second_half_mb": drift,
                        "memory_verdict": verdict, "rss_samples": samples,
                        "server_alive": server.proc.poll() is None,
                    }
                    results["soak"] = soak
                if i == 0 and args.swaps > 0:
                    models = [str(Path(args.model).resolve()), str(Path(args.swap_model or args.model).resolve())]
                    rate = args.rate or 4.0
                    phase = Phase(runtime, "swap", args.concurrency, 1, 0, rate)
                    swap = aio_run(run_swap_phase(server.url, phase, items, max(args.duration, 2.0 * args.swaps),
                                                  args.max_requests, models, args.swaps, token))
                    results["swap"] = phase.summary() | swap
            finally:
                server.stop()
    results["machine"]["loadavg_after"] = os.getloadavg()

    print("\n## Load (latency measured by the client, over HTTP on loopback)\n")
    print(fmt_table(results["phases"]))
    if results["soak"]:
        print(f"\n## Soak ({results['soak']['seconds']:.0f} s)\n")
        print(fmt_soak(results["soak"]))
    if results["swap"]:
        w = results["swap"]
        print(f"\n## Model swaps under load ({w['runtime']}, {w['concurrency']} clients at {w['offered_rps']:.0f} req/s "
              f"offered, {w['seconds']:.0f} s)\n")
        print("| | requests | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
        for name in ("during_swaps", "outside_swaps"):
            x = w[name]
            print(f"| {name.replace('_', ' ')} | {x['requests']} | {_ms(x['p50_ms'])} | {_ms(x['p99_ms'])} | "
                  f"{_ms(x['max_ms'])} |")
        times = ", ".join(f"{s['seconds']:.2f}" for s in w["swaps"])
        print(f"\n{len(w['swaps'])} swaps ({w['failed_swaps']} refused), each {times} s; "
              f"{w['errors']} failed requests ({w['server_errors']} 5xx) of {w['requests']}")
    print("\n## Targets\n")
    for r in results["phases"]:
        if r["phase"].startswith("single"):
            ok = r["p50_ms"] <= TARGETS["p50_ms"] and r["p99_ms"] <= TARGETS["p99_ms"]
            how = f"paced, {r['offered_rps']:.0f} req/s offered" if r.get("offered_rps") else "closed loop"
            print(f"- {r['runtime']} {r['phase']} @ {r['concurrency']} clients ({how}): p50 {r['p50_ms']:.2f} ms (target <= 5), "
                  f"p99 {r['p99_ms']:.2f} ms (target <= 20): {'met' if ok else 'NOT met'}")
        elif r["phase"] == "batch":
            ok = r["queries_per_s"] >= TARGETS["batch_qps"]
            print(f"- {r['runtime']} batched ({r['batch_size']}/request): {r['queries_per_s']:.0f} queries/s "
                  f"(target >= 1000): {'met' if ok else 'NOT met'}")
    if results["soak"]:
        s = results["soak"]
        print(f"- soak: {s['errors']} errors in {s['requests']} requests, memory {s['memory_verdict']}")
    if results["swap"]:
        w = results["swap"]
        ok = w["errors"] == 0 and w["failed_swaps"] == 0
        print(f"- swaps: {len(w['swaps'])} reloads, {w['errors']} failed / {w['server_errors']} 5xx requests "
              f"(target 0): {'met' if ok else 'NOT met'}")
    load = results["machine"]["loadavg_after"]
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in load)} (other processes on the machine skew the numbers)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    errors = sum(r["errors"] for r in results["phases"]) + (results["soak"]["errors"] if results["soak"] else 0)
    if results["swap"]:
        errors += results["swap"]["errors"] + results["swap"]["failed_swaps"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
