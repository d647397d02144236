"""Micro-batching: concurrent requests gathered into one model call.

A request coroutine :meth:`MicroBatcher.submit`\\ s its item and awaits the result. One worker task
takes the first waiting item, waits at most ``max_wait_ms`` for more (and takes everything already
queued), up to ``max_batch`` items (and, given a ``weight``, up to ``max_weight`` in total: a
request that would overflow the batch opens the next one), and runs ``fn(items) -> results`` once on the model's executor
thread. While a batch runs, new requests queue up and form the next batch, so under load batches
fill by themselves and the wait only matters when the server is nearly idle.

>>> import asyncio
>>> sizes = []
>>> def double(items):
...     sizes.append(len(items))
...     return [2 * x for x in items]
>>> async def main():
...     b = MicroBatcher(double, max_batch=8, max_wait_ms=20)
...     b.start()
...     out = await asyncio.gather(*(b.submit(i) for i in range(5)))
...     await b.close()
...     return out
>>> asyncio.run(main()), sizes
([0, 2, 4, 6, 8], [5])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

__all__ = ["MicroBatcher", "BatcherClosed"]

logger = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


class MicroBatcher:
    """Gather concurrent :meth:`submit` calls into batches for ``fn``.

    Args:
        fn: ``fn(items) -> results``, one result per item, in order; runs on ``executor``.
        max_batch: most items per call.
        max_wait_ms: how long the first item of a batch waits for company (0 = only what is queued).
        executor: where ``fn`` runs (None: the loop's default executor). Give the one thread that owns
            the model, so model calls never overlap.
        on_batch: called with each batch's size (metrics).
        max_weight, weight: with both, a batch also holds at most ``max_weight`` in ``weight(item)``
            (e.g. the query-document pairs of re-rank requests): an item that would overflow it waits
            for the next batch, and an item heavier than ``max_weight`` runs alone.
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32, max_wait_ms: float = 2.0,
                 executor: Executor | None = None, on_batch: Callable[[int], None] | None = None,
                 max_weight: int | None = None, weight: Callable[[Any], int] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if (weight is None) != (max_weight is None) or (max_weight is not None and max_weight < 1):
            raise ValueError(f"give both weight and max_weight >= 1, or neither (got max_weight={max_weight!r}, "
                             f"weight={'set' if weight is not None else None})")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn, self.max_batch, self.max_wait = fn, int(max_batch), max_wait_ms / 1000.0
        self.executor, self.on_batch = executor, on_batch
        self.max_weight, self.weight = max_weight, weight
        self._held: tuple[Any, asyncio.Future] | None = None  # taken from the queue, opens the next batch
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="dualist-microbatcher")

    @property
    def pending(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def submit(self, item: Any) -> Any:
        """Queue ``item`` and wait for its result (``fn``'s exception is raised here too)."""
        if self._closing or self._queue is None:
            raise BatcherClosed("the server is shutting down")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def close(self) -> None:
        """Finish everything queued, then stop the worker."""
        self._closing = True
        if self._task is None:
            return
        if self._queue is not None:
            await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        if self._held is not None:
            batch, self._held = [self._held], None
        else:
            batch = [await self._queue.get()]
        load = self._weigh(batch[0])
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                entry = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    entry = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            w = self._weigh(entry)
            if self.max_weight is not None and load + w > self.max_weight:
                self._held = entry  # would overflow this batch: it opens the next one
                break
            batch.append(entry)
            load += w
        return batch

    def _weigh(self, entry: tuple[Any, asyncio.Future]) -> int:
        return 0 if self.weight is None else int(self.weight(entry[0]))

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # drop requests whose client left
            try:
                if live:
                    if self.on_batch is not None:
                        self.on_batch(len(live))
                    results = await loop.run_in_executor(self.executor, self.fn, [item for item, _ in live])
                    if len(results) != len(live):
                        raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
                    for (_, fut), res in zip(live, results):
                        if not fut.done():
                            fut.set_result(res)
            except Exception as exc:  # one failure fails its batch, never the worker
                logger.exception("batch of %d failed", len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()
