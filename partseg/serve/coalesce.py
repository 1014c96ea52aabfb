"""Merging the front service's concurrent model calls into fewer, larger ones.

Each HTTP call from the front to the model service costs both processes about as much CPU as the network's work on
a 64 px face (HTTP client and server, BentoML's dispatch and tracing, the event loops: benchmarks/serve_profile.py),
and BentoML's adaptive batching only merges requests after each one has paid for its own call. So the front sends
at most `max_in_flight` calls at once; the requests that arrive meanwhile wait here and go together in the next call
(up to `max_items` each), the moment a call returns. No timer: a lone request is sent at once, and under load the
calls grow as large as the model service is slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`await coalescer(item)` -> that item's result from `call(items)`, which takes and returns lists of equal
    length. A call that raises raises in every request it carried; a request cancelled while waiting is dropped
    from its call's answer only."""

    def __init__(self, call: Callable[[list[T]], Awaitable[list[R]]], max_items: int, max_in_flight: int = 2):
        if max_items < 1 or max_in_flight < 1:
            raise ValueError(f"max_items and max_in_flight must be >= 1, got {max_items}, {max_in_flight}")
        self.call = call
        self.max_items = int(max_items)
        self.max_in_flight = int(max_in_flight)
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0  # calls made, for tests and metrics

    async def __call__(self, item: T) -> R:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        while self._pending and self._in_flight < self.max_in_flight:
            group = [(x, f) for x, f in self._pending[:self.max_items] if not f.done()]
            del self._pending[:self.max_items]
            if not group:
                continue
            self._in_flight += 1
            self.calls += 1
            task = asyncio.ensure_future(self._run(group))
            self._tasks.add(task)  # a reference, so the task is not collected while it runs
            task.add_done_callback(self._tasks.discard)

    async def _run(self, group: list[tuple[T, asyncio.Future]]) -> None:
        try:
            try:
                out = await self.call([x for x, _ in group])
                if len(out) != len(group):
                    raise RuntimeError(f"the model call returned {len(out)} results for {len(group)} inputs")
            except asyncio.CancelledError:
                for _, f in group:
                    f.cancel()
                raise
            except Exception as e:  # noqa: BLE001 - handed to every waiting request, which raises it
                for _, f in group:
                    if not f.done():
                        f.set_exception(e)
                return
            for (_, f), y in zip(group, out, strict=True):
                if not f.done():
                    f.set_result(y)
        finally:
            self._in_flight -= 1
            self._dispatch()
