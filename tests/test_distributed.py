"""DistributedDataParallel training (q2pt.distributed): sharding, the loss normalisation
that makes N ranks equal one process, and a real 2-process gloo run (torchrun) that is
interrupted, resumed with ``q2pt train --nproc 2 --resume`` and compared with a
single-process run at the same seed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from support import need

torch = need("torch")

from q2pt import distributed  # noqa: E402
from q2pt.errors import ConfigError  # noqa: E402

# Weights of a 2-process run differ from the single-process run only by the order of
# float additions (gradient all-reduce, per-rank partial sums). Measured on this
# project's machine: max |difference| 6e-8 after 21 Adam/SparseAdam steps, weights of
# magnitude ~0.1-0.3. The tolerance leaves room for other BLAS/thread set-ups.
WEIGHT_TOL = 1e-5

TYPES = {
    "shoes": ["shoe", "sneaker", "boot"],
    "shirt": ["shirt", "tee", "blouse"],
    "phone": ["phone", "mobile", "smartphone"],
    "tv": ["tv", "television", "screen"],
    "bag": ["bag", "purse", "backpack"],
    "watch": ["watch", "clock", "smartwatch"],
}
ADJ = ["red", "blue", "cheap", "new", "large", "small", "rot", "bleu", "grand", "neu"]


def make_split(n: int, seed: int) -> pd.DataFrame:
    """Handmade multi-label queries in 3 locales with unequal example weights."""
    r = random.Random(seed)
    rows = []
    names = sorted(TYPES)
    for i in range(n):
        t = r.choice(names)
        labels = [t] if r.random() < 0.8 else sorted({t, r.choice(names)})
        rows.append({
            "query": f"{r.choice(ADJ)} {r.choice(TYPES[t])} {seed}x{i}",
            "locale": r.choice(["de", "fr", "us"]),
            "product_types": labels,
            "weight": r.choice([0.5, 1.0, 1.0, 2.0]),
        })
    return pd.DataFrame(rows)


# 193 = 6 * 32 + 1 training rows: every epoch ends with a one-row batch, so one of the
# two ranks has no rows in that step (it must still step, on a zero-weight row).
N_TRAIN, BATCH = 193, 32
OVERRIDES = {
    "train.batch_size": BATCH,
    "train.max_epochs": 3,
    "train.checkpoint_every": 4,
    "train.threads": 1,
    "model.dropout": 0.0,  # dropout masks are drawn per rank: off for an exact comparison
    "model.encoder_options": {"dim": 16, "buckets": 4096},
    "train.name_examples": 0.0,  # the 193 rows alone (the type names would add rows to the last batch)
}


def cli_overrides() -> list[str]:
    out = []
    for key, value in OVERRIDES.items():
        out += [f"--{key}", json.dumps(value)]
    return out


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(distributed.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ----------------------------------------------------------------------------- unit


def test_shard_batch_partitions_every_global_batch():
    batch = np.array([7, 3, 9, 1, 4])
    shards = [distributed.shard_batch(batch, r, 2) for r in range(2)]
    assert shards[0].tolist() == [7, 9, 4] and shards[1].tolist() == [3, 1]
    three = [distributed.shard_batch(batch[:2], r, 3) for r in range(3)]
    assert [s.tolist() for s in three] == [[7], [3], []]  # fewer rows than ranks
    with pytest.raises(ValueError):
        distributed.shard_batch(batch, 2, 2)


def test_strip_nproc_and_torchrun_env(monkeypatch):
    argv = ["train", "--nproc", "2", "--out", "m", "--nproc=3", "--train.lr", "1"]
    assert distributed.strip_nproc(argv) == ["train", "--out", "m", "--train.lr", "1"]
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.torchrun_world() is None
    assert not distributed.launched_by_torchrun() and distributed.is_main_process()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.torchrun_world() == (1, 2, 1)
    assert distributed.launched_by_torchrun() and not distributed.is_main_process()


def test_nproc_with_missing_data_is_refused_before_any_process_starts(tmp_path, monkeypatch, capsys):
    from q2pt.cli import main

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    started: list = []
    monkeypatch.setattr(distributed, "launch", lambda *a, **k: started.append(a) or 0)
    code = main(["train", "--nproc", "2", "--data", str(tmp_path / "nope"), "--encoder", "ngram",
                 "--out", str(tmp_path / "m")])
    assert code == 2 and started == [] and capsys.readouterr().err.count("no such file or directory") == 1


def test_backend_choice():
    assert distributed.choose_backend("auto") == distributed.choose_backend("gloo") == "gloo"
    with pytest.raises(ConfigError, match="unknown"):
        distributed.choose_backend("nccl")  # training runs on the CPU: no CUDA backend


def test_other_ranks_log_errors_alone(monkeypatch):
    """Every rank reads the same data and config: a warning (a label map's unknown name, say) is
    said by rank 0 alone, not once per rank."""
    import logging

    import torch.distributed as dist

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # no process group: rank 0 is not here
    log = logging.getLogger("q2pt")
    level = log.level
    try:
        env = distributed.init_distributed()
        assert env.rank == 1 and not env.is_main
        assert not log.isEnabledFor(logging.WARNING) and log.isEnabledFor(logging.ERROR)
    finally:
        log.setLevel(level)  # (setLevel also clears the loggers' cached levels)


def test_single_process_env_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.session() as env:
        assert not env.distributed and env.is_main and env.world_size == 1
        env.barrier()
        assert env.broadcast_flag(True) is True
        with env.main_first():
            pass
        hooks = env.hooks()
        assert hooks.world_size == 1 and hooks.is_main
        assert hooks.shard(np.arange(4)).tolist() == [0, 1, 2, 3]


def test_two_rank_gradients_equal_the_single_process_gradient():
    """The loss normalisation, without processes: the mean of the two ranks' gradients
    (what DDP all-reduces) equals the gradient of the whole global batch, also for
    unequal example weights, locale dropout and a rank without rows."""
    from q2pt.config import resolve_config
    from q2pt.network import build_network
    from q2pt.training import prepare_split, train_step

    cfg = resolve_config(encoder="ngram", overrides={"model.encoder_options": {"dim": 8, "buckets": 512}, "model.dropout": 0.0})
    frame = make_split(40, 5)
    classes = sorted({x for row in frame["product_types"] for x in row})
    torch.manual_seed(0)
    net = build_network(cfg, classes, ["de", "fr", "us"])
    split = prepare_split(net.encoder, frame, classes, locale_aware=True, with_agnostic=True)
    weights = torch.from_numpy(split.weights)
    drop = np.random.default_rng(1).random(split.n) < 0.3

    def grads(batch, ranks):
        net.zero_grad(set_to_none=True)
        for r in range(ranks):  # no optimisers: the ranks' gradients add up in .grad
            train_step(net, [], split, batch, drop, split.targets, weights,
                        shard=lambda b, r=r: distributed.shard_batch(b, r, ranks), world_size=ranks)
        return {k: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone() / ranks
                for k, p in net.named_parameters()}

    for batch in (np.arange(3, 27), np.array([11])):  # a full batch; one row for two ranks
        single = grads(batch, 1)
        double = grads(batch, 2)
        for name in single:
            assert torch.allclose(single[name], double[name], atol=1e-7), name
    # a plain per-rank mean (no normalisation by the global batch weight) would differ
    ws = split.weights[np.arange(3, 27)]
    assert not np.isclose(ws[0::2].sum(), ws[1::2].sum())


# ----------------------------------------------------------------------------- 2 processes

PHASE1 = textwrap.dedent(
    """
    import os, sys
    from q2pt import distributed
    from q2pt.config import resolve_config
    from q2pt.data import load_dataset
    from q2pt.models import Q2PTModel

    data, out, stop_at, overrides = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    config = resolve_config(None, overrides, "ngram", flags={"data.path": data})

    def crash(stage, step):  # a crash right after step `stop_at` (every rank)
        if step == stop_at:
            os._exit(17)

    with distributed.session() as env:
        assert env.distributed and env.backend == "gloo", env
        with env.main_first():
            dataset = load_dataset(data)
        distributed.fit(Q2PTModel(config=config), dataset, env, out_dir=out, progress=False, after_step=crash)
    """
)


@pytest.mark.integration
def test_two_processes_match_one_and_resume(tmp_path):
    """torchrun with 2 gloo ranks, killed after step 10 (checkpoint at step 8), then
    ``q2pt train --nproc 2 --resume`` finishes it: the weights equal the uninterrupted
    single-process run's at the same seed (within WEIGHT_TOL)."""
    from safetensors.torch import load_file

    from q2pt.config import resolve_config
    from q2pt.data import load_dataset
    from q2pt.data.io import write_dataset
    from q2pt.models import Q2PTModel, load_model

    data = tmp_path / "data"
    write_dataset({"train": make_split(N_TRAIN, 1), "valid": make_split(60, 2), "test": make_split(30, 3)}, data)
    out = tmp_path / "model"
    script = tmp_path / "phase1.py"
    script.write_text(PHASE1)
    env = subprocess_env()

    crashed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(data), str(out), "10", *cli_overrides()],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert crashed.returncode != 0, crashed.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "last" / "state.json").read_text())
    assert state["loop"]["step"] == 8
    assert not (out / "manifest.json").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "q2pt", "train", "--nproc", "2", "--resume", "--data", str(data),
         "--encoder", "ngram", "--out", str(out), "--no-progress", *cli_overrides()],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("model saved to") == 1  # rank 0 alone reports and writes
    assert "2 processes, gloo" in resumed.stderr  # the log line of rank 0 (only)
    assert "resuming from" in resumed.stderr

    # the reference: one process, uninterrupted, same config and seed
    config = resolve_config(None, cli_overrides(), "ngram", flags={"data.path": str(data)})
    reference = Q2PTModel(config=config).fit(load_dataset(data), progress=False)
    ddp = load_model(out)
    assert ddp.manifest["training"]["*"]["steps"] == reference.manifest["training"]["*"]["steps"] == 21
    ref_state = reference.networks["*"].state_dict()
    saved = load_file(str(out / "model.safetensors"))
    assert set(saved) == set(ref_state)
    worst = max(float((saved[k] - ref_state[k]).abs().max()) for k in saved)
    assert worst < WEIGHT_TOL, f"max weight difference {worst:.3g}"
    queries, locales = ["red shoe 1", "neu tv 5"], ["de", "us"]
    assert np.allclose(ddp.predict_proba(queries, locales), reference.predict_proba(queries, locales), atol=1e-5)


@pytest.mark.slow
@pytest.mark.integration
def test_launcher_reports_a_worker_error_cleanly(tmp_path):
    """``q2pt train --nproc 2`` with bad data: rank 0's q2pt message and exit code, the other
    rank stops without a traceback, and torchrun's failure report is not shown."""
    done = subprocess.run(
        [sys.executable, "-m", "q2pt", "train", "--nproc", "2", "--encoder", "ngram",
         "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m")],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert "no such file or directory" in done.stderr
    assert "stopped: rank 0 of this job failed" in done.stderr
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr
