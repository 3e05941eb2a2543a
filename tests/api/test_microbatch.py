"""The micro-batcher on its own: grouping, size cap, no needless waiting, back-pressure, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.microbatch import MicroBatcher, Overloaded


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


class Model:
    """Doubles its inputs and records each call's group; `gate` can hold a call to fill the queue."""

    def __init__(self):
        self.calls: list[list] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items):
        self.gate.wait(10)
        self.calls.append(list(items))
        if any(i == "boom" for i in items):
            raise RuntimeError("model failed")
        return [ValueError(f"bad {i}") if i == "bad" else i * 2 for i in items]


async def started(model, **kw) -> MicroBatcher:
    batcher = MicroBatcher(model, **kw)
    await batcher.start()
    return batcher


def test_concurrent_submissions_share_one_call_in_order():
    async def scenario():
        model = Model()
        batcher = await started(model, max_size=32, max_wait=0.5)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return model, results

    model, results = run(scenario())
    assert results == [i * 2 for i in range(10)]
    assert model.calls == [list(range(10))]


def test_groups_never_exceed_max_size():
    async def scenario():
        model = Model()
        batcher = await started(model, max_size=4, max_wait=0.5)
        await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return model

    sizes = [len(c) for c in run(scenario()).calls]
    assert sum(sizes) == 10 and max(sizes) == 4


def test_lone_request_does_not_wait_for_company():
    """max_wait is 60 s: a batcher that waited for it would hit the 30 s test timeout."""
    async def scenario():
        batcher = await started(Model(), max_size=32, max_wait=60)
        result = await batcher.prepare_and_submit(lambda x: x + 1, 20)
        await batcher.stop()
        return result

    assert run(scenario()) == 42


def test_waits_for_items_still_being_prepared():
    async def scenario():
        model = Model()
        batcher = await started(model, max_size=32, max_wait=10)

        def slow_prepare(i):
            time.sleep(0.02 * i)  # staggered: the first is ready long before the last
            return i

        results = await asyncio.gather(*(batcher.prepare_and_submit(slow_prepare, i) for i in range(5)))
        await batcher.stop()
        return model, results

    model, results = run(scenario())
    assert results == [0, 2, 4, 6, 8]
    assert [len(c) for c in model.calls] == [5]


def test_full_queue_is_overloaded_at_once():
    async def scenario():
        model = Model()
        model.gate.clear()  # the first call blocks, so later items pile up
        batcher = await started(model, max_size=1, max_wait=0, queue_size=2)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.1)  # taken by the worker, blocked in the model
        queued = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.submit(4)
        model.gate.set()
        results = [await first, *[await q for q in queued]]
        await batcher.stop()
        return results

    assert run(scenario()) == [2, 4, 6]


def test_errors_reach_their_callers_and_the_worker_lives_on():
    async def scenario():
        model = Model()
        batcher = await started(model, max_size=8, max_wait=0.2)
        outcomes = await asyncio.gather(batcher.submit(1), batcher.submit("bad"), return_exceptions=True)
        crashed = await asyncio.gather(batcher.submit("boom"), batcher.submit(2), return_exceptions=True)
        after = await batcher.submit(5)
        failing_prepare = batcher.prepare_and_submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            await failing_prepare
        await batcher.stop()
        return outcomes, crashed, after

    outcomes, crashed, after = run(scenario())
    assert outcomes[0] == 2 and isinstance(outcomes[1], ValueError)
    assert all(isinstance(c, RuntimeError) for c in crashed)
    assert after == 10
