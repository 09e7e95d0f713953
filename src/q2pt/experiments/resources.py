"""Measuring what training costs: wall time, CPU time, peak memory, size on disk; the machine.

Peak memory
-----------
``tracemalloc`` sees only Python's allocator, not PyTorch's or fastText's native buffers, so
memory is measured as the process's **resident set size** (RSS): a background thread reads
it every ``interval`` seconds (``/proc/self/statm`` on Linux, ``psutil`` elsewhere when
installed) while the measured block runs. The figure reported is the *peak RSS increase*:
the highest RSS seen during the block minus the RSS just before it (after a garbage
collection and, with glibc, ``malloc_trim(0)`` so that memory freed by earlier runs is
returned to the system first). Without either source the fallback is ``getrusage``'s
``ru_maxrss`` (the process's lifetime peak), whose increase understates a block that peaks
below an earlier one; the result says which method was used.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["PeakMemory", "Measured", "measure", "dir_size", "machine_info", "MEMORY_METHOD"]

MEMORY_METHOD = (
    "peak resident set size (RSS) during the step minus the RSS just before it, sampled every "
    "20 ms by a background thread (/proc/self/statm), in the experiment's own process after "
    "garbage collection and malloc_trim; includes tokenisation, the model(s) and optimiser state"
)


def _rss_reader() -> tuple[Callable[[], int] | None, str]:
    """A function returning the current RSS in bytes, and the method's name."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        page = os.sysconf("SC_PAGE_SIZE")

        def read_statm() -> int:
            with open(statm, "rb") as f:
                return int(f.read().split()[1]) * page

        try:
            read_statm()
            return read_statm, "rss-sampling:/proc/self/statm"
        except (OSError, ValueError, IndexError):  # pragma: no cover
            pass
    try:  # pragma: no cover - not Linux
        import psutil

        proc = psutil.Process()
        return (lambda: int(proc.memory_info().rss)), "rss-sampling:psutil"
    except ImportError:  # pragma: no cover
        return None, "ru_maxrss-delta"


def _maxrss_bytes() -> int:
    """The process's lifetime peak RSS (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system (glibc only)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass


@dataclass
class Measured:
    """What :class:`PeakMemory` / :func:`measure` recorded for one block."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_before_bytes: int = 0
    peak_rss_bytes: int = 0
    method: str = ""
    samples: int = 0

    @property
    def peak_increase_bytes(self) -> int:
        return max(0, self.peak_rss_bytes - self.rss_before_bytes)

    def as_dict(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_seconds": round(self.wall_seconds, 3),
            f"{prefix}_cpu_seconds": round(self.cpu_seconds, 3),
            f"{prefix}_peak_rss_increase_mb": round(self.peak_increase_bytes / 2**20, 1),
            f"{prefix}_peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
            f"{prefix}_memory_method": self.method,
        }


@dataclass
class PeakMemory:
    """Context manager measuring wall time, CPU time and peak RSS of a block (see the module doc)."""

    interval: float = 0.02
    result: Measured = field(default_factory=Measured)

    def __enter__(self) -> "PeakMemory":
        release_memory()
        self._read, method = _rss_reader()
        self.result = Measured(method=method)
        self._stop = threading.Event()
        if self._read is not None:
            self.result.rss_before_bytes = self._read()
            self.result.peak_rss_bytes = self.result.rss_before_bytes
            self._thread = threading.Thread(target=self._sample, name="q2pt-rss", daemon=True)
            self._thread.start()
        else:  # pragma: no cover
            self.result.rss_before_bytes = _maxrss_bytes()
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def _sample(self) -> None:
        assert self._read is not None
        while not self._stop.wait(self.interval):
            self._observe()

    def _observe(self) -> None:
        assert self._read is not None
        try:
            rss = self._read()
        except (OSError, ValueError):  # pragma: no cover
            return
        self.result.samples += 1
        if rss > self.result.peak_rss_bytes:
            self.result.peak_rss_bytes = rss

    def __exit__(self, *exc: Any) -> None:
        self.result.wall_seconds = time.perf_counter() - self._t0
        self.result.cpu_seconds = time.process_time() - self._c0
        if self._read is not None:
            self._stop.set()
            self._thread.join()
            self._observe()
        else:  # pragma: no cover
            self.result.peak_rss_bytes = _maxrss_bytes()


def measure(fn: Callable[[], Any], interval: float = 0.02) -> tuple[Any, Measured]:
    """Run ``fn()`` under :class:`PeakMemory`; return its result and the measurements."""
    with PeakMemory(interval) as pm:
        value = fn()
    return value, pm.result


def dir_size(path: str | os.PathLike, *, exclude: tuple[str, ...] = ()) -> int:
    """Total bytes of the regular files under ``path`` (skipping top-level names in ``exclude``)."""
    root = Path(path)
    total = 0
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if rel and rel[0] in exclude:
            continue
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # pragma: no cover
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, OS and library versions of the machine running the experiment."""
    from q2pt import __version__

    cores_available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "q2pt_version": __version__,
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": cores_available,
        "memory_gb": None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname_hash": None,
    }
    mem = _memory_total()
    if mem:
        info["memory_gb"] = round(mem / 2**30, 1)
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    info.pop("hostname_hash")
    return info
