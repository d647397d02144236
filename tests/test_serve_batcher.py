"""The micro-batcher alone: batches fill up to ``max_batch`` items and, with a weight, up to ``max_weight``."""

from __future__ import annotations

import asyncio

import pytest

from dualist.serving.batcher import MicroBatcher


def _run(items, **kwargs):
    calls: list[list[int]] = []

    def fn(batch):
        calls.append(list(batch))
        return [x * 10 for x in batch]

    async def main():
        b = MicroBatcher(fn, max_wait_ms=50, **kwargs)
        b.start()
        out = await asyncio.gather(*(b.submit(x) for x in items))
        await b.close()
        return out

    return asyncio.run(main()), calls


def test_batches_are_capped_by_count():
    out, calls = _run(list(range(7)), max_batch=3)
    assert out == [x * 10 for x in range(7)]
    assert [len(c) for c in calls] == [3, 3, 1]


def test_batches_are_capped_by_weight_and_an_item_that_does_not_fit_waits_for_the_next():
    # weights 5, 2, 2, 4, 9, 1 under a cap of 8: [5, 2] (5+2+2 > 8), [2, 4], [9] alone (heavier than the
    # cap, never split or refused), [1]; order and results are kept
    items = [5, 2, 2, 4, 9, 1]
    out, calls = _run(items, max_batch=32, max_weight=8, weight=lambda x: x)
    assert out == [x * 10 for x in items]
    assert calls == [[5, 2], [2, 4], [9], [1]]
    assert all(sum(c) <= 8 for c in calls if len(c) > 1)


def test_weight_needs_both_arguments():
    with pytest.raises(ValueError, match="max_weight"):
        MicroBatcher(lambda xs: xs, max_weight=8)
    with pytest.raises(ValueError, match="max_weight"):
        MicroBatcher(lambda xs: xs, weight=len, max_weight=0)
