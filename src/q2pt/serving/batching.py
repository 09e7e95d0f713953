"""Micro-batching of concurrent single-query requests, and the one inference thread.

Under concurrent load most of a single query's cost is per-call overhead (tokenizer call,
graph launch, small matrix products). :class:`MicroBatcher` collects the single-query
requests that arrive while the previous batch is being computed (plus, optionally, those
arriving within ``max_wait_s`` of the first one), runs them as one batch and hands each
request its row. At low load a request is computed at once (no added wait with the default
``max_wait_s=0``); at high load batches grow by themselves up to ``max_batch``.

All inference (micro-batches and ``/v1/predict/batch`` requests) runs on one worker thread
(:class:`InferenceExecutor`) so the event loop stays free to accept requests and the
runtime is never called concurrently (PyTorch and ONNX Runtime use their own intra-op
threads).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class InferenceExecutor:
    """One worker thread for every model call of the server."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="q2pt-infer")

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future = field(repr=False)


class MicroBatcher(Generic[T, R]):
    """Gathers items submitted concurrently and computes them in batches.

    ``fn(items) -> results`` (one result per item, same order) runs on ``executor``.
    ``submit`` raises whatever ``fn`` raised for the batch holding the item.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        executor: InferenceExecutor,
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn = fn
        self._executor = executor
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self._queue: asyncio.Queue[_Pending[T]] | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        """Start the gathering task on the running event loop."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="q2pt-microbatcher")

    async def stop(self) -> None:
        """Stop gathering; pending items get a RuntimeError."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                p = self._queue.get_nowait()
                if not p.future.done():
                    p.future.set_exception(RuntimeError("server shutting down"))

    async def submit(self, item: T) -> R:
        if self._queue is None or self._task is None:
            raise RuntimeError("MicroBatcher is not started")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(item, fut))
        return await fut

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            batch = [first]
            if self.max_wait_s > 0 and queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.max_wait_s)
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [p for p in batch if not p.future.done()]  # cancelled: client went away
            if not batch:
                continue
            try:
                results = await self._executor.run(self._fn, [p.item for p in batch])
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(RuntimeError("server shutting down"))
                raise
            except Exception as exc:  # handed to every waiting request
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for p, r in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(r)
