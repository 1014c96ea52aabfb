"""The front service's call merging (partseg.serve.Coalescer), without a server: grouping, order of results,
errors and cancellation. The HTTP tests (test_serve.py) check that masks over HTTP still equal the runtime's."""

from __future__ import annotations

import asyncio

import pytest

from partseg.serve import Coalescer


def run(coro):
    return asyncio.run(coro)


def test_requests_arriving_during_a_call_share_the_next_one():
    groups: list[list[int]] = []

    async def main():
        release = asyncio.Event()

        async def call(xs: list[int]) -> list[int]:
            groups.append(list(xs))
            await release.wait()
            return [x * 10 for x in xs]

        co = Coalescer(call, max_items=4, max_in_flight=1)
        tasks = [asyncio.create_task(co(i)) for i in range(10)]
        await asyncio.sleep(0.01)
        assert groups == [[0]]  # the first is sent at once, the rest wait for it
        release.set()
        return await asyncio.gather(*tasks), co.calls

    results, calls = run(main())
    assert results == [i * 10 for i in range(10)]  # each request gets its own result back
    assert groups == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert calls == 4


def test_a_lone_request_is_not_delayed():
    async def main():
        async def call(xs):
            return [x + 1 for x in xs]

        co = Coalescer(call, max_items=16)
        return await asyncio.wait_for(co(1), 1.0), co.calls

    assert run(main()) == (2, 1)


def test_an_error_reaches_every_request_of_its_call_and_the_next_calls_work():
    async def main():
        fail = True

        async def call(xs):
            await asyncio.sleep(0.01)
            if fail:
                raise ConnectionError("model service gone")
            return xs

        co = Coalescer(call, max_items=8, max_in_flight=1)
        first = await asyncio.gather(*(co(i) for i in range(5)), return_exceptions=True)
        fail = False
        second = await asyncio.gather(*(co(i) for i in range(3)))
        return first, second

    first, second = run(main())
    assert all(isinstance(e, ConnectionError) for e in first)
    assert second == [0, 1, 2]


def test_a_cancelled_request_leaves_the_others_their_results():
    async def main():
        async def call(xs):
            await asyncio.sleep(0.02)
            return [-x for x in xs]

        co = Coalescer(call, max_items=8, max_in_flight=1)
        tasks = [asyncio.create_task(co(i)) for i in range(4)]
        await asyncio.sleep(0)
        tasks[2].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = run(main())
    assert out[0] == 0 and out[1] == -1 and out[3] == -3
    assert isinstance(out[2], asyncio.CancelledError)


def test_a_call_answering_the_wrong_number_of_results_is_an_error():
    async def main():
        async def call(xs):
            return xs[:-1]

        co = Coalescer(call, max_items=4, max_in_flight=1)
        return await asyncio.gather(co(1), co(2), return_exceptions=True)

    out = run(main())
    assert all(isinstance(e, RuntimeError) and "returned 0 results for 1 inputs" in str(e) for e in out)


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_items"):
        Coalescer(lambda xs: xs, max_items=0)
