"""Dynamic micro-batching: concurrent requests share one forward pass.

Requests put their prepared item on a bounded queue and await a future. One worker takes the
first waiting item, collects more for at most `max_wait` seconds (or until `max_size`), and runs
the whole group through the model in a single call on a dedicated thread, so the event loop keeps
accepting requests meanwhile; requests that arrive during a forward pass form the next group.
The worker only waits for items it knows are coming (`prepare_and_submit` counts requests still in
preprocessing): a lone request never pays the wait. A full queue is back-pressure: `submit` raises
`Overloaded` at once instead of queueing forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

In = TypeVar("In")
Out = TypeVar("Out")
log = logging.getLogger("serving")


class Overloaded(Exception):
    """The batch queue is full: the caller should answer 503 and the client retry later."""


class MicroBatcher(Generic[In, Out]):
    def __init__(self, run: Callable[[Sequence[In]], Sequence[Out]], max_size: int = 32, max_wait: float = 0.002,
                 queue_size: int = 256):
        if max_size < 1 or max_wait < 0 or queue_size < 1:
            raise ValueError("max_size and queue_size must be >= 1 and max_wait >= 0")
        self.run = run
        self.max_size = max_size
        self.max_wait = max_wait
        self.queue_size = queue_size
        self._coming = 0  # requests being preprocessed, whose items will be submitted soon
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._worker = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._queue is not None:  # whoever still waits gets an answer
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(Overloaded("the service is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, item: In) -> Out:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded(f"more than {self.queue_size} predictions waiting") from None
        return await future

    async def prepare_and_submit(self, prepare: Callable[..., In], *args) -> Out:
        """`prepare(*args)` on a worker thread (its errors propagate), then `submit` its result. While it runs,
        the batcher knows one more item is coming and may wait for it."""
        self._coming += 1
        try:
            item = await run_in_threadpool(prepare, *args)
        finally:
            self._coming -= 1
        return await self.submit(item)  # no await in between: the count and the queue never disagree

    async def _collect(self) -> list:
        group = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(group) < self.max_size:
            if not self._queue.empty():
                group.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self._coming == 0:
                break
            try:
                group.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return group

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = await self._collect()
            group = [(item, future) for item, future in group if not future.done()]  # cancelled by the client
            if not group:
                continue
            try:
                outputs = await loop.run_in_executor(self._executor, self.run, [item for item, _ in group])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request, the worker lives on
                log.exception("batched prediction failed")
                outputs = [exc] * len(group)
            for (_, future), out in zip(group, outputs, strict=True):
                if future.done():
                    continue
                if isinstance(out, Exception):
                    future.set_exception(out)
                else:
                    future.set_result(out)
