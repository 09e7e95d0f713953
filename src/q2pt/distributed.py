"""Data-parallel training with PyTorch DistributedDataParallel (DDP).

``torchrun --nproc-per-node N -m q2pt train ...`` (or ``q2pt train --nproc N``, which runs
torchrun for you) trains any variant on N processes:

* one **gloo** process group per run (q2pt trains on the CPU; there is no device option,
  so no CUDA/NCCL path);
* every optimiser step takes one *global* batch of ``train.batch_size`` rows of the epoch's
  permutation (the same on every rank: it is drawn from the seed) and each rank keeps its
  stride of it (:func:`shard_batch`: ``batch[rank::world_size]``). The training loop
  normalises a rank's loss by the weight of the whole global batch times the world size,
  so DDP's gradient *averaging* gives exactly the gradient of the single-process global
  batch: an N-process run follows the single-process run up to the order of float
  additions (see ``docs/scale.md`` for the measured difference and the tolerance the
  tests use). Model dropout masks are drawn per rank, so with ``model.dropout > 0`` runs
  agree statistically, not to the float;
* only rank 0 writes checkpoints, the model folder and log lines (the other ranks log errors
  alone: their warnings, of the same data and config, would repeat rank 0's); every rank reads the
  same checkpoint on ``--resume`` (a shared file system is assumed) and the early-stopping
  decision is rank 0's, broadcast to the others;
* sparse embedding gradients (the ``ngram`` encoder's default, ``use`` with
  ``embedding="sparse"``) are all-reduced by gloo.

The process group never exists in a plain (non-torchrun) process: :func:`session` yields
a single-process :class:`DistEnv` there, and everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from q2pt.errors import ConfigError, Q2PTError, require

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.data import Dataset
    from q2pt.models import Q2PTModel
    from q2pt.training import TrainHooks

logger = logging.getLogger(__name__)

__all__ = [
    "DistEnv",
    "choose_backend",
    "fit",
    "init_distributed",
    "is_main_process",
    "launch",
    "launched_by_torchrun",
    "session",
    "shard_batch",
    "strip_nproc",
    "teardown",
    "torchrun_world",
]

BACKENDS = ("auto", "gloo")


# ----------------------------------------------------------------------------- environment


def torchrun_world() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets, or None."""
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        return None
    if world < 1 or not 0 <= rank < world:
        return None
    return rank, world, local


def launched_by_torchrun() -> bool:
    """Whether this process is one of several workers started by torchrun."""
    world = torchrun_world()
    return world is not None and world[1] > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or any process outside one (read from the environment,
    so it answers before the process group exists)."""
    world = torchrun_world()
    return world is None or world[0] == 0


def shard_batch(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's rows of one global batch: its stride ``batch[rank::world_size]``.

    The strides of the ranks partition the batch; a rank may get no rows when the batch
    (the last of an epoch) has fewer rows than there are ranks.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} of world size {world_size}")
    return np.asarray(batch)[rank::world_size]


def choose_backend(requested: str = "auto") -> str:
    """The process-group backend: gloo ("auto" is gloo; training runs on the CPU)."""
    if requested not in BACKENDS:
        raise ConfigError(f"unknown distributed backend {requested!r} (choose one of {', '.join(BACKENDS)})")
    return "gloo"


# ----------------------------------------------------------------------------- the process group


class PeerFailedError(Q2PTError):
    """Another rank of the job failed; this one stops (the failed rank reports why)."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a (possibly single-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (a single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None and self.world_size > 1


    def barrier(self) -> None:
        """Wait until every rank is here (no-op for one process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (a tensor broadcast; no pickling)."""
        if not self.distributed:
            return bool(flag)
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.broadcast(value, src=0)
        return bool(value.item())

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on rank 0 first, then on the others (e.g. filling a shared cache).

        If the block fails on rank 0, the other ranks do not run it: they stop with a
        :class:`PeerFailedError` (rank 0 reports the error itself).
        """
        if not self.distributed:
            yield
            return
        if self.is_main:
            try:
                yield
            except BaseException:
                self.broadcast_flag(False)
                raise
            self.broadcast_flag(True)
        else:
            if not self.broadcast_flag(False):
                raise PeerFailedError("stopped: rank 0 of this job failed (its message says why)")
            yield

    def hooks(self, *, find_unused_parameters: bool | None = None) -> "TrainHooks":
        """:class:`~q2pt.training.TrainHooks` for this rank (plain hooks for one process).

        ``find_unused_parameters`` (DDP's option) None: on for encoders with parameters
        that take no part in the forward pass (``hf`` models' unused pooler), off otherwise.
        """
        from q2pt.training import TrainHooks

        if not self.distributed:
            return TrainHooks()
        rank, world = self.rank, self.world_size
        return TrainHooks(
            wrap_model=lambda net: self.wrap(net, find_unused_parameters=find_unused_parameters),
            shard=lambda batch: shard_batch(batch, rank, world),
            is_main=self.is_main,
            sync_stop=self.broadcast_flag,
            world_size=world,
        )

    def wrap(self, net: Any, *, find_unused_parameters: bool | None = None) -> Any:
        """``DistributedDataParallel(net)`` (checks that the backend can reduce its gradients)."""
        from torch.nn.parallel import DistributedDataParallel

        encoder = getattr(net, "encoder", None)
        if find_unused_parameters is None:
            find_unused_parameters = getattr(encoder, "kind", None) == "hf"
        return DistributedDataParallel(net, find_unused_parameters=find_unused_parameters)


def init_distributed(backend: str = "auto", *, timeout_s: float = 1800.0) -> DistEnv:
    """Join the torchrun job this process belongs to (a single-process env outside one).

    Reads RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (set by torchrun), creates
    the default (gloo) process group. Non-main ranks log only errors.
    """
    world = torchrun_world()
    if world is None or world[1] == 1:
        return DistEnv()
    require("torch", "torch")
    import torch.distributed as dist

    rank, size, local = world
    chosen = choose_backend(backend)
    if not dist.is_available():  # pragma: no cover - every supported torch build has it
        raise ConfigError("this PyTorch build has no torch.distributed support")
    if not dist.is_initialized():
        dist.init_process_group(chosen, rank=rank, world_size=size, timeout=timedelta(seconds=timeout_s))
    if rank != 0:  # every rank reads the same data and config: their warnings are rank 0's, said once
        logging.getLogger("q2pt").setLevel(logging.ERROR)
    return DistEnv(rank=rank, world_size=size, local_rank=local, backend=chosen)


def teardown(env: DistEnv | None = None) -> None:
    """Leave the process group (after a barrier, so that rank 0's last writes are done)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        try:
            if env is not None:
                env.barrier()
        finally:
            dist.destroy_process_group()


@contextlib.contextmanager
def session(backend: str = "auto") -> Iterator[DistEnv]:
    """``with session() as env:`` -- the process group for the block (if torchrun started
    this process with WORLD_SIZE > 1), torn down afterwards; a single-process env otherwise."""
    env = init_distributed(backend)
    ok = False
    try:
        yield env
        ok = True
    finally:
        if env.distributed:
            if ok:
                teardown(env)
            else:  # another rank may wait in a collective forever: leave without the barrier
                teardown(None)


# ----------------------------------------------------------------------------- training


def checkpoint_exists(out_dir: str | Path | None) -> bool:
    """Whether ``out_dir`` holds training checkpoints to resume from."""
    return out_dir is not None and (Path(out_dir) / "checkpoints" / "run.json").is_file()


def fit(
    model: "Q2PTModel",
    dataset: "Dataset",
    env: DistEnv | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    find_unused_parameters: bool | None = None,
    after_step: Callable[[str, int], None] | None = None,
    warm_start: Any = None,
) -> "Q2PTModel":
    """Train ``model`` on this rank's share of ``dataset`` (plain ``model.fit`` for one process).

    Every rank calls this with the same model config and dataset. Whether to resume is
    decided once, before anyone writes: each rank sees whether ``out_dir`` holds a
    checkpoint, and rank 0's answer is used by all. ``after_step(stage, step)`` is called
    on every rank after each optimiser step (see :class:`~q2pt.training.TrainHooks`).
    ``warm_start``: a :class:`~q2pt.training.warm.WarmStart` (every rank loads the parent).
    """
    env = env or DistEnv()
    if not env.distributed:
        hooks = None
        if after_step is not None:
            hooks = env.hooks()
            hooks.after_step = after_step
        return model.fit(dataset, out_dir=out_dir, resume=resume, progress=progress, hooks=hooks,
                         warm_start=warm_start, overwrite=overwrite)
    if out_dir is not None:  # every rank refuses alike, before any collective (one rank alone would hang the rest)
        from q2pt.model_folder import check_train_target

        check_train_target(Path(out_dir), resume=resume, overwrite=overwrite, probe_lock=False)
    env.barrier()  # nobody writes before every rank has looked at out_dir
    resume_now = env.broadcast_flag(bool(resume) and checkpoint_exists(out_dir))
    if resume and not resume_now and env.is_main:
        logger.warning("no checkpoint in %s: training from the start", Path(str(out_dir)) / "checkpoints")
    hooks = env.hooks(find_unused_parameters=find_unused_parameters)
    hooks.after_step = after_step
    model.fit(dataset, out_dir=out_dir, resume=resume_now, progress=progress and env.is_main, hooks=hooks,
              warm_start=warm_start, overwrite=overwrite)
    env.barrier()  # rank 0 has saved the model folder
    return model


# ----------------------------------------------------------------------------- launcher


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what the torchrun workers get)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        out.append(arg)
    return out


def launch(
    nproc: int,
    args: Sequence[str],
    *,
    module: str = "q2pt",
    threads_per_process: int | None = None,
) -> int:
    """Run ``python -m {module} {args}`` on ``nproc`` local processes with torchrun
    (``torch.distributed.run --standalone``, in this process) and return an exit code:
    0, or the exit code of the first worker that failed (its own ``q2pt:`` message has
    been printed by it; torchrun's failure report is reduced to one line).

    ``threads_per_process``: torch intra-op threads of each worker (OMP_NUM_THREADS);
    default: the CPU cores shared out, at least 1.
    """
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc!r}")
    require("torch", "torch")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    threads = threads_per_process or max(1, (os.cpu_count() or 1) // nproc)
    saved_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the workers
    torchrun_args = ["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc), "-m", module, *args]
    parsed = get_args_parser().parse_args(torchrun_args)
    elastic_logger = logging.getLogger("torch.distributed.elastic")
    level = elastic_logger.level
    elastic_logger.setLevel(logging.CRITICAL)  # its banners and failure report: we print one line
    try:
        run(parsed)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        if code < 0:
            print(f"q2pt: training worker {rank} was killed by signal {-code}", file=sys.stderr)
            return 1
        if code not in (1, 2, 3, 4):  # q2pt's own exit codes have printed their message
            print(f"q2pt: training worker {rank} failed with exit code {code}", file=sys.stderr)
        return code or 1
    except SignalException as exc:  # Ctrl-C / SIGTERM: torchrun has stopped the workers
        print(f"q2pt: interrupted ({exc.sigval.name})", file=sys.stderr)
        return 130
    finally:
        elastic_logger.setLevel(level)
        if saved_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved_threads
    return 0
