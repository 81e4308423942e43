"""Engine chunks -> OpenAI stream chunks; the non-streaming reply is a fold over the same chunks."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from llm_runtime.completion import Chunk
from llm_runtime.openai_format import chat_logprobs, new_id, text_logprobs

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


async def openai_chunks(handles, chat: bool, model: str, include_usage: bool, metrics: Metrics,
                        prompt_tokens: int, start: float) -> AsyncIterator[dict]:
    """OpenAI stream chunks: the role first (chat), content deltas, finish_reason on each choice's last
    content chunk, then a usage chunk with no choices. `start`: the request's arrival (perf_counter)."""
    cid, created = new_id("chatcmpl" if chat else "cmpl"), int(time.time())
    base = {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model}
    if include_usage:
        base["usage"] = None
    if chat:
        for i in range(len(handles)):
            yield {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}
    completion_tokens, last = 0, {}
    async for i, chunk in merged(handles):
        if chunk.token_ids:
            now = time.perf_counter()
            metrics.token_times(now - last.get(i, start), first=i not in last, count=len(chunk.token_ids))
            last[i] = now
        completion_tokens += len(chunk.token_ids)
        if not chunk.text and not chunk.finish_reason and not chunk.logprobs:
            continue  # text held back (a partial character or a possible stop string)
        if chat:
            delta = {"content": chunk.text} if chunk.text or not chunk.finish_reason else {}
            lps = chat_logprobs(chunk.logprobs) if chunk.logprobs else None
            choice = {"index": i, "delta": delta, "logprobs": lps, "finish_reason": chunk.finish_reason}
        else:
            lps = text_logprobs(chunk.logprobs) if chunk.logprobs else None
            choice = {"index": i, "text": chunk.text, "logprobs": lps, "finish_reason": chunk.finish_reason}
        yield {**base, "choices": [choice]}
    if include_usage:
        yield {**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                                "total_tokens": prompt_tokens + completion_tokens}}


async def fold(chunks: AsyncIterator[dict], chat: bool, n: int, want_logprobs: bool) -> dict:
    """The non-streaming reply: the stream's chunks (with usage) joined per choice."""
    texts, reasons, usage, head = [[] for _ in range(n)], [None] * n, None, None
    lps = [({"content": []} if chat else {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []})
           if want_logprobs else None for _ in range(n)]
    async for c in chunks:
        head = head or c
        usage = c.get("usage") or usage
        for ch in c["choices"]:
            i = ch["index"]
            texts[i].append(ch["delta"].get("content") or "" if chat else ch["text"])
            reasons[i] = ch["finish_reason"] or reasons[i]
            for key, values in (ch["logprobs"] or {}).items():
                lps[i][key].extend(values)
    choices = []
    for i in range(n):
        text = "".join(texts[i])
        body = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        choices.append({"index": i, **body, "logprobs": lps[i], "finish_reason": reasons[i]})
    return {"id": head["id"], "object": "chat.completion" if chat else "text_completion", "created": head["created"],
            "model": head["model"], "choices": choices, "usage": usage}
