"""Engine handles -> OpenAI stream chunks (built by llm_runtime.openai.reply; the JSON reply folds them)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from llm_runtime.completion import Chunk
from llm_runtime.openai.reply import ReplyStream

from .metrics import Metrics


async def merged(handles) -> AsyncIterator[tuple[int, Chunk]]:
    """(choice index, chunk) from every handle as they arrive. Leaving early (a client gone, an error)
    cancels every request in the engine, which frees their slots at once."""
    if len(handles) == 1:  # the common case needs no pump task and no second queue
        try:
            async for chunk in handles[0]:
                yield 0, chunk
        finally:
            handles[0].cancel()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i, h):
        try:
            async for chunk in h:
                queue.put_nowait((i, chunk))
            queue.put_nowait((i, None))
        except Exception as e:  # handed to the consumer
            queue.put_nowait((i, e))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        live = len(handles)
        while live:
            i, item = await queue.get()
            if item is None:
                live -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for h in handles:  # before the pumps stop iterating: a handle that stopped iterating counts as done
            h.cancel()
        for t in tasks:
            t.cancel()


async def openai_chunks(handles, reply: ReplyStream, metrics: Metrics, start: float) -> AsyncIterator[dict]:
    """OpenAI stream chunks of `handles` (choice i is handles[i]) as `reply` builds them, timing each token.
    `start`: the request's arrival (perf_counter)."""
    for c in reply.start():
        yield c
    last = {}
    async for i, chunk in merged(handles):
        if chunk.token_ids:
            now = time.perf_counter()
            metrics.token_times(now - last.get(i, start), first=i not in last, count=len(chunk.token_ids))
            last[i] = now
        for c in reply.add(i, chunk):
            yield c
    for c in reply.end():
        yield c
